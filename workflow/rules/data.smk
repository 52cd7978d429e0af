# Fetch and pack the data sets.

rule download:
    output:
        directory("data/raw/{dataset}"),
    params:
        settings=lambda wc: json.dumps(CFG.source_settings(wc.dataset), sort_keys=True),
    log:
        "logs/download/{dataset}.log",
    shell:
        shell_command("download")


rule preprocess:
    input:
        # a subset (kind subset) is drawn from its parent's packed store; any other data set from its download
        lambda wc: preprocess_input(wc.dataset),
    output:
        directory("data/prepared/{dataset}"),
    params:
        settings=lambda wc: json.dumps(CFG.preprocess_settings(wc.dataset), sort_keys=True),
    threads: job_threads("preprocess", 1)
    resources:
        **job_resources("preprocess"),
    log:
        "logs/preprocess/{dataset}.log",
    shell:
        shell_command("preprocess", raw="{input}")
