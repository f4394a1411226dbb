"""Seeds, bootstrap intervals, rank stability and degenerate flags, from per-tile counts."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import bootstrap as scipy_bootstrap

from noise2map.evaluation.intervals import _replicate_ranks, bootstrap, cell_intervals, class_mean_scores, places
from noise2map.evaluation.metrics import scores_from_counts
from noise2map.evaluation.rank import rank_models
from noise2map.reporting.tables import write_table1


def test_class_mean_scores_equal_the_metric_module():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 500, size=(50, 4))
    counts[0] = [0, 0, 0, 100]  # empty positive class: 0/0 → 0
    f1, iou = class_mean_scores(counts)
    for row, a, b in zip(counts, f1, iou):
        ref = scores_from_counts(*row)
        assert a == pytest.approx(ref["f1"]) and b == pytest.approx(ref["iou"])


def test_places_break_f1_ties_with_iou_and_share_equal_places():
    f1 = np.array([80.0, 90.0, 80.0, 80.0])
    iou = np.array([70.0, 85.0, 72.0, 70.0])
    assert places(f1, iou).tolist() == [3, 1, 2, 3]


def test_replicate_ranks_agree_with_the_paper_rank_rule():
    rng = np.random.default_rng(1)
    rows = [{"task": "cd", "model": f"m{i}", "dataset": d, "f1": float(rng.uniform(50, 90)),
             "iou": float(rng.uniform(40, 80))} for i in range(5) for d in ("A", "B", "C")]
    table = pd.DataFrame(rows)
    cells = {("cd", r["model"], r["dataset"]): (np.array([r["f1"]]), np.array([r["iou"]])) for r in rows}
    replicate = _replicate_ranks(cells, 1)
    expected = rank_models(table)
    for r in expected.itertuples():
        assert replicate[("cd", r.model)][0] == r.rank


def _runs(n_tiles=400, seeds=(0,), skill=(0.9, 0.6)):
    rng = np.random.default_rng(7)
    runs = {}
    for model, p in zip(("good", "weak"), skill):
        for s in seeds:
            pos = rng.integers(0, 60, n_tiles)
            tp = rng.binomial(pos, p)
            fp = rng.integers(0, 15, n_tiles)
            runs[("cd", model, "WHU", s)] = np.stack([tp, fp, pos - tp, 1024 - pos - fp], 1)
    return runs


def test_tile_bootstrap_interval_matches_scipy_percentile():
    runs = _runs()
    counts = runs[("cd", "good", "WHU", 0)]
    ours = np.percentile(bootstrap(runs, resamples=4000, seed=0)["cells"][("cd", "good", "WHU")][0], [2.5, 97.5])

    def f1(tp, fp, fn, tn, axis=-1):
        return class_mean_scores(np.stack([x.sum(axis) for x in (tp, fp, fn, tn)], -1))[0]

    ref = scipy_bootstrap(tuple(counts.T), f1, paired=True, vectorized=True, n_resamples=4000,
                          method="percentile", rng=np.random.default_rng(1)).confidence_interval
    assert ours[0] == pytest.approx(ref.low, abs=0.15) and ours[1] == pytest.approx(ref.high, abs=0.15)
    point = class_mean_scores(counts.sum(0))[0]
    assert ours[0] < point < ours[1]


def test_bootstrap_is_seeded_and_ranks_a_clear_winner_first():
    runs = _runs(seeds=(0, 1, 2))
    a, b = bootstrap(runs, 300, seed=5), bootstrap(runs, 300, seed=5)
    assert np.array_equal(a["cells"][("cd", "good", "WHU")][0], b["cells"][("cd", "good", "WHU")][0])
    assert (a["ranks"][("cd", "good")] == 1).all() and (a["ranks"][("cd", "weak")] == 2).all()


def test_cell_intervals_flag_degenerate_runs_and_paper_values_outside():
    table = pd.DataFrame([
        {"task": "cd", "model": "good", "dataset": "WHU", "seed": 0, "f1": 80.0, "iou": 70.0, "recall_pos": 60.0},
        {"task": "cd", "model": "good", "dataset": "WHU", "seed": 1, "f1": 82.0, "iou": 72.0, "recall_pos": 62.0},
        {"task": "cd", "model": "dead", "dataset": "WHU", "seed": 0, "f1": 49.0, "iou": 48.0, "recall_pos": 0.4},
    ])
    boot = {"cells": {("cd", "good", "WHU"): (np.linspace(79, 83, 101), None),
                      ("cd", "dead", "WHU"): (np.full(101, 49.0), None)}}
    paper = pd.DataFrame([{"task": "cd", "model": "good", "dataset": "WHU", "f1": 90.0, "recall": 85.0},
                          {"task": "cd", "model": "dead", "dataset": "WHU", "f1": 49.0, "recall": 50.0}])
    out = cell_intervals(table, boot, paper).set_index("model")
    assert out.loc["good", "f1_mean"] == 81.0 and out.loc["good", "f1_std"] == pytest.approx(np.std([80, 82], ddof=1))
    assert out.loc["good", "f1_ci_low"] == pytest.approx(79.1) and out.loc["good", "f1_ci_high"] == pytest.approx(82.9)
    assert not out.loc["good", "degenerate"] and out.loc["dead", "degenerate"]
    assert not out.loc["good", "paper_in_ci"] and out.loc["dead", "paper_in_ci"]
    assert out.loc["dead", "paper_degenerate"] and not out.loc["good", "paper_degenerate"]


def test_write_table1_writes_intervals_and_rank_stability_from_tile_counts(tmp_path):
    paths = []
    for (task, model, dataset, seed), counts in _runs(n_tiles=50, seeds=(0, 1)).items():
        run = tmp_path / model / f"seed{seed}"
        run.mkdir(parents=True)
        pd.DataFrame(counts, columns=["tp", "fp", "fn", "tn"]).assign(
            tile_id=[f"t{i:03d}" for i in range(len(counts))]).to_csv(run / "tile_counts.csv", index=False)
        total = counts.sum(0).tolist()
        row = {"task": task, "model": model, "model_key": model, "dataset": dataset, "seed": seed, "preset": "t",
               "params_m": 1.0, "paper_params_m": 1.0, "num_test_tiles": len(counts),
               **dict(zip(("tp", "fp", "fn", "tn"), total)), **scores_from_counts(*total)}
        (run / "metrics.json").write_text(json.dumps(row))
        paths.append(run / "metrics.json")
    write_table1(paths, tmp_path / "table1.csv", resamples=200)
    cells = pd.read_csv(tmp_path / "table1_intervals.csv")
    ranks = pd.read_csv(tmp_path / "rank_stability.csv")
    assert set(cells["n_seeds"]) == {2} and (cells["f1_ci_low"] <= cells["f1_mean"]).all()
    assert ranks.set_index("model").loc["good", "p_rank1"] == 1.0
    md = (tmp_path / "table1.md").read_text()
    assert "## Seeds, intervals and rank stability" in md and "200 bootstrap replicates" in md
