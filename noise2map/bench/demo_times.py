"""What a demo run cost and what it shows (``scripts/time_demo.sh``): the wall time in total
and per rule (Snakemake's benchmark files), where a training job's seconds go (each run's
``timing.json``), and how many Table I models learned something on how many data sets
(:func:`~noise2map.evaluation.metrics.learned`)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from noise2map.evaluation.metrics import COUNTS, learned

PHASES = ("imports", "config", "data", "model", "trainer", "fit", "test")


def rule_times(benchmarks: Path) -> pd.DataFrame:
    """Per rule: jobs, and the sum, mean and max of their wall seconds (``s`` of each TSV)."""
    rows = []
    for tsv in sorted(Path(benchmarks).glob("*/*.tsv")):
        seconds = pd.read_csv(tsv, sep="\t")["s"]
        rows.append({"rule": tsv.parent.name, "s": float(seconds.iloc[-1])})
    if not rows:
        return pd.DataFrame(columns=["rule", "jobs", "sum_s", "mean_s", "max_s"])
    table = pd.DataFrame(rows).groupby("rule")["s"].agg(jobs="count", sum_s="sum", mean_s="mean", max_s="max")
    return table.sort_values("sum_s", ascending=False).reset_index()


def phase_times(results: Path) -> pd.DataFrame:
    """Mean and total seconds of each phase over the runs' timing.json files."""
    rows = [json.loads(p.read_text())["seconds"] for p in sorted(Path(results).rglob("timing.json"))]
    frame = pd.DataFrame(rows, columns=[*PHASES, "total"])
    return pd.DataFrame({"phase": frame.columns, "mean_s": frame.mean().values, "sum_s": frame.sum().values})


def learning(table1: Path) -> pd.DataFrame:
    """Per Table I model: on how many of its data sets it learned something (seed means of the counts)."""
    table = pd.read_csv(table1)
    counts = table.groupby(["task", "model", "dataset"], sort=False)[list(COUNTS)].sum().reset_index()
    counts["learned"] = [learned(*(r[c] for c in COUNTS)) for _, r in counts.iterrows()]
    out = counts.groupby(["task", "model"], sort=False).agg(datasets=("dataset", "count"),
                                                           learned_on=("learned", "sum")).reset_index()
    return out


def report(results: Path, benchmarks: Path, wall_s: float, cores: int) -> str:
    rules, phases = rule_times(benchmarks), phase_times(results)
    lines = [f"Demo: {wall_s:.0f} s wall ({wall_s / 60:.1f} min) on {cores} cores, "
             f"{int(rules['jobs'].sum())} jobs, {rules['sum_s'].sum():.0f} job-seconds", "",
             "Per rule (Snakemake benchmark wall seconds):", rules.to_string(index=False, float_format="%.1f"), ""]
    if len(phases) and phases["sum_s"].sum():
        lines += [f"Where a training job's seconds go (mean over {len(list(Path(results).rglob('timing.json')))} runs):",
                  phases.to_string(index=False, float_format="%.2f"), ""]
    table1 = Path(results) / "table1.csv"
    if table1.is_file():
        learn = learning(table1)
        good = learn[learn["learned_on"] >= 2]
        lines += [f"Models that learned (positive recall >= 5 % and positive F1 above the all-positive "
                  f"predictor's) on at least 2 data sets: {len(good)} of {len(learn)}",
                  learn.to_string(index=False), ""]
    return "\n".join(lines)
