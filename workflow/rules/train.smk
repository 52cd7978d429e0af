# Train and evaluate one run (variant, recipe, seed) per job. threads/resources come from params.yaml `resources`;
# the commands are cnnbench.pipeline's, the same that dvc.yaml runs.

rule train:
    input:
        unpack(run_input),
    output:
        model=f"{RUN}/model.pt",
        history=f"{RUN}/history.csv",
        summary=f"{RUN}/train.json",
    params:
        run_hash=run_hash,
        dataset=variant_dataset,
    threads: job_threads("train", 2)
    resources:
        **job_resources("train"),
    log:
        "logs/train/{variant}/{recipe}/seed{seed}.log",
    shell:
        shell_command("train", dataset="{params.dataset}")


rule evaluate:
    input:
        unpack(run_input),
        model=f"{RUN}/model.pt",
        summary=f"{RUN}/train.json",
    output:
        metrics=f"{RUN}/metrics.json",
        confusion=f"{RUN}/confusion.csv",
        predictions=f"{RUN}/predictions.csv",
    params:
        run_hash=run_hash,
        dataset=variant_dataset,
    threads: job_threads("evaluate", 2)
    resources:
        **job_resources("evaluate"),
    log:
        "logs/evaluate/{variant}/{recipe}/seed{seed}.log",
    shell:
        shell_command("evaluate", dataset="{params.dataset}")
