"""Exporting a checkpoint for deployment (:mod:`.onnx_export`: `inat-cnn export --format onnx`)."""
