# Raw data (synthetic in the demo, user-supplied or downloaded otherwise) → tile stores.


# The raw folder itself is never a declared output: Snakemake deletes the outputs of a job
# before rerunning it, and raw data must survive any rerun. A marker beside it stands in.
if config["raw_source"] == "synthetic":

    rule synthesize_raw:
        output:
            f"{DATA}/raw/{{raw}}.ready.json",
        log:
            f"logs/{config['preset']}/synthesize_raw/{{raw}}.log",
        conda:
            "../envs/noise2map.yaml"
        params:
            # A function, not the string: Snakemake lints a plain-string param that prefixes
            # an output file (it would not follow the file into remote storage).
            raw=lambda wc: f"{DATA}/raw",
        message:
            "Generating synthetic {wildcards.raw} in its real raw layout"
        shell:
            "noise2map synthesize {wildcards.raw} --raw {params.raw} --seed 0 --marker {output} > {log} 2>&1"

else:
    import shlex

    # Archives are read from / downloaded to DOWNLOADS; MIRROR_ARG points every download at a
    # mirror. Neither is provenance: moving the archives or switching mirrors must not rerun the
    # acquisition and everything prepared from it (see the rule's params).
    DOWNLOADS = shlex.quote(config.get("downloads_dir") or "data/downloads")
    MIRROR_ARG = f"--mirror {shlex.quote(config['data_mirror'])}" if config.get("data_mirror") else ""

    localrules:
        acquire_raw,  # downloads: the submitting node has the network

    rule acquire_raw:
        output:
            f"{DATA}/raw/{{raw}}.ready.json",
        log:
            f"logs/{config['preset']}/acquire_raw/{{raw}}.log",
        conda:
            "../envs/noise2map.yaml"
        params:
            raw=lambda wc: f"{DATA}/raw",  # a function: see synthesize_raw
            # Functions of the output: Snakemake counts such params as derived from the files
            # and leaves them out of the params whose change reruns a job.
            downloads=lambda wc, output: DOWNLOADS,
            mirror=lambda wc, output: MIRROR_ARG,
        message:
            "Putting raw {wildcards.raw} in place (download or supplied archive, verify, extract)"
        shell:
            "noise2map acquire {wildcards.raw} --raw {params.raw} --downloads {params.downloads} {params.mirror} "
            "--marker {output} 2>&1 | tee {log}"


# {store}: the prepared set's name, with "+<value>" per preparation switch set away from the
# released code (noise2map.config.store_name), so two presets never share a store.
rule prepare_dataset:
    input:
        raw=lambda wc: f"{DATA}/raw/{RAW_DIR_OF[store_base(wc.store)]}.ready.json",
    output:
        f"{DATA}/prepared/{{store}}.prepared.json",
    log:
        f"logs/{config['preset']}/prepare_dataset/{{store}}.log",
    benchmark:
        f"benchmarks/{config['preset']}/prepare_dataset/{{store}}.tsv"
    conda:
        "../envs/noise2map.yaml"
    resources:
        **rule_resources(config, "prepare_dataset"),
    params:
        name=lambda wc: store_base(wc.store),
        settings=lambda wc: prepare_settings(config, store_base(wc.store)),
        config=RESOLVED_CONFIG,
    message:
        "Preparing {wildcards.store} tiles"
    shell:
        "noise2map prepare {params.name} --config {params.config} --marker {output} > {log} 2>&1"
