"""The fidelity ledger: every known difference between the paper's text, the released code
(alishibli97/noise2map, "Initial release") and a preset, as one table the suite writes.

Each point names the config key that switches it, the value that reproduces the released
code, and reads the preset's value from the resolved config, so ``fidelity.md`` says, row by
row, whether a preset re-runs the release. A point with no switch yet (``key`` None) is listed
with what the suite does, never marked as matching.

    noise2map fidelity --config results/config.yaml --output results/fidelity.csv
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from noise2map.io import atomic_path, write_text

DATASETS = ("spacenet7", "whu", "xview2")
TASKS = ("ss", "cd")


@dataclass(frozen=True)
class Point:
    """One difference. ``value`` reads the preset's setting; ``released`` is the setting that
    reproduces the release (None: no switch, the suite's behaviour is stated in ``suite``)."""

    topic: str
    paper_text: str
    released_code: str
    key: str | None
    value: Callable[[dict], object] | None = None
    released: object = None
    suite: str = ""
    # where the preset re-runs the release beside its own setting (e.g. a released-backbone row
    # in Table I), equality is too strict: this says when the preset's value covers the release
    covers: Callable[[str], bool] | None = None


def _unet_field(field: str):
    def read(config: dict):
        from baselines.noise2map_models import unet_config
        from noise2map.models.noise2map import church_config

        return {**church_config(), **unet_config(config["model_size"], config["noise2map"].get("unet"))}.get(field)
    return read


def _per_task(field: str):
    """``spacenet7 ss/cd 5/5; whu 5/1; …`` of a per-(data set, task) setting."""
    def read(config: dict) -> str:
        from noise2map.config import task_settings

        parts = []
        for dataset in DATASETS:
            if dataset in config["training"]["datasets"]:
                values = [task_settings(config, dataset, t)[field] for t in TASKS]
                parts.append(f"{dataset} " + "/".join(_fmt(v) for v in values))
        return "; ".join(parts)
    return read


def _fmt(value) -> str:
    if isinstance(value, list):
        return ":".join(_fmt(v) for v in reversed(value))  # [bg, pos] → pos:bg, as the paper writes it
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _get(path: str, default=None):
    def read(config: dict):
        node = config
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node
    return read


def _scheduler(config: dict) -> str:
    s = config["noise2map"]["scheduler"]
    return (f"{s.get('name', 'ddim')}, T={s.get('num_train_timesteps', 1000)}, {s.get('beta_schedule', 'linear')} "
            f"{s.get('beta_start', 0.0001)}-{s.get('beta_end', 0.02)}")


def _heads(config: dict) -> str:
    dim = _unet_field("attention_head_dim")(config)
    return "one head over all channels" if dim is None else f"heads of {dim} channels"


def _backbone(config: dict) -> str:
    from noise2map.config import released_backbone_row

    pre = config["pretrain"]
    if pre.get("source", "pipeline") == "released":
        return "released " + pre.get("released_backbone", "aid-10k")
    row = released_backbone_row(config)
    ours = f"pipeline ({pre['dataset']} pretraining here)"
    return f"{ours} + a released {row} row in Table I" if row else ours


def _table3_backbones(config: dict) -> str:
    released = config["ablations"].get("released_backbones", [])
    return "pipeline" + (f" + released {', '.join(released)}" if released else " only")


POINTS: list[Point] = [
    Point("Data", "SpaceNet7, WHU, xView2 Santa-Rosa, AID", "the real data sets", "raw_source",
          _get("raw_source"), "download"),
    Point("Model size", "113.7M-parameter Noise2Map; the baselines' official sizes", "paper size", "model_size",
          _get("model_size"), "paper"),
    Point("UNet attention heads", "ddpm-church-256 backbone",
          "UNet2DModel from ddpm-church-256's config.json: attention_head_dim null = one head over all channels",
          "noise2map.unet.attention_head_dim", _heads, "one head over all channels"),
    Point("SpaceNet7 evaluated split", "test regions of the split of [44]",
          "evaluate.py scores SpaceNet7 on val (the split that also selects its checkpoint)",
          "training.evaluation_split.spacenet7", _get("training.evaluation_split.spacenet7", "test"), "val"),
    Point("WHU / xView2 evaluated split", "test", "evaluate.py: test", "training.evaluation_split.{whu,xview2}",
          lambda c: "/".join(_get(f"training.evaluation_split.{d}", "test")(c) for d in ("whu", "xview2")), "test/test"),
    Point("Checkpoint selection", "best validation loss",
          "train.py validates (and keeps the best epoch) on SpaceNet7 val, on WHU and xView2 test",
          "selection + training.validation_split",
          lambda c: c.get("selection", "released") if c.get("selection", "released") != "released" else
          "/".join(c["training"]["validation_split"].get(d, "val") for d in DATASETS), "val/test/test"),
    Point("xView2-CD empty-mask pairs", "150 CD pairs (291 SS masks)",
          "xview2_cd.py keeps pairs whose mask is empty (the SS file list)", "preparation.xview2_cd_pairs",
          _get("preparation.xview2_cd_pairs", "keep_all"), "keep_all"),
    Point("Precision", "mixed precision and gradient scaling",
          "GradScaler without autocast: fp32 training, validation and test", "training.precision",
          _get("training.precision"), "32-true"),
    Point("Validation period", "-", "val_period 5 in five configs, 1 in whu_cd.yaml",
          "training.datasets.<d>.<t>.val_every_n_epochs", _per_task("val_every_n_epochs"),
          "spacenet7 5/5; whu 5/1; xview2 5/5"),
    Point("Validated epochs", "-", "epoch % val_period == 0: epochs 0, 5, ..., 195", "training.val_schedule",
          _get("training.val_schedule", "released"), "released"),
    Point("Validation loss", "-", "validate(): mean over batches of each batch's weighted-mean CE",
          "training.val_loss", _get("training.val_loss", "split_mean"), "batch_mean"),
    Point("Gradient accumulation", "gradient accumulation (2 steps)",
          "backward and step only on every 2nd batch; the other batch's loss is computed and dropped",
          "training.accumulation (+ grad_accumulation)",
          lambda c: f"{c['training'].get('accumulation', 'sum')} x{c['training']['grad_accumulation']}", "released x2"),
    Point("SpaceNet7-SS months", "19504 SS maps",
          "months with label true and mask false in metadata_train.json only", "preparation.spacenet7_ss_months",
          _get("preparation.spacenet7_ss_months", "usable"), "usable"),
    Point("SpaceNet7-SS mosaic size", "256x256 crops",
          "every mosaic and label read at 1024x1024 (nearest): 16 tiles each", "preparation.spacenet7_ss_read_size",
          _get("preparation.spacenet7_ss_read_size", "nominal"), "nominal"),
    Point("WHU-SS masks", "-", "masks resized bilinearly, then truncated (soft edges eroded)",
          "preparation.whu_ss_mask_resize", _get("preparation.whu_ss_mask_resize", "bilinear_truncate"),
          "bilinear_truncate"),
    Point("WHU-CD pairs", "pairs with no change removed (959)", "whu_cd.py drops pairs whose mask is all 0 or all 255",
          "preparation.whu_cd_pairs", _get("preparation.whu_cd_pairs", "drop_uniform"), "drop_uniform"),
    Point("Fine-tuned backbone", "AID-pretrained UNet (10k images)",
          "the published aid-10k UNet (hub ali97/noise2map)", "pretrain.source / released_row (+ released_backbone)",
          _backbone, "released aid-10k", covers=lambda v: "released aid-10k" in v),
    Point("Table III backbones", "UNets pretrained on AID, ImageNet, MAJOR-TOM 10k",
          "the published aid-10k, imagenet2gen, sat2gen UNets", "ablations.released_backbones",
          _table3_backbones, "pipeline + released aid-10k, imagenet2gen, sat2gen",
          covers=lambda v: all(b in v for b in ("aid-10k", "imagenet2gen", "sat2gen"))),
    Point("Table III scratch row", "no pretraining (random initialisation)",
          "pretrained: None builds diffusers' default UNet2DModel (274M), not the church layout",
          "ablations.scratch_unet", _get("ablations.scratch_unet", "released"), "released"),
    Point("Resampling around the UNet", "-",
          "img_scale != 256: learnable Upsample(align_corners=True) + 3x3 conv on each side", "tile_size",
          lambda c: "unused (tile = UNet size)" if c["tile_size"] == _unet_field("sample_size")(c)
          else "bilinear resize (differs from the release)", "unused (tile = UNet size)"),
    Point("Batch size", "between 10 and 20", "8 (xView2 SS 4, CD 2)", "training.datasets.<d>.<t>.batch_size",
          _per_task("batch_size"), "spacenet7 8/8; whu 8/8; xview2 4/2"),
    Point("Class weights (positive:background)", "WHU-SS 3:1", "whu_sem 10:1, whu_cd 1:1, xview2 3:1, spacenet7 5:1 / 3:1",
          "training.datasets.<d>.<t>.class_weights", _per_task("class_weights"),
          "spacenet7 5:1/3:1; whu 10:1/1:1; xview2 3:1/3:1"),
    Point("Epochs", "200", "200; whu_cd.yaml 500", "training.datasets.<d>.<t>.max_epochs", _per_task("max_epochs"),
          "spacenet7 200/200; whu 200/500; xview2 200/200"),
    Point("SS noise", "Gaussian n ~ N(0, I)", "the image itself (noise = image)", "noise2map.ss_noise",
          _get("noise2map.ss_noise"), "image"),
    Point("Noise scheduler", "DDIM, T = 1000", "DDIMScheduler() defaults", "noise2map.scheduler", _scheduler,
          "ddim, T=1000, linear 0.0001-0.02"),
    Point("Validation / test timestep", "X(T) at inference", "T // 2 in validation, T - 1 at test",
          "noise2map.val_timestep / test_timestep",
          lambda c: f"{c['noise2map']['val_timestep']}/{c['noise2map']['test_timestep']}", "500/999"),
    Point("Optimiser", "Adam, lr 1e-4", "Adam, lr 1e-4", "training.optimizer / lr",
          lambda c: f"{c['training']['optimizer']} {c['training']['lr']:g}", "adam 0.0001"),
]


def _preset_value(point: Point, config: dict) -> str:
    return _fmt(point.value(config)) if point.value else point.suite


def fidelity_settings(config: dict) -> dict:
    """What the table reads from a config (the rule's params: a preset edit rewrites it)."""
    return {str(n): _preset_value(p, config) for n, p in enumerate(POINTS, 1)}


def fidelity_table(config: dict) -> pd.DataFrame:
    rows = []
    for number, point in enumerate(POINTS, 1):
        value = _preset_value(point, config)
        released = _fmt(point.released) if point.key else ""
        matches = bool(point.key) and (point.covers(value) if point.covers else value == released)
        rows.append({"point": number, "topic": point.topic, "paper_text": point.paper_text,
                     "released_code": point.released_code, "preset_value": value, "released_value": released,
                     "config_key": point.key or "(no switch)", "matches_release": matches})
    return pd.DataFrame(rows)


def fidelity_markdown(table: pd.DataFrame, preset: str) -> str:
    matched = int(table["matches_release"].sum())
    lines = [f"# Fidelity — preset `{preset}`", "",
             f"{matched} of {len(table)} points match the released code (alishibli97/noise2map, "
             "\"Initial release\"). A point without a config key is behaviour the suite cannot switch yet.", "",
             "| # | Topic | Paper text | Released code | This preset | Config key | Matches release |",
             "|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.point} | {r.topic} | {r.paper_text} | {r.released_code} | {r.preset_value} | "
                     f"`{r.config_key}` | {'yes' if r.matches_release else '**no**'} |")
    return "\n".join(lines) + "\n"


def write_fidelity(config: dict, output: str | Path) -> pd.DataFrame:
    table = fidelity_table(config)
    with atomic_path(output) as tmp:
        table.to_csv(tmp, index=False)
    write_text(Path(output).with_suffix(".md"), fidelity_markdown(table, config["preset"]))
    return table
