"""Hyper-parameter sweeps over DVC's experiment queue: the sweep file and queueing (:mod:`.cli`),
results from `dvc exp show` (:mod:`.results`), the report (:mod:`.report`) and its figures
(:mod:`.figures`)."""
