"""Paper Figures 4–6 from trained run folders: qualitative grids, predictions across
timesteps, F1 against the inference timestep.

The plotting functions (:func:`plot_qualitative_grid`, :func:`plot_timestep_progression`,
:func:`plot_f1_vs_timestep`) take plain arrays and tables and need no torch; the collectors
(:func:`predict_tiles`, :func:`timestep_sweep`, :func:`figure4` … :func:`figure6`) load a run's
``best.ckpt`` and its test split. Each figure is written as ``<out_base>.png`` and
``<out_base>.pdf``, atomically.

A panel (one section of a grid figure, one per task) is ``{"title": str, "columns": [str],
"rows": [[array]], "row_labels": [str] (optional)}``; each array is a uint8 H×W×3 image or
an H×W {0, 1} mask (black background, white positive class).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from noise2map.errors import CheckpointError, ConfigError
from noise2map.io import read_json
from noise2map.io import atomic_path

FORMATS = ("png", "pdf")
DPI = 150
CELL_INCHES = 1.6  # one image of a grid
TASK_ORDER = ("ss", "cd")  # the paper's (a) SS, (b) CD
POSITIVE_CLASS = {"ss": "building", "cd": "change"}
INPUT_COLUMNS = {"ss": ["Image"], "cd": ["Pre-Event", "Post-Event"]}
DEFAULT_PROGRESSION = (999, 500, 100, 10, 0)


# Plotting (no torch) ------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display, also on a cluster node
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_base: str | Path) -> list[Path]:
    """Write ``fig`` as ``<out_base>.png`` and ``.pdf`` (atomically) and close it."""
    paths = []
    try:
        for fmt in FORMATS:
            # Appended, not with_suffix: a base such as "fig6.seed0" keeps its dot.
            path = Path(f"{out_base}.{fmt}")
            with atomic_path(path) as tmp:
                # The temp name ends in .tmp: the format must be explicit.
                fig.savefig(tmp, format=fmt, dpi=DPI)
            paths.append(path)
    finally:
        _pyplot().close(fig)
    return paths


def _check_panel(panel: dict) -> None:
    title, columns, rows = panel.get("title", ""), panel["columns"], panel["rows"]
    if not rows:
        raise ValueError(f"panel {title!r} has no rows")
    for i, row in enumerate(rows):
        if len(row) != len(columns):
            raise ValueError(f"panel {title!r}: row {i} has {len(row)} arrays for {len(columns)} columns")
        for j, a in enumerate(row):
            a = np.asarray(a)
            if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
                raise ValueError(f"panel {title!r}: row {i}, column {columns[j]!r} is {a.shape}, "
                                 "neither an H×W mask nor an H×W×3 image")
    labels = panel.get("row_labels")
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"panel {title!r}: {len(labels)} row labels for {len(rows)} rows")


def _show(ax, array) -> None:
    a = np.asarray(array)
    if a.ndim == 2:  # a class mask: 0 black, 1 white, no smoothing across the class border
        ax.imshow(a, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(a, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])  # ticks off but the axes kept, so a row label can sit on the y axis


def grid_figure(panels: Sequence[dict], title: str | None = None):
    """The matplotlib Figure of :func:`plot_qualitative_grid` (left open, for inspection).

    Each panel is a subfigure (``fig.subfigs[k]``) whose axes are its cells, row by row.
    """
    plt = _pyplot()
    for panel in panels:
        _check_panel(panel)
    if not panels:
        raise ValueError("no panels to plot")
    width = max(len(p["columns"]) for p in panels)
    heights = [len(p["rows"]) for p in panels]
    # Room for a section title and the column titles above each section.
    fig = plt.figure(figsize=(CELL_INCHES * width + 0.4, CELL_INCHES * sum(heights) + 0.5 * len(panels)
                              + (0.4 if title else 0)), layout="constrained")
    if title:
        fig.suptitle(title)
    subfigs = np.atleast_1d(fig.subfigures(len(panels), 1, height_ratios=heights))
    for sub, panel in zip(subfigs, panels):
        if panel.get("title"):
            sub.suptitle(panel["title"])
        axes = sub.subplots(len(panel["rows"]), width, squeeze=False)
        for i, row in enumerate(panel["rows"]):
            for j in range(width):
                if j >= len(row):  # a section narrower than the widest one: left-aligned
                    axes[i, j].remove()
                    continue
                _show(axes[i, j], row[j])
                if i == 0:
                    axes[i, j].set_title(panel["columns"][j], fontsize=9)
            if panel.get("row_labels") is not None:
                axes[i, 0].set_ylabel(str(panel["row_labels"][i]), fontsize=8)
    return fig


def plot_qualitative_grid(panels: Sequence[dict], out_base: str | Path, title: str | None = None) -> list[Path]:
    """Fig. 4: inputs, each model's prediction and the ground truth, one row per tile.

    Args:
        panels: sections stacked top to bottom (see the module docstring).
        out_base: output path without suffix.
        title: optional title of the whole figure.

    Returns:
        The written [png, pdf] paths.
    """
    return save_figure(grid_figure(panels, title), out_base)


def plot_timestep_progression(panels: Sequence[dict], out_base: str | Path, title: str | None = None) -> list[Path]:
    """Fig. 5: one tile's inputs, Noise2Map's prediction at each timestep and the ground truth."""
    return plot_qualitative_grid(panels, out_base, title)


def f1_figure(table: pd.DataFrame, task_label: str = "change", title: str | None = None):
    """The matplotlib Figure of :func:`plot_f1_vs_timestep` (left open, for inspection).

    Lines are ``ax.lines[0]`` (positive class) and ``ax.lines[1]`` (class mean); with more
    than one value per timestep each has a ±std band (``ax.collections``).
    """
    plt = _pyplot()
    missing = {"timestep", "f1_positive", "f1_mean"} - set(table.columns)
    if missing:
        raise ValueError(f"F1 table lacks columns {', '.join(sorted(missing))}")
    grouped = table.groupby("timestep", sort=True)[["f1_positive", "f1_mean"]]
    mean, std, count = grouped.mean(), grouped.std(), grouped.size()
    t = mean.index.to_numpy()
    fig, ax = plt.subplots(figsize=(5.5, 3.6), layout="constrained")
    for column, label in (("f1_positive", f"F1 ({task_label} class)"), ("f1_mean", "Mean F1 (both classes)")):
        y = mean[column].to_numpy()
        (line,) = ax.plot(t, y, marker="o", markersize=3, label=label)
        if count.max() > 1:  # several seeds: their spread, not just their mean
            s = std[column].fillna(0).to_numpy()
            ax.fill_between(t, y - s, y + s, color=line.get_color(), alpha=0.2, linewidth=0)
        ends = ((0, "left"), (len(t) - 1, "right")) if len(t) > 1 else ((0, "center"),)
        for k, ha in ends:  # the values at the smallest and the largest t
            ax.annotate(f"{y[k]:.1f}", (t[k], y[k]), textcoords="offset points", xytext=(0, 5),
                        ha=ha, fontsize=7, color=line.get_color())
    ax.set_xlim(min(0, t.min()), t.max())
    ax.margins(y=0.12)  # headroom for the annotations
    ax.set_xlabel("Timestep t")
    # Same scale as the inputs: the suite's metrics are percentages.
    percent = np.nanmax(mean.to_numpy()) > 1.0
    ax.set_ylabel("F1 score (%)" if percent else "F1 score")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def plot_f1_vs_timestep(table: pd.DataFrame, out_base: str | Path, task_label: str = "change",
                        title: str | None = None) -> list[Path]:
    """Fig. 6: F1 of the positive class and mean F1 against the inference timestep.

    Args:
        table: columns ``timestep``, ``f1_positive``, ``f1_mean`` (any scale), optional ``seed``;
            several rows per timestep are averaged and shaded ± their standard deviation.
        out_base: output path without suffix.
        task_label: the positive class's name in the legend ("change", "building").

    Returns:
        The written [png, pdf] paths.
    """
    return save_figure(f1_figure(table, task_label, title), out_base)


# Runs (torch) -------------------------------------------------------------------------------

@dataclass
class LoadedRun:
    """A run folder's model (eval mode, CPU), config and test split."""

    path: Path
    config: dict
    module: object
    task: str
    dataset: str
    seed: int
    name: str
    dataset_name: str
    test_set: object

    @property
    def timestep_conditioned(self) -> bool:
        return bool(self.module.timestep_conditioned)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.module.model.num_train_timesteps)

    def batch_size(self) -> int:
        from noise2map.config import task_settings

        try:
            return int(task_settings(self.config, self.dataset, self.task)["batch_size"])
        except (KeyError, TypeError):
            return 8


def load_run(run_dir: str | Path) -> LoadedRun:
    """Load a trained run folder: its best checkpoint, resolved config and test tiles."""
    from noise2map.config import DATASET_NAMES, evaluation_split, prepared_dir
    from noise2map.data import TileDataset
    from noise2map.training.run import load_checkpoint, read_run_config
    from noise2map.training.tasks import DiscriminativeTask

    run = Path(run_dir)
    ckpt, config_path = run / "checkpoints" / "best.ckpt", run / "config.yaml"
    if not ckpt.is_file() or not config_path.is_file():
        raise CheckpointError(f"{run} has no checkpoints/best.ckpt or config.yaml: train the run first "
                              "(noise2map train ...)")
    config = read_run_config(run)
    module = load_checkpoint(DiscriminativeTask, ckpt)
    module.eval()
    fields = config.get("run", {})
    metrics_path = run / "metrics.json"
    metrics = read_json(metrics_path, "re-score the run (noise2map evaluate RUN)") if metrics_path.is_file() else {}
    task = module.hparams.task
    dataset = fields.get("dataset") or run.parent.parent.name  # runs/<task>/<dataset>/<model>/seed<k>
    return LoadedRun(
        path=run, config=config, module=module, task=task, dataset=dataset,
        seed=int(fields.get("seed", metrics.get("seed", 0))),
        name=metrics.get("model") or module.hparams.model_key,
        dataset_name=metrics.get("dataset") or DATASET_NAMES.get(dataset, dataset),
        test_set=TileDataset(prepared_dir(config, dataset, task), evaluation_split(config, dataset), uint8=True))


def _logits(run: LoadedRun, batch: dict, timestep: int | None):
    """Logits of one batch of uint8 test items at ``timestep`` (None: the run's test timestep)."""
    import torch

    from noise2map.data.store import to_model_input
    from noise2map.keyed_random import evaluation_keys
    from noise2map.training.tasks import task_inputs

    images = tuple(to_model_input(x) for x in task_inputs(batch, run.task))
    # the test's own draws (Gaussian SS noise, DDPM-CD's feature noise), keyed by tile: the
    # same tile gets the same noise at every t and in every batch, and at the test timestep
    # the figure's counts are metrics.json's
    keys = evaluation_keys(run.seed, "test", torch.as_tensor(batch["index"]).long())
    if not run.timestep_conditioned:
        if getattr(run.module.model, "keyed_noise", False):
            return run.module.model(*images, noise_keys=keys)
        return run.module.model(*images)
    t = run.module.hparams.test_timestep if timestep is None else timestep
    timesteps = torch.full((images[0].shape[0],), int(t), dtype=torch.long)
    return run.module.model(*images, timesteps=timesteps, noise_keys=keys)


def _check_timesteps(run: LoadedRun, timesteps) -> list[int]:
    if not run.timestep_conditioned:
        raise ConfigError(f"{run.path} ({run.name}) is not timestep-conditioned: predictions across "
                          "timesteps need a Noise2Map run")
    T = run.num_train_timesteps
    out = [int(t) for t in timesteps]
    bad = [t for t in out if not 0 <= t < T]
    if bad:
        raise ConfigError(f"timesteps {bad} are outside [0, {T}) of {run.path} ({run.name})")
    return out


def most_positive_tiles(test_set, n: int) -> list[str]:
    """The ``n`` tile ids with the most positive pixels (ties: by tile id)."""
    positives = [int(test_set[i]["mask"].sum()) for i in range(len(test_set))]
    order = sorted(range(len(test_set)), key=lambda i: (-positives[i], test_set.tile_ids[i]))
    return [test_set.tile_ids[i] for i in order[:n]]


def _tile_indices(run: LoadedRun, tile_ids: Sequence[str]) -> list[int]:
    where = {tid: i for i, tid in enumerate(run.test_set.tile_ids)}
    for tid in tile_ids:
        if tid not in where:
            raise ConfigError(f"tile {tid!r} is not in the test split of {run.path} "
                              f"({run.test_set.root}, {len(where)} tiles)")
    return [where[tid] for tid in tile_ids]


def _predict_loaded(run: LoadedRun, tile_ids=None, n: int = 3, timesteps=None) -> dict:
    import torch
    from torch.utils.data import default_collate

    steps = [None] if timesteps is None else _check_timesteps(run, timesteps)
    if tile_ids is None:
        tile_ids = most_positive_tiles(run.test_set, n)
    batch = default_collate([run.test_set[i] for i in _tile_indices(run, list(tile_ids))])
    with torch.inference_mode():
        preds = [_logits(run, batch, t).argmax(1).to(torch.uint8).numpy() for t in steps]
    keys = ("image",) if run.task == "ss" else ("pre", "post")
    used = steps if timesteps is not None else (
        [run.module.hparams.test_timestep] if run.timestep_conditioned else [None])
    return {
        "run": str(run.path), "model": run.name, "task": run.task, "dataset": run.dataset_name,
        "tile_ids": list(tile_ids), "input_columns": list(INPUT_COLUMNS[run.task]),
        # uint8 [tiles, inputs, H, W, 3]: the stored bytes, exactly what the model was fed
        "inputs": np.stack([batch[k].numpy().transpose(0, 2, 3, 1) for k in keys], 1),
        "truth": batch["mask"].numpy().astype(np.uint8),  # [tiles, H, W]
        "timesteps": used,
        "predictions": np.stack(preds),  # uint8 [timesteps, tiles, H, W]
    }


def predict_tiles(run_dir: str | Path, tile_ids: Sequence[str] | None = None, n: int = 3,
                  timesteps: Sequence[int] | None = None) -> dict:
    """A run's predictions on chosen test tiles.

    Args:
        run_dir: a trained run folder.
        tile_ids: test tile ids; None picks the ``n`` tiles with the most positive pixels
            (ties by tile id), so the figure shows buildings or changes.
        timesteps: one prediction per timestep (Noise2Map only); None: the run's test
            timestep (baselines: their one prediction).

    Returns:
        ``run, model, task, dataset, tile_ids, input_columns``; ``inputs`` uint8
        [tiles, inputs, H, W, 3]; ``truth`` uint8 [tiles, H, W]; ``timesteps`` (None for a
        baseline); ``predictions`` uint8 [timesteps, tiles, H, W] (argmax class).

    Raises:
        ConfigError: an unknown tile id, or timesteps for a model that takes none.
    """
    return _predict_loaded(load_run(run_dir), tile_ids, n, timesteps)


def _by_task(runs: list[LoadedRun]) -> dict[str, list[LoadedRun]]:
    datasets = sorted({r.dataset for r in runs})
    if len(datasets) > 1:
        raise ConfigError(f"the runs are on several data sets ({', '.join(datasets)}): one figure shows one")
    return {task: [r for r in runs if r.task == task] for task in TASK_ORDER if any(r.task == task for r in runs)}


def _tiles_for(tile_ids, task: str):
    """``tile_ids`` as given to a figure: one list for every task, or a mapping task → list."""
    if tile_ids is None or isinstance(tile_ids, (list, tuple)):
        return tile_ids
    if isinstance(tile_ids, str):
        return [tile_ids]
    chosen = tile_ids.get(task)
    return [chosen] if isinstance(chosen, str) else chosen


def _section_title(letter: str, task: str, dataset: str) -> str:
    from noise2map.config import TASK_NAMES

    return f"({letter}) {TASK_NAMES[task].capitalize()}, {dataset}"


def figure4(run_dirs: Sequence[str | Path], out_base: str | Path, tile_ids=None, n: int = 3) -> list[Path]:
    """Fig. 4: qualitative comparison of models on the same test tiles, SS then CD.

    Args:
        run_dirs: run folders of one data set, any mix of SS and CD models; a task's
            columns keep the given order.
        out_base: output path without suffix.
        tile_ids: a list of test tile ids (for every task), a mapping task → list, or None
            (each task's ``n`` tiles with the most positive pixels).

    Returns:
        The written [png, pdf] paths.
    """
    panels = []
    for k, (task, runs) in enumerate(_by_task([load_run(r) for r in run_dirs]).items()):
        tiles = _tiles_for(tile_ids, task) or most_positive_tiles(runs[0].test_set, n)
        results = [_predict_loaded(r, tiles) for r in runs]
        first = results[0]
        rows = [[*first["inputs"][i], *(res["predictions"][0][i] for res in results), first["truth"][i]]
                for i in range(len(tiles))]
        panels.append({"title": _section_title("ab"[k], task, runs[0].dataset_name),
                       "columns": [*first["input_columns"], *(r.name for r in runs), "Ground Truth"],
                       "rows": rows, "row_labels": list(tiles)})
    return plot_qualitative_grid(panels, out_base)


def figure5(run_dirs: Sequence[str | Path], out_base: str | Path, timesteps: Sequence[int] = DEFAULT_PROGRESSION,
            tile_id=None) -> list[Path]:
    """Fig. 5: Noise2Map's prediction of one tile at each inference timestep (in the given order).

    Args:
        run_dirs: at most one Noise2Map run per task (SS and/or CD); one row each.
        tile_id: a test tile id, a mapping task → id, or None (the tile with the most
            positive pixels).

    Raises:
        ConfigError: a run that is not timestep-conditioned, or two runs of one task.
    """
    panels = []
    for k, (task, runs) in enumerate(_by_task([load_run(r) for r in run_dirs]).items()):
        if len(runs) > 1:
            raise ConfigError(f"figure 5 shows one Noise2Map run per task; got {len(runs)} {task} runs: "
                              + ", ".join(str(r.path) for r in runs))
        res = _predict_loaded(runs[0], _tiles_for(tile_id, task), 1, timesteps)
        inputs = ["Original"] if task == "ss" else res["input_columns"]
        panels.append({"title": f"({'ab'[k]}) {res['model']}, {res['dataset']}",
                       "columns": [*inputs, *(f"t={t}" for t in res["timesteps"]), "GT"],
                       "rows": [[*res["inputs"][0], *res["predictions"][:, 0], res["truth"][0]]],
                       "row_labels": res["tile_ids"]})
    return plot_timestep_progression(panels, out_base)


def default_sweep_timesteps(T: int) -> list[int]:
    """0, 10, 50, 100, 200, …, 900, T − 1 (those below T)."""
    return sorted({t for t in (0, 10, 50, *range(100, T, 100), T - 1) if 0 <= t < T})


def _sweep_loaded(run: LoadedRun, timesteps: Sequence[int]) -> pd.DataFrame:
    import torch

    from noise2map.evaluation.metrics import COUNTS, scores_from_counts, tile_counts

    steps = _check_timesteps(run, timesteps)
    loader = torch.utils.data.DataLoader(run.test_set, batch_size=run.batch_size(), shuffle=False)
    totals = torch.zeros(len(steps), 4, dtype=torch.long)
    # Batches outside, timesteps inside: the test split is read once for all timesteps.
    with torch.inference_mode():
        for batch in loader:
            for k, t in enumerate(steps):
                totals[k] += tile_counts(_logits(run, batch, t), batch["mask"].long()).sum(0)
    rows = []
    for t, counts in zip(steps, totals.tolist()):
        scores = scores_from_counts(*counts)
        rows.append({"timestep": t, "f1_positive": scores["f1_pos"], "f1_mean": scores["f1"],
                     "precision": scores["precision"], "recall": scores["recall"], "iou": scores["iou"],
                     **dict(zip(COUNTS, counts)), "seed": run.seed, "model": run.name, "task": run.task,
                     "dataset": run.dataset_name})
    return pd.DataFrame(rows)


def timestep_sweep(run_dir: str | Path, timesteps: Sequence[int]) -> pd.DataFrame:
    """Whole-test-split scores of a Noise2Map run at each inference timestep.

    Counts are summed over the split before scoring (as metrics.json), and the draws are the
    test's own (keyed by seed and tile), so at the run's test timestep the row equals its
    metrics.json, Gaussian SS noise included.

    Returns:
        One row per timestep (given order): ``timestep, f1_positive, f1_mean, precision,
        recall, iou`` (percent; precision, recall, iou are class means as in Table I),
        ``tp, fp, fn, tn, seed, model, task, dataset``.
    """
    return _sweep_loaded(load_run(run_dir), timesteps)


def figure6(run_dirs: Sequence[str | Path], out_base: str | Path, timesteps: Sequence[int] | None = None,
            csv_path: str | Path | None = None) -> list[Path]:
    """Fig. 6: F1 against the inference timestep, mean ± std over the runs' seeds.

    Args:
        run_dirs: seeds of one Noise2Map model on one data set.
        timesteps: None: :func:`default_sweep_timesteps` of the model's T.
        csv_path: where to write the sweep table (one row per run and timestep), if given.

    Returns:
        The written [png, pdf] paths, then ``csv_path`` if given.
    """
    runs = [load_run(r) for r in run_dirs]
    if not runs:
        raise ConfigError("figure 6 needs at least one run")
    kinds = sorted({(r.task, r.name, r.dataset) for r in runs})
    if len(kinds) > 1:
        raise ConfigError(f"figure 6 averages seeds of one model on one data set; got {kinds}")
    steps = list(timesteps) if timesteps is not None else default_sweep_timesteps(runs[0].num_train_timesteps)
    table = pd.concat([_sweep_loaded(r, steps) for r in runs], ignore_index=True)
    if csv_path is not None:
        with atomic_path(csv_path) as tmp:
            table.to_csv(tmp, index=False)
    run = runs[0]
    paths = plot_f1_vs_timestep(table, out_base, POSITIVE_CLASS[run.task], f"{run.name}, {run.dataset_name}")
    return paths + ([Path(csv_path)] if csv_path is not None else [])
