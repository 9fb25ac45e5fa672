"""Evaluation: predictions and classification metrics (:mod:`.metrics`), the evaluate stage's
library (:mod:`.evaluate`), `inat-cnn predict` (:mod:`.predict`), calibrated confidences (:mod:`.calibration`) and the
model comparison (:mod:`.compare`)."""
