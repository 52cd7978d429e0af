# Train and evaluate one variant per job. threads/resources come from params.yaml `resources`.

rule train:
    input:
        data=lambda wc: f"data/prepared/{variant_dataset(wc)}",
    output:
        model="results/runs/{variant}/model.pt",
        history="results/runs/{variant}/history.csv",
        summary="results/runs/{variant}/train.json",
    params:
        settings=variant_settings,
    threads: job_threads("train", 2)
    resources:
        **job_resources("train"),
    log:
        "logs/train/{variant}.log",
    shell:
        "{CNNBENCH} train --variant {wildcards.variant} --data {input.data} --threads {threads} "
        "--out results/runs/{wildcards.variant} > {log} 2>&1"


rule evaluate:
    input:
        data=lambda wc: f"data/prepared/{variant_dataset(wc)}",
        model="results/runs/{variant}/model.pt",
        summary="results/runs/{variant}/train.json",
    output:
        metrics="results/runs/{variant}/metrics.json",
        confusion="results/runs/{variant}/confusion.csv",
    params:
        settings=variant_settings,
    threads: job_threads("evaluate", 2)
    resources:
        **job_resources("evaluate"),
    log:
        "logs/evaluate/{variant}.log",
    shell:
        "{CNNBENCH} evaluate --variant {wildcards.variant} --data {input.data} --threads {threads} "
        "--run results/runs/{wildcards.variant} > {log} 2>&1"
