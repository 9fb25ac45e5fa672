"""Every model the pipeline trains, by name (timm's name-keyed registry, in small).

An :class:`Entry` turns params.yaml into a model: :meth:`Entry.configs` reads its sections (typed,
checked, before torch is imported) and :attr:`Entry.build` makes the model, its spec, its optimizer's
param groups and what its ``metrics/details/model_<name>.json`` says. The training stages
(:func:`inat_cnn.training.stage.train_stage`), ``inat-cnn lr-find`` and the benchmarks take a model
from here by name; its files are ``core.outputs.ModelFiles(name)``. A third model is one
:func:`register` call plus its two stages in dvc.yaml (``python stages/train.py <name>`` style).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..core.config import FinetuneConfig, ScratchModelConfig, TrainConfig, from_dict


@dataclass
class Built:
    """A model ready to train: the module, its spec, param groups (None: every trainable parameter at
    the config's lr), its details (label, arch, sizes) and a line to print before training (or '')."""

    model: Any  # torch.nn.Module (torch is imported by build, not here)
    spec: Any  # models.checkpoint.ModelSpec
    param_groups: list[dict[str, Any]] | None
    details: dict[str, Any]
    banner: str = ""


@dataclass(frozen=True)
class Entry:
    """One model: its name (its files' and stages' suffix), the params sections it reads (the first
    holds its training knobs), and how to build it from their configs."""

    name: str
    sections: tuple[str, ...]
    train_config: type[TrainConfig]
    arch_config: type | None  # the second section's config (the scratch CNN's `model`), or None
    build: Callable[[Any, TrainConfig, list[str], int], Built]  # (arch cfg, train cfg, classes, side)

    @property
    def train_section(self) -> str:
        return self.sections[0]

    def configs(self, params: dict[str, Any]) -> tuple[Any, TrainConfig]:
        """(arch config or None, training config) from params.yaml's sections, checked."""
        train = from_dict(self.train_config, params.get(self.train_section), self.train_section)
        arch = from_dict(self.arch_config, params.get(self.sections[1]), self.sections[1]) if self.arch_config else None
        return arch, train


REGISTRY: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    REGISTRY[entry.name] = entry
    return entry


def model_entry(name: str) -> Entry:
    if name not in REGISTRY:
        from ..core.errors import UserError

        raise UserError(f"model {name!r} is not registered; the models are: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def _build_scratch(arch: ScratchModelConfig, cfg: TrainConfig, class_names: list[str], side: int) -> Built:
    from .checkpoint import SCRATCH_ARCH
    from .scratch import scratch_model
    from .size import format_layer_table, size_report

    model, spec = scratch_model(arch, class_names, side)
    size = size_report(arch, len(class_names))
    return Built(model, spec, None, {"label": "scratch CNN", "arch": SCRATCH_ARCH, **size},
                 format_layer_table(size["layers"]))


def _build_finetune(_: None, cfg: FinetuneConfig, class_names: list[str], side: int) -> Built:
    from .pretrained.freezing import count_params, finetune_model, param_groups
    from .size import measured_flops

    pm, spec = finetune_model(cfg, class_names, side)
    counts = count_params(pm.model)
    details = {"label": f"{cfg.arch} ({cfg.strategy})", "arch": cfg.arch, "weights": pm.weights, "strategy": cfg.strategy,
               "params": counts["total"], "trainable_params": counts["trainable"],
               "flops_per_image": measured_flops(pm.model, pm.input_size)}
    banner = (f"{cfg.arch} ({pm.weights}), {cfg.strategy}: {counts['trainable']:,} of {counts['total']:,} parameters "
              f"train; blocks: {', '.join(name for name, _ in pm.blocks)}")
    return Built(pm.model, spec, param_groups(pm, cfg.lr, cfg.backbone_lr_factor, cfg.head_epochs), details, banner)


register(Entry("scratch", ("train", "model"), TrainConfig, ScratchModelConfig, _build_scratch))
register(Entry("finetune", ("finetune",), FinetuneConfig, None, _build_finetune))
