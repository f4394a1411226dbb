"""One training job's identity, written in one place: :class:`RunSpec`.

A job of the workflow is (task, data set, model, seed, variant, pretrained weights). Its
``settings`` are what determines its result, as the workflow sees them (they are the train
rule's params, so an edit of them reruns the job), its ``fingerprint`` is their hash with the
tile store, the seed and the variant (Table I refuses a run whose fingerprint the preset does
not give now), and ``run_dir`` is its folder. Resume compares :meth:`RunSpec.fields` with what
the run folder recorded (:mod:`noise2map.training.resume`).

Light on purpose (no torch): Snakemake's params and the tables read it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from noise2map.config import run_dir, run_settings, store_name


@dataclass(frozen=True)
class RunSpec:
    task: str
    dataset: str
    model: str
    seed: int
    variant: str | None
    pretrained_unet: str | None
    settings: dict = field(repr=False, compare=False)
    store: str
    fingerprint: str
    run_dir: Path

    def fields(self) -> dict:
        """The ``run:`` block of the folder's config.yaml that says which run it holds: the
        pretrained UNet by path and content (a new pretraining at the same path is another
        start), the variant's row name, the fingerprint."""
        return {"task": self.task, "dataset": self.dataset, "model": self.model, "seed": self.seed,
                **unet_fields(self.pretrained_unet), **variant_fields(self.model, self.variant),
                "fingerprint": self.fingerprint}


def run_spec(config: dict, task: str, dataset: str, model: str, seed: int, variant: str | None = None,
             pretrained_unet=None, folder=None) -> RunSpec:
    """The :class:`RunSpec` of one job under ``config`` (``folder``: another run folder than
    the preset's ``<results_dir>/runs/<task>/<dataset>/<model>/seed<k>``)."""
    settings = run_settings(config, task, dataset, model)
    store = store_name(config, f"{dataset}-{task}")
    return RunSpec(task, dataset, model, int(seed), variant, str(pretrained_unet) if pretrained_unet else None,
                   settings, store, fingerprint(settings, store, seed, variant),
                   Path(folder) if folder else run_dir(config, task, dataset, model, seed))


def fingerprint(settings: dict, store: str, seed: int, variant: str | None) -> str:
    """16 hex digits of the job's settings, store, seed and variant (the payload's form is
    fixed: fingerprints of earlier runs stay valid)."""
    payload = {"settings": settings, "seed": int(seed), "variant": variant, "store": store}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def unet_fields(pretrained_unet) -> dict:
    """The UNet a run starts from, by path and content."""
    from noise2map.io import sha256

    if not pretrained_unet:
        return {"pretrained_unet": None}
    path = Path(pretrained_unet)
    return {"pretrained_unet": str(path), "pretrained_unet_sha256": sha256(path) if path.is_file() else None}


def variant_fields(model: str, variant: str | None) -> dict:
    """Run fields of a variant row ("Noise2Map-SS (released aid-10k backbone)"): it is tabulated
    beside the model's own row and kept out of the paper's rank (``ranked: false``)."""
    if not variant:
        return {}
    from baselines import get_model_spec

    return {"variant": variant, "display_name": f"{get_model_spec(model).name} ({variant})"}


__all__ = ["RunSpec", "fingerprint", "run_spec", "unet_fields", "variant_fields"]
