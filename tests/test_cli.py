"""The command line: models listing, raw-data checks and markers, prepare."""

import io
import json
from contextlib import redirect_stdout

import pandas as pd

from noise2map.cli import main
from noise2map.config import load_config, run_settings


def run_cli(*argv):
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def test_models_csv_lists_paper_size_counts():
    code, out = run_cli("models", "--format", "csv")
    assert code == 0
    table = pd.read_csv(io.StringIO(out)).set_index("key")
    assert list(table.columns[:5]) == ["name", "task", "params_m", "paper_params_m", "reference_params_m"]
    assert table.loc["noise2map-cd", "params_m"] == 113.67
    assert table.loc["unetpp", ["name", "task", "paper_params_m"]].tolist() == ["UNet++", "ss", 49.0]
    assert table.loc["fc-siam-conc", "reference_params_m"] == 40.35


def test_acquire_missing_data_says_what_to_fetch_and_where(tmp_path, capsys):
    code = main(["acquire", "xview2", "--raw", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert str(tmp_path / "xview2") in err and "xview2.org" in err
    assert "train_images_labels_targets.tar.gz" in err


def test_synthesize_then_acquire_writes_markers_and_prepare(tmp_path):
    assert run_cli("synthesize", "whu-cd", "--raw", str(tmp_path), "--marker", str(tmp_path / "s.json"))[0] == 0
    assert json.loads((tmp_path / "s.json").read_text())["source"].startswith("synthetic")
    code, out = run_cli("acquire", "whu-cd", "--raw", str(tmp_path), "--marker", str(tmp_path / "a.json"))
    assert code == 0 and json.loads((tmp_path / "a.json").read_text())["files"] > 40


def test_run_settings_ignore_other_models_and_data_sets():
    paper = load_config()
    other = load_config()
    other["models"]["ss"] = ["unet"]
    other["training"]["datasets"]["whu"]["ss"]["batch_size"] = 99
    assert run_settings(paper, "cd", "whu", "fc-siam-conc") == run_settings(other, "cd", "whu", "fc-siam-conc")
    assert run_settings(paper, "ss", "whu", "unet") != run_settings(other, "ss", "whu", "unet")
    other["noise2map"]["ss_noise"] = "gaussian"
    assert run_settings(paper, "ss", "spacenet7", "unet") == run_settings(other, "ss", "spacenet7", "unet")
    assert run_settings(paper, "ss", "spacenet7", "noise2map-ss") != run_settings(other, "ss", "spacenet7", "noise2map-ss")
