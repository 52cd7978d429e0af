# cnnbench study: download -> preprocess -> train -> evaluate -> plot -> report.
# Run: snakemake --cores 4 [--config profile=smoke]. Rules live in workflow/rules/.
include: "workflow/rules/common.smk"


# The default target must live in this file: Snakemake never picks one from an included file.
rule all:
    input:
        "results/report/report.html",
        "results/report/report.md",


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"
