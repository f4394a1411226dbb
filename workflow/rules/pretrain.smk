# Self-supervised pretraining (paper §IV-B): Noise2Map's UNet (DDPM ε-MSE, from
# ddpm-church-256) and DDPM-CD's SR3 UNet (its own objective), on the preset's sample (AID
# 10k in the paper) and, for Table III, on each other pretraining sample.
# Input functions (pretrain_init) are in common.smk.


rule pretrain_unet:
    input:
        data=lambda wc: prepared_manifest(config, wc.pretrain, "pretrain"),
        init=pretrain_init,
    output:
        unet=f"{RESULTS}/pretrain/{{pretrain}}/{{unet}}_unet.pt",
    log:
        f"logs/{config['preset']}/pretrain_unet/{{pretrain}}_{{unet}}.log",
    benchmark:
        f"benchmarks/{config['preset']}/pretrain_unet/{{pretrain}}_{{unet}}.tsv"
    conda:
        "../envs/noise2map.yaml"
    threads: job_threads(config)
    resources:
        **rule_resources(config, "pretrain_unet"),
    params:
        settings=lambda wc: pretrain_settings(config, wc.unet, wc.pretrain),
        config=RESOLVED_CONFIG,
    message:
        "Pretraining the {wildcards.unet} UNet on {config[pretrain][num_images]} {wildcards.pretrain} images"
    shell:
        "noise2map pretrain --config {params.config} --unet {wildcards.unet} --dataset {wildcards.pretrain}"
        " --output-dir $(dirname {output.unet}) > {log} 2>&1"


# pretrain.source: released — the authors' published backbone instead of our pretraining.
rule export_released_backbone:
    input:
        lambda wc: [f"{WEIGHTS}/{name}" for name in released_backbone_names(wc.backbone)],
    output:
        unet=released_unet_path(config, "{backbone}"),
    log:
        f"logs/{config['preset']}/export_released_backbone/{{backbone}}.log",
    conda:
        "../envs/noise2map.yaml"
    params:
        # A function, not the string: Snakemake lints a plain-string param that prefixes an
        # input or output file (it would not follow the files into remote storage).
        cache=lambda wc: WEIGHTS,
    message:
        "Exporting the released {wildcards.backbone} backbone (hub ali97/noise2map) as Noise2Map's pretrained UNet"
    shell:
        "noise2map weights export {wildcards.backbone} --cache {params.cache} --output {output.unet} > {log} 2>&1"
