"""Figures 4–6: grid and curve plots from arrays and tables, then from tiny trained runs."""

import json

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from noise2map.reporting import figures
from noise2map.errors import ConfigError

DEMO = "workflow/config/demo.yaml"


def _panels(rng):
    def image():
        return rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)

    def mask():
        return rng.integers(0, 2, (8, 8)).astype(np.uint8)

    ss = {"title": "(a) SS", "columns": ["Image", "A", "Ground Truth"],
          "rows": [[image(), mask(), mask()] for _ in range(2)], "row_labels": ["t1", "t2"]}
    cd = {"title": "(b) CD", "columns": ["Pre-Event", "Post-Event", "A", "Ground Truth"],
          "rows": [[image(), image(), mask(), mask()]]}
    return [ss, cd]


def _expected_pixels(columns: int, rows: int, sections: int) -> tuple[int, int]:
    width = figures.CELL_INCHES * columns + 0.4
    height = figures.CELL_INCHES * rows + 0.5 * sections
    return round(height * figures.DPI), round(width * figures.DPI)


def _assert_written(paths, out_base):
    assert [p.name for p in paths] == [f"{out_base.name}.png", f"{out_base.name}.pdf"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert paths[1].read_bytes().startswith(b"%PDF")
    assert not list(out_base.parent.glob(".*.tmp"))  # atomic: no temp file left behind
    return mpimg.imread(paths[0])


# Plotting from arrays and tables ---------------------------------------------------------------

def test_grid_has_one_axes_per_cell_with_column_titles_and_the_input_arrays():
    panels = _panels(np.random.default_rng(0))
    fig = figures.grid_figure(panels)
    try:
        assert len(fig.subfigs) == 2
        for sub, panel in zip(fig.subfigs, panels):
            ncols = len(panel["columns"])
            assert len(sub.axes) == len(panel["rows"]) * ncols  # the narrower section drops its spare cells
            assert [ax.get_title() for ax in sub.axes[:ncols]] == panel["columns"]
            assert all(ax.get_title() == "" for ax in sub.axes[ncols:])
            assert sub._suptitle.get_text() == panel["title"]
            for ax, array in zip(sub.axes, [a for row in panel["rows"] for a in row]):
                (im,) = ax.get_images()
                np.testing.assert_array_equal(np.asarray(im.get_array()), array)
                assert im.get_interpolation() == "nearest"
                if array.ndim == 2:  # masks: 0 black, 1 white
                    assert im.get_cmap().name == "gray" and im.get_clim() == (0, 1)
        ss_axes = fig.subfigs[0].axes
        assert [ss_axes[0].get_ylabel(), ss_axes[3].get_ylabel()] == ["t1", "t2"]
    finally:
        plt.close(fig)


def test_grid_writes_png_and_pdf_of_the_grid_size(tmp_path):
    out = tmp_path / "figs" / "fig4"
    png = _assert_written(figures.plot_qualitative_grid(_panels(np.random.default_rng(1)), out), out)
    # 4 columns (the widest section) × 3 rows in 2 sections.
    assert png.shape[:2] == _expected_pixels(4, 3, 2)
    out5 = tmp_path / "figs" / "fig5.v1"  # a dot in the base name is kept
    assert figures.plot_timestep_progression(_panels(np.random.default_rng(1))[1:], out5)[0].name == "fig5.v1.png"


def test_grid_rejects_a_row_that_does_not_match_its_columns():
    panels = _panels(np.random.default_rng(2))
    panels[1]["rows"][0].pop()
    with pytest.raises(ValueError, match=r"\(b\) CD.*row 0 has 3 arrays for 4 columns"):
        figures.grid_figure(panels)
    panels = _panels(np.random.default_rng(2))
    panels[0]["rows"][1][1] = np.zeros((8, 8, 4))
    with pytest.raises(ValueError, match="column 'A'"):
        figures.grid_figure(panels)


F1_TABLE = pd.DataFrame({
    "timestep": [0, 500, 999] * 2,
    "f1_positive": [60.0, 70.0, 80.0, 62.0, 74.0, 86.0],
    "f1_mean": [75.0, 80.0, 85.0, 77.0, 84.0, 89.0],
    "seed": [0, 0, 0, 1, 1, 1],
})


def _lines(fig):
    (ax,) = fig.axes
    return ax, ax.lines[0], ax.lines[1]


def test_f1_curve_is_the_seed_mean_with_a_std_band():
    fig = figures.f1_figure(F1_TABLE.sample(frac=1, random_state=0), "change")  # row order does not matter
    try:
        ax, pos, mean = _lines(fig)
        np.testing.assert_array_equal(pos.get_xdata(), [0, 500, 999])
        np.testing.assert_allclose(pos.get_ydata(), [61.0, 72.0, 83.0])
        np.testing.assert_allclose(mean.get_ydata(), [76.0, 82.0, 87.0])
        assert [pos.get_label(), mean.get_label()] == ["F1 (change class)", "Mean F1 (both classes)"]
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(bands) == 2
        # The band of the positive class spans mean ± sample std (ddof 1): at t=999, 83 ± 4.243.
        ys = bands[0].get_paths()[0].vertices[:, 1]
        std = np.std([80.0, 86.0], ddof=1)
        assert ys.min() == pytest.approx(61.0 - np.std([60.0, 62.0], ddof=1))
        assert ys.max() == pytest.approx(83.0 + std)
        assert ax.get_xlabel() == "Timestep t" and ax.get_ylabel() == "F1 score (%)"
        assert ax.get_xlim() == (0.0, 999.0)
        assert sorted(t.get_text() for t in ax.texts) == ["61.0", "76.0", "83.0", "87.0"]
    finally:
        plt.close(fig)


def test_f1_curve_of_one_seed_has_no_band_and_keeps_fractions(tmp_path):
    one = F1_TABLE[F1_TABLE.seed == 0].assign(f1_positive=lambda d: d.f1_positive / 100,
                                              f1_mean=lambda d: d.f1_mean / 100)
    fig = figures.f1_figure(one.drop(columns="seed"), "building")
    try:
        ax, pos, mean = _lines(fig)
        np.testing.assert_allclose(pos.get_ydata(), [0.6, 0.7, 0.8])
        np.testing.assert_allclose(mean.get_ydata(), [0.75, 0.80, 0.85])
        assert pos.get_label() == "F1 (building class)" and ax.get_ylabel() == "F1 score"
        assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
    finally:
        plt.close(fig)
    out = tmp_path / "fig6"
    png = _assert_written(figures.plot_f1_vs_timestep(F1_TABLE, out), out)
    assert png.shape[:2] == (round(3.6 * figures.DPI), round(5.5 * figures.DPI))
    with pytest.raises(ValueError, match="f1_mean"):
        figures.f1_figure(F1_TABLE.drop(columns="f1_mean"))


def test_default_sweep_timesteps():
    assert figures.default_sweep_timesteps(1000) == [0, 10, 50, *range(100, 1000, 100), 999]
    assert figures.default_sweep_timesteps(60) == [0, 10, 50, 59]


# From trained runs ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    """One epoch of Noise2Map and one baseline per task on the synthetic WHU stores."""
    from noise2map.config import load_config, prepared_dir, run_dir
    from noise2map.data import generate, prepare
    from noise2map.training.run import train_run

    root = tmp_path_factory.mktemp("figures")
    config = load_config(DEMO)
    config.update(data_dir=str(root / "data"), results_dir=str(root / "results"), datasets=["whu"])
    config["training"]["max_epochs"] = 1
    raw = root / "data" / "raw"
    out = {}
    for task, raw_name, keys in (("cd", "whu-cd", ("noise2map-cd", "fc-siam-conc")),
                                 ("ss", "whu-ss", ("noise2map-ss", "unet"))):
        config["training"]["datasets"]["whu"][task]["max_epochs"] = 1
        generate(raw_name.replace("-ss", ""), raw, seed=0)
        prepare(raw_name, raw, prepared_dir(config, "whu", task), config["tile_size"])
        for key in keys:
            out[key] = run_dir(config, task, "whu", key, 0)
            train_run(config, task, "whu", key, 0, out[key])
    out["config"] = config
    return out


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


def _store(runs, task, name):
    from noise2map.config import prepared_dir

    return np.load(prepared_dir(runs["config"], "whu", task) / "test" / f"{name}.npy")


def test_sweep_at_the_test_timestep_reproduces_the_runs_metrics(runs):
    run = runs["noise2map-cd"]
    metrics = _metrics(run)
    table = figures.timestep_sweep(run, [999, 0, 500])
    assert list(table["timestep"]) == [999, 0, 500]
    at_test = table.iloc[0]
    assert {c: int(at_test[c]) for c in ("tp", "fp", "fn", "tn")} == {c: metrics[c] for c in ("tp", "fp", "fn", "tn")}
    assert at_test["f1_mean"] == pytest.approx(metrics["f1"], abs=1e-6)
    assert at_test["f1_positive"] == pytest.approx(metrics["f1_pos"], abs=1e-6)
    for c in ("precision", "recall", "iou"):
        assert at_test[c] == pytest.approx(metrics[c], abs=1e-6)
    assert set(table["seed"]) == {0}
    # Every timestep scores every pixel of the split once.
    pixels = _store(runs, "cd", "labels").size
    assert (table[["tp", "fp", "fn", "tn"]].sum(1) == pixels).all()


def test_predict_tiles_picks_the_most_positive_tiles_and_matches_the_tile_counts(runs):
    run = runs["noise2map-cd"]
    from noise2map.config import prepared_dir

    labels = _store(runs, "cd", "labels")
    tiles = pd.read_csv(prepared_dir(runs["config"], "whu", "cd") / "test" / "tiles.csv", dtype=str)
    positives = labels.reshape(len(labels), -1).astype(np.int64).sum(1)
    expected = sorted(range(len(labels)), key=lambda i: (-positives[i], tiles.tile_id[i]))[:2]
    out = figures.predict_tiles(run, n=2)
    assert out["tile_ids"] == [tiles.tile_id[i] for i in expected]
    np.testing.assert_array_equal(out["truth"], labels[expected])
    np.testing.assert_array_equal(out["inputs"][:, 0], _store(runs, "cd", "pre")[expected])
    np.testing.assert_array_equal(out["inputs"][:, 1], _store(runs, "cd", "post")[expected])
    assert out["timesteps"] == [999] and out["predictions"].shape == (1, 2, 32, 32)
    # The default prediction is the evaluated one: its confusion counts are tile_counts.csv's.
    counts = pd.read_csv(run / "tile_counts.csv").set_index("tile_id")
    for k, tile in enumerate(out["tile_ids"]):
        pred, truth = out["predictions"][0, k].astype(bool), out["truth"][k].astype(bool)
        got = [(pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum(), (~pred & ~truth).sum()]
        assert got == counts.loc[tile, ["tp", "fp", "fn", "tn"]].tolist()
    several = figures.predict_tiles(run, tile_ids=out["tile_ids"][::-1], timesteps=[0, 999])
    assert several["tile_ids"] == out["tile_ids"][::-1] and several["predictions"].shape == (2, 2, 32, 32)
    np.testing.assert_array_equal(several["predictions"][1], out["predictions"][0, ::-1])


def test_unknown_tiles_and_timesteps_on_a_baseline_are_named(runs):
    with pytest.raises(ConfigError, match=r"tile 'no-such-tile'.*noise2map-cd"):
        figures.predict_tiles(runs["noise2map-cd"], tile_ids=["no-such-tile"])
    with pytest.raises(ConfigError, match=r"fc-siam-conc.*not timestep-conditioned"):
        figures.figure5([runs["fc-siam-conc"]], runs["config"]["results_dir"] + "/fig5")
    with pytest.raises(ConfigError, match=r"outside \[0, 1000\)"):
        figures.predict_tiles(runs["noise2map-cd"], timesteps=[1000])


def test_figure4_shows_every_model_on_the_same_tiles(runs, tmp_path, monkeypatch):
    seen = []
    plot = figures.plot_qualitative_grid
    monkeypatch.setattr(figures, "plot_qualitative_grid", lambda panels, out: seen.append(panels) or plot(panels, out))
    order = ["noise2map-cd", "fc-siam-conc", "unet", "noise2map-ss"]
    out = tmp_path / "fig4"
    png = _assert_written(figures.figure4([runs[k] for k in order], out, n=2), out)
    (panels,) = seen
    names = {k: _metrics(runs[k])["model"] for k in order}
    assert [p["columns"] for p in panels] == [  # SS first as in the paper, models in the given order
        ["Image", names["unet"], names["noise2map-ss"], "Ground Truth"],
        ["Pre-Event", "Post-Event", names["noise2map-cd"], names["fc-siam-conc"], "Ground Truth"]]
    assert [len(p["rows"]) for p in panels] == [2, 2]
    assert png.shape[:2] == _expected_pixels(5, 4, 2)
    cd = figures.predict_tiles(runs["fc-siam-conc"], n=2)
    assert panels[1]["row_labels"] == cd["tile_ids"]
    for k in range(2):
        np.testing.assert_array_equal(panels[1]["rows"][k][3], cd["predictions"][0, k])
        np.testing.assert_array_equal(panels[1]["rows"][k][4], cd["truth"][k])


def test_figure5_and_figure6_write_their_files(runs, tmp_path, monkeypatch):
    seen = []
    plot = figures.plot_timestep_progression
    monkeypatch.setattr(figures, "plot_timestep_progression", lambda panels, out: seen.append(panels) or plot(panels, out))
    out5 = tmp_path / "fig5"
    png = _assert_written(figures.figure5([runs["noise2map-cd"], runs["noise2map-ss"]], out5), out5)
    (panels,) = seen
    assert [p["columns"] for p in panels] == [
        ["Original", "t=999", "t=500", "t=100", "t=10", "t=0", "GT"],
        ["Pre-Event", "Post-Event", "t=999", "t=500", "t=100", "t=10", "t=0", "GT"]]
    assert png.shape[:2] == _expected_pixels(8, 2, 2)
    with pytest.raises(ConfigError, match="one Noise2Map run per task"):
        figures.figure5([runs["noise2map-cd"], runs["noise2map-cd"]], out5)

    out6, csv = tmp_path / "fig6", tmp_path / "sweep.csv"
    paths = figures.figure6([runs["noise2map-cd"]], out6, timesteps=[0, 500, 999], csv_path=csv)
    assert paths[2] == csv
    _assert_written(paths[:2], out6)
    table = pd.read_csv(csv)
    pd.testing.assert_frame_equal(table, figures.timestep_sweep(runs["noise2map-cd"], [0, 500, 999]),
                                  check_dtype=False)
    with pytest.raises(ConfigError, match="one model"):
        figures.figure6([runs["noise2map-cd"], runs["noise2map-ss"]], out6)
