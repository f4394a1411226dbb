"""Tests written for the mutants `mutmut run` left alive in the scoring code (metrics, rank,
intervals; README "Mutation testing"): tie handling, boundaries, error messages, integer
inputs and the columns the tables read."""

import numpy as np
import pandas as pd
import pytest

from noise2map.errors import DataFormatError
from noise2map.evaluation.intervals import (_replicate_ranks, bootstrap, cell_intervals, class_mean_scores, load_tile_counts,
                                 rank_stability)
from noise2map.evaluation.rank import dataset_ranks, rank_models


def _table(rows):
    return pd.DataFrame(rows, columns=["task", "model", "dataset", "f1", "iou"])


def test_dataset_ranks_share_places_on_full_ties_and_skip_after_them():
    # per (task, data set): A and B tie on F1 and IoU, C ties A's F1 with a lower IoU
    table = _table([("ss", "A", "WHU", 90.0, 80.0), ("ss", "B", "WHU", 90.0, 80.0), ("ss", "C", "WHU", 90.0, 79.0),
                    ("ss", "D", "WHU", 95.0, 10.0), ("ss", "E", "WHU", 50.0, 50.0),
                    ("cd", "A", "WHU", 10.0, 10.0), ("cd", "B", "WHU", 20.0, 5.0)])
    ranks = dict(zip(zip(table.task, table.model), dataset_ranks(table)))
    assert ranks == {("ss", "D"): 1, ("ss", "A"): 2, ("ss", "B"): 2, ("ss", "C"): 4, ("ss", "E"): 5,
                     ("cd", "B"): 1, ("cd", "A"): 2}
    # a tie at the top, and a three-way tie after a leader
    top = _table([("ss", "A", "x", 1.0, 1.0), ("ss", "B", "x", 1.0, 1.0), ("ss", "C", "x", 0.5, 1.0)])
    assert dataset_ranks(top).tolist() == [1, 1, 3]
    three = _table([("ss", m, "x", 1.0 if m != "L" else 2.0, 1.0) for m in ("L", "P", "Q", "R")])
    assert dataset_ranks(three).tolist() == [1, 2, 2, 2]
    assert dataset_ranks(three).dtype == np.int64


def test_rank_models_averages_places_and_equal_means_share_the_better_place():
    table = _table([("ss", "A", "d1", 90.0, 1.0), ("ss", "B", "d1", 80.0, 1.0), ("ss", "C", "d1", 70.0, 1.0),
                    ("ss", "A", "d2", 70.0, 1.0), ("ss", "B", "d2", 80.0, 1.0), ("ss", "C", "d2", 90.0, 1.0),
                    ("ss", "D", "d1", 10.0, 1.0), ("ss", "D", "d2", 10.0, 1.0)])
    out = rank_models(table)
    assert out["model"].tolist() == ["A", "B", "C", "D"]  # stable: equal places keep the input order
    assert out["mean_rank"].tolist() == [2.0, 2.0, 2.0, 4.0] and out["rank"].tolist() == [1, 1, 1, 4]
    assert out["rank"].dtype == np.int64 and list(out.index) == [0, 1, 2, 3]
    two = rank_models(pd.concat([table, _table([("cd", "Z", "d1", 1.0, 1.0), ("cd", "Y", "d1", 2.0, 1.0)])]))
    assert two[two.task == "cd"][["model", "rank"]].values.tolist() == [["Y", 1], ["Z", 2]]
    assert two["task"].tolist()[:4] == ["cd", "cd", "ss", "ss"]  # sorted by task, then rank


def test_rank_errors_name_the_missing_column_and_the_repeated_row():
    with pytest.raises(DataFormatError, match=r"rank needs columns task, model, dataset, f1, iou; missing: iou$"):
        dataset_ranks(pd.DataFrame({"task": ["ss"], "model": ["A"], "dataset": ["x"], "f1": [1.0]}))
    with pytest.raises(DataFormatError, match=r"missing: f1, iou$"):
        rank_models(pd.DataFrame({"task": ["ss"], "model": ["A"], "dataset": ["x"]}))
    twice = _table([("ss", "A", "WHU", 1.0, 1.0), ("ss", "B", "WHU", 1.0, 1.0), ("ss", "B", "WHU", 2.0, 1.0)])
    with pytest.raises(DataFormatError, match=r"^rank needs one row per \(task, model, dataset\); ss/B/WHU appears "
                                              r"more than once \(average the seeds first\)$"):
        rank_models(twice)


def test_class_mean_scores_of_integer_counts_are_exact_and_empty_classes_score_zero():
    counts = np.array([[1, 1, 1, 0], [0, 0, 0, 7], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=np.int64)
    f1, iou = class_mean_scores(counts)
    # tp=fp=fn=1, tn=0: positive F1 2/4, background F1 0/2 → 25; IoU 1/3 and 0 → 16.67
    assert f1.tolist() == pytest.approx([25.0, 50.0, 50.0, 0.0]) and iou.tolist() == pytest.approx([50 / 3, 50, 50, 0])
    assert f1.dtype == np.float64
    # one positive pixel found (den 1 > 0 counts; a threshold of 1 would drop it)
    assert class_mean_scores(np.array([1, 0, 0, 1]))[0] == pytest.approx(100.0)


def test_bootstrap_refuses_runs_that_scored_different_tiles():
    a = np.array([[1, 0, 0, 9]] * 5)
    with pytest.raises(DataFormatError, match=r"^runs of cd/WHU scored different numbers of test tiles$"):
        bootstrap({("cd", "M", "WHU", 0): a, ("cd", "M", "WHU", 1): a[:4]}, resamples=5)
    with pytest.raises(DataFormatError, match="scored different numbers of test tiles"):
        bootstrap({("cd", "M", "WHU", 0): a, ("cd", "N", "WHU", 0): a[:4]}, resamples=5)
    bootstrap({("cd", "M", "WHU", 0): a, ("cd", "N", "xView2", 0): a[:4]}, resamples=5)  # other data set: fine


def test_tile_counts_missing_names_the_file(tmp_path):
    metrics = pd.DataFrame([{"task": "cd", "model": "M", "dataset": "WHU", "seed": 0}])
    with pytest.raises(DataFormatError, match=rf"^{tmp_path / 'run' / 'tile_counts.csv'} does not exist: the "
                                              r"intervals need every run's per-tile counts$"):
        load_tile_counts(metrics, [tmp_path / "run"])


def test_replicate_ranks_leave_models_absent_from_a_data_set_out_of_its_average():
    cells = {("ss", "A", "d1"): (np.array([90.0]), np.array([1.0])), ("ss", "B", "d1"): (np.array([80.0]), np.array([1.0])),
             ("ss", "A", "d2"): (np.array([70.0]), np.array([1.0]))}  # B has no d2 run
    ranks = _replicate_ranks(cells, 1)
    assert ranks[("ss", "A")].tolist() == [1] and ranks[("ss", "B")].tolist() == [2]


def test_cell_intervals_columns_boundaries_and_paper_lookup():
    table = pd.DataFrame([
        {"task": "cd", "model": "one", "dataset": "WHU", "seed": 0, "f1": 70.0, "iou": 60.0, "recall_pos": 1.0},
        {"task": "cd", "model": "one (variant)", "paper_model": "one", "dataset": "WHU", "seed": 0, "f1": 71.0,
         "iou": 61.0, "recall_pos": 0.99},
    ])
    table["paper_model"] = table["paper_model"].fillna(table["model"])
    boot = {"cells": {("cd", "one", "WHU"): (np.arange(201.0), None),
                      ("cd", "one (variant)", "WHU"): (np.arange(201.0), None)}}
    paper = pd.DataFrame([{"task": "cd", "model": "one", "dataset": "WHU", "f1": 50.0, "recall": 50.5}])
    out = cell_intervals(table, boot, paper).set_index("model")
    assert list(out.columns[:6]) == ["task", "dataset", "n_seeds", "f1_mean", "f1_std", "iou_mean"]
    assert out.loc["one", "iou_mean"] == 60.0 and out.loc["one", "f1_std"] == 0.0 and out.loc["one", "iou_std"] == 0.0
    assert out.loc["one", "f1_ci_low"] == pytest.approx(5.0) and out.loc["one", "f1_ci_high"] == pytest.approx(195.0)
    assert not out.loc["one", "degenerate"] and out.loc["one (variant)", "degenerate"]  # < 1 %, not ≤
    assert out["paper_f1"].tolist() == [50.0, 50.0]  # the variant reads its model's paper row
    assert out["paper_degenerate"].tolist() == [True, True]  # class-mean recall 50.5 ≤ 50.5
    # a paper recall just above 50.5 is not degenerate; rows keep the table's order
    above = cell_intervals(table, boot, paper.assign(recall=51.0))
    assert above["model"].tolist() == ["one", "one (variant)"] and not above["paper_degenerate"].any()
    reordered = pd.concat([table.iloc[[1]], table.iloc[[0]]])
    assert cell_intervals(reordered, boot)["model"].tolist() == ["one (variant)", "one"]
    unknown = cell_intervals(table.assign(model=["x", "y"], paper_model=["x", "y"]),
                             {"cells": {("cd", m, "WHU"): (np.arange(3.0), None) for m in "xy"}}, paper)
    assert unknown["paper_f1"].isna().all() and unknown["paper_recall"].isna().all()
    assert not unknown["paper_in_ci"].any()


def test_rank_stability_columns_percentiles_and_kendall_tau():
    boot = {"ranks": {("ss", "A"): np.array([1] * 190 + [2] * 10), ("ss", "B"): np.array([2] * 190 + [1] * 10),
                      ("cd", "Z"): np.ones(200, dtype=int)}}
    ranks = pd.DataFrame({"task": ["ss", "ss", "cd"], "model": ["A", "B", "Z"], "rank": [1, 2, 1]})
    out = rank_stability(ranks, boot).set_index("model")
    assert list(out.columns) == ["task", "rank", "median_rank", "rank_ci_low", "rank_ci_high", "p_rank1",
                                 "kendall_tau_task"]
    assert out.loc["A", "rank_ci_low"] == 1.0 and out.loc["A", "rank_ci_high"] == 2.0  # 2.5 and 97.5 percentiles
    assert out.loc["A", "p_rank1"] == 0.95 and out.loc["B", "median_rank"] == 2.0
    # two models: τ over the replicates = (190 · 1 + 10 · (−1)) / 200 = 0.9; one model: none
    assert out.loc["A", "kendall_tau_task"] == pytest.approx(0.9)
    assert np.isnan(out.loc["Z", "kendall_tau_task"])
    three = {("ss", m): np.array(r) for m, r in (("A", [1, 1, 2]), ("B", [2, 3, 1]), ("C", [3, 2, 3]))}
    tau = rank_stability(pd.DataFrame({"task": ["ss"] * 3, "model": ["A", "B", "C"], "rank": [1, 2, 3]}),
                         {"ranks": three})["kendall_tau_task"].iloc[0]
    assert tau == pytest.approx(np.mean([1.0, 1 / 3, 1 / 3]))
    p = np.percentile(np.arange(1, 101), [2.5, 97.5])
    wide = rank_stability(pd.DataFrame({"task": ["ss"], "model": ["A"], "rank": [1]}),
                          {"ranks": {("ss", "A"): np.arange(1, 101)}})
    assert wide[["rank_ci_low", "rank_ci_high"]].values.tolist() == [list(p)]
