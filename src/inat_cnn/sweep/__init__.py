"""Hyper-parameter sweeps over DVC's experiment queue: the sweep file (:mod:`.spec`), choosing and
queueing configurations (:mod:`.queue`), results from `dvc exp show` (:mod:`.results`), the report
(:mod:`.report`) and its figures (:mod:`.figures`), and the ``inat-cnn sweep`` commands (:mod:`.cli`).

A sweep ranks by a validation metric only: the test set decides nothing."""
