"""Presets: load, merge, validate; and the paths every stage agrees on.

``workflow/config/paper.yaml`` is the default preset; another preset (``demo.yaml``) is
merged over it key by key, as Snakemake's ``--configfile`` does.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

import yaml

from noise2map.errors import ConfigError

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
REPO_ROOT = Path(__file__).resolve().parent.parent
PAPER_PRESET = REPO_ROOT / "workflow" / "config" / "paper.yaml"

# Data set keys → the names Table I prints.
DATASET_NAMES = {"spacenet7": "SpaceNet7", "whu": "WHU", "xview2": "xView2-wildfire"}
TASK_NAMES = {"ss": "semantic segmentation", "cd": "change detection"}


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` merged into a copy of ``base``, recursing into nested mappings."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@lru_cache(maxsize=1)
def _schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def validate_config(config: dict, source: str = "config") -> dict:
    """Check ``config`` against the schema and the registries; return it unchanged.

    The modules of ``model_modules`` are imported first, so that their models, like the
    entry-point plugins, are among the names the schema accepts."""
    import jsonschema

    from baselines import import_model_modules, load_plugins

    load_plugins()
    modules = config.get("model_modules") if isinstance(config, dict) else None
    if isinstance(modules, list) and all(isinstance(m, str) for m in modules):
        import_model_modules(modules)
    validator = jsonschema.Draft202012Validator(_schema_with_registry())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {'.'.join(map(str, e.absolute_path)) or '<top>'}: {_explain(e)}" for e in errors[:10]]
        raise ConfigError(f"{source} does not match {SCHEMA_PATH.name}:\n" + "\n".join(lines))
    _check_registries(config, source)
    return config


def _schema_with_registry() -> dict:
    """The schema with each task's model names read from the registry, not kept by hand."""
    from baselines import models_for_task

    schema = copy.deepcopy(_schema())
    for task, entry in schema["properties"]["models"]["properties"].items():
        entry["items"] = {"enum": models_for_task(task)}
    return schema


def _explain(error) -> str:
    """The schema's message, and for an unknown key the close matches and the allowed keys."""
    import difflib

    if error.validator != "additionalProperties":
        return error.message
    allowed = sorted(error.schema.get("properties", {}))
    unknown = sorted(set(error.instance) - set(allowed))
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, allowed, n=3, cutoff=0.6)
        parts.append(f"unknown key {key!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))
    return "; ".join(parts) + f". Allowed here: {', '.join(allowed)}"


def _check_registries(config: dict, source: str) -> None:
    from baselines import get_model_spec

    for task, keys in config["models"].items():
        for key in keys:
            if get_model_spec(key).task != task:
                raise ConfigError(f"{source}: models.{task} lists {key!r}, a {get_model_spec(key).task} model")
    for section in ("noise2map",):
        t_max = config[section]["scheduler"]["num_train_timesteps"]
        for key in ("val_timestep", "test_timestep"):
            if config[section][key] >= t_max:
                raise ConfigError(f"{source}: {section}.{key} = {config[section][key]} must be < T = {t_max}")
    if config["model_size"] == "demo":
        released = [key for key, on in (
            ("pretrain.source: released", config["pretrain"].get("source", "pipeline") == "released"),
            ("pretrain.released_row: true", config["pretrain"].get("released_row", False)),
            ("ablations.released_backbones", bool(config["ablations"].get("released_backbones"))),
        ) if on]
        if released:
            raise ConfigError(f"{source}: the released backbones are paper-size UNets; "
                              f"`{released[0]}` needs `model_size: paper`")
    if config["weights"] == "pretrained" and config["model_size"] == "demo":
        raise ConfigError(f"{source}: demo-size models have no pretrained checkpoints; set `weights: none`")
    missing = [f"{d}" for d in config["datasets"] if d not in config["training"]["datasets"]]
    if missing:
        raise ConfigError(f"{source}: training.datasets has no settings for {', '.join(missing)}")


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, not {type(data).__name__}")
    return data


def load_config(*paths: str | Path, base: str | Path | None = PAPER_PRESET) -> dict:
    """Merge the YAML files in order (over the paper preset), fill the schema's defaults and
    validate the result: the config every CLI command and every Snakemake job sees alike
    (Snakemake's ``validate(..., set_default=True)`` fills the same defaults).

    A file that already is a resolved config (it carries every key) passes through unchanged.
    """
    config: dict = read_yaml(base) if base else {}
    for path in paths:
        config = deep_merge(config, read_yaml(path))
    return validate_config(fill_defaults(config), source=" + ".join(map(str, paths)) or str(base))


def fill_defaults(config: dict) -> dict:
    """``config`` with every ``default`` of the schema filled in where a key is absent (in
    place, and returned): the schema is the one source of the defaults."""
    def walk(schema: dict, node) -> None:
        if not isinstance(node, dict):
            return
        for key, sub in schema.get("properties", {}).items():
            if "default" in sub and key not in node:
                node[key] = copy.deepcopy(sub["default"])
            if key in node:
                walk(sub, node[key])

    walk(_schema(), config)
    return config


def task_settings(config: dict, dataset: str, task: str) -> dict:
    """batch_size, class_weights, max_epochs and val_every_n_epochs of one (data set, task)."""
    train = config["training"]
    settings = train["datasets"][dataset][task]
    return {"max_epochs": train["max_epochs"], "val_every_n_epochs": train.get("val_every_n_epochs", 1), **settings}


def evaluation_split(config: dict, dataset: str) -> str:
    """The split a data set's runs are scored on (released evaluate.py: SpaceNet7's val)."""
    return config["training"].get("evaluation_split", {}).get(dataset, "test")


# The pretraining samples of Table III (10k images each in the paper); the preset's own is pretrain.dataset.
PRETRAIN_DATASETS = ("aid", "imagenet", "majortom")


# The preparation switches: option → (prepared set(s), preparer keyword, the released code's value).
# A switch of the data's source rules (a SpaceNet7 label raster, the xView2 masks) serves both
# tasks of that source: both stores take it.
PREPARATION = {
    "spacenet7_label_raster": (("spacenet7-ss", "spacenet7-cd"), "label_raster", "hafner"),
    "spacenet7_ss_months": ("spacenet7-ss", "months", "usable"),
    "spacenet7_ss_read_size": ("spacenet7-ss", "read_size", "nominal"),
    "whu_ss_mask_resize": ("whu-ss", "mask_resize", "bilinear_truncate"),
    "whu_ss_order": ("whu-ss", "order", "sorted"),
    "whu_cd_pairs": ("whu-cd", "pairs", "drop_uniform"),
    "whu_cd_order": ("whu-cd", "order", "sorted"),
    "whu_cd_label_values": ("whu-cd", "label_values", "truncate"),
    "xview2_mask": (("xview2-ss", "xview2-cd"), "mask", "pre_footprints"),
    "xview2_mask_border": (("xview2-ss", "xview2-cd"), "border", 2),
    "xview2_pairs": (("xview2-ss", "xview2-cd"), "pairs_kept", "with_mask"),
    "xview2_cd_pairs": ("xview2-cd", "pairs", "keep_all"),
}


def _serves(store, name: str) -> bool:
    return name in ((store,) if isinstance(store, str) else store)


def preparation_options(config: dict, name: str) -> dict:
    """The preparer keywords of prepared set ``name`` (released values unless the config's
    ``preparation`` block says otherwise)."""
    chosen = config.get("preparation") or {}
    return {kw: chosen.get(key, released) for key, (store, kw, released) in PREPARATION.items()
            if _serves(store, name)}


def store_name(config: dict, name: str) -> str:
    """Folder of a prepared set under ``prepared/``: its name, with ``+<value>`` for each switch
    set away from the released code, so presets that prepare differently never share a store."""
    chosen = config.get("preparation") or {}
    changed = [str(chosen[key]) for key, (store, _, released) in PREPARATION.items()
               if _serves(store, name) and chosen.get(key, released) != released]
    return "+".join([name, *changed])


def store_base(store: str) -> str:
    """The prepared set a store folder holds (``whu-ss+nearest`` → ``whu-ss``)."""
    return store.split("+", 1)[0]


def prepared_manifest(config: dict, dataset: str, task: str) -> str:
    """The marker a rule waits for: a copy of the store's manifest written beside the store
    once the store is complete and swapped in. (Not the manifest itself: Snakemake deletes a
    job's outputs before rerunning it, and a failing rerun would then leave the previous
    store without its manifest.)"""
    store = prepared_dir(config, dataset, task)
    return str(store.parent / f"{store.name}.prepared.json")


def prepared_dir(config: dict, dataset: str, task: str) -> Path:
    """Tile store of one data set and task (``aid`` for pretraining)."""
    name = dataset if task == "pretrain" else f"{dataset}-{task}"
    return Path(config["data_dir"]) / "prepared" / store_name(config, name)


def raw_dir(config: dict) -> Path:
    return Path(config["data_dir"]) / "raw"


def run_dir(config: dict, task: str, dataset: str, model: str, seed: int) -> Path:
    """One training run's folder: resolved config, checkpoints, counts, metrics."""
    return Path(config["results_dir"]) / "runs" / task / dataset / model / f"seed{seed}"


def pretrain_dir(config: dict) -> Path:
    return Path(config["results_dir"]) / "pretrain" / config["pretrain"]["dataset"]


def write_resolved_config(config: dict, path: str | Path) -> None:
    """The validated, merged config every CLI call of the workflow reads."""
    from noise2map.io import write_text

    validate_config(dict(config), source="Snakemake config")
    write_text(path, yaml.safe_dump(_plain(config), sort_keys=False))


def _plain(obj):
    # Snakemake hands over its own mapping types; YAML wants plain dicts and lists.
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# What each stage's output depends on. The workflow passes these as rule params, so a change
# reruns exactly the jobs it affects (adding a model to a preset retrains nothing else).
def prepare_settings(config: dict, name: str) -> dict:
    settings = {"tile_size": config["tile_size"], "seed": config["seeds"][0], "raw_source": config["raw_source"],
                **preparation_options(config, name)}
    if name in PRETRAIN_DATASETS:
        settings["num_images"] = config["pretrain"]["num_images"]
    return settings


def pretrained_unet_path(config: dict, unet: str = "noise2map", dataset: str | None = None) -> str:
    """The pretrained UNet a run fine-tunes: the pipeline's own pretraining on ``dataset`` (the
    preset's sample by default), or, with ``pretrain.source: released``, the authors' published
    backbone (``pretrain.released_backbone``) exported from the weight cache."""
    pre = config["pretrain"]
    if unet == "noise2map" and dataset is None and pre.get("source", "pipeline") == "released":
        return released_unet_path(config, pre.get("released_backbone", "aid-10k"))
    return f"{config['results_dir']}/pretrain/{dataset or pre['dataset']}/{unet}_unet.pt"


def released_unet_path(config: dict, backbone: str) -> str:
    """A released backbone exported as Noise2Map's UNet (rule export_released_backbone)."""
    return f"{config['results_dir']}/pretrain/released/{backbone}/noise2map_unet.pt"


def released_backbone_row(config: dict) -> str | None:
    """The backbone of Table I's "Noise2Map (released <backbone> backbone)" rows, run beside
    ours (``pretrain.released_row``), or None: off, or the preset already fine-tunes it."""
    pre = config["pretrain"]
    if not pre.get("released_row", False) or pre.get("source", "pipeline") == "released":
        return None
    return pre.get("released_backbone", "aid-10k")


def with_pretrain_dataset(config: dict, dataset: str | None) -> dict:
    """The config pretraining on ``dataset`` (Table III) instead of the preset's sample."""
    if not dataset or dataset == config["pretrain"]["dataset"]:
        return config
    return {**config, "pretrain": {**config["pretrain"], "dataset": dataset}}


def pretrain_settings(config: dict, unet: str = "noise2map", dataset: str | None = None) -> dict:
    config = with_pretrain_dataset(config, dataset)
    return {"unet_kind": unet, "pretrain": config["pretrain"], "model_size": config["model_size"], "seed": config["seeds"][0],
            "unet": config["noise2map"].get("unet"), "tile_size": config["tile_size"],
            "init": pretrain_init_names(config)}


# Settings that change how a run is executed but not its results (device count included: the
# batch sizes are global and the randomness is keyed by sample), so changing them neither
# reruns a finished job nor discards a killed run's checkpoint.
EXECUTION_SETTINGS = ("devices", "num_workers", "checkpoint_every_n_steps", "checkpoint_every_n_epochs", "num_threads",
                      "logger")


def result_config(config: dict) -> dict:
    """The config without its execution-only settings (device count, workers, cluster resources)."""
    training = {k: v for k, v in config["training"].items() if k not in EXECUTION_SETTINGS}
    return {**{k: v for k, v in config.items() if k != "resources"}, "training": training}


# Rules that run on GPUs: training asks the scheduler for training.devices GPUs, the
# efficiency table for one (latency is single-device); none on a CPU preset.
GPU_RULES = {"pretrain_unet": "devices", "train_model": "devices", "write_efficiency": 1}


def rule_resources(config: dict, rule: str) -> dict:
    """Snakemake resources of one rule from the config's ``resources`` table: its ``default``
    entry, then the rule's own; empty values are left out (the cluster's defaults apply).

    GPU rules get ``gpu`` = training.devices (``auto``: 1 unless the table says otherwise), so
    the GPUs a job asks for and the processes it starts cannot disagree.
    """
    table = config.get("resources") or {}
    resources = {**table.get("default", {}), **table.get(rule, {})}
    if rule in GPU_RULES:
        devices = config["training"]["devices"] if GPU_RULES[rule] == "devices" else GPU_RULES[rule]
        on_cpu = config["training"]["accelerator"] == "cpu"
        resources["gpu"] = 0 if on_cpu else devices if isinstance(devices, int) else resources.get("gpu", 1)
    return {k: v for k, v in resources.items() if v not in (None, "")}


def job_threads(config: dict) -> int:
    """Snakemake threads of a training job: ``training.num_threads``, or 1 for ``auto`` (the
    job's threads then reach torch through OMP_NUM_THREADS, and the run records them)."""
    threads = config["training"].get("num_threads", "auto")
    return 1 if threads == "auto" else threads


def run_settings(config: dict, task: str, dataset: str, model: str) -> dict:
    training = {k: v for k, v in result_config(config)["training"].items()
                if k not in ("datasets", "validation_split")}
    settings = {"tile_size": config["tile_size"], "model_size": config["model_size"], "training": training,
                "task_settings": task_settings(config, dataset, task),
                "validation_split": config["training"]["validation_split"].get(dataset),
                "selection": config["selection"],
                "weights": model_weight_names(config, model)}
    if model.startswith("noise2map"):
        settings["noise2map"] = config["noise2map"]
    if last_batch(config, model) == "keep":  # absent otherwise: those runs' settings are as they were
        settings["last_batch"] = "keep"
    return settings


def last_batch(config: dict, model: str) -> str:
    """``keep``: the run trains on the released DataLoader's last batch as it is, one sample or
    more (released accumulation, a model without BatchNorm); ``fold``: a last batch of one
    joins the batch before it (a BatchNorm model, or ``accumulation: sum``)."""
    from baselines import get_model_spec

    released = config["training"].get("accumulation", "sum") == "released"
    return "keep" if released and not get_model_spec(model).batchnorm else "fold"


def model_weight_names(config: dict, model_key: str) -> list[str]:
    """Cache names of the pretrained checkpoints a run of ``model_key`` starts from."""
    from baselines import get_model_spec

    return list(get_model_spec(model_key).weights) if config["weights"] == "pretrained" else []


def pretrain_init_names(config: dict) -> list[str]:
    """Cache names of the UNet the pretraining starts from (google/ddpm-church-256)."""
    from noise2map.weights import DDPM_CHURCH

    if config["weights"] != "pretrained" or config["pretrain"].get("init", "none") == "none":
        return []
    return list(DDPM_CHURCH)
