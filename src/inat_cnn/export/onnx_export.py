"""`inat-cnn export CHECKPOINT --format onnx`: a checkpoint as one self-describing ONNX model.

The graph holds everything after the resize, so a deployment needs no PyTorch and no knowledge of
the training recipe:

* input ``image``: float32 (N, 3, H, W), RGB in [0, 1], H x W the checkpoint's ``input_size``;
  what :func:`onnx_input` makes of an image file (as ``inat-cnn predict`` sees it: the centre
  square, resized to the model's input, for pretrained recipes the centre crop they take);
* the checkpoint's mean/std normalisation, the model, and the division by its temperature;
* outputs ``logits`` (calibrated: divided by the temperature) and ``probabilities`` (their
  softmax), both float32 (N, C).

Metadata (``metadata_props``, all strings): ``class_names`` (a JSON list, in output order),
``input_size`` ("H,W"), ``temperature``, ``mean``, ``std``, ``arch``, ``input``.

Needs the optional extra: ``pip install -e '.[onnx]'`` (onnx, onnxruntime).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import FieldError, UserError
from ..data.preprocessing import BatchTransform, Preprocessing

FORMATS = ("onnx",)
OPSET = 18
INPUT_NAME, OUTPUT_NAMES = "image", ("logits", "probabilities")
INPUT_DOC = "float32 (N, 3, H, W) RGB in [0, 1]: the centre square of the image resized to input_size"


def require_onnx() -> None:
    """UserError naming the extra to install when onnx or onnxruntime is missing."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"ONNX export needs {', '.join(missing)}: install the optional extra with "
                        f"pip install -e '.[onnx]' (or pip install 'inat-cnn[onnx]')")


class Deployable(nn.Module):
    """A model with its input normalisation and temperature: [0, 1] RGB in, calibrated logits and probabilities out."""

    def __init__(self, model: nn.Module, pre: Preprocessing, temperature: float) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("inv_temperature", torch.tensor(1.0 / temperature, dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model((image - self.mean) * self.inv_std).float() * self.inv_temperature
        return logits, torch.softmax(logits, dim=1)


def onnx_input(squares: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """uint8 (N, 3, S, S) squares (``square_image`` at ``pre.source_size``) -> the exported model's
    input: float32 (N, 3, H, W) in [0, 1], resized exactly as evaluation and ``inat-cnn predict`` do."""
    unit = Preprocessing(pre.input_size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                         resize_size=pre.resize_size, source_size=pre.source_size)
    return BatchTransform(unit, augment=False)(squares)  # mean 0, std 1: only the 1/255 scaling


def metadata(spec: Any, temperature: float) -> dict[str, str]:
    pre = spec.preprocessing
    return {
        "class_names": json.dumps(list(spec.class_names)),
        "input_size": ",".join(map(str, pre.input_size)),
        "temperature": repr(float(temperature)),
        "mean": ",".join(map(repr, pre.mean)),
        "std": ",".join(map(repr, pre.std)),
        "arch": spec.arch,
        "input": INPUT_DOC,
    }


def export_checkpoint(checkpoint: str | Path, output: str | Path | None = None, *, fmt: str = "onnx") -> Path:
    """Write ``checkpoint`` as an ONNX model (default: beside it, ``.onnx``) and return its path.

    The file is checked with ``onnx.checker`` and written atomically."""
    if fmt not in FORMATS:
        raise FieldError("format", fmt, f"is not allowed; expected one of {', '.join(FORMATS)}")
    require_onnx()
    import onnx

    from ..core.files import write_bytes
    from ..models.build import load_model
    from ..models.checkpoint import temperature_of

    checkpoint = Path(checkpoint)
    out = Path(output) if output is not None else checkpoint.with_suffix(".onnx")
    model, spec, ckpt = load_model(checkpoint)
    temperature = temperature_of(ckpt)
    wrapper = Deployable(model, spec.preprocessing, temperature).eval()
    example = torch.rand(2, 3, *spec.preprocessing.input_size)
    # The TorchScript exporter (torch is pinned at 2.14.1, where it is deprecated but present): it exported
    # efficientnet_lite0 in 37 s where the torch.export-based one took 178 s on the same loaded 2-core CPU.
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            wrapper, (example,), buffer, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
            opset_version=OPSET, dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata(spec, temperature).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"inat-cnn {spec.arch} from {checkpoint.name}; input: {INPUT_DOC}"
    onnx.checker.check_model(proto, full_check=True)
    write_bytes(out, proto.SerializeToString())
    return out
