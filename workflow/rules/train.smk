# One rule trains any registered model on one (task, data set, seed) and scores the test
# split with its best-by-validation checkpoint. Input functions (pretrained_inputs,
# ablation_pretrained) are in common.smk.


rule train_model:
    input:
        unpack(pretrained_inputs),
        data=lambda wc: prepared_manifest(config, wc.dataset, wc.task),
    output:
        metrics=f"{RESULTS}/runs/{{task}}/{{dataset}}/{{model}}/seed{{seed}}/metrics.json",
        counts=f"{RESULTS}/runs/{{task}}/{{dataset}}/{{model}}/seed{{seed}}/tile_counts.csv",
    log:
        f"logs/{config['preset']}/train_model/{{task}}_{{dataset}}_{{model}}_seed{{seed}}.log",
    benchmark:
        f"benchmarks/{config['preset']}/train_model/{{task}}_{{dataset}}_{{model}}_seed{{seed}}.tsv"
    conda:
        "../envs/noise2map.yaml"
    threads: job_threads(config)
    resources:
        **rule_resources(config, "train_model"),
    params:
        settings=lambda wc: run_settings(config, wc.task, wc.dataset, wc.model),
        pretrained=lambda wc, input: f"--pretrained {input.pretrained}" if "pretrained" in input.keys() else "",
        selection="",
        config=RESOLVED_CONFIG,
    message:
        "Training {wildcards.model} for {wildcards.task} on {wildcards.dataset} (seed {wildcards.seed})"
    shell:
        "noise2map train --config {params.config} --task {wildcards.task} --dataset {wildcards.dataset}"
        " --model {wildcards.model} --seed {wildcards.seed} {params.pretrained} {params.selection} > {log} 2>&1"


# The same runs with the other checkpoint selection, in their own folder tree, for
# selection_delta.csv (test-selected as released vs a 10 % validation carve).
use rule train_model as train_model_other_selection with:
    output:
        metrics=f"{RESULTS}/selection-{OTHER_SELECTION}/runs/{{task}}/{{dataset}}/{{model}}/seed{{seed}}/metrics.json",
        counts=f"{RESULTS}/selection-{OTHER_SELECTION}/runs/{{task}}/{{dataset}}/{{model}}/seed{{seed}}/tile_counts.csv",
    log:
        f"logs/{config['preset']}/train_model_{OTHER_SELECTION}/{{task}}_{{dataset}}_{{model}}_seed{{seed}}.log",
    benchmark:
        f"benchmarks/{config['preset']}/train_model_{OTHER_SELECTION}/{{task}}_{{dataset}}_{{model}}_seed{{seed}}.tsv"
    params:
        settings=lambda wc: {**run_settings(config, wc.task, wc.dataset, wc.model), "selection": OTHER_SELECTION},
        pretrained=lambda wc, input: f"--pretrained {input.pretrained}" if "pretrained" in input.keys() else "",
        selection=lambda wc, output: f"--selection {OTHER_SELECTION} --run-dir {Path(output.metrics).parent}",
        config=RESOLVED_CONFIG,
    message:
        "Training {wildcards.model} for {wildcards.task} on {wildcards.dataset} (seed {wildcards.seed}, "
        f"{OTHER_SELECTION} selection)"


# Table I's Noise2Map (released <backbone> backbone) rows: the same training, fine-tuning the
# authors' published UNet instead of ours, tabulated beside ours and kept out of the rank.
rule train_released_backbone:
    input:
        pretrained=lambda wc: released_unet_path(config, wc.backbone),
        data=lambda wc: prepared_manifest(config, wc.dataset, wc.task),
    output:
        metrics=f"{RESULTS}/runs/{{task}}/{{dataset}}/noise2map-{{task}}+released-{{backbone}}/seed{{seed}}/metrics.json",
        counts=f"{RESULTS}/runs/{{task}}/{{dataset}}/noise2map-{{task}}+released-{{backbone}}/seed{{seed}}/tile_counts.csv",
    log:
        f"logs/{config['preset']}/train_released_backbone/{{task}}_{{dataset}}_{{backbone}}_seed{{seed}}.log",
    benchmark:
        f"benchmarks/{config['preset']}/train_released_backbone/{{task}}_{{dataset}}_{{backbone}}_seed{{seed}}.tsv"
    conda:
        "../envs/noise2map.yaml"
    threads: job_threads(config)
    resources:
        **rule_resources(config, "train_model"),
    params:
        settings=lambda wc: {
            **run_settings(config, wc.task, wc.dataset, f"noise2map-{wc.task}"),
            "backbone": wc.backbone,
        },
        run=lambda wc, output: Path(output.metrics).parent,
        config=RESOLVED_CONFIG,
    message:
        "Training Noise2Map for {wildcards.task} on {wildcards.dataset} from the released {wildcards.backbone} "
        "backbone (seed {wildcards.seed})"
    shell:
        "noise2map train --config {params.config} --task {wildcards.task} --dataset {wildcards.dataset}"
        " --model noise2map-{wildcards.task} --seed {wildcards.seed} --pretrained {input.pretrained}"
        " --variant 'released {wildcards.backbone} backbone' --run-dir {params.run} > {log} 2>&1"


# The ablations (noise2map.reporting.ablations): Noise2Map on the ablation data set with one setting
# changed; table "base" is the preset itself, shared by every table's no-op row.
rule train_ablation:
    input:
        unpack(ablation_pretrained),
        data=lambda wc: prepared_manifest(config, config["ablations"]["dataset"], wc.task),
    output:
        metrics=f"{RESULTS}/ablations/{{table}}/{{variant}}/{{task}}/seed{{seed}}/metrics.json",
        counts=f"{RESULTS}/ablations/{{table}}/{{variant}}/{{task}}/seed{{seed}}/tile_counts.csv",
    log:
        f"logs/{config['preset']}/train_ablation/{{table}}_{{variant}}_{{task}}_seed{{seed}}.log",
    wildcard_constraints:
        table="base|table2|table3|table4|table5",
    conda:
        "../envs/noise2map.yaml"
    threads: job_threads(config)
    resources:
        **rule_resources(config, "train_model"),
    params:
        settings=lambda wc: ablation_settings(config, wc.table, wc.variant, wc.task),
        dataset=config["ablations"]["dataset"],
        run=lambda wc, output: Path(output.metrics).parent,
        pretrained=lambda wc, input: f"--pretrained {input.pretrained}" if "pretrained" in input.keys() else "",
        config=RESOLVED_CONFIG,
    message:
        "Ablation {wildcards.table} {wildcards.variant}: Noise2Map-{wildcards.task} (seed {wildcards.seed})"
    shell:
        "noise2map train --config {params.config} --task {wildcards.task} --dataset {params.dataset}"
        " --model noise2map-{wildcards.task} --seed {wildcards.seed} {params.pretrained}"
        " --ablation {wildcards.table}/{wildcards.variant} --run-dir {params.run} > {log} 2>&1"


# The multi-task table: one shared UNet trained for SS and CD at once, per (λ_CD, λ_SS).
rule train_multitask:
    input:
        pretrained=pretrained_unet_path(config),
        ss=prepared_manifest(config, config["ablations"]["dataset"], "ss"),
        cd=prepared_manifest(config, config["ablations"]["dataset"], "cd"),
    output:
        ss=f"{RESULTS}/ablations/multitask/{{variant}}/seed{{seed}}/ss/metrics.json",
        cd=f"{RESULTS}/ablations/multitask/{{variant}}/seed{{seed}}/cd/metrics.json",
    log:
        f"logs/{config['preset']}/train_multitask/{{variant}}_seed{{seed}}.log",
    wildcard_constraints:
        variant="cd[0-9p]+ss[0-9p]+",
    conda:
        "../envs/noise2map.yaml"
    threads: job_threads(config)
    resources:
        **rule_resources(config, "train_model"),
    params:
        settings=lambda wc: {t: ablation_settings(config, "multitask", wc.variant, t) for t in ("ss", "cd")},
        run=lambda wc, output: Path(output.ss).parent.parent,
        config=RESOLVED_CONFIG,
    message:
        "Multi-task ablation {wildcards.variant}: one UNet for SS and CD (seed {wildcards.seed})"
    shell:
        "noise2map train-multitask --config {params.config} --variant {wildcards.variant}"
        " --seed {wildcards.seed} --pretrained {input.pretrained} --run-dir {params.run} > {log} 2>&1"
