"""The fidelity ledger: every known difference between the paper's text, the released code
(alishibli97/noise2map, "Initial release") and a preset, as one table the suite writes.

Each point names the config key that switches it, the value that reproduces the released
code, and reads the preset's value from the resolved config, so ``fidelity.md`` says, row by
row, whether a preset re-runs the release. A point with no switch yet (``key`` None) is listed
with what the suite does, never marked as matching.

A config value proves nothing about behaviour, so each point also names its evidence (the
public file and line), whether it is inferred rather than read, and the test that runs the
release's rule (written from that source) beside ours and asserts they agree; a point without
one says "config comparison only". Given the prepared data's manifests, the data points also
report what the user's own files show (the xView2 self-check, the SpaceNet7 counts).

    noise2map fidelity --config results/config.yaml --output results/fidelity.csv [--manifest M ...]
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
    evidence: str = ""      # the public file (and line) the released behaviour is read from
    inferred: bool = False  # the release's behaviour is inferred, not read (the evidence says from what)
    test: str = ""          # tests/<file>.py::<test> that runs the release's rule beside ours
    data_check: Callable[[dict], str] | None = None  # {prepared set: manifest} → what the user's data shows


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


def _last_batch(config: dict, model: str) -> str:
    from noise2map.config import last_batch

    return last_batch(config, model)


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


DATA_TESTS = "tests/test_release_data_rules.py::"
RELEASE = "alishibli97/noise2map@731e9f1 "


def _manifest(manifests: dict, *names: str) -> dict:
    return next((manifests[n] for n in names if n in manifests), {})


def _counts(*names: str, keys: tuple[str, ...]):
    def read(manifests: dict) -> str:
        checks = _manifest(manifests, *names).get("count_checks", {})
        return "; ".join(f"{k} {checks[k]['found']} (full data: {checks[k]['expected']})" for k in keys if k in checks)
    return read


def _sn7_raster_check(manifests: dict) -> str:
    record = _manifest(manifests, "spacenet7-ss", "spacenet7-cd").get("label_raster")
    if not record:
        return ""
    if record.get("labels_raster_vs_rule"):
        return (f"labels_raster/ read ({record['labels_raster_files_read']} files); against the rule, IoU >= "
                f"{record['labels_raster_vs_rule_min_iou']:g}")
    return f"rasterised by the {record['rule']} rule (no labels_raster/ in the data)"


def _xview2_check(manifests: dict) -> str:
    check = _manifest(manifests, "xview2-ss", "xview2-cd").get("release_check")
    if not check:
        return ""
    def ids(sets):
        return ", ".join(f"{s} {' '.join(v) or '-'}" for s, v in sets.items())
    if check["pre_footprints_match_release"]:
        return ("confirmed on this data: the pairs without a pre-label building are exactly the release's 9 "
                "missing masks")
    return (f"not confirmed on this data: without a pre-label building: {ids(check['no_pre_label_building'])}; "
            f"without a damaged post-label building: {ids(check['no_damaged_post_building'])}"
            + (" (= the release's 9)" if check["post_damaged_match_release"] else "")
            + f"; the release's 9: {ids(check['release_missing_masks'])}")


POINTS: list[Point] = [
    Point("Data", "SpaceNet7, WHU, xView2 Santa-Rosa, AID", "the real data sets", "raw_source",
          _get("raw_source"), "download",
          evidence=RELEASE + "README.md L60-72 (the data/ layout: whu-cd, WHU, xview2, spacenet7), train.py L69-95 "
          "(build_dataset)"),
    Point("Model size", "113.7M-parameter Noise2Map; the baselines' official sizes", "paper size", "model_size",
          _get("model_size"), "paper",
          evidence=RELEASE + "noise2map/model.py L25-30, L71-80 "
          "(`UNet2DModelFlex.from_pretrained(\"ali97/noise2map\", subfolder=\"aid-10k\")`), L95-97 (3x3 input_conv "
          "and output_conv); README.md L50 (aid-10k: Google DDPM init); google/ddpm-church-256 config.json "
          "(113,673,219 UNet parameters)",
          test="tests/test_released_model.py::test_noise2map_logits_equal_the_released_model_at_paper_size"),
    Point("UNet attention heads", "ddpm-church-256 backbone",
          "UNet2DModel from ddpm-church-256's config.json: attention_head_dim null = one head over all channels",
          "noise2map.unet.attention_head_dim", _heads, "one head over all channels",
          evidence="google/ddpm-church-256 config.json (`\"attention_head_dim\": null`); "
          + RELEASE + "noise2map/model.py L71-80 (from_pretrained builds the hub folder's config.json, the church "
          "one), noise2map/unet_2d_flex.py L168-170, L187-189, L217-219 (None: attention_head_dim = the block's "
          "channels, one head)",
          test="tests/test_released_model.py::"
               "test_unet_equals_unet2dmodel_from_the_published_config_output_for_output"),
    Point("SpaceNet7 evaluated split", "test regions of the split of [44]",
          "evaluate.py scores SpaceNet7 on val (the split that also selects its checkpoint)",
          "training.evaluation_split.spacenet7", _get("training.evaluation_split.spacenet7", "test"), "val",
          evidence=RELEASE + "evaluate.py L124-126 (`val_split = \"val\" if cfg[\"dataset\"] == \"spacenet7\" else "
          "\"test\"`; as shipped it lacks `import yaml`, L117-118), train.py L246-247 (validates on the same split)",
          test="tests/test_release_rows_behaviour.py::"
               "test_a_released_spacenet7_checkpoint_is_scored_on_the_split_evaluate_py_scores"),
    Point("WHU / xView2 evaluated split", "test", "evaluate.py: test", "training.evaluation_split.{whu,xview2}",
          lambda c: "/".join(_get(f"training.evaluation_split.{d}", "test")(c) for d in ("whu", "xview2")), "test/test",
          evidence=RELEASE + "evaluate.py L124-126 (`else \"test\"`), L50-51 and L63-64 (t = T - 1, "
          "DDIMScheduler().add_noise); train.py L246-247",
          test="tests/test_import_released.py::test_released_checkpoint_becomes_a_scored_run_folder"),
    Point("Checkpoint selection", "best validation loss",
          "train.py validates (and keeps the best epoch) on SpaceNet7 val, on WHU and xView2 test",
          "selection + training.validation_split",
          lambda c: c["selection"] if c["selection"] != "released" else
          "/".join(c["training"]["validation_split"].get(d, "val") for d in DATASETS), "val/test/test",
          evidence=RELEASE + "train.py L246-247 (validation split: SpaceNet7 val, WHU and xView2 test), L288, "
          "L316-326 (`if val_loss < best_val_loss:` saves best_model_epoch_<epoch>.pth); evaluate.py L145-148 "
          "(scores the checkpoint it is given)",
          test="tests/test_release_loop_rules.py::test_best_checkpoint_is_the_earliest_lowest_validated_loss"),
    Point("xView2-CD empty-mask pairs", "150 CD pairs (291 SS masks)",
          "xview2_cd.py keeps pairs whose mask is empty (the SS file list)", "preparation.xview2_cd_pairs",
          _get("preparation.xview2_cd_pairs", "keep_all"), "keep_all",
          evidence=RELEASE + "noise2map/datasets/xview2_cd.py L54-58 (every pre image with masks/<name>: no test of "
          "the mask's content), L93-100 (`cv2.resize`, `/ 255.0`, `> 0.5`)",
          test="tests/test_release_rows_behaviour.py::"
               "test_xview2_cd_keeps_a_pair_whose_mask_is_empty_as_the_released_xview2_cd_py"),
    Point("Precision", "mixed precision and gradient scaling",
          "GradScaler without autocast: fp32 training, validation and test", "training.precision",
          _get("training.precision"), "32-true",
          evidence=RELEASE + "train.py L24, L281 (`scaler = GradScaler()`), L298-303 (no autocast: the forward pass "
          "in fp32); validate() L178-211 and evaluate.py L38-76 without autocast"),
    Point("Validation period", "-", "val_period 5 in five configs, 1 in whu_cd.yaml",
          "training.datasets.<d>.<t>.val_every_n_epochs", _per_task("val_every_n_epochs"),
          "spacenet7 5/5; whu 5/1; xview2 5/5",
          evidence=RELEASE + "configs/*.yaml `val_period` (spacenet7_cd L21, spacenet7_sem L20, whu_sem, xview2_cd, "
          "xview2_sem L19: 5; whu_cd L19: 1); train.py L289, L316",
          test="tests/test_release_rows_behaviour.py::"
               "test_validated_epochs_of_every_paper_task_are_the_released_loops"),
    Point("Validated epochs", "-", "epoch % val_period == 0: epochs 0, 5, ..., 195", "training.val_schedule",
          _get("training.val_schedule", "released"), "released",
          evidence=RELEASE + "train.py L289-293, L316 (`if epoch % val_period == 0:`)",
          test="tests/test_released_loop.py::test_a_run_validates_the_scheduled_epochs"),
    Point("Validation loss", "-", "validate(): mean over batches of each batch's weighted-mean CE",
          "training.val_loss", _get("training.val_loss", "split_mean"), "batch_mean",
          evidence=RELEASE + "train.py L178-211 (L208 `losses.append(weighted_ce_loss(...).item())`, L211 "
          "`sum(losses) / len(losses)`)",
          test="tests/test_released_loop.py::test_validation_loss_modes_on_a_fixed_split"),
    Point("Gradient accumulation", "gradient accumulation (2 steps)",
          "backward and step only on every 2nd batch; the other batch's loss is computed and dropped",
          "training.accumulation (+ grad_accumulation)",
          lambda c: f"{c['training'].get('accumulation', 'sum')} x{c['training']['grad_accumulation']}", "released x2",
          evidence=RELEASE + "train.py L282 (`grad_accum = t_cfg.get(\"grad_accumulation_steps\", 2)`), L297-307 "
          "(`if (step + 1) % grad_accum == 0:` backward and step; every loss appended); configs/*.yaml "
          "`grad_accumulation_steps: 2`",
          test="tests/test_release_loop_rules.py::test_a_run_trains_on_the_released_batches_or_folds"),
    Point("Last batch of an epoch", "-",
          "DataLoader(shuffle=True) without drop_last: an epoch may end with a batch of one sample, which the "
          "accumulation steps on like any other",
          "training.accumulation (+ ModelSpec.batchnorm)",
          lambda c: f"Noise2Map {_last_batch(c, 'noise2map-cd')}, BatchNorm models {_last_batch(c, 'unet')}",
          "Noise2Map keep, BatchNorm models fold",
          covers=lambda v: v.startswith("Noise2Map keep"),
          evidence=RELEASE + "train.py L249-254 (`DataLoader(train_ds, batch_size=..., shuffle=True, "
          "num_workers=...)`), L300 (`if (step + 1) % grad_accum == 0:`); a BatchNorm baseline cannot train on "
          "one sample, so its last batch of one joins the one before",
          test="tests/test_release_loop_rules.py::test_a_groupnorm_model_steps_on_exactly_the_released_batches"),
    Point("SpaceNet7 building rasters", "building masks of SpaceNet7",
          "reads labels_raster/<image>_Buildings.tif (> 0), written by Hafner et al.'s preparation: per building "
          "cv2.fillPoly(outline rounded, 255, LINE_AA), holes with 0, then < 255 set to 0",
          "preparation.spacenet7_label_raster", _get("preparation.spacenet7_label_raster", "hafner"), "hafner",
          evidence=RELEASE + "noise2map/datasets/spacenet7_sem.py L150-157 (_load_label), spacenet7_cd.py L123, "
          "L134-139; SebastianHafner/SemiSupervisedMultiModalCD utils/spacenet7_helpers (labels_raster/, "
          "_Buildings.tif)",
          test=DATA_TESTS + "test_spacenet7_ss_and_cd_tiles_follow_hafner_under_paper_and_pixel_centres_under_corrected",
          data_check=_sn7_raster_check),
    Point("SpaceNet7-SS months", "19504 SS maps",
          "months with label true and mask false in metadata_train.json only", "preparation.spacenet7_ss_months",
          _get("preparation.spacenet7_ss_months", "usable"), "usable",
          evidence=RELEASE + "noise2map/datasets/spacenet7_sem.py L71-73, L90-91 (`if ts[\"mask\"] or not "
          "ts[\"label\"]: continue`); the list: SebastianHafner/SemiSupervisedMultiModalCD@704d4fd "
          "dataset/metadata_train.json (sha256 c5973861…), 599 / 319 / 301 usable months = 19,504 tiles",
          test=DATA_TESTS + "test_masked_months_of_metadata_train_json_are_dropped_and_the_counts_named",
          data_check=_counts("spacenet7-ss", keys=("AOI folders", "monthly mosaics", "usable months", "SS tiles"))),
    Point("xView2 pairs", "291 SS masks",
          "keeps a pre image only if masks/<pre image name> exists (the _MISSING id set is dead code: it compares "
          "the disaster name); mask_polygons.py writes no mask for a label without a polygon: 300 - 9 = 291",
          "preparation.xview2_pairs", _get("preparation.xview2_pairs", "with_mask"), "with_mask",
          evidence=RELEASE + "noise2map/datasets/xview2_sem.py L32-48 (`(masks_dir / f.name).exists()`), "
          "xview2_cd.py likewise; DIUx-xView/xView2_baseline@821d9f8 utils/mask_polygons.py mask_chips "
          "(`if len(polys) > 0:`)",
          test=DATA_TESTS + "test_xview2_paper_keeps_pairs_with_a_mask_and_masks_pre_footprints_corrected_keeps_all",
          data_check=_counts("xview2-ss", "xview2-cd", keys=("train pairs", "test pairs", "pairs kept"))),
    Point("xView2 masks", "buildings damaged by wildfire",
          "masks/ named after the pre image, the layout of the xView2 baseline's split_into_disasters.py + "
          "mask_polygons.py --single-file: every PRE-label footprint filled (no damage classes), overlaps 0",
          "preparation.xview2_mask (+ xview2_mask_border)",
          lambda c: (f"{_get('preparation.xview2_mask', 'pre_footprints')(c)}"
                     f" border {_get('preparation.xview2_mask_border', 2)(c)}"), "pre_footprints border 2",
          evidence="inferred from the release's layout <split>/xBD/santa-rosa-wildfire/{images,masks} and its 9 "
          "missing masks: DIUx-xView/xView2_baseline@821d9f8 utils/mask_polygons.py (mask_chips reads `'_pre' in j` "
          "labels; mask_polygons_together), README 'python mask_polygons.py --input /path/to/xBD --single-file "
          "--border 2'",
          inferred=True,
          test=DATA_TESTS + "test_mask_polygons_rule_equals_the_baselines_script_with_and_without_border",
          data_check=_xview2_check),
    Point("SpaceNet7-SS mosaic size", "256x256 crops",
          "every mosaic and label read at 1024x1024 (nearest): 16 tiles each", "preparation.spacenet7_ss_read_size",
          _get("preparation.spacenet7_ss_read_size", "nominal"), "nominal",
          evidence=RELEASE + "noise2map/datasets/spacenet7_sem.py L48, L61-63, L96-98 (tiles at range(0, 1024, "
          "img_size)), L140-144 and L155-159 (`src.read(out_shape=(1024, 1024), resampling=nearest)`)",
          test="tests/test_preparer_geometry.py::"
               "test_spacenet7_ss_tiles_hold_the_polygons_and_pixels_at_their_grid_offset"),
    Point("WHU-SS masks", "-", "masks resized bilinearly, then truncated (soft edges eroded)",
          "preparation.whu_ss_mask_resize", _get("preparation.whu_ss_mask_resize", "bilinear_truncate"),
          "bilinear_truncate",
          evidence=RELEASE + "noise2map/datasets/whu_sem.py L60-63 (`T.Resize((img_size, img_size))`, "
          "`T.ToTensor()`), L71, L75; train.py L132 (`.long()` truncates)",
          test="tests/test_whu_release_rules.py::"
               "test_whu_ss_masks_of_mode_1_and_P_are_resized_nearest_as_pil_forces_it"),
    Point("WHU-CD pairs", "pairs with no change removed (959)", "whu_cd.py drops pairs whose mask is all 0 or all 255",
          "preparation.whu_cd_pairs", _get("preparation.whu_cd_pairs", "drop_uniform"), "drop_uniform",
          evidence=RELEASE + "noise2map/datasets/whu_cd.py L70-78 (the filtered list, cached), L82-90 (kept iff "
          "`len(torch.unique(label)) > 1`)",
          test="tests/test_whu_release_rules.py::test_whu_cd_labels_of_every_mode_are_read_as_the_release_reads_them"),
    Point("WHU file order", "-",
          "file lists in plain string order (10.tif before 2.tif; WHU-CD ignores its list file's order): the "
          "order groups the validation batches, so it moves the validation loss and the selected epoch",
          "preparation.whu_ss_order / whu_cd_order",
          lambda c: f"{_get('preparation.whu_ss_order', 'sorted')(c)}/{_get('preparation.whu_cd_order', 'sorted')(c)}",
          "sorted/sorted",
          evidence=RELEASE + "noise2map/datasets/whu_sem.py L53 (`sorted(os.listdir(self.image_dir))`), "
          "whu_cd.py L75 (`sorted(os.listdir(self.pre_dir))`)",
          test="tests/test_whu_release_rules.py::"
               "test_whu_ss_paper_order_is_the_release_sorted_listdir_and_corrected_is_natural"),
    Point("WHU layout", "8188 WHU masks (train + val + test)",
          "reads <root>/<split>/{Image,Mask}, train and test only",
          "(none: one layout, both presets)", lambda c: "image/label in any case; train, val, test",
          "image/label in any case; train, val, test",
          evidence=RELEASE + "noise2map/datasets/whu_sem.py L51-52 (`os.path.join(root_dir, split, \"Image\")`, "
          "`\"Mask\"`)",
          test="tests/test_whu_release_rules.py::"
               "test_image_mask_folders_in_any_case_are_accepted_by_acquisition_and_the_preparer"),
    Point("WHU label modes", "-",
          "WHU-CD labels: ToTensor(Image.open(...).convert(\"L\")), pair kept if > 1 unique value, trained on "
          ".long() (change = grey 255 only); WHU-SS masks opened without convert (PIL resizes modes 1 and P nearest)",
          "preparation.whu_cd_label_values", _get("preparation.whu_cd_label_values", "truncate"), "truncate",
          evidence=RELEASE + "noise2map/datasets/whu_cd.py L86-88, L100; train.py L132 "
          "(`target.squeeze(1).long()`); whu_sem.py L61-62, L71",
          test="tests/test_whu_release_rules.py::test_whu_cd_labels_of_every_mode_are_read_as_the_release_reads_them"),
    Point("Fine-tuned backbone", "AID-pretrained UNet (10k images)",
          "the published aid-10k UNet (hub ali97/noise2map)", "pretrain.source / released_row (+ released_backbone)",
          _backbone, "released aid-10k", covers=lambda v: "released aid-10k" in v,
          evidence=RELEASE + "noise2map/model.py L25-30 (`\"aid_10k\": (\"ali97/noise2map\", \"aid-10k\")`), L71-80; "
          "configs/*.yaml `pretrained: aid_10k` (L9-11); train.py L269",
          test="tests/test_weights.py::test_released_backbone_is_pinned_at_its_first_commit_and_exported"),
    Point("Table III backbones", "UNets pretrained on AID, ImageNet, MAJOR-TOM 10k",
          "the published aid-10k, imagenet2gen, sat2gen UNets", "ablations.released_backbones",
          _table3_backbones, "pipeline + released aid-10k, imagenet2gen, sat2gen",
          covers=lambda v: all(b in v for b in ("aid-10k", "imagenet2gen", "sat2gen")),
          evidence=RELEASE + "noise2map/model.py L25-30 (`satellite`: sat2gen, `imagenet`: imagenet2gen, `aid_10k`: "
          "aid-10k, all in ali97/noise2map), L71-80; README.md L48-54"),
    Point("Table III scratch row", "no pretraining (random initialisation)",
          "pretrained: None builds diffusers' default UNet2DModel (274M), not the church layout",
          "ablations.scratch_unet", _get("ablations.scratch_unet", "released"), "released",
          evidence=RELEASE + "noise2map/model.py L71-84 (pretrained None: "
          "`UNet2DModelFlex(use_timestep=use_timestep)`), noise2map/unet_2d_flex.py L43-84 (its defaults, diffusers' "
          "UNet2DModel's: block_out_channels (224, 448, 672, 896), attention_head_dim 8); README.md L54",
          test="tests/test_released_model.py::"
               "test_table3_scratch_row_builds_what_the_released_code_builds_for_pretrained_none"),
    Point("Resampling around the UNet", "-",
          "img_scale != 256: learnable Upsample(align_corners=True) + 3x3 conv on each side", "tile_size",
          lambda c: "unused (tile = UNet size)" if c["tile_size"] == _unet_field("sample_size")(c)
          else "bilinear resize (differs from the release)", "unused (tile = UNet size)",
          evidence=RELEASE + "noise2map/model.py L100-116 (img_scale != 256: Upsample(bilinear, align_corners=True) "
          "+ 3x3 conv on each side; None at 256), L138-148; configs/*.yaml `img_size: 256`",
          test="tests/test_released_model.py::test_noise2map_logits_equal_the_released_model_at_paper_size"),
    Point("Batch size", "between 10 and 20", "8 (xView2 SS 4, CD 2)", "training.datasets.<d>.<t>.batch_size",
          _per_task("batch_size"), "spacenet7 8/8; whu 8/8; xview2 4/2",
          evidence=RELEASE + "configs/*.yaml `batch_size` (8; xview2_sem L14: 4, xview2_cd L14: 2); train.py "
          "L249-260 (DataLoader, shuffle=True, no drop_last; validation in batches of the same size)",
          test="tests/test_release_rows_behaviour.py::"
               "test_paper_training_batches_of_every_task_are_the_released_dataloaders"),
    Point("Class weights (positive:background)", "WHU-SS 3:1", "whu_sem 10:1, whu_cd 1:1, xview2 3:1, spacenet7 5:1 / 3:1",
          "training.datasets.<d>.<t>.class_weights", _per_task("class_weights"),
          "spacenet7 5:1/3:1; whu 10:1/1:1; xview2 3:1/3:1",
          evidence=RELEASE + "train.py L126-136 (`weight=[no_change_weight, change_weight]`), L152-153, L170; "
          "configs/*.yaml `change_weight` / `no_change_weight` (spacenet7_sem L22-23, spacenet7_cd L22-23, whu_* "
          "L21-22, xview2_* L20-21)",
          test="tests/test_release_rows_behaviour.py::"
               "test_class_weighted_loss_of_every_paper_task_is_the_released_weighted_ce_loss"),
    Point("Epochs", "200", "200; whu_cd.yaml 500", "training.datasets.<d>.<t>.max_epochs", _per_task("max_epochs"),
          "spacenet7 200/200; whu 200/500; xview2 200/200",
          evidence=RELEASE + "configs/*.yaml `num_epochs` (200; whu_cd L15: 500); train.py L290, L293"),
    Point("SS noise", "Gaussian n ~ N(0, I)", "the image itself (noise = image)", "noise2map.ss_noise",
          _get("noise2map.ss_noise"), "image",
          evidence=RELEASE + "train.py L159-162 (`noise = image  # self as noise (SS)`), L167, L198-201; evaluate.py "
          "L58-61",
          test="tests/test_release_rows_behaviour.py::"
               "test_paper_noise2map_validation_and_test_logits_are_the_released_validate_and_evaluate"),
    Point("Noise scheduler", "DDIM, T = 1000", "DDIMScheduler() defaults", "noise2map.scheduler", _scheduler,
          "ddim, T=1000, linear 0.0001-0.02",
          evidence=RELEASE + "train.py L22, L279 (`scheduler = DDIMScheduler()`), evaluate.py L151; DDIMScheduler's "
          "defaults: T 1000, linear betas 0.0001-0.02",
          test="tests/test_release_rows_behaviour.py::"
               "test_paper_noise2map_validation_and_test_logits_are_the_released_validate_and_evaluate"),
    Point("Validation / test timestep", "X(T) at inference", "T // 2 in validation, T - 1 at test",
          "noise2map.val_timestep / test_timestep",
          lambda c: f"{c['noise2map']['val_timestep']}/{c['noise2map']['test_timestep']}", "500/999",
          evidence=RELEASE + "train.py L203-206 (`t = scheduler.config.num_train_timesteps // 2`), evaluate.py "
          "L50-51, L63 (`fixed_t = scheduler.config.num_train_timesteps - 1`)",
          test="tests/test_release_rows_behaviour.py::"
               "test_paper_noise2map_validation_and_test_logits_are_the_released_validate_and_evaluate"),
    Point("Optimiser", "Adam, lr 1e-4", "Adam, lr 1e-4", "training.optimizer / lr",
          lambda c: f"{c['training']['optimizer']} {c['training']['lr']:g}", "adam 0.0001",
          evidence=RELEASE + "train.py L280 (`torch.optim.Adam(model.parameters(), lr=t_cfg.get(\"lr\", 1e-4))`); "
          "configs/*.yaml `lr: 1e-4`, which yaml.safe_load reads as the string '1e-4': Adam raises TypeError unless "
          "lr is overridden with a dotted value (train.py L53-54, e.g. training.lr=0.0001)"),
]


def _preset_value(point: Point, config: dict) -> str:
    return _fmt(point.value(config)) if point.value else point.suite


def fidelity_settings(config: dict) -> dict:
    """What the table reads from a config (the rule's params: a preset edit rewrites it)."""
    return {str(n): _preset_value(p, config) for n, p in enumerate(POINTS, 1)}


def backed_by(point: Point) -> str:
    return f"behaviour test {point.test}" if point.test else "config comparison only"


def fidelity_table(config: dict, manifests: dict | None = None) -> pd.DataFrame:
    """One row per point; ``manifests`` ({prepared set: manifest}) adds what the user's data shows."""
    rows = []
    for number, point in enumerate(POINTS, 1):
        value = _preset_value(point, config)
        released = _fmt(point.released) if point.key else ""
        matches = bool(point.key) and (point.covers(value) if point.covers else value == released)
        rows.append({"point": number, "topic": point.topic, "paper_text": point.paper_text,
                     "released_code": point.released_code, "preset_value": value, "released_value": released,
                     "config_key": point.key or "(no switch)", "matches_release": matches,
                     "evidence": point.evidence, "inferred": point.inferred, "backed_by": backed_by(point),
                     "data_check": point.data_check(manifests or {}) if point.data_check else ""})
    return pd.DataFrame(rows)


def fidelity_markdown(table: pd.DataFrame, preset: str) -> str:
    matched = int(table["matches_release"].sum())
    tested = int(table["backed_by"].str.startswith("behaviour").sum())
    lines = [f"# Fidelity — preset `{preset}`", "",
             f"{matched} of {len(table)} points match the released code (alishibli97/noise2map, "
             "\"Initial release\"). A point without a config key is behaviour the suite cannot switch yet.",
             f"{tested} of {len(table)} points are backed by a behaviour test (the release's rule, written from its "
             "source, run beside ours); the others by a config comparison only. *Inferred*: the release's "
             "behaviour is inferred from the evidence, not read in its code.", "",
             "| # | Topic | Paper text | Released code | This preset | Config key | Matches release | Backed by |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        backed = "config comparison only" if not r.backed_by.startswith("behaviour") else (
            "test `" + r.backed_by.split("::")[-1] + "`")
        lines.append(f"| {r.point} | {r.topic}{' *(inferred)*' if r.inferred else ''} | {r.paper_text} | "
                     f"{r.released_code} | {r.preset_value} | `{r.config_key}` | "
                     f"{'yes' if r.matches_release else '**no**'} | {backed} |")
    lines += ["", "## Evidence", ""]
    lines += [f"{r.point}. **{r.topic}**: {r.evidence}" for r in table.itertuples() if r.evidence]
    checks = [r for r in table.itertuples() if r.data_check]
    if checks:
        lines += ["", "## What the prepared data shows", ""]
        lines += [f"{r.point}. **{r.topic}**: {r.data_check}" for r in checks]
    return "\n".join(lines) + "\n"


def read_manifests(paths) -> dict:
    """{prepared set: manifest} of the given prepared-store manifests (missing files skipped)."""
    from noise2map.io import read_json

    out = {}
    for path in map(Path, paths or ()):
        if path.is_file():
            manifest = read_json(path, "prepare the data set again")
            out[manifest["name"]] = manifest
    return out


def write_fidelity(config: dict, output: str | Path, manifests: dict | None = None) -> pd.DataFrame:
    table = fidelity_table(config, manifests)
    with atomic_path(output) as tmp:
        table.to_csv(tmp, index=False)
    write_text(Path(output).with_suffix(".md"), fidelity_markdown(table, config["preset"]))
    return table
