# Pretrained checkpoints into the weight cache; training reads them offline from there.


rule fetch_weights:
    output:
        f"{WEIGHTS}/{{checkpoint}}",
    log:
        f"logs/{config['preset']}/fetch_weights/{{checkpoint}}.log",
    message:
        "Fetching pretrained checkpoint {wildcards.checkpoint}"
    shell:
        "noise2map weights fetch {wildcards.checkpoint} --cache {WEIGHTS} > {log} 2>&1"
