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
        "data/raw/{dataset}",
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
        shell_command("preprocess")
