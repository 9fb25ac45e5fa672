"""Evaluation figures shared by the from-scratch CNN and the fine-tuned pretrained models.

Nothing here assumes a particular architecture: functions take the modules, tensors and
labels they draw. Figures are built on ``matplotlib.figure.Figure`` (Agg, no pyplot state)
and every PNG is written atomically.

- :mod:`.canvas`: grid layout, image conversion and the atomic PNG write.
- :mod:`.probe`: eval-mode context, running a model up to a layer, finding the first conv.
- :mod:`.predictions`: the per-class prediction grid and the confusion matrix.
- :mod:`.filters`: first-layer filters and one layer's feature maps.
- :mod:`.guided_backprop`: guided back-propagation of single neurons to the input image.
- :mod:`.calibration`: the reliability diagram (confidence against accuracy, before and after temperature scaling).
"""
