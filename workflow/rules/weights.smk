# Pretrained checkpoints into the weight cache; training reads them offline from there.


rule fetch_weights:
    output:
        f"{WEIGHTS}/{{checkpoint}}",
    log:
        f"logs/{config['preset']}/fetch_weights/{{checkpoint}}.log",
    conda:
        "../envs/noise2map.yaml"
    params:
        # A function, not the string: Snakemake lints a plain-string param that prefixes an
        # output file (it would not follow the file into remote storage).
        cache=lambda wc: WEIGHTS,
    message:
        "Fetching pretrained checkpoint {wildcards.checkpoint}"
    shell:
        "noise2map weights fetch {wildcards.checkpoint} --cache {params.cache} > {log} 2>&1"
