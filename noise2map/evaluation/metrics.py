"""Precision / recall / F1 / IoU from confusion counts (paper Table I convention).

Everything is derived from the binary confusion counts (tp, fp, fn, tn) of the positive
class (building or change), summed over the whole test split: the background class's counts
are the same four numbers swapped (tp_bg = tn, fp_bg = fn, fn_bg = fp). Table I reports the
**mean over the two classes** (released evaluate.py: sklearn per-class scores, then mean);
the CD literature reports the positive class. Both are stored. A score whose denominator is
0 is 0 (sklearn's ``zero_division=0``).
"""

from __future__ import annotations

import torch

METRICS = ("precision", "recall", "f1", "iou")
COUNTS = ("tp", "fp", "fn", "tn")


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def class_scores(tp: float, fp: float, fn: float) -> dict[str, float]:
    """Precision, recall, F1 and IoU of one class, as fractions in [0, 1]."""
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
    }


def scores_from_counts(tp: float, fp: float, fn: float, tn: float) -> dict[str, float]:
    """All reported scores from the positive class's whole-split counts, in percent.

    Returns ``precision, recall, f1, iou`` (class mean, the paper's Table I), the same with
    suffix ``_pos`` (positive class) and ``_bg`` (background).
    """
    pos = class_scores(tp, fp, fn)
    bg = class_scores(tn, fn, fp)
    out = {m: 100 * (pos[m] + bg[m]) / 2 for m in METRICS}
    out.update({f"{m}_pos": 100 * pos[m] for m in METRICS})
    out.update({f"{m}_bg": 100 * bg[m] for m in METRICS})
    return out


LEARNED_RECALL_POS = 5.0  # percent of the positive pixels found


def all_positive_f1(tp: float, fp: float, fn: float, tn: float) -> float:
    """F1 (percent) of the positive class for the predictor that says "positive" everywhere:
    precision = the positive fraction p, recall = 1, so F1 = 2p / (1 + p)."""
    p = _ratio(tp + fn, tp + fp + fn + tn)
    return 100 * _ratio(2 * p, 1 + p)


def learned(tp: float, fp: float, fn: float, tn: float) -> bool:
    """Not degenerate: finds at least 5 % of the positive pixels and its positive-class F1 beats
    the all-positive predictor's (a model that says "no change" everywhere, or "change"
    everywhere, has learned nothing)."""
    pos = class_scores(tp, fp, fn)
    return 100 * pos["recall"] >= LEARNED_RECALL_POS and 100 * pos["f1"] > all_positive_f1(tp, fp, fn, tn)


def tile_counts(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-tile confusion counts of the positive class.

    Args:
        logits: float [B, 2, H, W] (or predictions int [B, H, W]).
        target: int [B, H, W] in {0, 1}.

    Returns:
        int64 [B, 4]: tp, fp, fn, tn of each tile.
    """
    preds = (logits.argmax(1) if logits.dim() == 4 else logits).flatten(1).bool()
    target = target.flatten(1).bool()
    # Plain sums rather than torchmetrics' samplewise stat scores, which lose the batch
    # dimension for a batch of one tile; the whole-split sums are checked against it in tests.
    tp = (preds & target).sum(1)
    fp = (preds & ~target).sum(1)
    fn = (~preds & target).sum(1)
    tn = (~preds & ~target).sum(1)
    return torch.stack([tp, fp, fn, tn], 1).long()
