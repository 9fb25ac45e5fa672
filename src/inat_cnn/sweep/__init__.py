"""Hyper-parameter sweeps over DVC's experiment queue, one job a module:

- the question: the sweep file (:mod:`.spec`), its metric (:mod:`.metric`), its search space and
  samplers (:mod:`.space`);
- the study: its storage and heartbeats (:mod:`.storage`), opening and checking it (:mod:`.study`),
  the driver that asks, queues and tells (:mod:`.driver`), DVC's queue (:mod:`.queue`) and the
  pruning hook inside a training stage (:mod:`.pruning`);
- the answer: results from `dvc exp show` (:mod:`.results`), the ranking (:mod:`.ranking`), param
  importance (:mod:`.importance`), the figures (:mod:`.figures`), the report (:mod:`.report`) and
  the best trial once on the test set (:mod:`.best`);
- the ``inat-cnn sweep`` commands (:mod:`.cli`).

A sweep ranks by a validation metric only: the test set decides nothing."""
