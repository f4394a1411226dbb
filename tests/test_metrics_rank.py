"""Metrics on hand-made confusion matrices and against sklearn; the paper's rank column."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

from noise2map.cli import main
from noise2map.evaluation.metrics import scores_from_counts, tile_counts
from noise2map.evaluation.rank import rank_models

PAPER = Path(__file__).resolve().parent.parent / "results" / "paper" / "paper_table1.csv"


def test_scores_of_a_hand_made_matrix():
    # positive: tp 30, fp 10, fn 20; background: tp 40, fp 20, fn 10
    s = scores_from_counts(tp=30, fp=10, fn=20, tn=40)
    assert s["precision_pos"] == pytest.approx(75.0)
    assert s["recall_pos"] == pytest.approx(60.0)
    assert s["f1_pos"] == pytest.approx(100 * 60 / 90)
    assert s["iou_pos"] == pytest.approx(50.0)
    assert s["precision_bg"] == pytest.approx(100 * 40 / 60)
    assert s["recall_bg"] == pytest.approx(80.0)
    assert s["precision"] == pytest.approx((75.0 + 100 * 40 / 60) / 2)
    assert s["iou"] == pytest.approx((50.0 + 100 * 40 / 70) / 2)


def test_zero_denominators_give_zero():
    s = scores_from_counts(tp=0, fp=0, fn=0, tn=100)
    assert s["precision_pos"] == s["recall_pos"] == s["f1_pos"] == s["iou_pos"] == 0.0
    assert s["f1_bg"] == 100.0 and s["f1"] == 50.0


@pytest.mark.parametrize("case", ["random", "all_background", "empty_positive"])
def test_against_sklearn(case):
    rng = np.random.default_rng(0)
    target = rng.integers(0, 2, size=(6, 16, 16))
    preds = rng.integers(0, 2, size=(6, 16, 16))
    if case == "all_background":
        preds[:] = 0
    if case == "empty_positive":
        target[:] = 0
    counts = tile_counts(torch.from_numpy(preds), torch.from_numpy(target)).sum(0).tolist()
    ours = scores_from_counts(*counts)
    y, p = target.ravel(), preds.ravel()
    for name, fn in [("precision", precision_score), ("recall", recall_score), ("f1", f1_score),
                     ("iou", jaccard_score)]:
        per_class = 100 * fn(y, p, average=None, labels=[0, 1], zero_division=0)
        assert ours[f"{name}_bg"] == pytest.approx(per_class[0])
        assert ours[f"{name}_pos"] == pytest.approx(per_class[1])
        assert ours[name] == pytest.approx(per_class.mean())


def test_tile_counts_are_per_tile_and_ordered_tp_fp_fn_tn():
    target = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 1]]])
    preds = torch.tensor([[[1, 0], [1, 0]], [[0, 0], [0, 0]]])
    assert tile_counts(preds, target).tolist() == [[1, 1, 1, 1], [0, 0, 1, 3]]
    logits = torch.stack([1 - preds, preds], 1).float()
    assert torch.equal(tile_counts(logits, target), tile_counts(preds, target))
    assert tile_counts(preds[:1], target[:1]).tolist() == [[1, 1, 1, 1]]  # a batch of one tile


def test_whole_split_counts_equal_torchmetrics_confusion_matrix():
    from torchmetrics.functional.classification import binary_confusion_matrix

    g = torch.Generator().manual_seed(3)
    preds, target = torch.randint(0, 2, (5, 9, 9), generator=g), torch.randint(0, 2, (5, 9, 9), generator=g)
    tp, fp, fn, tn = tile_counts(preds, target).sum(0).tolist()
    (tn_, fp_), (fn_, tp_) = binary_confusion_matrix(preds, target).tolist()  # rows: target
    assert (tp, fp, fn, tn) == (tp_, fp_, fn_, tn_)


def test_rank_reproduces_the_paper_rank_column():
    paper = pd.read_csv(PAPER)
    ours = rank_models(paper).merge(paper.groupby(["task", "model"])["rank"].first().rename("paper").reset_index())
    assert len(ours) == 16
    assert (ours["rank"] == ours["paper"]).all()
    assert ours.set_index("model").loc["UNet++", "mean_rank"] == pytest.approx(8 / 3)


def test_rank_iou_breaks_f1_ties_and_equal_means_share_places():
    table = pd.DataFrame({
        "task": ["cd"] * 6, "dataset": ["A"] * 3 + ["B"] * 3, "model": ["x", "y", "z"] * 2,
        "f1": [50, 50, 40, 60, 70, 80], "iou": [40, 45, 30, 50, 50, 50]})
    ranks = rank_models(table).set_index("model")
    # A: y 1 (IoU), x 2, z 3; B: z 1, y 2, x 3 → means x 2.5, y 1.5, z 2
    assert ranks["mean_rank"].to_dict() == {"y": 1.5, "z": 2.0, "x": 2.5}
    assert ranks["rank"].to_dict() == {"y": 1, "z": 2, "x": 3}


def test_rank_cli_writes_the_paper_ranks(tmp_path):
    out = tmp_path / "rank.csv"
    assert main(["rank", str(PAPER), "--output", str(out)]) == 0
    ranks = pd.read_csv(out)
    assert list(ranks.columns) == ["task", "model", "mean_rank", "rank"]
    assert ranks.set_index("model").loc["Noise2Map-SS", "rank"] == 1
    assert ranks.set_index("model").loc["ELGC-Net", "rank"] == 8


def test_learned_against_the_all_positive_predictor():
    from noise2map.evaluation.metrics import all_positive_f1, learned

    # 100 pixels, 20 positive: all-positive F1 = 2·0.2 / 1.2 = 33.33 %
    assert all_positive_f1(20, 80, 0, 0) == pytest.approx(100 / 3)
    assert all_positive_f1(0, 0, 20, 80) == pytest.approx(100 / 3)  # the same for any predictor on that split
    assert not learned(20, 80, 0, 0)           # all positive: F1 33.3, not above itself
    assert not learned(0, 0, 20, 80)           # all background: recall 0
    assert not learned(1, 0, 19, 80)           # recall 5 %, F1 9.5 < 33.3
    assert learned(10, 5, 10, 75)              # recall 50 %, F1 57.1
    assert not learned(10, 60, 10, 20)         # recall 50 %, F1 22.2 < 33.3
    assert learned(1, 0, 19, 9980)             # rare positives: all-positive F1 0.4, recall exactly 5 %
    assert not learned(0, 0, 0, 100)           # nothing to find: recall 0
