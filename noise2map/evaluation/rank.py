"""The paper's Rank column.

Per task and data set, models are ranked by F1 (higher is better) with IoU breaking ties;
each model's per-dataset ranks are averaged; the averages become ordinal places (1 = best,
equal averages share the better place).
"""

from __future__ import annotations

import pandas as pd

from noise2map.errors import DataFormatError

REQUIRED = ("task", "model", "dataset", "f1", "iou")


def read_score_table(path) -> pd.DataFrame:
    """A CSV of (task, model, dataset, f1, iou) rows for ``noise2map rank``, checked: a missing
    column, a non-numeric or non-finite score is named with its file, column and row."""
    from pathlib import Path

    import numpy as np

    path = Path(path)
    try:
        table = pd.read_csv(path, keep_default_na=False)  # "n/a" stays text, to be named below
    except pd.errors.EmptyDataError:
        raise DataFormatError(f"{path} is empty: expected a CSV with columns {', '.join(REQUIRED)}") from None
    except pd.errors.ParserError as err:
        raise DataFormatError(f"{path} is not a readable CSV ({err})") from err
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise DataFormatError(f"{path} lacks column(s) {', '.join(missing)}; a rank needs {', '.join(REQUIRED)}")
    if table.empty:
        raise DataFormatError(f"{path} has a header but no rows: nothing to rank")
    for column in ("f1", "iou"):
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna() | ~np.isfinite(values.fillna(0.0))
        if bad.any():
            row = int(bad.idxmax())
            raise DataFormatError(f"{path}: column {column}, row {row + 2} (line {row + 2} of the file) holds "
                                  f"{table[column].iloc[row]!r}, not a finite number (write 90.5, not '90,5' or "
                                  "'n/a')")
        table[column] = values.astype(float)
    return table


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
