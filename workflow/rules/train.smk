# Train and evaluate one run (variant, recipe, seed) per job.

rule train:
    input:
        data=lambda wc: f"data/prepared/{variant_dataset(wc)}",
    output:
        model=f"{RUN}/model.pt",
        history=f"{RUN}/history.csv",
        summary=f"{RUN}/train.json",
    params:
        settings=run_settings,
    threads: 2
    log:
        "logs/train/{variant}/{recipe}/seed{seed}.log",
    shell:
        "{CNNBENCH} train --variant {wildcards.variant} --recipe {wildcards.recipe} --seed {wildcards.seed} "
        "--data {input.data} --threads {threads} --out results/runs/{wildcards.variant}/{wildcards.recipe}/seed{wildcards.seed} "
        "> {log} 2>&1"


rule evaluate:
    input:
        data=lambda wc: f"data/prepared/{variant_dataset(wc)}",
        model=f"{RUN}/model.pt",
        summary=f"{RUN}/train.json",
    output:
        metrics=f"{RUN}/metrics.json",
        confusion=f"{RUN}/confusion.csv",
        predictions=f"{RUN}/predictions.csv",
    params:
        settings=run_settings,
    threads: 2
    log:
        "logs/evaluate/{variant}/{recipe}/seed{seed}.log",
    shell:
        "{CNNBENCH} evaluate --variant {wildcards.variant} --recipe {wildcards.recipe} --seed {wildcards.seed} "
        "--data {input.data} --threads {threads} --run results/runs/{wildcards.variant}/{wildcards.recipe}/seed{wildcards.seed} "
        "> {log} 2>&1"
