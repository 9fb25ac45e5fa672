"""Evaluation: predictions and classification metrics (:mod:`.metrics`), the evaluate stage's
library (:mod:`.evaluate`), `inat-cnn predict` (:mod:`.predict`) and the model comparison
(:mod:`.compare`)."""
