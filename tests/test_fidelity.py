"""The fidelity ledger: the paper preset re-runs the release on every switchable point; the
corrected preset departs from it exactly where it fixes a defect."""

import pandas as pd

from noise2map.config import deep_merge, load_config
from noise2map.reporting.fidelity import POINTS, fidelity_table, write_fidelity

PAPER, DEMO, CORRECTED = (f"workflow/config/{p}.yaml" for p in ("paper", "demo", "corrected"))


def _rows(config) -> pd.DataFrame:
    return fidelity_table(config).set_index("topic")


def test_paper_preset_matches_the_release_on_every_switch(monkeypatch):
    table = _rows(load_config(PAPER))
    switched = table[table["config_key"] != "(no switch)"]
    assert switched["matches_release"].all() and len(switched) == len(POINTS)
    # the suite fine-tunes its own pretraining (the mission) and, beside it, the released backbone
    assert table.loc["Fine-tuned backbone", "preset_value"] == (
        "pipeline (aid pretraining here) + a released aid-10k row in Table I")
    without_row = _rows(deep_merge(load_config(PAPER), {"pretrain": {"released_row": False},
                                                        "ablations": {"released_backbones": ["aid-10k"]}}))
    assert list(without_row.index[~without_row["matches_release"]]) == ["Fine-tuned backbone", "Table III backbones"]
    released = _rows(deep_merge(load_config(PAPER), {"pretrain": {"source": "released", "released_row": False}}))
    assert released.loc["Fine-tuned backbone", "preset_value"] == "released aid-10k"
    assert released["matches_release"].all()
    # what cannot be switched yet is listed, and never counted as matching
    from noise2map.reporting import fidelity

    monkeypatch.setattr(fidelity, "POINTS", [*POINTS, fidelity.Point("Unswitched", "-", "-", None, suite="ours")])
    unswitched = _rows(load_config(PAPER))
    unswitched = unswitched[unswitched["config_key"] == "(no switch)"]
    assert list(unswitched.index) == ["Unswitched"] and unswitched.loc["Unswitched", "preset_value"] == "ours"
    assert not unswitched["matches_release"].any()
    assert len(table) == len(POINTS) and table.index.is_unique


def test_corrected_preset_departs_exactly_where_it_fixes():
    paper, corrected = _rows(load_config(PAPER)), _rows(load_config(CORRECTED))
    changed = sorted(corrected.index[corrected["preset_value"] != paper["preset_value"]])
    assert changed == sorted(["SpaceNet7 evaluated split", "Checkpoint selection", "Validation loss",
                              "Gradient accumulation", "WHU-SS masks", "WHU-CD pairs", "SpaceNet7 building rasters",
                              "xView2 pairs", "xView2 masks", "WHU file order", "WHU label modes",
                              "Last batch of an epoch"])
    assert corrected.loc["SpaceNet7 evaluated split", "preset_value"] == "test"
    assert corrected.loc["Gradient accumulation", "preset_value"] == "sum x2"
    assert corrected.loc["Checkpoint selection", "preset_value"] == "val"
    assert not corrected.loc[changed, "matches_release"].any()


def test_demo_preset_differs_in_size_data_and_schedule_only():
    table = _rows(load_config(DEMO))
    switched = table[table["config_key"] != "(no switch)"]
    assert sorted(switched.index[~switched["matches_release"]]) == sorted(
        ["Data", "Model size", "Epochs", "Optimiser", "Table III scratch row", "Fine-tuned backbone",
         "Table III backbones", "Batch size", "Class weights (positive:background)"])
    assert table.loc["Model size", "preset_value"] == "demo"


def test_a_switch_read_from_the_config_flips_its_row():
    config = deep_merge(load_config(PAPER), {"training": {"accumulation": "sum", "precision": "bf16-mixed"},
                                             "noise2map": {"unet": {"attention_head_dim": 8}}})
    table = _rows(config)
    assert table.loc["Gradient accumulation", "preset_value"] == "sum x2"
    assert table.loc["UNet attention heads", "preset_value"] == "heads of 8 channels"
    assert not table.loc[["Gradient accumulation", "Precision", "UNet attention heads"], "matches_release"].any()


def test_fidelity_files_are_written(tmp_path):
    write_fidelity(load_config(PAPER), tmp_path / "fidelity.csv")
    csv = pd.read_csv(tmp_path / "fidelity.csv")
    assert list(csv.columns) == ["point", "topic", "paper_text", "released_code", "preset_value", "released_value",
                                 "config_key", "matches_release", "evidence", "inferred", "backed_by", "data_check"]
    md = (tmp_path / "fidelity.md").read_text()
    assert md.startswith("# Fidelity — preset `paper`")
    assert f"of {len(POINTS)} points match the released code" in md


def _test_functions(node: str) -> bool:
    """Whether ``tests/<file>.py::<name>`` is a test function of that file."""
    import ast
    from pathlib import Path

    path, name = node.split("::")
    tree = ast.parse((Path(__file__).resolve().parent.parent / path).read_text())
    return any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body)


def test_every_backing_test_exists_and_every_data_point_has_one():
    for point in POINTS:
        if point.test:
            assert _test_functions(point.test), f"{point.topic}: {point.test} is not a test function"
            assert point.evidence, f"{point.topic}: a behaviour test needs the evidence it was written from"
    data_points = ["SpaceNet7 building rasters", "SpaceNet7-SS months", "xView2 pairs", "xView2 masks"]
    by_topic = {p.topic: p for p in POINTS}
    assert all(by_topic[t].test for t in data_points)
    assert [p.topic for p in POINTS if p.inferred] == ["xView2 masks"]
    table = _rows(load_config(PAPER))
    assert table.loc["xView2 masks", "backed_by"].startswith("behaviour test tests/test_release_data_rules.py::")


def test_the_ledger_reports_what_the_prepared_data_shows(tmp_path):
    from noise2map.io import write_json
    from noise2map.reporting.fidelity import read_manifests

    release = {"train": ["00000125"], "test": []}
    xview2 = {"name": "xview2-ss", "release_check": {
        "release_missing_masks": release, "no_pre_label_building": release,
        "no_damaged_post_building": {"train": ["00000001"], "test": []},
        "pre_footprints_match_release": True, "post_damaged_match_release": False},
        "count_checks": {"pairs kept": {"found": 291, "expected": 291}}}
    sn7 = {"name": "spacenet7-ss", "label_raster": {"rule": "hafner", "labels_raster_files_read": 9,
                                                     "labels_raster_vs_rule": [{"file": "x", "iou": 0.97}],
                                                     "labels_raster_vs_rule_min_iou": 0.97},
           "count_checks": {"usable months": {"found": 1219, "expected": 1219}}}
    write_json(tmp_path / "x.json", xview2)
    write_json(tmp_path / "s.json", sn7)
    manifests = read_manifests([tmp_path / "x.json", tmp_path / "s.json", tmp_path / "absent.json"])
    table = write_fidelity(load_config(PAPER), tmp_path / "f.csv", manifests).set_index("topic")
    assert table.loc["xView2 masks", "data_check"].startswith("confirmed on this data")
    assert table.loc["xView2 pairs", "data_check"] == "pairs kept 291 (full data: 291)"
    assert table.loc["SpaceNet7 building rasters", "data_check"] == (
        "labels_raster/ read (9 files); against the rule, IoU >= 0.97")
    assert table.loc["SpaceNet7-SS months", "data_check"] == "usable months 1219 (full data: 1219)"
    xview2["release_check"]["pre_footprints_match_release"] = False
    text = write_fidelity(load_config(PAPER), tmp_path / "f.csv", {"xview2-ss": xview2}).set_index(
        "topic").loc["xView2 masks", "data_check"]
    assert text.startswith("not confirmed on this data") and "00000001" in text
    md = (tmp_path / "f.md").read_text()
    assert "## Evidence" in md and "## What the prepared data shows" in md and "*(inferred)*" in md
