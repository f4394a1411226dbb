# Trained runs → the paper's Figures 4-6 (noise2map.reporting.figures), on the test split of one data set.
# Their input functions and model lists (figure_runs, TABLE1_MODELS, ...) are in common.smk.


rule figure4:
    input:
        metrics=figure_runs(TABLE1_MODELS, config["seeds"][:1]),
    output:
        png=report(f"{RESULTS}/figures/fig4.png", caption="../report/fig4.rst", category="Figures"),
        pdf=f"{RESULTS}/figures/fig4.pdf",
    log:
        f"logs/{config['preset']}/figures/fig4.log",
    conda:
        "../envs/noise2map.yaml"
    params:
        runs=_run_dirs,
        base=lambda wc, output: output.png[: -len(".png")],
        tiles=FIGURES["tiles"],
    message:
        "Figure 4: every model's prediction of {config[figures][tiles]} {config[figures][dataset]} test tiles"
    shell:
        "noise2map figures fig4 --output {params.base} --tiles {params.tiles} --runs {params.runs} > {log} 2>&1"


rule figure5:
    input:
        metrics=figure_runs(NOISE2MAP_MODELS, config["seeds"][:1]),
    output:
        png=report(f"{RESULTS}/figures/fig5.png", caption="../report/fig5.rst", category="Figures"),
        pdf=f"{RESULTS}/figures/fig5.pdf",
    log:
        f"logs/{config['preset']}/figures/fig5.log",
    conda:
        "../envs/noise2map.yaml"
    params:
        runs=_run_dirs,
        base=lambda wc, output: output.png[: -len(".png")],
        timesteps=" ".join(str(t) for t in FIGURES["timesteps"]),
    message:
        "Figure 5: Noise2Map's predictions across inference timesteps"
    shell:
        "noise2map figures fig5 --output {params.base} --timesteps {params.timesteps} --runs {params.runs} > {log} 2>&1"


rule figure6:
    input:
        metrics=figure_runs([("cd", "noise2map-cd")], config["seeds"]),
    output:
        png=report(f"{RESULTS}/figures/fig6.png", caption="../report/fig6.rst", category="Figures"),
        pdf=f"{RESULTS}/figures/fig6.pdf",
        csv=report(f"{RESULTS}/figures/fig6.csv", caption="../report/fig6.rst", category="Figures"),
    log:
        f"logs/{config['preset']}/figures/fig6.log",
    conda:
        "../envs/noise2map.yaml"
    resources:
        **rule_resources(config, "write_efficiency"),
    params:
        runs=_run_dirs,
        base=lambda wc, output: output.png[: -len(".png")],
        timesteps=" ".join(str(t) for t in FIGURES["sweep"]),
    message:
        "Figure 6: Noise2Map-CD's F1 against the inference timestep"
    shell:
        "noise2map figures fig6 --output {params.base} --timesteps {params.timesteps} --csv {output.csv}"
        " --runs {params.runs} > {log} 2>&1"
