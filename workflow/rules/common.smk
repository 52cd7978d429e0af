# Load and validate params.yaml before any job is scheduled; helpers that list targets.
import json
import sys

from pathlib import Path

from cnnbench.config import ConfigError, load as load_params, read_yaml
from cnnbench.pipeline import CHOSEN, SELECTION, TRIAL, command
from cnnbench.tuning import SelectionMissing

# Parse params.yaml ourselves first: a YAML syntax error then gets cnnbench's message (file, line,
# column, problem) instead of Snakemake's generic "Config file is not valid JSON or YAML".
try:
    read_yaml(Path("params.yaml"))
except ConfigError as _exc:
    sys.stderr.write(f"cnnbench: config error: {_exc}\n")
    sys.exit(2)

configfile: "params.yaml"

# Only the profile may be chosen on the command line (`--config profile=smoke`): every stage is
# a `cnnbench` process that reads params.yaml itself, so other overrides would be silently lost.
_OVERRIDABLE = {"profile"}
try:
    _on_disk = load_params("params.yaml").raw
    _changed = sorted(k for k in set(config) | set(_on_disk) if k not in _OVERRIDABLE and config.get(k) != _on_disk.get(k))
    if _changed:
        raise ConfigError(
            f"--config may only set {', '.join(sorted(_OVERRIDABLE))}; edit params.yaml to change "
            f"{', '.join(_changed)}"
        )
    CFG = load_params("params.yaml", profile=str(config["profile"]))
except ConfigError as _exc:
    sys.stderr.write(f"cnnbench: config error: {_exc}\n")
    sys.exit(2)

PROFILE = CFG.profile
VARIANTS = CFG.variants
DATASETS = CFG.datasets
PREPARED = CFG.prepared_datasets  # DATASETS and the data sets their subsets are drawn from
RECIPES = CFG.recipes
SEEDS = CFG.seeds
# One run = one (variant, recipe, seed): results/runs/<variant>/<recipe>/seed<k>/
RUN = "results/runs/{variant}/{recipe}/seed{seed}"

TUNED = CFG.tuned_recipes  # recipes whose runs train with values tuning chose (workflow/rules/tune.smk)

wildcard_constraints:
    dataset="|".join(PREPARED),
    variant="|".join(VARIANTS),
    recipe="|".join(RECIPES),
    seed=r"\d+",
    point=r"[^/]+",


def run_files(name):
    """``name`` (e.g. metrics.json) of every run of the study."""
    return [f"results/runs/{v}/{r}/seed{s}/{name}" for v, r, s in CFG.runs]


def preprocess_input(dataset):
    """What preprocess reads: a subset's parent's packed store, else the data set's download."""
    if dataset in CFG.subsets:
        return f"data/prepared/{CFG.dataset(dataset)['of']}"
    return f"data/raw/{dataset}"


def variant_dataset(wildcards):
    return CFG.variant(wildcards.variant)["dataset"]


def run_hash(wildcards):
    # The run's identity (cnnbench.spec.RunSpec.hash): exactly what changes its numbers, so an edit
    # that changes no setting of this run (another variant, a lab-report figure) never reruns it.
    # A tuned recipe's run holds the chosen values, read from its selection: not made yet when the
    # DAG is first planned, re-read when the select checkpoint has run (run_input).
    try:
        return CFG.run(wildcards.variant, wildcards.recipe, int(wildcards.seed)).hash
    except SelectionMissing:
        return "awaiting the selection of tuning"


def trial_hash(wildcards):
    return CFG.trial(wildcards.variant, wildcards.recipe, wildcards.point, int(wildcards.seed)).hash


def trial_files(variant, recipe):
    """trial.json of every trial of (variant, tuned recipe): what its selection reads."""
    return [f"{TRIAL.format(variant=variant, recipe=recipe, point=p.name, seed=s)}/trial.json"
            for p in CFG.tuning.points for s in CFG.tuning.seeds]


def tuning_files():
    """Every selection of the study (the report's tuning section and figures)."""
    return [SELECTION.format(variant=v, recipe=r) for v, r, s in CFG.runs if r in TUNED and s == SEEDS[0]]


def run_input(wildcards):
    """A run's prepared data and, for a tuned recipe, its chosen values (chosen.json, beside the selection).
    get() on the checkpoint makes the job wait for the selection and be planned again after it (its run
    hash then holds the chosen values). ancient(): a selection rewritten with the same choice (a grid
    point added) reruns nothing; a changed choice changes the run hash, which reruns the run."""
    inputs = {"data": f"data/prepared/{variant_dataset(wildcards)}"}
    if wildcards.recipe in TUNED:
        checkpoints.select.get(variant=wildcards.variant, recipe=wildcards.recipe)
        inputs["chosen"] = ancient(CHOSEN.format(variant=wildcards.variant, recipe=wildcards.recipe))
    return inputs


def shell_command(stage, log=True, **fields):
    """The stage's command (cnnbench.pipeline: the same one dvc.yaml runs) with Snakemake's
    wildcards, its output going to the job's log."""
    fields = {"profile": PROFILE, "dataset": "{wildcards.dataset}", "variant": "{wildcards.variant}",
              "recipe": "{wildcards.recipe}", "seed": "{wildcards.seed}", "point": "{wildcards.point}", "driver": "snakemake", **fields}
    return command(stage, **fields) + (" > {log} 2>&1" if log else "")


def job_resources(stage):
    """Snakemake resources of one stage's jobs from params.yaml `resources` (profile applied):
    mem_mb, runtime (minutes) and, only when the job asks for GPUs, gpu=N. The SLURM executor
    turns them into --mem, --time and --gpus; locally `--resources gpu=N` caps concurrent GPU jobs,
    so with jobs_per_gpu k (GPU sharing, read by cnnbench.gpus at the job's start, not here) pass
    N = GPUs x k: each job still declares gpu=1 and takes one of its GPU's k slots."""
    spec = CFG.job_resources(stage)
    res = {k: spec[k] for k in ("mem_mb", "runtime") if k in spec}
    if spec.get("gpu"):
        res["gpu"] = spec["gpu"]
    return res


def job_threads(stage, default):
    return CFG.job_resources(stage).get("cpus", default)
