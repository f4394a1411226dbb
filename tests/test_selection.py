"""Model selection without test leakage: the validation carve and selection_delta.csv."""

import json

import pandas as pd
import pytest

from noise2map.data.selection import carve_validation, scene_of
from noise2map.errors import DataFormatError
from noise2map.evaluation.metrics import scores_from_counts
from noise2map.reporting.tables import build_selection_delta, collect_metrics, write_selection_delta, write_table1

SN7 = "spacenet7/train/{aoi}/images_masked/global_monthly_2018_{m:02d}_mosaic_{aoi}.tif"


def test_scene_of_names_the_source_scene():
    pair = SN7.format(aoi="L15-A", m=1) + ";" + SN7.format(aoi="L15-A", m=2)
    assert scene_of(pair) == "spacenet7/train/L15-A"
    assert scene_of("whu-cd/A/whucd_00003.png;whu-cd/B/whucd_00003.png") == "whu-cd/A/whucd_00003.png"
    assert scene_of("xview2/train/images/santa-rosa-wildfire_00000001_pre_disaster.png") == \
        "xview2/train/images/santa-rosa-wildfire_00000001_pre_disaster.png"


def test_carve_holds_whole_scenes_at_least_ten_percent_and_no_test_scene():
    # 10 AOIs × 12 tiles; AOI 3 also has test tiles (it must never be drawn)
    train = [SN7.format(aoi=f"L15-{a}", m=1 + t % 12) for a in range(10) for t in range(12)]
    test = [SN7.format(aoi="L15-3", m=5), SN7.format(aoi="L15-99", m=1)]
    keep, held = carve_validation(train, test, seed=0)
    assert sorted(keep + held) == list(range(120)) and not set(keep) & set(held)
    held_scenes = {scene_of(train[i]) for i in held}
    assert "spacenet7/train/L15-3" not in held_scenes
    assert all(scene_of(train[i]) not in held_scenes for i in keep)  # whole scenes only
    assert len(held) == 12  # ceil(10 % of 120) = 12 = one AOI
    assert carve_validation(train, test, seed=0) == (keep, held)  # seeded
    others = {tuple(carve_validation(train, test, seed=s)[1]) for s in range(1, 8)}
    assert len(others) > 1


def test_carve_of_single_image_scenes_is_ten_percent():
    train = [f"whu-cd/A/whucd_{i:05d}.png;whu-cd/B/whucd_{i:05d}.png" for i in range(95)]
    keep, held = carve_validation(train, [], seed=3)
    assert len(held) == 10 and len(keep) == 85  # ceil(9.5)


def test_carve_needs_two_scenes():
    with pytest.raises(DataFormatError, match="1 training scene"):
        carve_validation([SN7.format(aoi="L15-A", m=1)] * 5, [], seed=0)


def _metrics(tmp_path, name, selection, selected_on, counts, model="UNet", dataset="WHU"):
    tp, fp, fn, tn = counts
    row = {"task": "ss", "model": model, "model_key": "unet", "dataset": dataset, "seed": 0, "preset": "t",
           "params_m": 1.0, "paper_params_m": 1.0, "num_test_tiles": 2, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
           "selection": selection, "selected_on": selected_on, **scores_from_counts(tp, fp, fn, tn)}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(row))
    return path


def test_selection_delta_pairs_runs_and_subtracts(tmp_path):
    paths = [_metrics(tmp_path, "a", "released", "test", (40, 10, 10, 40)),
             _metrics(tmp_path, "b", "val", "val-carve", (30, 10, 20, 40))]
    table = write_selection_delta(paths, tmp_path / "selection_delta.csv")
    row = table.iloc[0]
    released, val = scores_from_counts(40, 10, 10, 40), scores_from_counts(30, 10, 20, 40)
    assert row["f1_released"] == pytest.approx(released["f1"]) and row["f1_val"] == pytest.approx(val["f1"])
    assert row["delta_f1"] == pytest.approx(val["f1"] - released["f1"])
    assert row["delta_iou"] == pytest.approx(val["iou"] - released["iou"])
    assert row["released_selected_on"] == "test"
    assert list(pd.read_csv(tmp_path / "selection_delta.csv").columns) == [
        "task", "model", "dataset", "seed", "released_selected_on", "f1_released", "iou_released", "f1_val",
        "iou_val", "delta_f1", "delta_iou"]
    md = (tmp_path / "selection_delta.md").read_text()
    assert f"{row['delta_f1']:+.2f}" in md and "| SS | WHU | UNet | 0 | test |" in md


def test_selection_delta_needs_both_selections(tmp_path):
    only = [_metrics(tmp_path, "a", "released", "test", (40, 10, 10, 40))]
    with pytest.raises(DataFormatError, match="no runs with selection val"):
        build_selection_delta(collect_metrics(only))


def test_table1_notes_say_which_split_selected_the_checkpoints(tmp_path):
    write_table1([_metrics(tmp_path, "a", "released", "test", (40, 10, 10, 40))], tmp_path / "t.csv")
    md = (tmp_path / "t.md").read_text()
    assert "Checkpoints selected on (best validation loss) — WHU: test." in md and "leaks test" in md


def test_table1_says_which_split_scored_each_data_set(tmp_path):
    rows = []
    for name, dataset, scored in (("a", "SpaceNet7", "val"), ("b", "WHU", "test")):
        path = _metrics(tmp_path, name, "released", "val" if dataset == "SpaceNet7" else "test", (40, 10, 10, 40),
                        dataset=dataset)
        path.write_text(json.dumps({**json.loads(path.read_text()), "evaluated_on": scored}))
        rows.append(path)
    table = write_table1(rows, tmp_path / "t.csv")
    assert dict(zip(table["dataset"], table["evaluated_on"])) == {"SpaceNet7": "val", "WHU": "test"}
    md = (tmp_path / "t.md").read_text()
    assert "Scores computed on — SpaceNet7: val; WHU: test." in md
    assert "SpaceNet7, WHU: scored on the split that also selected the checkpoint" in md
