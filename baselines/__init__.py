"""The model registry: one entry maps a name to its builder, task and Table I figure.

A new model is one file in this folder plus one ``register(ModelSpec(...))`` line below;
it then appears in ``noise2map models``, the config schema's enums and every table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from noise2map.errors import UnknownNameError

SIZES = ("paper", "demo")


@dataclass(frozen=True)
class ModelSpec:
    """What the suite knows about one model of Table I.

    Attributes:
        key: the name used in configs, the CLI and run folders (lower case, no spaces).
        name: the model's name in the paper's Table I.
        task: ``"ss"`` (image → logits) or ``"cd"`` (pre, post → logits).
        paper_params_m: the parameter count Table I reports, in millions.
        build: ``build(size, num_classes, **options) -> nn.Module``; size is paper or demo.
        reference_params_m: the count a faithful build has where no build gives the paper's
            figure (the ±2 % check is against this); None means the paper's figure.
        build_note: how the paper-size model is built, shown by ``noise2map models``.
        weights: cache names of the pretrained checkpoints the paper-size model starts from
            (noise2map.weights.CHECKPOINTS); loaded into the submodule ``weights_into``.
        weights_loader: ``loader(model, path)`` for a checkpoint that needs more than a plain
            state-dict load into ``weights_into`` (None: noise2map.weights.load_into).
        pretrained_unet: which UNet of the pretraining stage the model starts from
            (``"noise2map"`` or ``"sr3"``, DDPM-CD's); None for none.
    """

    key: str
    name: str
    task: str
    paper_params_m: float
    build: Callable[..., nn.Module] = field(repr=False)
    reference_params_m: float | None = None
    build_note: str = ""
    weights: tuple[str, ...] = ()
    weights_into: str = "encoder"
    pretrained_unet: str | None = None
    weights_loader: Callable[[nn.Module, object], None] | None = field(default=None, repr=False)

    @property
    def expected_params_m(self) -> float:
        return self.reference_params_m or self.paper_params_m


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.key in MODELS:
        raise ValueError(f"model key {spec.key!r} registered twice")
    MODELS[spec.key] = spec
    return spec


def get_model_spec(key: str) -> ModelSpec:
    """Look a model up by key; a miss lists what is available."""
    try:
        return MODELS[key]
    except KeyError:
        raise UnknownNameError("model", key, MODELS) from None


def build_model(key: str, size: str = "paper", num_classes: int = 2, **options) -> nn.Module:
    """Build a registered model at the paper or demo size."""
    if size not in SIZES:
        raise ValueError(f"model size must be one of {SIZES}, got {size!r}")
    return get_model_spec(key).build(size, num_classes, **options)


def count_params(key: str, size: str = "paper") -> int:
    """Parameters of a registered model, counted as the official code registers them.

    Built on the meta device (instant, no memory) where the model allows it; MiT encoders
    call ``.item()`` while building and are built on the CPU instead (they are small).
    """
    import torch

    try:
        with torch.device("meta"):
            model = build_model(key, size)
    except (RuntimeError, NotImplementedError):
        model = build_model(key, size)
    return sum(p.numel() for p in model.parameters())


def models_for_task(task: str) -> list[str]:
    return [k for k, s in MODELS.items() if s.task == task]


def _register_all() -> None:
    from baselines import (bit, cgnet, changeformer, ddpm_cd, dpt, elgcnet, fc_siam_conc, mambabcd,
                           noise2map_models, rs3mamba, smp_models)

    for module in (noise2map_models, smp_models, rs3mamba, dpt, fc_siam_conc, bit, changeformer, cgnet, elgcnet,
                   ddpm_cd, mambabcd):
        for spec in module.SPECS:
            register(spec)


_register_all()
