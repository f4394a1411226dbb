"""The model registry: one entry maps a name to its builder, task and Table I figure.

A new model of the suite is one file in this folder (its ``SPECS`` list) plus its module in
:func:`_register_all`. A model of your own needs no fork: a package that declares an entry
point in the group ``noise2map.models`` (naming a list of :class:`ModelSpec`, like a baseline
file's ``SPECS``) joins through :func:`load_plugins`, and a module on the path joins through
the config key ``model_modules``. Either way it appears in ``noise2map models``, passes the
config check (whose model names are read from this registry) and joins every rule, table and
figure.

Plugins are loaded on first need (the CLI, the config check, a name not yet known), not when
this package is imported: a plugin imports ``baselines`` for :class:`ModelSpec`, and loading
it from here at import would be a circle.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Callable

from torch import nn

from noise2map.errors import PluginError, UnknownNameError

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
        origin: where the spec was registered from (``built-in``, an entry point or a config
            module); set by the registry.
        batchnorm: whether the model holds BatchNorm layers. Such a model never trains on a
            batch of one sample (a last batch of one joins the one before it); one without
            (GroupNorm) takes the released loop's batches as they are. Declared, so that a run's
            settings know it without building the model; training checks it against the model.
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
    origin: str = "built-in"
    batchnorm: bool = True

    @property
    def expected_params_m(self) -> float:
        return self.reference_params_m or self.paper_params_m


MODELS: dict[str, ModelSpec] = {}
ENTRY_POINT_GROUP = "noise2map.models"
_KEY = re.compile(r"^[a-z0-9][a-z0-9._+-]*$")  # a run folder's name and a Snakemake wildcard
_IMPORTED: set[str] = set()
_PLUGINS = {"loaded": False}


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec``; a key that is taken, or a spec the suite cannot run, is a named error."""
    taken = MODELS.get(spec.key)
    if taken is not None and taken.build is spec.build and taken.task == spec.task:
        return taken  # the same model by two routes (installed and named in model_modules)
    if taken is not None:
        raise PluginError(f"model key {spec.key!r} of {spec.origin} is already registered by "
                          f"{MODELS[spec.key].origin}; give one of them another key")
    problems = [what for bad, what in (
        (not isinstance(spec.key, str) or not _KEY.match(spec.key), "its key must be lower case letters, digits "
                                                                     "and . _ + - (it names run folders)"),
        (spec.task not in ("ss", "cd"), f"its task is {spec.task!r}, not 'ss' or 'cd'"),
        (not callable(spec.build), "its build is not callable"),
    ) if bad]
    if problems:
        raise PluginError(f"model {spec.key!r} of {spec.origin}: " + "; ".join(problems))
    MODELS[spec.key] = spec
    return spec


def register_specs(specs, origin: str) -> list[ModelSpec]:
    """Register a plugin's list of specs, each marked with where it came from."""
    if not isinstance(specs, (list, tuple)) or not all(isinstance(s, ModelSpec) for s in specs):
        raise PluginError(f"{origin} gives {type(specs).__name__}, not a list of baselines.ModelSpec")
    return [register(replace(s, origin=origin)) for s in specs]


def import_model_modules(names) -> None:
    """The config key ``model_modules``: import each module (once) and register its ``SPECS``."""
    for name in names:
        if name in _IMPORTED:
            continue
        origin = f"module {name} (config model_modules)"
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise PluginError(f"{origin} cannot be imported ({exc}); is it on PYTHONPATH or installed?") from exc
        if not hasattr(module, "SPECS"):
            raise PluginError(f"{origin} has no SPECS list of baselines.ModelSpec")
        register_specs(module.SPECS, origin)
        _IMPORTED.add(name)


def get_model_spec(key: str) -> ModelSpec:
    """Look a model up by key; a miss lists what is available."""
    if key not in MODELS:
        load_plugins()
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
    load_plugins()
    return [k for k, s in MODELS.items() if s.task == task]


def _register_all() -> None:
    from baselines import (bit, cgnet, changeformer, ddpm_cd, dpt, elgcnet, fc_siam_conc, mambabcd,
                           noise2map_models, rs3mamba, smp_models)

    for module in (noise2map_models, smp_models, rs3mamba, dpt, fc_siam_conc, bit, changeformer, cgnet, elgcnet,
                   ddpm_cd, mambabcd):
        for spec in module.SPECS:
            register(spec)


def load_plugins() -> None:
    """Register every installed entry point of the group ``noise2map.models`` (once)."""
    if _PLUGINS["loaded"]:
        return
    _PLUGINS["loaded"] = True
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        dist = getattr(point, "dist", None)
        origin = f"entry point {point.name} = {point.value}" + (f" ({dist.name} {dist.version})" if dist else "")
        try:
            specs = point.load()
        except Exception as exc:  # noqa: BLE001 - any failure of foreign code is named, not a traceback
            raise PluginError(f"{origin} cannot be loaded ({type(exc).__name__}: {exc}); "
                              "fix or uninstall that package") from exc
        register_specs(specs, origin)


_register_all()
