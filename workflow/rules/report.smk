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
        shell_command("aggregate")


rule plot:
    input:
        summary="results/summary",
        tuning=tuning_files(),
        history=run_files("history.csv"),
        confusion=run_files("confusion.csv"),
    output:
        directory("results/plots"),
    params:
        # the figures draw the lab reports' figures and the claims
        shown=json.dumps({v: CFG.variant(v)["lab_report"] for v in CFG.variants} | {"claims": CFG.claims},
                         sort_keys=True),
    log:
        "logs/plot.log",
    shell:
        shell_command("plot")


rule report:
    input:
        summary="results/summary",
        tuning=tuning_files(),
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
        shell_command("report")
