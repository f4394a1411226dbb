"""A checkpoint written by the released train.py becomes a run folder of the suite.

The released loop saves ``model.state_dict()`` of its ``Noise2Map`` wrapper as
``best_model_epoch_<E>.pth`` (keys ``input_conv.*``, ``unet.*``, ``output_conv.*``; under
``DataParallel`` each prefixed ``module.``). Our Noise2Map has the same structure and names
(``tests/test_released_model.py``), so the weights load as they are; the run folder then gets
the usual ``config.yaml``, ``checkpoints/best.ckpt``, ``tile_counts.csv`` and
``metrics.json``, each evaluation tile scored exactly once, ready for ``noise2map tables``.

    noise2map import-released best_model_epoch_37.pth --config results/config.yaml --task cd --dataset whu
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from noise2map.errors import CheckpointError
from noise2map.io import atomic_path, sha256

RELEASED_NAME = re.compile(r"^(?:best_)?model_epoch_(\d+)\.pth$")
MODEL_KEYS = {"ss": "noise2map-ss", "cd": "noise2map-cd"}


def released_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The wrapper's state dict from a released ``.pth``: plain or ``module.``-prefixed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle of another kind, a truncated file
        raise CheckpointError(f"{path}: not a state dict torch can read ({err.__class__.__name__}: {err})") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected the released train.py's model.state_dict() (name → tensor)")
    if state and all(k.startswith("module.") for k in state):  # saved from torch.nn.DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    extra = sorted(k for k in state if k.startswith(("input_upscaling.", "output_downscaling.")))
    if extra:
        raise CheckpointError(f"{path} was trained at img_scale != 256 ({extra[0]}, …): its learned resampling "
                              "layers have no counterpart here; only 256² checkpoints can be imported")
    return state


def import_released(checkpoint: Path, config: dict, task: str, dataset: str, run: Path, seed: int = 0) -> dict:
    """Make ``run`` a run folder of the released checkpoint and score it; returns metrics."""
    from noise2map.config import task_settings, validate_config
    from noise2map.runspec import run_spec
    from noise2map.training.run import evaluate_run, library_versions, model_options, write_run_config
    from noise2map.training.tasks import DiscriminativeTask

    validate_config(config)
    checkpoint, run = Path(checkpoint), Path(run)
    state = released_state_dict(checkpoint)
    key = MODEL_KEYS[task]
    train = config["training"]
    module = DiscriminativeTask(key, task, config["model_size"], model_options(config, key),
                                task_settings(config, dataset, task)["class_weights"], train["optimizer"], train["lr"],
                                config["noise2map"]["val_timestep"], config["noise2map"]["test_timestep"])
    _load(module.model, state, checkpoint, task)
    epoch = RELEASED_NAME.match(checkpoint.name)
    spec = run_spec(config, task, dataset, key, seed, "released checkpoint", folder=run)
    config = write_run_config(config, run, **spec.fields(), versions=library_versions(),
                              imported_from=str(checkpoint), imported_sha256=sha256(checkpoint),
                              imported_epoch=int(epoch.group(1)) if epoch else None)
    best = run / "checkpoints" / "best.ckpt"
    with atomic_path(best) as tmp:
        torch.save(_lightning_checkpoint(module), tmp)
    return evaluate_run(run, best, config=config)


def _load(model, state: dict, path: Path, task: str) -> None:
    ours = model.state_dict()
    missing, unexpected = sorted(set(ours) - set(state)), sorted(set(state) - set(ours))
    if missing or unexpected:
        raise CheckpointError(f"{path} is not a released Noise2Map-{task.upper()} state dict of this model size: "
                              f"{len(missing)} keys missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                              f"(e.g. {unexpected[:3]})")
    wrong = [k for k in ours if ours[k].shape != state[k].shape]
    if wrong:
        k = wrong[0]
        hint = " (an SS checkpoint has 3 input channels, CD 6)" if k == "input_conv.weight" else ""
        raise CheckpointError(f"{path}: {k} has shape {tuple(state[k].shape)}, this Noise2Map-{task.upper()} "
                              f"{tuple(ours[k].shape)}{hint}")
    model.load_state_dict(state)


def _lightning_checkpoint(module) -> dict:
    """What ``DiscriminativeTask.load_from_checkpoint`` reads: weights and hyper-parameters."""
    import lightning

    return {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": lightning.__version__, "epoch": 0, "global_step": 0}
