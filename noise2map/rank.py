"""The paper's Rank column.

Per task and data set, models are ranked by F1 (higher is better) with IoU breaking ties;
each model's per-dataset ranks are averaged; the averages become ordinal places (1 = best,
equal averages share the better place).
"""

from __future__ import annotations

import pandas as pd

from noise2map.errors import DataFormatError

REQUIRED = ("task", "model", "dataset", "f1", "iou")


def dataset_ranks(table: pd.DataFrame) -> pd.Series:
    """Rank (1 = best) of each row within its (task, dataset) group."""
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise DataFormatError(f"rank needs columns {', '.join(REQUIRED)}; missing: {', '.join(missing)}")
    ranks = pd.Series(0, index=table.index, dtype=int)
    for _, group in table.groupby(["task", "dataset"], sort=False):
        order = group.sort_values(["f1", "iou"], ascending=False, kind="mergesort")
        keys = list(zip(order["f1"], order["iou"]))
        place = 0
        for i, (idx, key) in enumerate(zip(order.index, keys)):
            if i == 0 or key != keys[i - 1]:
                place = i + 1
            ranks[idx] = place
    return ranks


def rank_models(table: pd.DataFrame) -> pd.DataFrame:
    """Columns task, model, mean_rank, rank: one row per (task, model).

    ``table`` has one row per (task, model, dataset); rows of several seeds must be averaged
    first (``tables.seed_means``).
    """
    dup = table.duplicated(["task", "model", "dataset"])
    if dup.any():
        row = table[dup].iloc[0]
        raise DataFormatError(
            f"rank needs one row per (task, model, dataset); {row['task']}/{row['model']}/"
            f"{row['dataset']} appears more than once (average the seeds first)")
    ranked = table.assign(dataset_rank=dataset_ranks(table))
    out = ranked.groupby(["task", "model"], sort=False)["dataset_rank"].mean().rename("mean_rank").reset_index()
    out["rank"] = out.groupby("task")["mean_rank"].rank(method="min").astype(int)
    return out.sort_values(["task", "rank"], kind="mergesort").reset_index(drop=True)
