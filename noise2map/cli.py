"""``noise2map`` command line: the entry points the Snakemake rules call.

    noise2map models [--format csv]           registered models and their parameter counts
    noise2map synthesize DATASET --raw DIR     synthetic raw data in the real layout (demo)
    noise2map acquire DATASET --raw DIR [--downloads DIR] [--mirror URL] [--marker M]
                                               raw data in place: download/verify/extract, or say how
    noise2map data status [--config CFG]       per data set: present / verified / prepared / to do
    noise2map prepare NAME --config CFG [--marker M]  raw layout → tile store (built beside, then swapped in)
    noise2map pretrain --config CFG --output-dir DIR
    noise2map train --config CFG --task T --dataset D --model M --seed S [--pretrained PT] [--variant TEXT]
    noise2map train-multitask --config CFG --variant cd0p7ss1p3 --seed S --run-dir DIR [--pretrained PT]
    noise2map import-released CKPT --task T --dataset D [--config CFG] [--seed S] [--run-dir DIR]
                                               a released train.py checkpoint → a scored run folder
    noise2map evaluate RUN_DIR [--devices N] [--accelerator cpu|gpu]   re-score a run on test
    noise2map runs [--config CFG | --results DIR] [--remove-stale]
                                               run folders: fingerprint, done / resumable / stale, epoch, size
    noise2map tables table1|table2..table5|multitask|selection-delta --output CSV METRICS.json ... [--variants V ...]
    noise2map fidelity [--config CFG] --output CSV  the preset against the paper text and the released code
    noise2map figures fig4|fig5|fig6 --output BASE --runs RUN_DIR ... [--tiles N] [--timesteps T ...] [--csv CSV]
    noise2map weights fetch [NAME ...] --cache DIR   pretrained checkpoints into the cache
    noise2map weights export aid-10k --cache DIR --output PT   a released backbone as Noise2Map's pretrained UNet
    noise2map bench efficiency [--models M ...] [--size paper] [--output CSV]
    noise2map bench loader [--workers 0 2] [--batch-size 8] [--output JSON]   tile store vs per-sample GeoTIFF
    noise2map bench train [--size paper] [--variants fp32 bf16 ...] [--device cuda] [--output JSON]
    noise2map bench infer [--models M ...] [--size paper] [--batch-size 8] [--device cuda] [--output JSON]
    noise2map rank CSV [--output OUT.csv]
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from pathlib import Path

from noise2map.errors import ConfigError, Noise2MapError


def _config(path: str) -> dict:
    from noise2map.config import load_config

    return load_config(path)


def cmd_models(args) -> None:
    import pandas as pd

    from baselines import MODELS, count_params, load_plugins

    load_plugins()
    if args.config:  # its model_modules join the registry
        _config(args.config)
    rows = [{"name": s.name, "key": s.key, "task": s.task,
             "params_m": round(count_params(s.key, args.size) / 1e6, 2),
             "paper_params_m": s.paper_params_m, "reference_params_m": s.expected_params_m,
             "origin": s.origin, "build": s.build_note} for s in MODELS.values()]
    table = pd.DataFrame(rows)
    if args.format == "csv":
        table.to_csv(sys.stdout, index=False)
    else:
        print(table.drop(columns="build").to_string(index=False))


def _write_marker(marker: str | None, root: Path, source: str) -> None:
    """The raw data set's stand-in for the workflow: where it is and what it holds."""
    if not marker:
        return
    from noise2map.io import write_json

    files = [p for p in root.rglob("*") if p.is_file()]
    write_json(marker, {"raw_dir": str(root), "source": source, "files": len(files),
                        "bytes": sum(p.stat().st_size for p in files)})


def cmd_synthesize(args) -> None:
    from noise2map.data import generate

    root = generate(args.dataset, Path(args.raw), seed=args.seed)
    _write_marker(args.marker, root, f"synthetic (seed {args.seed})")
    print(root)


def cmd_acquire(args) -> None:
    from noise2map.data.acquire import acquire

    manifest = acquire(args.dataset, Path(args.raw), Path(args.downloads), base_url=args.mirror)
    root = Path(manifest["raw_dir"])
    archives = ", ".join(f"{a['file']} ({a['bytes']} bytes, sha256 {a['sha256']})" for a in manifest["archives"])
    _write_marker(args.marker, root, f"archive: {archives}" if archives else manifest["source"])
    print(f"{args.dataset}: in place in {root} ({manifest['source']}"
          + (f"; verified {archives}" if archives else "") + ")")


def cmd_runs(args) -> None:
    from noise2map.training.resume import format_states, remove_stale, run_states

    root = Path(args.results) if args.results else Path((_config(args.config) if args.config else
                                                        _config_default())["results_dir"])
    rows = run_states(root)
    print(format_states(rows))
    if args.remove_stale:
        gone = remove_stale(rows)
        print(f"removed {len(gone)} stale checkpoint folder(s), {sum(r['bytes'] for r in gone)} bytes"
              + "".join(f"\n  {r['run']}" for r in gone))


def cmd_data(args) -> None:
    from noise2map.data.acquire import format_status, status

    config = _config(args.config) if args.config else _config_default()
    print(format_status(status(config), config))


def cmd_prepare(args) -> None:
    from noise2map.config import PRETRAIN_DATASETS, preparation_options, prepared_dir, raw_dir
    from noise2map.data import prepare

    config = _config(args.config)
    dataset, _, task = args.name.partition("-")
    out = prepared_dir(config, dataset, task or "pretrain")
    num = config["pretrain"]["num_images"] if args.name in PRETRAIN_DATASETS else None
    manifest = prepare(args.name, raw_dir(config), out, config["tile_size"], seed=config["seeds"][0], num_images=num,
                       options=preparation_options(config, args.name))
    if args.marker:  # what the workflow waits for, written once the new store is in place
        from noise2map.io import write_json

        write_json(args.marker, {**manifest, "store": str(out)})
    counts = ", ".join(f"{s} {v['count']}" for s, v in manifest["splits"].items())
    print(f"{args.name}: {counts} → {out}")


def cmd_pretrain(args) -> None:
    from noise2map.config import with_pretrain_dataset
    from noise2map.training.run import pretrain_run

    config = with_pretrain_dataset(_config(args.config), args.dataset)
    print(pretrain_run(config, Path(args.output_dir), args.unet, threads=args.threads))


def cmd_train(args) -> None:
    from noise2map.config import run_dir
    from noise2map.training.phases import JOB
    from noise2map.training.run import train_run

    JOB.mark("imports")
    config = _config(args.config)
    if args.selection:
        config["selection"] = args.selection
    if args.ablation:
        from noise2map.reporting.ablations import ablation_config

        config = ablation_config(config, *args.ablation.split("/", 1))
    run = Path(args.run_dir) if args.run_dir else run_dir(config, args.task, args.dataset, args.model, args.seed)
    metrics = train_run(config, args.task, args.dataset, args.model, args.seed, run,
                        Path(args.pretrained) if args.pretrained else None, threads=args.threads,
                        variant=args.variant)
    if metrics is not None:  # rank 0 of a multi-device run
        print(f"{metrics['model']} on {metrics['dataset']}: F1 {metrics['f1']:.2f}, IoU {metrics['iou']:.2f} → {run}")


def cmd_train_multitask(args) -> None:
    from noise2map.reporting.ablations import ablation_config, lambdas_of
    from noise2map.training.multitask import multitask_run

    config = ablation_config(_config(args.config), "multitask", args.variant)
    metrics = multitask_run(config, lambdas_of(args.variant), args.seed, Path(args.run_dir),
                            Path(args.pretrained) if args.pretrained else None, config["ablations"]["dataset"],
                            threads=args.threads)
    if metrics is not None:  # rank 0 of a multi-device run
        print(", ".join(f"{t}: F1 {m['f1']:.2f}" for t, m in metrics.items()) + f" → {args.run_dir}")


def cmd_import_released(args) -> None:
    from noise2map.config import run_dir
    from noise2map.training.released import MODEL_KEYS, import_released

    config = _config(args.config) if args.config else _config_default()
    run = Path(args.run_dir) if args.run_dir else run_dir(config, args.task, args.dataset,
                                                          f"{MODEL_KEYS[args.task]}-released", args.seed)
    metrics = import_released(Path(args.checkpoint), config, args.task, args.dataset, run, args.seed)
    print(f"{metrics['model']} on {metrics['dataset']} ({metrics['evaluated_on']}): F1 {metrics['f1']:.2f}, "
          f"IoU {metrics['iou']:.2f} → {run}")


def cmd_evaluate(args) -> None:
    from noise2map.training.run import evaluate_run

    metrics = evaluate_run(Path(args.run_dir), devices=args.devices, accelerator=args.accelerator)
    if metrics is not None:  # rank 0 of a multi-device evaluation
        print(f"{metrics['model']} on {metrics['dataset']}: F1 {metrics['f1']:.2f}, IoU {metrics['iou']:.2f}")


def cmd_tables(args) -> None:
    from noise2map.reporting.ablations import TABLES as ABLATION_TABLES
    from noise2map.reporting.tables import write_selection_delta, write_table1

    if args.table in ABLATION_TABLES:
        from noise2map.reporting.ablations import write_ablation_table

        table = write_ablation_table(args.table, args.metrics, Path(args.output), args.variants, args.num_images)
    elif args.table == "table1":
        table = write_table1(args.metrics, Path(args.output), resamples=args.resamples,
                             bootstrap_seed=args.bootstrap_seed, config=_config(args.config) if args.config else None)
    else:
        table = write_selection_delta(args.metrics, Path(args.output))
    print(f"{args.table}: {len(table)} rows → {args.output}")


def cmd_fidelity(args) -> None:
    from noise2map.reporting.fidelity import read_manifests, write_fidelity

    config = _config(args.config) if args.config else _config_default()
    table = write_fidelity(config, Path(args.output), read_manifests(args.manifest))
    tested = int(table["backed_by"].str.startswith("behaviour").sum())
    print(f"fidelity: {int(table['matches_release'].sum())} of {len(table)} points match the released code, "
          f"{tested} backed by a behaviour test → {args.output}")


def cmd_figures(args) -> None:
    from noise2map.reporting import figures

    if args.figure == "fig4":
        paths = figures.figure4(args.runs, args.output, n=args.tiles)
    elif args.figure == "fig5":
        paths = figures.figure5(args.runs, args.output, **({"timesteps": args.timesteps} if args.timesteps else {}))
    else:
        paths = figures.figure6(args.runs, args.output, args.timesteps, args.csv)
    print(f"{args.figure}: " + ", ".join(str(p) for p in paths))


def cmd_bench(args) -> None:
    from noise2map.bench.efficiency import efficiency_markdown, efficiency_table
    from noise2map.io import atomic_path, write_text
    from noise2map.reporting.tables import PAPER_TABLE1

    config = _config(args.config) if args.config else None
    size = args.size or (config["model_size"] if config else "paper")
    tile = args.tile or (config["tile_size"] if config else 256)
    keys = args.models or [k for task in ("ss", "cd") for k in (config or _config_default())["models"][task]]
    device = args.device or ("cuda" if __import__("torch").cuda.is_available() else "cpu")
    table = efficiency_table(keys, size=size, tile=tile, repeats=args.repeats, device=device)
    markdown = efficiency_markdown(table, PAPER_TABLE1.with_name("paper_efficiency.csv"))
    print(markdown)
    if args.output:
        with atomic_path(args.output) as tmp:
            table.to_csv(tmp, index=False, float_format="%.4f")
        write_text(Path(args.output).with_suffix(".md"), markdown)


def _bench_report(args, name: str, device: str, result: dict, markdown) -> None:
    """Add machine, versions and settings to a benchmark's result; write JSON + Markdown; print the table."""
    from noise2map.bench.common import default_output, machine_info, versions, write_report

    result["machine"] = machine_info(device)
    result["versions"] = versions()
    text = markdown(result)
    path, md = write_report(args.output or default_output(name, device), result, text)
    print(text)
    print(f"→ {path} and {md}")


def _bench_threads(args) -> None:
    if args.threads:
        __import__("torch").set_num_threads(args.threads)


def cmd_bench_loader(args) -> None:
    from noise2map.bench import loader

    _bench_threads(args)
    result = loader.run(mosaics=args.mosaics, mosaic_size=args.mosaic_size, tile=args.tile_size, tiles=args.tiles,
                        batch_size=args.batch_size, workers=args.workers, warmup_batches=args.warmup_batches,
                        seed=args.seed, compress=args.compress, uint8=not args.no_uint8, workdir=args.workdir,
                        progress=logging.getLogger("noise2map.bench").info)
    _bench_report(args, "loader", "cpu", result, loader.markdown)


def cmd_bench_train(args) -> None:
    from noise2map.bench import train
    from noise2map.bench.common import resolve_device

    _bench_threads(args)
    device = resolve_device(args.device)
    result = train.run(args.model, args.size, args.batch_size, args.tile_size, args.steps, args.warmup,
                       args.variants, device, args.optimizer, args.lr, args.compile_backend, args.seed,
                       progress=logging.getLogger("noise2map.bench").info)
    _bench_report(args, "train", device, result, train.markdown)


def cmd_bench_infer(args) -> None:
    from noise2map.bench import infer
    from noise2map.bench.common import resolve_device

    _bench_threads(args)
    device = resolve_device(args.device)
    result = infer.run(args.models, args.size, args.tile_size, args.batch_size, args.repeats, args.warmup, device,
                       progress=logging.getLogger("noise2map.bench").info)
    _bench_report(args, "infer", device, result, infer.markdown)


def cmd_bench_demo_times(args) -> None:
    import time

    from noise2map.bench.demo_times import report

    wall = time.time() - args.since if args.since else float("nan")
    print(report(Path(args.results), Path(args.benchmarks), wall, args.cores))


def cmd_bench_step(args) -> None:
    import tempfile

    from noise2map.bench import step
    from noise2map.bench.common import resolve_device
    from noise2map.config import load_config

    _bench_threads(args)
    device = resolve_device(args.device)
    config = load_config(*args.config)
    with tempfile.TemporaryDirectory(prefix="noise2map-step-") as scratch:
        result = step.run(config, Path(args.work_dir or scratch), args.models, device, not args.no_pretrain,
                          progress=logging.getLogger("noise2map.bench").info)
    _bench_report(args, "step", device, result, step.markdown)
    failed = [r["key"] for r in result["models"] if not r["ok"]]
    if failed:
        raise Noise2MapError(f"{len(failed)} of {len(result['models'])} failed: {', '.join(failed)} "
                             "(the errors are in the report)")


def _config_default() -> dict:
    from noise2map.config import load_config

    return load_config()


def cmd_weights(args) -> None:
    from noise2map import weights

    if args.action == "export":
        if len(args.names) != 1 or not args.output:
            raise ConfigError("weights export takes one released backbone and --output")
        out = weights.export_released_backbone(args.names[0], Path(args.cache), Path(args.output))
        print(f"released backbone {args.names[0]} → {out}")
        return
    if args.action == "list":
        lock = weights.read_lock(Path(args.cache))
        for name, ckpt in weights.CHECKPOINTS.items():
            state = "fetched" if name in lock and (Path(args.cache) / name).is_file() else "missing"
            print(f"{state:8} {name:48} {ckpt.description}")
        return
    names = args.names or list(weights.CHECKPOINTS)
    kwargs = {"base_url": args.base_url} if args.base_url else {}
    lock = weights.fetch(names, Path(args.cache), **kwargs)
    for name in names:
        print(f"{name}: {lock[name]['sha256']} ({lock[name]['bytes']} bytes)")


def cmd_rank(args) -> None:
    from noise2map.errors import DataNotFoundError
    from noise2map.io import atomic_path
    from noise2map.evaluation.rank import rank_models, read_score_table

    if not Path(args.csv).is_file():
        raise DataNotFoundError(f"{args.csv} does not exist")
    ranks = rank_models(read_score_table(args.csv))
    if args.output:
        with atomic_path(args.output) as tmp:
            ranks.to_csv(tmp, index=False)
    else:
        ranks.to_csv(sys.stdout, index=False)


def _add_threads(p) -> None:
    p.add_argument("--threads", type=int, help="CPU threads of a new run (default: training.num_threads); "
                   "a resumed run keeps the count it started with")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="noise2map", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also NOISE2MAP_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list registered models with parameter counts")
    p.add_argument("--format", choices=["table", "csv"], default="table")
    p.add_argument("--size", choices=["paper", "demo"], default="paper")
    p.add_argument("--config", help="a preset whose model_modules also register models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("synthesize", help="write synthetic raw data in a data set's real layout")
    p.add_argument("dataset")
    p.add_argument("--raw", required=True, help="parent folder of the raw data sets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--marker", help="write a JSON marker here once done (for the workflow)")
    p.set_defaults(func=cmd_synthesize)

    p = sub.add_parser("acquire", help="put a raw data set in place: download (or take the archive you "
                       "supplied), verify, extract; or say exactly what to fetch and where to put it")
    p.add_argument("dataset", help="spacenet7, whu, whu-cd, xview2, aid, majortom or imagenet")
    p.add_argument("--raw", required=True, help="parent folder of the raw data sets")
    p.add_argument("--downloads", default="data/downloads",
                   help="archives are read from / downloaded to here (default data/downloads)")
    p.add_argument("--mirror", help="fetch every archive from <URL>/<file name> instead (config key data_mirror)")
    p.add_argument("--marker", help="write a JSON marker here once in place (for the workflow)")
    p.set_defaults(func=cmd_acquire)

    p = sub.add_parser("runs", help="run folders: fingerprint, state (done / resumable / started / stale), epoch, "
                                    "size; --remove-stale deletes the stale checkpoint folders")
    p.add_argument("--config", help="a preset: list its results_dir (default: the paper preset's)")
    p.add_argument("--results", help="list this folder instead")
    p.add_argument("--remove-stale", action="store_true",
                   help="delete every checkpoints/stale-<fingerprint>/ folder listed (the only command that does)")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("data", help="raw and prepared data sets")
    data_modes = p.add_subparsers(dest="data_command", required=True)
    p = data_modes.add_parser("status", help="per data set: present / verified / prepared counts / what to do")
    p.add_argument("--config", help="a preset merged over the paper preset (default: the paper preset)")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("prepare", help="turn a raw data set into its tile store")
    p.add_argument("name", help="spacenet7-ss, spacenet7-cd, whu-ss, whu-cd, xview2-ss, xview2-cd, aid, imagenet or majortom")
    p.add_argument("--config", required=True)
    p.add_argument("--marker", help="write a copy of the manifest here once the new store is in place (the workflow's "
                                    "<store>.prepared.json)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("pretrain", help="DDPM pretraining of the denoising UNet")
    p.add_argument("--config", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--unet", choices=["noise2map", "sr3"], default="noise2map",
                   help="Noise2Map's UNet or DDPM-CD's SR3 UNet")
    p.add_argument("--dataset", choices=["aid", "imagenet", "majortom"],
                   help="pretraining sample (default: the config's pretrain.dataset; Table III uses all three)")
    _add_threads(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("train", help="train one model on one data set and evaluate it on test")
    p.add_argument("--config", required=True)
    p.add_argument("--task", choices=["ss", "cd"], required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pretrained", help="pretrained UNet state dict (Noise2Map only)")
    p.add_argument("--run-dir", help="default: <results_dir>/runs/<task>/<dataset>/<model>/seed<k>")
    p.add_argument("--selection", choices=["released", "val"], help="checkpoint selection (default: the config's)")
    p.add_argument("--ablation", metavar="TABLE/VARIANT", help="an ablation variant, e.g. table4/T500 (noise2map.reporting.ablations)")
    p.add_argument("--variant", metavar="TEXT",
                   help='a Table I row beside the model\'s, out of the rank, e.g. "released aid-10k backbone"')
    _add_threads(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("train-multitask", help="multi-task ablation: one shared UNet with SS and CD heads")
    p.add_argument("--config", required=True)
    p.add_argument("--variant", required=True, help="the (λ_CD, λ_SS) pair, e.g. cd0p7ss1p3 (ablations.lambda_variant)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pretrained", help="pretrained UNet (.pt) to fine-tune")
    p.add_argument("--run-dir", required=True, help="writes ss/ and cd/ (metrics.json, tile_counts.csv) inside")
    _add_threads(p)
    p.set_defaults(func=cmd_train_multitask)

    p = sub.add_parser("import-released", help="a best_model_epoch_<E>.pth of the released train.py → a run folder")
    p.add_argument("checkpoint", help="the released model.state_dict() (plain or DataParallel's module. keys)")
    p.add_argument("--config", help="preset or resolved config (default: the paper preset)")
    p.add_argument("--task", choices=["ss", "cd"], required=True)
    p.add_argument("--dataset", choices=["spacenet7", "whu", "xview2"], required=True)
    p.add_argument("--seed", type=int, default=0, help="the seed it is listed under in the tables")
    p.add_argument("--run-dir", help="default: <results_dir>/runs/<task>/<dataset>/noise2map-<task>-released/seed<S>")
    p.set_defaults(func=cmd_import_released)

    p = sub.add_parser("evaluate", help="re-score a run's best checkpoint on the test split")
    p.add_argument("run_dir")
    p.add_argument("--devices", type=int, help="processes (each test tile is scored on exactly one)")
    p.add_argument("--accelerator", choices=["cpu", "gpu", "auto"], help="default: the run's config")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("tables", help="write a paper table from run metrics")
    p.add_argument("table", choices=["table1", "selection-delta", "table2", "table3", "table4", "table5", "multitask"])
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap replicates for the intervals")
    p.add_argument("--bootstrap-seed", type=int, default=0)
    p.add_argument("--output", required=True, help="CSV path; the Markdown goes beside it")
    p.add_argument("metrics", nargs="+", help="metrics.json of the runs")
    p.add_argument("--variants", nargs="+", help="ablation tables: the variant of each metrics file, in order "
                   "(default: the folder under ablations/<table>/)")
    p.add_argument("--num-images", type=int, help="Table III: images per pretraining sample, for the note")
    p.add_argument("--config", help="table1: refuse runs whose settings fingerprint is not what this preset gives")
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("fidelity", help="the preset against the paper text and the released code, point by point")
    p.add_argument("--config", help="a preset or resolved config (default: the paper preset)")
    p.add_argument("--output", required=True, help="CSV (a .md beside it)")
    p.add_argument("--manifest", action="append", default=[],
                   help="a prepared store's manifest.json (repeatable): the ledger adds what that data shows "
                        "(the xView2 self-check, the SpaceNet7 counts)")
    p.set_defaults(func=cmd_fidelity)

    p = sub.add_parser("figures", help="the paper's Figures 4-6 from trained runs (PNG + PDF)")
    p.add_argument("figure", choices=["fig4", "fig5", "fig6"],
                   help="fig4: every model's prediction of chosen test tiles; fig5: Noise2Map across "
                        "inference timesteps; fig6: F1 against the inference timestep")
    p.add_argument("--output", required=True, help="path without suffix: OUTPUT.png and OUTPUT.pdf are written")
    p.add_argument("--runs", nargs="+", required=True, help="run folders (fig5: one Noise2Map run per task; "
                                                            "fig6: the seeds of one Noise2Map run)")
    p.add_argument("--tiles", type=int, default=3, help="fig4: test tiles shown (most positive pixels first)")
    p.add_argument("--timesteps", type=int, nargs="+", help="fig5: the timesteps shown; fig6: those scored")
    p.add_argument("--csv", help="fig6: where to write the per-timestep scores")
    p.set_defaults(func=cmd_figures)

    bench = sub.add_parser("bench", help="benchmarks that print their figures")
    modes = bench.add_subparsers(dest="which", required=True)

    p = modes.add_parser("efficiency", help="parameters, FLOPs and latency of models (CSV + Markdown)")
    p.add_argument("--config", help="take models, size and tile size from a preset")
    p.add_argument("--models", nargs="+", help="registry keys (default: the preset's Table I models)")
    p.add_argument("--size", choices=["paper", "demo"])
    p.add_argument("--tile", type=int)
    p.add_argument("--repeats", type=int, default=3, help="timed forward passes per model (median)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--output", help="CSV path; the Markdown goes beside it")
    p.set_defaults(func=cmd_bench)

    def common(p, name):
        p.add_argument("--output", help="JSON path; the Markdown goes beside it "
                       f"(default results/bench/{name}_<cpu|gpu>.json)")
        p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
        p.add_argument("--seed", type=int, default=0)

    p = modes.add_parser("loader", help="tiles/s of the tile store against the released per-sample GeoTIFF read")
    p.add_argument("--mosaics", type=int, default=8, help="synthetic SpaceNet7-sized mosaics to build")
    p.add_argument("--mosaic-size", type=int, default=1024)
    p.add_argument("--tile-size", type=int, default=256)
    p.add_argument("--tiles", type=int, default=512, help="timed tiles per source and worker count")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, nargs="+", default=[0], help="DataLoader workers; the first gives 'speedup'")
    p.add_argument("--warmup-batches", type=int, default=1, help="untimed first batches (worker start)")
    p.add_argument("--compress", choices=["deflate", "lzw"], help="GeoTIFF compression (default none)")
    p.add_argument("--no-uint8", action="store_true",
                   help="leave out the informational rows of the store decoded to float in the loader")
    p.add_argument("--workdir", help="parent of the temporary folder (default: the system's)")
    common(p, "loader")
    p.set_defaults(func=cmd_bench_loader)

    from noise2map.bench.common import TRAIN_VARIANTS

    p = modes.add_parser("train", help="Noise2Map training images/s, peak memory and MFU per speed setting")
    p.add_argument("--model", default="noise2map-ss", help="registry key (default noise2map-ss)")
    p.add_argument("--size", choices=["paper", "demo"], default="paper")
    p.add_argument("--tile-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant (compilation included)")
    p.add_argument("--variants", nargs="+", choices=TRAIN_VARIANTS, default=list(TRAIN_VARIANTS),
                   help="fp32 always runs, as the reference")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--optimizer", choices=["adam", "adamw"], default="adam", help="as the preset's training.optimizer")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend of compile/fastest")
    common(p, "train")
    p.set_defaults(func=cmd_bench_train)

    p = modes.add_parser("infer", help="latency (batch 1) and throughput (batch B) of every registered model")
    p.add_argument("--models", nargs="+", help="registry keys (default: every registered model)")
    p.add_argument("--size", choices=["paper", "demo"], default="paper")
    p.add_argument("--tile-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8, help="batch of the throughput figure")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per figure (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before each figure")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    common(p, "infer")
    p.set_defaults(func=cmd_bench_infer)

    p = modes.add_parser("demo-times", help="wall time per rule and in total, job phases and learning of a demo run")
    p.add_argument("--since", type=float, help="the run's start (epoch seconds): the wall time is until now")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--results", default="results/demo")
    p.add_argument("--benchmarks", default="benchmarks/demo")
    p.set_defaults(func=cmd_bench_demo_times)

    p = modes.add_parser("step", help="one optimiser step, validation and test scoring of every Table I model "
                         "and one pretraining step, through the training code (the GPU check)")
    p.add_argument("--config", nargs="*", default=[], help="presets over paper.yaml (default: the paper preset)")
    p.add_argument("--models", nargs="+", help="registry keys (default: the preset's Table I models)")
    p.add_argument("--no-pretrain", action="store_true", help="leave out the pretraining step")
    p.add_argument("--work-dir", help="where the random tile stores and runs go (default: a temporary folder)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    common(p, "step")
    p.set_defaults(func=cmd_bench_step)

    p = sub.add_parser("weights", help="fetch or list the pretrained checkpoints of the weight cache, or export a "
                                       "released backbone")
    p.add_argument("action", choices=["fetch", "list", "export"])
    p.add_argument("names", nargs="*", help="checkpoint names (default: all); export: one released backbone "
                                            "(aid-10k, sat2gen, imagenet2gen, ddpm-church)")
    p.add_argument("--output", help="export: the UNet state dict to write (noise2map_unet.pt)")
    p.add_argument("--cache", default="weights", help="the weight cache directory")
    p.add_argument("--base-url", help="a mirror of the hub (default https://huggingface.co)")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("rank", help="the paper's rank from a table with task, model, dataset, f1, iou")
    p.add_argument("csv")
    p.add_argument("--output")
    p.set_defaults(func=cmd_rank)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None and os.environ.get("NOISE2MAP_WARM_SOCKET"):  # a local Snakemake job with warm_start
        from noise2map.warm_client import run_warm

        code = run_warm(sys.argv[1:])
        if code is not None:
            return code
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    debug = args.debug or os.environ.get("NOISE2MAP_DEBUG", "") not in ("", "0")
    try:
        args.func(args)
    except (Noise2MapError, OSError) as err:
        if debug:
            raise
        message = os_error_message(err) if isinstance(err, OSError) and not isinstance(err, Noise2MapError) else err
        print(f"noise2map {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


# What to do about the system errors a user meets: the disk, the permissions, a path.
_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free space there, or point data_dir / results_dir / weights_dir elsewhere",
    errno.EDQUOT: "the disk quota is used up: free space, or point the outputs elsewhere",
    errno.EACCES: "permission denied: check the folder's owner and mode, or choose a folder you can write",
    errno.EPERM: "operation not permitted: check the folder's owner and mode",
    errno.ENOENT: "no such file or folder: check the path (and the config's data_dir / results_dir)",
    errno.EROFS: "the file system is read-only: choose a writable folder",
}


def os_error_message(err: OSError) -> str:
    """``<path>: <what happened>; <what to do>`` for an OSError from anywhere in a command."""
    where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f) or "(no path given)"
    what = err.strerror or err.__class__.__name__
    hint = _OS_HINTS.get(err.errno, "rerun with --debug for the traceback")
    return f"{where}: {what}; {hint}"


if __name__ == "__main__":
    sys.exit(main())
