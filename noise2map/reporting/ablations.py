"""The paper's ablations as config variants of Noise2Map, and their tables.

Protocol (paper §V-D): WHU, 50 % of the training data, 100 epochs, Noise2Map for SS and CD.
Each variant is the preset with a few keys overridden. Its runs live under
``<results>/ablations/<table>/<variant>/<task>/seed<k>/``, except that every variant equal
to the preset itself (Table II's "with diffusion", Table III's AID, Table IV's preset T,
Table V's preset scheduler, the multi-task table's single-task rows) shares one run under
``ablations/base/preset/``: one configuration, one run. Multi-task runs train one model for
both tasks: ``ablations/multitask/<variant>/seed<k>/<task>/``.

Tables: II (diffusion formulation, plus the released code's SS noise against the paper
text's), III (pretraining data; with ``ablations.released_backbones`` also the authors'
published backbones beside our pretraining on the same sample), IV (T), V (scheduler),
multi-task (λ_CD, λ_SS). Each is written beside the paper's numbers
(results/paper/paper_ablations.csv).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from noise2map.config import PRETRAIN_DATASETS, deep_merge
from noise2map.errors import UnknownNameError
from noise2map.io import atomic_path, write_text

PAPER_ABLATIONS = Path(__file__).resolve().parents[2] / "results" / "paper" / "paper_ablations.csv"
TABLES = {
    "table2": ("II", "Effect of the diffusion component"),
    "table3": ("III", "Effect of the pretraining data"),
    "table4": ("IV", "Number of diffusion timesteps T"),
    "table5": ("V", "Noise scheduler"),
    "multitask": ("MT", "Multi-task vs single-task learning"),
}
BASE = ("base", "preset")  # the run every no-op variant shares
_SCHEDULER_NAMES = {"ddim": "DDIM", "ddpm": "DDPM", "pndm": "PNDM", "heun": "Heun"}
_PRETRAIN_NAMES = {"aid": "AID 10k", "imagenet": "ImageNet 10k", "majortom": "MAJOR-TOM Sentinel-2 10k"}
# Table III's released rows: variant → (hub backbone, the pipeline sample the paper row names).
# The paper's rows were fine-tuned from these backbones, so each is read against that row.
RELEASED_TABLE3 = {"releasedaid10k": ("aid-10k", "aid"), "releasedsat2gen": ("sat2gen", "majortom"),
                   "releasedimagenet2gen": ("imagenet2gen", "imagenet"), "releasedddpmchurch": ("ddpm-church", None)}
RELEASED_SUFFIX = " (released backbone)"
_SS_NOISE_NAMES = {"image": "the image itself (released code)", "gaussian": "Gaussian (paper text)"}
_NOTES = {
    "table2": "Without diffusion: the same UNet without its timestep embedding, trained on the clean "
              "inputs (the released code's `use_timestep=False`). The SS-noise row, which the paper lacks, "
              "trains SS with the other SS noise than the preset's.",
    "table3": "Each pretraining sample has `pretrain.num_images` images ({num_images} here; 10k in the "
              "paper); scratch fine-tunes a randomly initialised UNet. A row marked (released backbone) "
              "fine-tunes the authors' published UNet (hub ali97/noise2map) and is read against the paper's "
              "row of the same sample, which that backbone produced.",
    "table4": "Validation and test timesteps follow T as the released code derives them (T // 2, T − 1).",
    "table5": "The four schedulers define the same ᾱ_t for the same βs; what differs is `add_noise` "
              "(Heun: x + σ_t·n).",
    "multitask": "One shared UNet with an SS and a CD head, trained on L = λ_CD·L_CD + λ_SS·L_SS "
                 "(one SS and one CD batch per step); single-task rows are the preset's own runs. "
                 "Adam's update is invariant to a common scale of the loss (up to its ε), and so is the "
                 "best-by-validation-loss choice.",
}


def lambda_variant(lambda_cd: float, lambda_ss: float) -> str:
    """A wildcard-safe variant name for a λ pair: (0.7, 1.3) → ``cd0p7ss1p3``."""
    return f"cd{lambda_cd:g}ss{lambda_ss:g}".replace(".", "p")


def lambdas_of(variant: str) -> tuple[float, float]:
    match = re.fullmatch(r"cd([0-9p]+)ss([0-9p]+)", variant)
    if not match:
        raise UnknownNameError("multi-task variant", variant, ["cd<λ_CD>ss<λ_SS>, e.g. cd0p7ss1p3"])
    return tuple(float(g.replace("p", ".")) for g in match.groups())


def _scratch(config: dict) -> dict:
    """Table III's scratch row: ``ablations.scratch_unet: released`` builds what the released
    code builds for ``pretrained: None`` (diffusers' default UNet2DModel), ``church`` the
    fine-tuned layout, randomly initialised."""
    if config["ablations"].get("scratch_unet", "released") == "church":
        return {}
    from noise2map.models.noise2map import DIFFUSERS_DEFAULT_UNET

    return {"noise2map": {"unet": DIFFUSERS_DEFAULT_UNET}}


def variants(config: dict) -> dict[str, dict[str, dict]]:
    """table → variant name → the config keys it overrides."""
    ab = config["ablations"]
    other_noise = "gaussian" if config["noise2map"]["ss_noise"] == "image" else "image"
    return {
        "table2": {"diffusion": {}, "nodiffusion": {"noise2map": {"diffusion": False}},
                   f"ss{other_noise}": {"noise2map": {"ss_noise": other_noise}}},
        "table3": {"scratch": _scratch(config), **{d: {"pretrain": {"dataset": d}} for d in PRETRAIN_DATASETS},
                   **{v: {} for v, (backbone, _) in RELEASED_TABLE3.items()
                      if backbone in ab.get("released_backbones", [])}},
        # val/test timesteps follow T as the released code derives them (T // 2, T − 1)
        "table4": {f"T{t}": {"noise2map": {"scheduler": {"num_train_timesteps": t}, "val_timestep": t // 2,
                                           "test_timestep": t - 1}} for t in ab["timesteps"]},
        "table5": {s: {"noise2map": {"scheduler": {"name": s}}} for s in ab["schedulers"]},
        "multitask": {"single": {}, **{lambda_variant(*pair): {} for pair in ab["multitask_lambdas"]}},
    }


def is_multitask(table: str, variant: str) -> bool:
    return table == "multitask" and variant != "single"


def pretraining(config: dict, table: str, variant: str) -> str | None:
    """What the variant's UNet was pretrained on: a pipeline sample ("aid"), a released
    backbone ("released:aid-10k"), or None (trained from scratch)."""
    if table == "table3" and variant in RELEASED_TABLE3:
        return f"released:{RELEASED_TABLE3[variant][0]}"
    if table == "table3":
        return None if variant == "scratch" else variant
    pre = config["pretrain"]
    return f"released:{pre.get('released_backbone', 'aid-10k')}" if pre.get("source") == "released" else pre["dataset"]


def pretrained_unet(config: dict, table: str, variant: str) -> str | None:
    """Path of the pretrained UNet the variant fine-tunes (None: from scratch)."""
    from noise2map.config import pretrained_unet_path, released_unet_path

    source = pretraining(config, table, variant)
    if source is None:
        return None
    if source.startswith("released:"):
        return released_unet_path(config, source.split(":", 1)[1])
    return pretrained_unet_path(config, dataset=source)


def variant_tasks(config: dict, table: str, variant: str) -> list[str]:
    """The tasks a variant is run for (the SS-noise row is SS only)."""
    tasks = config["ablations"]["tasks"]
    return [t for t in tasks if t == "ss"] if variant.startswith("ss") and table == "table2" else list(tasks)


def paper_setting(table: str, variant: str) -> str:
    """The row label, as in paper_ablations.csv where the paper has the row."""
    if table == "table2":
        return {"diffusion": "with diffusion",
                "nodiffusion": "without diffusion (no noising, no timestep embedding)"}.get(
            variant, f"with diffusion, SS noise: {_SS_NOISE_NAMES.get(variant[2:], variant[2:])}")
    if table == "table3" and variant in RELEASED_TABLE3:
        backbone, sample = RELEASED_TABLE3[variant]
        return f"pretraining: {_PRETRAIN_NAMES[sample] if sample else 'ddpm-church-256 only'}{RELEASED_SUFFIX}"
    if table == "table3":
        return "pretraining: none (scratch)" if variant == "scratch" else f"pretraining: {_PRETRAIN_NAMES[variant]}"
    if table == "table4":
        return f"timesteps {variant[1:]}"
    if table == "table5":
        return f"scheduler {_SCHEDULER_NAMES[variant]}"
    if variant == "single":
        return "single-task"
    lambda_cd, lambda_ss = lambdas_of(variant)
    return f"multi-task lambda_cd={lambda_cd:.1f} lambda_ss={lambda_ss:.1f}"


def _checked(config: dict, table: str, variant: str) -> dict:
    if table == BASE[0]:
        if variant != BASE[1]:
            raise UnknownNameError("base variant", variant, [BASE[1]])
        return {}
    table_variants = variants(config).get(table)
    if table_variants is None:
        raise UnknownNameError("ablation table", table, TABLES)
    if variant not in table_variants:
        raise UnknownNameError(f"{table} variant", variant, table_variants)
    return table_variants[variant]


def ablation_config(config: dict, table: str, variant: str) -> dict:
    """The preset with the variant's keys and the ablation protocol (data set, fraction, epochs)."""
    overrides = _checked(config, table, variant)
    ab = config["ablations"]
    protocol = {"training": {"train_fraction": ab["train_fraction"],
                             "datasets": {ab["dataset"]: {t: {"max_epochs": ab["max_epochs"]} for t in ("ss", "cd")}}}}
    return deep_merge(deep_merge(config, protocol), overrides)


def run_of(config: dict, table: str, variant: str) -> tuple[str, str]:
    """(table, variant) of the run behind a table row: the shared base run when the variant
    is the preset itself (same config, same pretraining)."""
    if is_multitask(table, variant):
        return table, variant
    same = (ablation_config(config, table, variant) == ablation_config(config, *BASE)
            and pretraining(config, table, variant) == pretraining(config, *BASE))
    return BASE if same else (table, variant)


def run_path(config: dict, results: str, table: str, variant: str, task: str, seed: int) -> str:
    if is_multitask(table, variant):
        return f"{results}/ablations/{table}/{variant}/seed{seed}/{task}/metrics.json"
    run_table, run_variant = run_of(config, table, variant)
    return f"{results}/ablations/{run_table}/{run_variant}/{task}/seed{seed}/metrics.json"


def table_runs(config: dict, results: str, table: str) -> list[tuple[str, str]]:
    """(variant, metrics.json) of every run a table needs, in row order."""
    return [(variant, run_path(config, results, table, variant, task, seed))
            for variant in variants(config)[table] for task in variant_tasks(config, table, variant)
            for seed in config["seeds"]]


def run_paths(config: dict, results: str, table: str) -> list[str]:
    """metrics.json of every run a table needs."""
    return [path for _, path in table_runs(config, results, table)]


def build_ablation_table(table: str, metrics: pd.DataFrame, variant_of: list[str],
                         paper_csv: Path = PAPER_ABLATIONS) -> pd.DataFrame:
    """One row per (variant, task): F1 mean and std over seeds, the paper's F1 and the difference."""
    runs = metrics.assign(variant=variant_of)
    from noise2map.evaluation.intervals import DEGENERATE_RECALL_POS

    out = runs.groupby(["variant", "task"], sort=False).agg(
        f1=("f1", "mean"), f1_std=("f1", "std"), iou=("iou", "mean"), n_seeds=("seed", "size"),
        recall_pos_min=("recall_pos", "min")).reset_index()
    out["f1_std"] = out["f1_std"].fillna(0.0)
    out["degenerate"] = out["recall_pos_min"] < DEGENERATE_RECALL_POS
    out.insert(0, "setting", [paper_setting(table, v) for v in out["variant"]])
    out.insert(0, "table", TABLES[table][0])
    paper = pd.read_csv(paper_csv).set_index(["table", "setting", "task"])["f1"] if Path(paper_csv).is_file() else {}
    # a released-backbone row is read against the paper's row of its sample
    out["paper_f1"] = [paper.get((TABLES[table][0], s.removesuffix(RELEASED_SUFFIX), t))
                       for s, t in zip(out["setting"], out["task"])]
    out["delta_f1"] = out["f1"] - out["paper_f1"].astype(float)
    out["same_counts_as"] = _same_counts(runs, out)
    if "fingerprint" in runs:  # the runs behind each row (one per seed), as Table I carries them
        prints = runs.groupby(["variant", "task"], sort=False)["fingerprint"].agg(
            lambda f: ";".join(str(x) for x in f if isinstance(x, str)))
        out["fingerprints"] = [prints.get((v, t), "") for v, t in zip(out["variant"], out["task"])]
    return out


def _same_counts(runs: pd.DataFrame, out: pd.DataFrame) -> list[str]:
    """Per row, the other settings of its task whose runs have the very same confusion counts
    in every seed, joined by " = " ("" if none): what the Markdown states as identical is
    read from the data, never typed in."""
    from noise2map.evaluation.metrics import COUNTS

    def signature(variant, task):
        block = runs[(runs["variant"] == variant) & (runs["task"] == task)].sort_values("seed")
        return task, tuple(map(tuple, block[["seed", *COUNTS]].to_numpy().tolist()))

    keys = [signature(v, t) for v, t in zip(out["variant"], out["task"])]
    return [" = ".join(s for s, k in zip(out["setting"], keys) if k == key and s != setting)
            for setting, key in zip(out["setting"], keys)]


def ablation_markdown(table: str, rows: pd.DataFrame, preset: str, num_images: int | None = None) -> str:
    number, title = TABLES[table]
    tasks = list(dict.fromkeys(rows["task"]))
    heading = "Multi-task table" if table == "multitask" else f"Table {number}"
    lines = [f"# {heading} — {title} (preset `{preset}`)", "",
             "Noise2Map on WHU, 50 % of the training data (whole scenes, seeded), 100 epochs in the paper preset. "
             "F1 (class mean, %) as ours ± std over seeds (paper, ours − paper); – where the paper has no row; "
             "⚠ = degenerate: a positive-class recall below 1 % in some seed.", "",
             _NOTES[table].format(num_images=num_images if num_images is not None else "?"), "",
             "| Setting | " + " | ".join(f"{t.upper()} F1" for t in tasks) + " |", "|---|" + "---|" * len(tasks)]
    for setting, block in rows.groupby("setting", sort=False):
        cells = []
        for task in tasks:
            r = block[block["task"] == task]
            if r.empty:
                cells.append("–")
                continue
            r = r.iloc[0]
            paper = " (–)" if pd.isna(r["paper_f1"]) else f" ({r['paper_f1']:.2f}, {r['delta_f1']:+.2f})"
            flag = " ⚠" if r["degenerate"] else ""
            cells.append(f"{r['f1']:.2f} ± {r['f1_std']:.2f}{flag}{paper}")
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", _identical_note(rows)]) + "\n"


def _identical_note(rows: pd.DataFrame) -> str:
    """What the runs show about identical settings, computed from their counts."""
    groups = {}
    for task, setting, same in zip(rows["task"], rows["setting"], rows["same_counts_as"]):
        if same:
            members = sorted([setting, *same.split(" = ")])
            groups.setdefault((task, tuple(members)), members)
    if not groups:
        return "No two settings of a task have identical confusion counts in every seed."
    return ("Identical confusion counts in every seed (the same model): "
            + "; ".join(f"{task.upper()}: " + " = ".join(m) for (task, _), m in groups.items()) + ".")


def _variant_from_path(path: str) -> str:
    parts = Path(path).parts  # .../ablations/<table>/<variant>/<task>/seed<k>/metrics.json
    i = len(parts) - 1 - parts[::-1].index("ablations")
    return parts[i + 2]


def write_ablation_table(table: str, metric_paths, csv_path: Path, variant_of: list[str] | None = None,
                         num_images: int | None = None) -> pd.DataFrame:
    """The table's CSV and Markdown; ``variant_of`` names each run's row (default: its folder)."""
    from noise2map.reporting.tables import collect_metrics

    if table not in TABLES:
        raise UnknownNameError("ablation table", table, TABLES)
    metric_paths = [str(p) for p in metric_paths]
    variant_of = list(variant_of) if variant_of else [_variant_from_path(p) for p in metric_paths]
    if len(variant_of) != len(metric_paths):
        raise ValueError(f"{len(variant_of)} variant names for {len(metric_paths)} metrics files")
    rows = build_ablation_table(table, collect_metrics(metric_paths), variant_of)
    with atomic_path(csv_path) as tmp:
        rows.to_csv(tmp, index=False, float_format="%.4f")
    preset = collect_metrics(metric_paths[:1])["preset"].iloc[0]
    write_text(Path(csv_path).with_suffix(".md"), ablation_markdown(table, rows, preset, num_images))
    return rows
