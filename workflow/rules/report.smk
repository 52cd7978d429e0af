# Figures across variants and the final report.

rule plot:
    input:
        expand("results/runs/{variant}/history.csv", variant=VARIANTS),
        expand("results/runs/{variant}/metrics.json", variant=VARIANTS),
    output:
        directory("results/plots"),
    log:
        "logs/plot.log",
    shell:
        "{CNNBENCH} plot --runs results/runs --out {output} > {log} 2>&1"


rule report:
    input:
        plots="results/plots",
        metrics=expand("results/runs/{variant}/metrics.json", variant=VARIANTS),
        prepared=expand("data/prepared/{dataset}", dataset=DATASETS),
    output:
        html="results/report/report.html",
        md="results/report/report.md",
    params:
        params_hash=CFG.params_hash,
    log:
        "logs/report.log",
    shell:
        "{CNNBENCH} report --runs results/runs --plots {input.plots} --out results/report "
        "--command-line 'snakemake --cores 4 --config profile={PROFILE}' > {log} 2>&1"
