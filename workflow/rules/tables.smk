# Run metrics → the paper's tables, beside the numbers the paper reports.


rule write_table1:
    input:
        metrics=run_metrics(),
    output:
        csv=f"{RESULTS}/table1.csv",
        md=f"{RESULTS}/table1.md",
    log:
        f"logs/{config['preset']}/write_table1.log",
    message:
        "Writing Table I ({config[preset]} preset)"
    shell:
        "noise2map tables table1 --output {output.csv} {input.metrics} > {log} 2>&1"
