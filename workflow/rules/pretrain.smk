# Self-supervised pretraining on the AID sample (paper §IV-B): Noise2Map's UNet (DDPM ε-MSE,
# from ddpm-church-256) and DDPM-CD's SR3 UNet (its own objective), each once per preset.


def pretrain_init(wildcards):
    return [f"{WEIGHTS}/{name}" for name in pretrain_init_names(config)] if wildcards.unet == "noise2map" else []


rule pretrain_unet:
    input:
        data=f"{DATA}/prepared/{config['pretrain']['dataset']}/manifest.json",
        init=pretrain_init,
    output:
        unet=f"{RESULTS}/pretrain/{config['pretrain']['dataset']}/{{unet}}_unet.pt",
    log:
        f"logs/{config['preset']}/pretrain_unet/{{unet}}.log",
    benchmark:
        f"benchmarks/{config['preset']}/pretrain_unet/{{unet}}.tsv"
    params:
        settings=lambda wc: pretrain_settings(config, wc.unet),
    resources:
        **rule_resources(config, "pretrain_unet"),
    message:
        "Pretraining the {wildcards.unet} UNet on {config[pretrain][num_images]} {config[pretrain][dataset]} images"
    shell:
        "noise2map pretrain --config {RESOLVED_CONFIG} --unet {wildcards.unet}"
        " --output-dir $(dirname {output.unet}) > {log} 2>&1"
