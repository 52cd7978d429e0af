# cnnbench study: download -> preprocess -> [tune -> select] -> train -> evaluate -> aggregate -> plot -> report.
# Run: snakemake --cores 4 [--config profile=smoke]. Rules live in workflow/rules/.
include: "workflow/rules/common.smk"


# Small jobs run where snakemake runs, also under a cluster executor (workflow/profiles/slurm):
# download needs the internet, which compute nodes often lack; aggregate, plot and report take seconds.
localrules: all, download, select, aggregate, plot, report


# The default target must live in this file: Snakemake never picks one from an included file.
rule all:
    input:
        "results/report/report.html",
        "results/report/report.md",


include: "workflow/rules/data.smk"
include: "workflow/rules/tune.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"
