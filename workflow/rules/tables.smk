# Run metrics → the paper's tables, beside the numbers the paper reports.


rule write_table1:
    input:
        metrics=run_metrics() + released_row_metrics(),
        counts=[m.replace("metrics.json", "tile_counts.csv") for m in run_metrics() + released_row_metrics()],
    output:
        csv=report(f"{RESULTS}/table1.csv", caption="../report/table1.rst", category="Table I"),
        md=f"{RESULTS}/table1.md",
        intervals=report(
            f"{RESULTS}/table1_intervals.csv", caption="../report/table1_intervals.rst", category="Table I"
        ),
        ranks=report(f"{RESULTS}/rank_stability.csv", caption="../report/rank_stability.rst", category="Table I"),
    log:
        f"logs/{config['preset']}/write_table1.log",
    conda:
        "../envs/noise2map.yaml"
    params:
        bootstrap=config.get("bootstrap", {"resamples": 1000, "seed": 0}),
        config=RESOLVED_CONFIG,
    message:
        "Writing Table I with seeds, intervals and rank stability ({config[preset]} preset)"
    shell:
        "noise2map tables table1 --output {output.csv} --resamples {params.bootstrap[resamples]}"
        " --bootstrap-seed {params.bootstrap[seed]} --config {params.config} {input.metrics} > {log} 2>&1"


rule write_ablation_table:
    input:
        lambda wc: ablation_run_paths(config, RESULTS, wc.table),
    output:
        csv=report(
            f"{RESULTS}/{{table}}.csv",
            caption="../report/ablation.rst",
            category="Ablations",
            labels={"table": "{table}"},
        ),
        md=f"{RESULTS}/{{table}}.md",
    log:
        f"logs/{config['preset']}/write_ablation_{{table}}.log",
    conda:
        "../envs/noise2map.yaml"
    params:
        variants=lambda wc: [variant for variant, _ in ablation_table_runs(config, RESULTS, wc.table)],
        num_images=config["pretrain"]["num_images"],
    message:
        "Writing ablation {wildcards.table} ({config[preset]} preset)"
    shell:
        "noise2map tables {wildcards.table} --output {output.csv} {input} --variants {params.variants}"
        " --num-images {params.num_images} > {log} 2>&1"


rule write_selection_delta:
    input:
        preset=run_metrics(),
        other=run_metrics(f"{RESULTS}/selection-{OTHER_SELECTION}"),
    output:
        csv=report(
            f"{RESULTS}/selection_delta.csv", caption="../report/selection_delta.rst", category="Checkpoint selection"
        ),
        md=f"{RESULTS}/selection_delta.md",
    log:
        f"logs/{config['preset']}/write_selection_delta.log",
    conda:
        "../envs/noise2map.yaml"
    message:
        "Comparing released and validation-carve checkpoint selection ({config[preset]} preset)"
    shell:
        "noise2map tables selection-delta --output {output.csv} {input.preset} {input.other} > {log} 2>&1"


rule write_efficiency:
    output:
        csv=report(f"{RESULTS}/efficiency.csv", caption="../report/efficiency.rst", category="Efficiency"),
        md=f"{RESULTS}/efficiency.md",
    log:
        f"logs/{config['preset']}/write_efficiency.log",
    conda:
        "../envs/noise2map.yaml"
    resources:
        **rule_resources(config, "write_efficiency"),
    params:
        models=[m for task in config["tasks"] for m in config["models"][task]],
        config=RESOLVED_CONFIG,
    message:
        "Measuring parameters, FLOPs and latency of every model ({config[preset]} preset)"
    shell:
        "noise2map bench efficiency --config {params.config} --models {params.models} --output {output.csv} > {log} 2>&1"


# Paper text, released code and this preset, point by point (noise2map.reporting.fidelity).
rule write_fidelity:
    input:
        manifests=fidelity_manifests(),
    output:
        csv=report(f"{RESULTS}/fidelity.csv", caption="../report/fidelity.rst", category="Fidelity"),
        md=f"{RESULTS}/fidelity.md",
    log:
        f"logs/{config['preset']}/write_fidelity.log",
    conda:
        "../envs/noise2map.yaml"
    params:
        settings=lambda wc: fidelity_settings(config),
        config=RESOLVED_CONFIG,
        manifests=lambda wc, input: " ".join(f"--manifest {m}" for m in input.manifests),
    message:
        "Writing the fidelity table ({config[preset]} preset against the released code)"
    shell:
        "noise2map fidelity --config {params.config} --output {output.csv} {params.manifests} > {log} 2>&1"
