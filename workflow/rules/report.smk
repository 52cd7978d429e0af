# Aggregate the runs, test the claims, draw the figures, write the report.

rule aggregate:
    input:
        metrics=run_files("metrics.json"),
        history=run_files("history.csv"),
    output:
        directory("results/summary"),
    params:
        claims=json.dumps({"claims": CFG.claims, "rule": CFG.raw["claims_rule"]}, sort_keys=True),
    log:
        "logs/aggregate.log",
    shell:
        "{CNNBENCH} aggregate --runs results/runs --out {output} > {log} 2>&1"


rule plot:
    input:
        summary="results/summary",
        history=run_files("history.csv"),
        confusion=run_files("confusion.csv"),
    output:
        directory("results/plots"),
    log:
        "logs/plot.log",
    shell:
        "{CNNBENCH} plot --runs results/runs --summary {input.summary} --out {output} > {log} 2>&1"


rule report:
    input:
        summary="results/summary",
        plots="results/plots",
        prepared=expand("data/prepared/{dataset}", dataset=DATASETS),
    output:
        html="results/report/report.html",
        md="results/report/report.md",
    params:
        params_hash=CFG.params_hash,
    log:
        "logs/report.log",
    shell:
        "{CNNBENCH} report --runs results/runs --summary {input.summary} --plots {input.plots} --out results/report "
        "--driver snakemake > {log} 2>&1"
