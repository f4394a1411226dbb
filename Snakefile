# Noise2Map benchmark: data → pretrain → train → evaluate → tables.
#   snakemake --cores all results/table1.csv                         (paper preset)
#   snakemake --cores all --configfile workflow/config/demo.yaml          (demo: every table and figure)
import os

from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "workflow", "config", "paper.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"


# Quick or network-bound jobs stay on the submitting node under a cluster executor (the
# compute nodes of many clusters have no internet for the downloads).
localrules:
    all,
    fetch_weights,
    write_table1,
    write_selection_delta,
    write_ablation_table,
    write_fidelity,


onstart:
    from noise2map.config import write_resolved_config

    write_resolved_config(config, RESOLVED_CONFIG)
    if config.get("warm_start") and workflow.local_exec:
        from noise2map.warm_start import start_server

        start_server(f"logs/{config['preset']}/warm_start.log")


onsuccess:
    from noise2map.warm_start import stop_server

    stop_server()


onerror:
    from noise2map.warm_start import stop_server

    stop_server()


# Every table and figure of the paper; `--report results/<preset>/report.html` bundles them.
rule all:
    input:
        rules.write_table1.output.csv,
        expand(f"{RESULTS}/{{table}}.csv", table=ABLATION_TABLES),
        rules.write_efficiency.output.csv,
        rules.write_fidelity.output.csv,
        figure_targets(),
