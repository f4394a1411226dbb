"""Table I from the runs' metrics, long form and in the paper's layout.

``table1.csv`` has one row per (task, model, data set, seed) with the whole-split confusion
counts (tp, fp, fn, tn of the positive class), so every score can be recomputed, and the
rank of the model (computed on the seed means). ``table1.md`` shows our value, the paper's
and the difference, model by model as in the paper.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from noise2map.errors import DataFormatError
from noise2map.io import atomic_path, write_text
from noise2map.evaluation.metrics import COUNTS, METRICS, scores_from_counts
from noise2map.evaluation.rank import rank_models

TABLE1_COLUMNS = ["task", "model", "params_m", "dataset", *METRICS, "rank", "seed", "preset", *COUNTS,
                  *(f"{m}_pos" for m in METRICS), "model_key", "paper_model", "variant", "ranked", "rank_all", "paper_params_m",
                  "num_test_tiles", "selected_on", "evaluated_on", "fingerprint"]
PAPER_TABLE1 = Path(__file__).resolve().parents[2] / "results" / "paper" / "paper_table1.csv"
TASK_ORDER = {"ss": 0, "cd": 1}


def collect_metrics(paths) -> pd.DataFrame:
    """One row per metrics.json; a file that is not a run's metrics is named in the error."""
    rows = []
    for path in paths:
        try:
            row = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DataFormatError(f"cannot read run metrics {path}: {err}") from err
        if not isinstance(row, dict):
            raise DataFormatError(f"{path} holds a {type(row).__name__}, not a run's metrics object")
        missing = [c for c in ("task", "model", "dataset", "seed", *COUNTS) if c not in row]
        if missing:
            raise DataFormatError(f"{path} lacks {', '.join(missing)}: not a metrics.json of a run")
        for count in COUNTS:  # a count stored as text would be concatenated, not summed
            value = row[count]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DataFormatError(f"{path}: {count} = {value!r} is not a non-negative integer count; "
                                      "re-score the run (noise2map evaluate RUN)")
        rows.append({"paper_model": row["model"], "variant": None, "ranked": True, **row})
    if not rows:
        raise DataFormatError("no metrics.json given: nothing to tabulate")
    return pd.DataFrame(rows)


def seed_means(table: pd.DataFrame) -> pd.DataFrame:
    """Mean of each score over seeds: one row per (task, model, dataset)."""
    keys = ["task", "model", "dataset"]
    return table.groupby(keys, sort=False)[list(METRICS)].mean().reset_index()


def build_table1(metrics: pd.DataFrame) -> pd.DataFrame:
    """The long Table I: scores recomputed from the counts, rank from the seed means.

    ``rank`` is the paper's: among the ranked models only. A variant row (``ranked: false``,
    e.g. Noise2Map with the released backbone, or an imported released checkpoint) has no
    ``rank``; ``rank_all`` ranks every row together, so the variant's place is shown too.
    """
    scores = metrics.apply(lambda r: pd.Series(scores_from_counts(*(r[c] for c in COUNTS))), axis=1)
    table = metrics.drop(columns=[c for c in scores.columns if c in metrics.columns]).join(scores)
    table["ranked"] = table["ranked"].astype(bool)
    means = seed_means(table)
    ranked_models = set(map(tuple, table.loc[table["ranked"], ["task", "model"]].to_numpy()))
    in_rank = [(t, m) in ranked_models for t, m in zip(means["task"], means["model"])]
    ranks = rank_models(means[in_rank]) if any(in_rank) else pd.DataFrame(columns=["task", "model", "rank"])
    ranks_all = rank_models(means).rename(columns={"rank": "rank_all"})
    table = table.merge(ranks_all[["task", "model", "rank_all"]], on=["task", "model"])
    table = table.merge(ranks[["task", "model", "rank"]], on=["task", "model"], how="left")
    table["rank"] = table["rank"].astype("Int64")  # empty for variant rows
    table = table.sort_values(["task", "rank_all", "model", "dataset", "seed"],
                              key=lambda s: s.map(TASK_ORDER) if s.name == "task" else s, kind="mergesort")
    return table.reindex(columns=TABLE1_COLUMNS).reset_index(drop=True)


def _cell(ours: float, paper: float | None) -> str:
    if paper is None or pd.isna(paper):
        return f"{ours:.2f}"
    return f"{ours:.2f} ({paper:.2f}, {ours - paper:+.2f})"


def table1_markdown(table: pd.DataFrame, paper: pd.DataFrame | None = None) -> str:
    """Table I in the paper's layout: per model, P/R/F1/IoU per data set.

    Each cell reads ``ours (paper, ours − paper)``; scores are class means in percent.
    """
    firsts = table.groupby(["task", "model"])[["params_m", "rank", "rank_all", "paper_model", "ranked"]].first()
    means = seed_means(table).merge(firsts.reset_index(), on=["task", "model"])
    paper_idx = paper.set_index(["task", "model", "dataset"]).sort_index() if paper is not None else None
    datasets = list(dict.fromkeys(table["dataset"]))
    n_seeds = table.groupby(["task", "model", "dataset"]).size().max()
    lines = [f"# Table I — preset `{table['preset'].iloc[0]}`", "",
             "Scores are means over the two classes (the paper's convention), in percent, from one "
             "confusion matrix over the whole test split"
             + (f", averaged over {n_seeds} seeds" if n_seeds > 1 else "") + ". "
             "Each cell: ours (paper, ours − paper). Params: ours / paper, in millions.", ""]
    for task in sorted(means["task"].unique(), key=TASK_ORDER.get):
        head = ["Model", "Params (M)"] + [f"{d} {m}" for d in datasets for m in ("P", "R", "F1", "IoU")] + ["Rank"]
        lines += [f"## {'Semantic segmentation' if task == 'ss' else 'Change detection'}", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        block = means[means["task"] == task].sort_values("rank_all", kind="mergesort")
        for model, rows in block.groupby("model", sort=False):
            first = rows.iloc[0]
            paper_name = first["paper_model"]  # a variant row is read against its model's paper row
            paper_params = _paper_value(paper_idx, task, paper_name, None, "params_m")
            cells = [model, f"{first['params_m']:.1f} / {paper_params:.1f}" if paper_params else f"{first['params_m']:.1f}"]
            for dataset in datasets:
                row = rows[rows["dataset"] == dataset]
                for metric in METRICS:
                    if row.empty:
                        cells.append("–")
                    else:
                        cells.append(_cell(row[metric].iloc[0],
                                           _paper_value(paper_idx, task, paper_name, dataset, metric)))
            cells.append(_rank_cell(first, _paper_value(paper_idx, task, paper_name, None, "rank")))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Ranks: ours among the models run here (paper's rank among all 16 of its Table I).")
    if not means["ranked"].all():
        lines.append("A row with a variant in brackets (the released backbone or checkpoint) is read against its "
                     "model's paper row and kept out of the rank; its cell gives the place it would take among "
                     "all rows (`all: k`), as does a ranked row's where the variants change it.")
    lines.extend(_selection_note(table))
    return "\n".join(lines) + "\n"


def _selection_note(table: pd.DataFrame) -> list[str]:
    """Which split chose and which split scored each data set's checkpoints: the released code
    chose on test for some, and scored SpaceNet7 on the split that chose its checkpoints."""
    if "selected_on" not in table or table["selected_on"].isna().all():
        return []
    chosen = table.dropna(subset=["selected_on"]).groupby("dataset", sort=False)["selected_on"].first()
    parts = [f"{dataset}: {split}" for dataset, split in chosen.items()]
    note = ["", "Checkpoints selected on (best validation loss) — " + "; ".join(parts) + "."]
    if "evaluated_on" in table and not table["evaluated_on"].isna().all():
        scored = table.dropna(subset=["evaluated_on"]).groupby("dataset", sort=False)["evaluated_on"].first()
        note.append("Scores computed on — " + "; ".join(f"{d}: {split}" for d, split in scored.items()) + ".")
        same = [d for d in scored.index if d in chosen.index and scored[d] == chosen[d]]
        if same:
            note.append(f"{', '.join(same)}: scored on the split that also selected the checkpoint, as the released "
                        "code does; the `corrected` preset selects on a carve of train and scores SpaceNet7 on its "
                        "test regions.")
    if (chosen == "test").any():
        note.append("Selecting on the test split is what the released code does and what produced the paper's "
                    "numbers; it leaks test information. `selection: val` selects on 10 % of the training split "
                    "instead (see selection_delta.csv).")
    return note


def _rank_cell(first, paper_rank) -> str:
    """``rank (paper rank)``; with variant rows present also the place among all rows."""
    if not first["ranked"]:
        return f"– (all: {int(first['rank_all'])})"
    notes = [f"{int(paper_rank)}"] if paper_rank else []
    if first["rank_all"] != first["rank"]:
        notes.append(f"all: {int(first['rank_all'])}")
    return f"{int(first['rank'])}" + (f" ({'; '.join(notes)})" if notes else "")


def _paper_value(paper_idx, task, model, dataset, column):
    if paper_idx is None:
        return None
    try:
        rows = paper_idx.loc[(task, model)]
    except KeyError:
        return None
    if dataset is None:
        return rows[column].iloc[0]
    return rows[column].get(dataset)


def check_fingerprints(metrics: pd.DataFrame, metric_paths, config: dict) -> None:
    """Refuse a run trained with other settings than ``config`` gives now (copied in by hand,
    or left from an earlier preset): its fingerprint is not the one the preset would produce.
    ``metrics``: :func:`collect_metrics` of ``metric_paths``, row for row."""
    from noise2map.runspec import run_spec

    for path, row in zip(metric_paths, metrics.to_dict("records")):
        if not isinstance(row.get("fingerprint"), str) or not isinstance(row.get("dataset_key"), str):
            raise DataFormatError(f"{path} has no settings fingerprint (a run from before the suite recorded "
                                  "one): rerun it so that its settings can be checked against the preset")
        variant = row["variant"] if isinstance(row.get("variant"), str) else None
        expected = run_spec(config, row["task"], row["dataset_key"], row["model_key"], row["seed"], variant).fingerprint
        if row["fingerprint"] != expected:
            raise DataFormatError(f"{path} is stale: its settings fingerprint {row['fingerprint']} is not the "
                                  f"{expected} that preset `{config['preset']}` gives now (another preset, or a "
                                  "run copied in by hand); rerun it, or remove it from the table's inputs")


def write_table1(metric_paths, csv_path: Path, md_path: Path | None = None, paper_csv: Path = PAPER_TABLE1,
                 resamples: int = 1000, bootstrap_seed: int = 0, config: dict | None = None) -> pd.DataFrame:
    """Build Table I from run metrics and write the CSV and its Markdown, atomically.

    Where every run's ``tile_counts.csv`` lies beside its metrics.json, also writes
    ``table1_intervals.csv`` (seeds, mean ± std, 95 % bootstrap interval of F1, degenerate
    flags) and ``rank_stability.csv`` (rank intervals) beside the table.
    """
    metrics = collect_metrics(metric_paths)
    if config is not None:
        check_fingerprints(metrics, metric_paths, config)
    table = build_table1(metrics)
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    paper = pd.read_csv(paper_csv) if paper_csv and Path(paper_csv).is_file() else None
    markdown = table1_markdown(table, paper)
    run_dirs = [Path(p).parent for p in metric_paths]
    missing = [d for d in run_dirs if not (d / "tile_counts.csv").is_file()]
    if missing:
        markdown += f"\nNo intervals: {missing[0] / 'tile_counts.csv'} (and {len(missing) - 1} more) missing.\n"
    else:
        markdown += _write_intervals(metrics, run_dirs, table, paper, Path(csv_path).parent, resamples, bootstrap_seed)
    write_text(md_path or Path(csv_path).with_suffix(".md"), markdown)
    return table


def _write_intervals(metrics, run_dirs, table, paper, out_dir: Path, resamples: int, seed: int) -> str:
    from noise2map.evaluation.intervals import bootstrap, cell_intervals, load_tile_counts, rank_stability

    ranked = table[table["ranked"]]  # variant rows have intervals, but no place in the paper's rank
    boot = bootstrap(load_tile_counts(metrics, run_dirs), resamples, seed, set(zip(ranked["task"], ranked["model"])))
    cells = cell_intervals(table, boot, paper)
    point = ranked.groupby(["task", "model"], sort=False)["rank"].first().astype(int).reset_index()
    ranks = rank_stability(point, boot)
    for name, frame in (("table1_intervals.csv", cells), ("rank_stability.csv", ranks)):
        with atomic_path(out_dir / name) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.4f")
    return intervals_markdown(cells, ranks, resamples, seed)


def intervals_markdown(cells: pd.DataFrame, ranks: pd.DataFrame, resamples: int, seed: int) -> str:
    lines = ["", "## Seeds, intervals and rank stability", "",
             f"F1 as mean ± std over seeds; 95 % percentile interval from {resamples} bootstrap replicates "
             f"(seed {seed}) resampling the test tiles (and the seeds), paired across models. "
             "⚠ = degenerate: a positive-class recall below 1 % in some seed. "
             "Paper: the reported F1, ✗ where it falls outside our interval; (⚠) where the paper's own "
             "class-mean recall ≤ 50.5 % says its model found almost no positives.", "",
             "| Task | Model | Data set | Seeds | F1 | 95 % interval | Paper F1 |", "|---|---|---|---|---|---|---|"]
    for r in cells.itertuples():
        flag = " ⚠" if r.degenerate else ""
        paper = ""
        if "paper_f1" in cells and not pd.isna(r.paper_f1):
            paper = f"{r.paper_f1:.2f}" + ("" if r.paper_in_ci else " ✗") + (" (⚠)" if r.paper_degenerate else "")
        lines.append(f"| {r.task.upper()} | {r.model} | {r.dataset} | {r.n_seeds} | {r.f1_mean:.2f} ± {r.f1_std:.2f}"
                     f"{flag} | [{r.f1_ci_low:.2f}, {r.f1_ci_high:.2f}] | {paper} |")
    lines += ["", "| Task | Model | Rank | Median | 95 % interval | P(rank 1) |", "|---|---|---|---|---|---|"]
    for r in ranks.itertuples():
        lines.append(f"| {r.task.upper()} | {r.model} | {r.rank} | {r.median_rank:g} | "
                     f"[{r.rank_ci_low:g}, {r.rank_ci_high:g}] | {r.p_rank1:.2f} |")
    taus = ranks.groupby("task", sort=False)["kendall_tau_task"].first()
    lines += ["", "Kendall's τ between our ranking and the replicates' (mean): "
              + ", ".join(f"{t.upper()} {v:.2f}" for t, v in taus.items()) + "."]
    return "\n".join(lines) + "\n"


SELECTION_KEYS = ["task", "model", "dataset", "seed"]


def build_selection_delta(metrics: pd.DataFrame) -> pd.DataFrame:
    """F1 and IoU of each (task, model, data set, seed) under both checkpoint selections.

    ``metrics`` holds runs of both selections (their metrics.json say which); the delta is
    val-selection minus released-selection, in points.
    """
    if "selection" not in metrics:
        raise DataFormatError("run metrics carry no 'selection': rerun the trainings with this version")
    missing = {"released", "val"} - set(metrics["selection"])
    if missing:
        raise DataFormatError(f"no runs with selection {', '.join(sorted(missing))}: both are needed")
    scores = metrics.apply(lambda r: pd.Series(scores_from_counts(*(r[c] for c in COUNTS))), axis=1)
    runs = metrics[SELECTION_KEYS + ["selection", "selected_on"]].join(scores[["f1", "iou"]])
    released = runs[runs.selection == "released"].drop(columns="selection")
    val = runs[runs.selection == "val"].drop(columns=["selection", "selected_on"])
    table = released.merge(val, on=SELECTION_KEYS, suffixes=("_released", "_val"), validate="one_to_one")
    table = table.rename(columns={"selected_on": "released_selected_on"})
    table["delta_f1"] = table["f1_val"] - table["f1_released"]
    table["delta_iou"] = table["iou_val"] - table["iou_released"]
    return table.sort_values(["task", "dataset", "model", "seed"],
                             key=lambda c: c.map(TASK_ORDER) if c.name == "task" else c).reset_index(drop=True)


def selection_delta_markdown(table: pd.DataFrame) -> str:
    lines = ["# Checkpoint selection: released (as the paper) vs 10 % validation carve", "",
             "| Task | Data set | Model | Seed | Released selects on | F1 released | F1 val | ΔF1 | "
             "IoU released | IoU val | ΔIoU |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.task.upper()} | {r.dataset} | {r.model} | {r.seed} | {r.released_selected_on} | "
                     f"{r.f1_released:.2f} | {r.f1_val:.2f} | {r.delta_f1:+.2f} | {r.iou_released:.2f} | "
                     f"{r.iou_val:.2f} | {r.delta_iou:+.2f} |")
    lines += ["", "Δ = val-selection − released-selection (points). Released selection is on "
              "`training.validation_split` (test for WHU and xView2 in the released code); val selection "
              "is on a seeded 10 % of the training split in whole scenes, never a scene with test tiles."]
    return "\n".join(lines) + "\n"


def write_selection_delta(metric_paths, csv_path: Path) -> pd.DataFrame:
    table = build_selection_delta(collect_metrics(metric_paths))
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    write_text(Path(csv_path).with_suffix(".md"), selection_delta_markdown(table))
    return table
