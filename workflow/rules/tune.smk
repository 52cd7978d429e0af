# Tuning (params.yaml `tuning`, cnnbench.tuning): one trial per (tuned variant, tuned recipe, grid point,
# tuning seed), then one selection per (variant, tuned recipe). The selection is a checkpoint: the
# train and evaluate jobs of a tuned recipe are re-planned once it is written, with the chosen values
# in their run hash, so a new grid point reruns its trials and the selection, and a run only when
# the choice changed.

rule tune:
    input:
        data=lambda wc: f"data/prepared/{variant_dataset(wc)}",
    output:
        trial=f"{TRIAL}/trial.json",
    params:
        trial_hash=trial_hash,
        dataset=variant_dataset,
    threads: job_threads("train", 2)
    resources:
        **job_resources("train"),
    log:
        "logs/tune/{variant}/{recipe}/{point}/seed{seed}.log",
    shell:
        shell_command("tune", dataset="{params.dataset}")


checkpoint select:
    input:
        lambda wc: trial_files(wc.variant, wc.recipe),
    output:
        selection=SELECTION,
        chosen=CHOSEN,
    log:
        "logs/select/{variant}/{recipe}.log",
    shell:
        shell_command("select")
