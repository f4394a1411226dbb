# Validated config, wildcard constraints, the run list and the input functions of every rule
# file. No rules here (Snakemake's linter wants rules and functions in separate files).
import re

from snakemake.utils import validate

from baselines import MODELS
from noise2map.config import (
    PRETRAIN_DATASETS,
    model_weight_names,
    prepare_settings,
    pretrain_init_names,
    pretrain_settings,
    job_threads,
    prepared_manifest,
    pretrained_unet_path,
    released_backbone_row,
    released_unet_path,
    rule_resources,
    run_settings,
    store_base,
    validate_config,
)
from noise2map.reporting.ablations import TABLES as ABLATION_TABLES
from noise2map.reporting.ablations import ablation_config, lambdas_of, pretrained_unet, pretraining
from noise2map.reporting.ablations import run_paths as ablation_run_paths
from noise2map.reporting.ablations import table_runs as ablation_table_runs
from noise2map.weights import CHECKPOINTS, RELEASED_BACKBONES, released_backbone_names
from noise2map.data import RAW_DIR_OF
from noise2map.reporting.fidelity import fidelity_settings

# Ours first: a short message naming the key and its close matches, before Snakemake's own
# check (which fills the schema's defaults) would print the whole schema.
validate_config(config, source="Snakemake config")
validate(config, "../schemas/config.schema.yaml")

RESULTS = config["results_dir"]
DATA = config["data_dir"]
WEIGHTS = config["weights_dir"]
# Every CLI call reads the merged preset from here. It is written when the run starts
# (onstart, in the Snakefile), not by a rule: no job depends on the file itself. What a
# job depends on is in its params (noise2map.config.*_settings), so editing one part of a
# preset reruns only the jobs that part affects. (A rule with the file as an ancient()
# input made Snakemake 9 run only that rule after a preset edit and stop.)
RESOLVED_CONFIG = f"{RESULTS}/config.yaml"


def _alternatives(names):
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


wildcard_constraints:
    task="ss|cd",
    dataset="spacenet7|whu|xview2",
    model=_alternatives(MODELS),
    seed=r"\d+",
    name=_alternatives(RAW_DIR_OF),
    store=f"({_alternatives(RAW_DIR_OF)})(\\+[a-z0-9_]+)*",
    raw=_alternatives(set(RAW_DIR_OF.values())),
    checkpoint=_alternatives(CHECKPOINTS),
    backbone=_alternatives(RELEASED_BACKBONES),
    unet="noise2map|sr3",
    pretrain="|".join(PRETRAIN_DATASETS),
    table="|".join(ABLATION_TABLES),
    variant=r"[A-Za-z0-9]+",


# Checkpoint selection of the preset's runs, and the other one (compared in selection_delta.csv).
SELECTION = config["selection"]
OTHER_SELECTION = "val" if SELECTION == "released" else "released"


def fidelity_manifests():
    """The prepared stores whose manifests the fidelity ledger reads (SpaceNet7 counts and
    rasters, the xView2 self-check): one per data source of the preset."""
    task = "ss" if "ss" in config["tasks"] else "cd"
    return [prepared_manifest(config, d, task) for d in ("spacenet7", "xview2") if d in config["datasets"]]


def run_metrics(root=None):
    """metrics.json of every (task, data set, model, seed) the preset runs, under ``root``."""
    root = root or RESULTS
    return [
        f"{root}/runs/{task}/{dataset}/{model}/seed{seed}/metrics.json"
        for task in config["tasks"]
        for dataset in config["datasets"]
        for model in config["models"][task]
        for seed in config["seeds"]
    ]


def released_row_metrics(root=None):
    """metrics.json of Table I's Noise2Map (released backbone) rows (pretrain.released_row)."""
    root, backbone = root or RESULTS, released_backbone_row(config)
    if backbone is None:
        return []
    return [
        f"{root}/runs/{task}/{dataset}/noise2map-{task}+released-{backbone}/seed{seed}/metrics.json"
        for task in config["tasks"]
        if f"noise2map-{task}" in config["models"][task]
        for dataset in config["datasets"]
        for seed in config["seeds"]
    ]


def ablation_settings(config, table, variant, task):
    """What an ablation run depends on: the variant's config, as run_settings sees it, and
    the sample its UNet was pretrained on."""
    settings = run_settings(
        ablation_config(config, table, variant), task, config["ablations"]["dataset"], f"noise2map-{task}"
    )
    return {**settings, "pretraining": pretraining(config, table, variant)}


def ablation_pretrained(wildcards):
    """The pretrained UNet an ablation run fine-tunes (none for Table III's scratch row)."""
    path = pretrained_unet(config, wildcards.table, wildcards.variant)
    return {"pretrained": path} if path else {}


def pretrain_init(wildcards):
    return [f"{WEIGHTS}/{name}" for name in pretrain_init_names(config)] if wildcards.unet == "noise2map" else []


def pretrained_inputs(wildcards):
    """The pretrained UNet (Noise2Map) and the cached encoder checkpoints (baselines)."""
    inputs = {"weights": [f"{WEIGHTS}/{name}" for name in model_weight_names(config, wildcards.model)]}
    unet = MODELS[wildcards.model].pretrained_unet
    if unet:
        inputs["pretrained"] = pretrained_unet_path(config, unet)
    return inputs


# Figures 4-6 (figures.smk), on the test split of one data set.
FIGURES = config["figures"]
TABLE1_MODELS = [(task, model) for task in config["tasks"] for model in config["models"][task]]
NOISE2MAP_MODELS = [
    (task, f"noise2map-{task}") for task in config["tasks"] if f"noise2map-{task}" in config["models"][task]
]


def figure_runs(models, seeds):
    """metrics.json of the Table I runs the figures read (their checkpoints sit beside)."""
    return [
        f"{RESULTS}/runs/{task}/{FIGURES['dataset']}/{model}/seed{seed}/metrics.json"
        for task, model in models
        for seed in seeds
    ]


def _run_dirs(wildcards, input):
    return " ".join(str(Path(m).parent) for m in input.metrics)


def figure_targets():
    """The figures the preset's tasks and models allow (Fig. 6 needs Noise2Map-CD)."""
    targets = [rules.figure4.output.png]
    if NOISE2MAP_MODELS:
        targets.append(rules.figure5.output.png)
    if ("cd", "noise2map-cd") in NOISE2MAP_MODELS:
        targets.append(rules.figure6.output.png)
    return targets
