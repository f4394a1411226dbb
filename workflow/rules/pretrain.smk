# Self-supervised DDPM pretraining of the denoising UNet on the AID sample (paper §IV-B).


rule pretrain_unet:
    input:
        config=ancient(RESOLVED_CONFIG),
        data=f"{DATA}/prepared/{config['pretrain']['dataset']}/manifest.json",
        init=[f"{WEIGHTS}/{name}" for name in pretrain_init_names(config)],
    output:
        unet=f"{RESULTS}/pretrain/{config['pretrain']['dataset']}/unet.pt",
    log:
        f"logs/{config['preset']}/pretrain_unet.log",
    benchmark:
        f"benchmarks/{config['preset']}/pretrain_unet.tsv"
    params:
        settings=pretrain_settings(config),
    resources:
        gpus=1,
    message:
        "Pretraining the denoising UNet on {config[pretrain][num_images]} {config[pretrain][dataset]} images"
    shell:
        "noise2map pretrain --config {input.config} --output-dir $(dirname {output.unet}) > {log} 2>&1"
