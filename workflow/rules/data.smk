# Raw data (synthetic in the demo, user-supplied or downloaded otherwise) → tile stores.


rule resolve_config:
    output:
        RESOLVED_CONFIG,
    params:
        config=config,
    message:
        "Writing the resolved {config[preset]} config"
    run:
        from noise2map.config import write_resolved_config

        write_resolved_config(params.config, output[0])


if config["raw_source"] == "synthetic":

    rule synthesize_raw:
        output:
            directory(f"{DATA}/raw/{{raw}}"),
        log:
            f"logs/{config['preset']}/synthesize_raw/{{raw}}.log",
        message:
            "Generating synthetic {wildcards.raw} in its real raw layout"
        shell:
            "noise2map synthesize {wildcards.raw} --raw {DATA}/raw --seed 0 > {log} 2>&1"

else:

    rule acquire_raw:
        input:
            RESOLVED_CONFIG,
        output:
            directory(f"{DATA}/raw/{{raw}}"),
        log:
            f"logs/{config['preset']}/acquire_raw/{{raw}}.log",
        message:
            "Checking that raw {wildcards.raw} is in place"
        shell:
            "noise2map acquire {wildcards.raw} --config {input} 2>&1 | tee {log}"


rule prepare_dataset:
    input:
        config=RESOLVED_CONFIG,
        raw=lambda wc: f"{DATA}/raw/{RAW_DIR_OF[wc.name]}",
    output:
        f"{DATA}/prepared/{{name}}/manifest.json",
    log:
        f"logs/{config['preset']}/prepare_dataset/{{name}}.log",
    benchmark:
        f"benchmarks/{config['preset']}/prepare_dataset/{{name}}.tsv"
    message:
        "Preparing {wildcards.name} tiles"
    shell:
        "noise2map prepare {wildcards.name} --config {input.config} > {log} 2>&1"
