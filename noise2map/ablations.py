"""The paper's ablations as config variants of Noise2Map, and their tables.

Protocol (paper §V): WHU, 50 % of the training data, 100 epochs, Noise2Map for SS and CD.
Each variant is the preset with a few keys overridden; its runs live under
``<results>/ablations/<table>/<variant>/<task>/seed<k>/`` and each table is written beside
the paper's numbers (results/paper/paper_ablations.csv).

Built so far: Table IV (number of timesteps T) and Table V (the scheduler whose ᾱ_t the
noising uses). Tables II, III and the multi-task table are not yet built.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from noise2map.config import deep_merge
from noise2map.errors import UnknownNameError
from noise2map.io import atomic_path, write_text

PAPER_ABLATIONS = Path(__file__).resolve().parent.parent / "results" / "paper" / "paper_ablations.csv"
TABLES = {"table4": ("IV", "Number of diffusion timesteps T"), "table5": ("V", "Noise scheduler (ᾱ_t in training)")}
_SCHEDULER_NAMES = {"ddim": "DDIM", "ddpm": "DDPM", "pndm": "PNDM", "heun": "Heun"}


def variants(config: dict) -> dict[str, dict[str, dict]]:
    """table → variant name → the config keys it overrides."""
    ab = config["ablations"]
    return {
        # val/test timesteps follow T as the released code derives them (T // 2, T − 1)
        "table4": {f"T{t}": {"noise2map": {"scheduler": {"num_train_timesteps": t}, "val_timestep": t // 2,
                                           "test_timestep": t - 1}} for t in ab["timesteps"]},
        "table5": {s: {"noise2map": {"scheduler": {"name": s}}} for s in ab["schedulers"]},
    }


def paper_setting(table: str, variant: str) -> str:
    """The row label of paper_ablations.csv for a variant."""
    if table == "table4":
        return f"timesteps {variant[1:]}"
    return f"scheduler {_SCHEDULER_NAMES[variant]}"


def ablation_config(config: dict, table: str, variant: str) -> dict:
    """The preset with the variant's keys and the ablation protocol (data set, fraction, epochs)."""
    table_variants = variants(config).get(table)
    if table_variants is None:
        raise UnknownNameError("ablation table", table, TABLES)
    if variant not in table_variants:
        raise UnknownNameError(f"{table} variant", variant, table_variants)
    ab = config["ablations"]
    protocol = {"training": {"train_fraction": ab["train_fraction"],
                             "datasets": {ab["dataset"]: {t: {"max_epochs": ab["max_epochs"]} for t in ("ss", "cd")}}}}
    return deep_merge(deep_merge(config, protocol), table_variants[variant])


def run_paths(config: dict, results: str, table: str) -> list[str]:
    """metrics.json of every run a table needs."""
    return [f"{results}/ablations/{table}/{variant}/{task}/seed{seed}/metrics.json"
            for variant in variants(config)[table] for task in config["ablations"]["tasks"]
            for seed in config["seeds"]]


def build_ablation_table(table: str, metrics: pd.DataFrame, variant_of: list[str],
                         paper_csv: Path = PAPER_ABLATIONS) -> pd.DataFrame:
    """One row per (variant, task): F1 mean and std over seeds, the paper's F1 and the difference."""
    runs = metrics.assign(variant=variant_of)
    out = runs.groupby(["variant", "task"], sort=False).agg(
        f1=("f1", "mean"), f1_std=("f1", "std"), iou=("iou", "mean"), n_seeds=("seed", "size")).reset_index()
    out["f1_std"] = out["f1_std"].fillna(0.0)
    out.insert(0, "setting", [paper_setting(table, v) for v in out["variant"]])
    out.insert(0, "table", TABLES[table][0])
    paper = pd.read_csv(paper_csv).set_index(["table", "setting", "task"])["f1"] if Path(paper_csv).is_file() else {}
    out["paper_f1"] = [paper.get((TABLES[table][0], s, t)) for s, t in zip(out["setting"], out["task"])]
    out["delta_f1"] = out["f1"] - out["paper_f1"].astype(float)
    return out


def ablation_markdown(table: str, rows: pd.DataFrame, preset: str) -> str:
    number, title = TABLES[table]
    tasks = list(dict.fromkeys(rows["task"]))
    lines = [f"# Table {number} — {title} (preset `{preset}`)", "",
             "Noise2Map on WHU, 50 % of the training data (whole scenes, seeded), 100 epochs in the paper preset. "
             "F1 (class mean, %) as ours ± std over seeds (paper, ours − paper).", "",
             "| Setting | " + " | ".join(f"{t.upper()} F1" for t in tasks) + " |", "|---|" + "---|" * len(tasks)]
    for setting, block in rows.groupby("setting", sort=False):
        cells = []
        for task in tasks:
            r = block[block["task"] == task]
            if r.empty:
                cells.append("–")
                continue
            r = r.iloc[0]
            paper = "" if pd.isna(r["paper_f1"]) else f" ({r['paper_f1']:.2f}, {r['delta_f1']:+.2f})"
            cells.append(f"{r['f1']:.2f} ± {r['f1_std']:.2f}{paper}")
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_ablation_table(table: str, metric_paths, csv_path: Path) -> pd.DataFrame:
    from noise2map.tables import collect_metrics

    metrics = collect_metrics(metric_paths)
    # .../ablations/<table>/<variant>/<task>/seed<k>/metrics.json
    variant_of = [Path(p).parent.parent.parent.name for p in metric_paths]
    rows = build_ablation_table(table, metrics, variant_of)
    with atomic_path(csv_path) as tmp:
        rows.to_csv(tmp, index=False, float_format="%.4f")
    write_text(Path(csv_path).with_suffix(".md"), ablation_markdown(table, rows, metrics["preset"].iloc[0]))
    return rows
