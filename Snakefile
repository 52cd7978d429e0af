# cnnbench study: download -> preprocess -> train -> evaluate -> plot -> report.
# Run: snakemake --cores 4 [--config profile=smoke]. Rules live in workflow/rules/.
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"
