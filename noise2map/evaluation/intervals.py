"""Seeds, bootstrap intervals and rank stability, recomputed from the per-tile counts.

Every run stores one row of (tp, fp, fn, tn) per test tile, so an interval needs no model.
A replicate resamples the test tiles of each (task, data set) with replacement (the same
tiles for every model: the comparison is paired) and, with several seeds, the seeds too;
F1/IoU are recomputed from the resampled whole-split counts, and the paper's rank rule is
rerun inside the replicate. Intervals are percentile intervals of the replicates.
Tiles, not pixels, are resampled: pixels of one tile are not independent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from noise2map.errors import DataFormatError

KEYS = ["task", "model", "dataset"]
# A change/building recall below 1 % means the model predicts (almost) only background.
DEGENERATE_RECALL_POS = 1.0


def class_mean_scores(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class-mean F1 and IoU in percent from counts [..., 4] (tp, fp, fn, tn); 0/0 → 0."""
    tp, fp, fn, tn = (counts[..., i].astype(np.float64) for i in range(4))

    def ratio(num, den):
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    f1 = (ratio(2 * tp, 2 * tp + fp + fn) + ratio(2 * tn, 2 * tn + fn + fp)) * 50
    iou = (ratio(tp, tp + fp + fn) + ratio(tn, tn + fn + fp)) * 50
    return f1, iou


def places(f1: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """Rank 1 = best along the last axis: F1 first, IoU breaks ties, equal pairs share a place."""
    better = (f1[..., None, :] > f1[..., :, None]) | (
        (f1[..., None, :] == f1[..., :, None]) & (iou[..., None, :] > iou[..., :, None]))
    return 1 + better.sum(-1)


def load_tile_counts(metrics: pd.DataFrame, run_dirs: list[Path]) -> dict[tuple, np.ndarray]:
    """(task, model, dataset, seed) → counts [tiles, 4] ordered by tile id."""
    runs = {}
    for row, run in zip(metrics.itertuples(), run_dirs):
        path = Path(run) / "tile_counts.csv"
        if not path.is_file():
            raise DataFormatError(f"{path} does not exist: the intervals need every run's per-tile counts")
        try:
            tiles = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            raise DataFormatError(f"{path} is empty: re-score the run (noise2map evaluate RUN)") from None
        columns = ["tile_id", "tp", "fp", "fn", "tn"]
        if [c for c in columns if c not in tiles.columns] or tiles.empty:
            raise DataFormatError(f"{path} needs columns {', '.join(columns)} and a row per test tile; "
                                  "re-score the run (noise2map evaluate RUN)")
        counts = tiles[columns[1:]]
        if not all(pd.api.types.is_integer_dtype(t) for t in counts.dtypes) or (counts.to_numpy() < 0).any():
            raise DataFormatError(f"{path}: the counts are not all non-negative integers; re-score the run")
        runs[(row.task, row.model, row.dataset, row.seed)] = tiles.sort_values("tile_id")[columns[1:]].to_numpy()
    return runs


def bootstrap(runs: dict[tuple, np.ndarray], resamples: int = 1000, seed: int = 0,
              ranked: set[tuple] | None = None) -> dict:
    """Replicates of every cell's seed-mean F1/IoU and of every model's rank (among the
    ``ranked`` (task, model) pairs only, where given: variant rows have no place in it).

    Returns ``{"cells": {(task, model, dataset): (f1 [B], iou [B])}, "ranks": {(task, model):
    rank [B]}}``.
    """
    rng = np.random.default_rng(seed)
    cells: dict[tuple, list] = {}
    for (task, model, dataset, s), counts in runs.items():
        cells.setdefault((task, model, dataset), []).append(counts)
    weights = {}
    for (task, model, dataset), per_seed in cells.items():
        n = per_seed[0].shape[0]
        if any(c.shape[0] != n for c in per_seed) or weights.get((task, dataset), np.empty((0, n))).shape[1] != n:
            raise DataFormatError(f"runs of {task}/{dataset} scored different numbers of test tiles")
        weights.setdefault((task, dataset), rng.multinomial(n, np.full(n, 1 / n), size=resamples))
    replicates = {}
    for (task, model, dataset), per_seed in cells.items():
        w = weights[(task, dataset)]
        f1, iou = class_mean_scores(np.stack([w @ c for c in per_seed], 1))  # [B, seeds]
        pick = rng.integers(0, len(per_seed), size=(resamples, len(per_seed)))
        rows = np.arange(resamples)[:, None]
        replicates[(task, model, dataset)] = (f1[rows, pick].mean(1), iou[rows, pick].mean(1))
    in_rank = {k: v for k, v in replicates.items() if ranked is None or k[:2] in ranked}
    return {"cells": replicates, "ranks": _replicate_ranks(in_rank, resamples)}


def _replicate_ranks(cells: dict, resamples: int) -> dict:
    ranks = {}
    for task in sorted({k[0] for k in cells}):
        models = sorted({k[1] for k in cells if k[0] == task})
        datasets = sorted({k[2] for k in cells if k[0] == task})
        per_dataset = []
        for dataset in datasets:
            present = [m for m in models if (task, m, dataset) in cells]
            f1 = np.stack([cells[(task, m, dataset)][0] for m in present], 1)
            iou = np.stack([cells[(task, m, dataset)][1] for m in present], 1)
            full = np.full((resamples, len(models)), np.nan)
            full[:, [models.index(m) for m in present]] = places(f1, iou)
            per_dataset.append(full)
        mean_rank = np.nanmean(np.stack(per_dataset), 0)  # [B, models]
        # places of the averaged ranks, equal averages sharing the better place
        final = 1 + (mean_rank[:, None, :] < mean_rank[:, :, None]).sum(-1)
        for i, m in enumerate(models):
            ranks[(task, m)] = final[:, i]
    return ranks


def cell_intervals(table: pd.DataFrame, boot: dict, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (task, model, data set): seeds, mean ± std of F1/IoU, 95 % interval of F1,
    degenerate flag, and the paper's value with whether it falls inside our interval."""
    grouped = table.groupby(KEYS, sort=False)
    out = grouped.agg(n_seeds=("seed", "size"), f1_mean=("f1", "mean"), f1_std=("f1", "std"),
                      iou_mean=("iou", "mean"), iou_std=("iou", "std"),
                      recall_pos_min=("recall_pos", "min")).reset_index()
    out[["f1_std", "iou_std"]] = out[["f1_std", "iou_std"]].fillna(0.0)
    lo, hi = zip(*(np.percentile(boot["cells"][tuple(k)][0], [2.5, 97.5]) for k in out[KEYS].to_numpy()))
    out["f1_ci_low"], out["f1_ci_high"] = lo, hi
    out["degenerate"] = out["recall_pos_min"] < DEGENERATE_RECALL_POS
    if paper is not None:
        ref = paper.set_index(KEYS)
        # a variant row (released backbone, released checkpoint) is read against its model's row
        paper_model = dict(zip(table["model"], table["paper_model"])) if "paper_model" in table else {}
        keyed = [(t, paper_model.get(m, m), d) for t, m, d in out[KEYS].to_numpy()]
        out["paper_f1"] = [ref["f1"].get(k, np.nan) for k in keyed]
        out["paper_recall"] = [ref["recall"].get(k, np.nan) for k in keyed]
        out["paper_in_ci"] = (out["paper_f1"] >= out["f1_ci_low"]) & (out["paper_f1"] <= out["f1_ci_high"])
        # class-mean recall ≤ 50.5 %: the positive class is (almost) never found
        out["paper_degenerate"] = out["paper_recall"] <= 50 + DEGENERATE_RECALL_POS / 2
    return out


def rank_stability(ranks: pd.DataFrame, boot: dict) -> pd.DataFrame:
    """Per (task, model): the point rank, the median and 95 % interval of the replicate ranks,
    P(rank 1), and Kendall's τ between the point ranking and the replicates (mean)."""
    rows = []
    for r in ranks.itertuples():
        rep = boot["ranks"][(r.task, r.model)]
        rows.append({"task": r.task, "model": r.model, "rank": r.rank, "median_rank": float(np.median(rep)),
                     "rank_ci_low": float(np.percentile(rep, 2.5)), "rank_ci_high": float(np.percentile(rep, 97.5)),
                     "p_rank1": float((rep == 1).mean())})
    out = pd.DataFrame(rows, columns=["task", "model", "rank", "median_rank", "rank_ci_low", "rank_ci_high",
                                      "p_rank1"])
    taus = {}
    for task, block in out.groupby("task"):
        if len(block) < 2:
            taus[task] = np.nan
            continue
        reps = np.stack([boot["ranks"][(task, m)] for m in block["model"]], 1)
        taus[task] = float(np.nanmean([kendalltau(block["rank"], rep).statistic for rep in reps]))
    out["kendall_tau_task"] = out["task"].map(taus)
    return out
