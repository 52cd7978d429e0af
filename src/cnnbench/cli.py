"""`cnnbench <stage>`: the only entry point both drivers (Snakemake and DVC) call."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from . import __version__
from .atomic import atomic_write_text
from .config import Config, load, run_dir
from .errors import CnnbenchError, ConfigError, DataError
from .spec import RunSpec
from .tuning import TUNING_ROOT

log = logging.getLogger("cnnbench")

RUNS = Path("results/runs")  # results/runs/<variant>/<recipe>/seed<k>/: one directory per run
SUMMARY = Path("results/summary")

DESCRIPTION = """\
Compare CNN variants reproducibly. Each subcommand is one stage of the pipeline:

  download -> preprocess -> train -> evaluate -> aggregate -> plot -> report

Normally you do not call the stages yourself: `snakemake --cores 4` or `dvc repro` runs
them in order and skips what is up to date. Every stage reads params.yaml (validated
against workflow/schemas/params.schema.yaml, and model_args against each model builder's own
description of its arguments) with the chosen profile applied.
"""

EPILOG = """\
examples:
  cnnbench --profile full doctor             before a long run: torch and its CUDA build, driver, GPUs, folders,
                                             SLURM; exit status 1 and a fix: line for each problem
  cnnbench validate --profile smoke          check params.yaml and show the resolved plan (every run's hash)
  cnnbench download --dataset cifar10        fetch data/raw/cifar10 (mirror, then official URL)
  cnnbench train --variant cifar10-resnet18 --recipe lab --seed 0
                                             train one run into results/runs/cifar10-resnet18/lab/seed0/
  cnnbench --profile quick plan              before a study: the estimated time of every run and of the whole study
  cnnbench plan-seeds                        after a study: the seeds per side that would decide each open claim

environment:
  CNNBENCH_DATA_MIRROR   directory with <dataset>/<archive> and SHA256SUMS, tried before any download
  CUDA_VISIBLE_DEVICES   GPUs train/evaluate/bench may use (else every GPU or MIG instance nvidia-smi lists;
                         in SLURM, the ones it granted); each concurrent job claims a slot on one and sets
                         this to it. A GPU has resources.<stage>.jobs_per_gpu slots (default 1), so let
                         GPUs x jobs_per_gpu jobs run at once (`snakemake --resources gpu=N`, `dvc queue
                         start -j N`); a job whose gpu_mem_mb does not fit a GPU's free memory waits
  CNNBENCH_GPU_LOCK_DIR  where those GPU slots (lock files) live (default: <tmp>/cnnbench-gpu-slots-<uid>,
                         with a slurm-<job id> folder per SLURM allocation)
  CNNBENCH_MALLOC_TUNING 0 keeps glibc's default allocator thresholds for CPU training (see README)

exit status:
  0 done; 2 a config error (one line: `cnnbench: config error: ...`); 1 an error with a message for
  you (one line: `cnnbench <stage>: error: ...`) or a bug in cnnbench (its traceback, then a line
  saying so); 130 interrupted
"""


def _common(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """Options accepted before and after the stage name (`cnnbench --profile smoke train ...`)."""
    # On sub-commands the defaults are suppressed, so they override the top-level value only when given.
    dflt = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
    parser.add_argument("--params", default=dflt(Path("params.yaml")), type=Path,
                        help="the configuration file (default: params.yaml)")
    parser.add_argument("--profile", default=dflt(None),
                        help="profile to apply (full, quick, smoke, ...); default: the `profile` key of params.yaml")
    parser.add_argument("-q", "--quiet", action="store_true", default=dflt(False), help="only warnings and errors")


def _run_args(parser: argparse.ArgumentParser) -> None:
    """--variant/--recipe/--seed/--data: which run of the study a train or evaluate job is."""
    parser.add_argument("--variant", required=True, help="a variant id, <dataset>-<name> (`cnnbench variants`)")
    parser.add_argument("--recipe", help="a recipe of recipes_in_study (default: the first)")
    parser.add_argument("--seed", type=int, help="a seed of the profile (default: its first)")
    parser.add_argument("--data", type=Path, help="prepared data (default: data/prepared/<dataset of the variant>)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnbench", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cnnbench {__version__}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="<stage>", required=True)

    # One function per stage, in the order `cnnbench --help` lists them.
    for add_stage in (
        _add_download, _add_preprocess, _add_tune, _add_select, _add_train, _add_evaluate, _add_aggregate, _add_plot, _add_report,
        _add_validate, _add_doctor, _add_specs, _add_exp_run, _add_dvc_yaml, _add_models, _add_bench, _add_variants,
        _add_plan_seeds, _add_plan, _add_compare, _add_leak_eval, _add_gpu_check,
    ):
        add_stage(sub)
    return parser


# --- sub-parsers: one per stage, each with the common options (they also work after the stage name)
def _add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="fetch a data set's archive (mirror first) and verify its checksum",
                       description="Fetch a data set's archive into data/raw/<dataset>/. Order: the data mirror "
                       "(CNNBENCH_DATA_MIRROR or params `data_mirror`, verified against its SHA256SUMS), then the "
                       "official source (CIFAR-10 URL + md5; butterflies: `archive` URL/path or kagglehub). The "
                       "archive is written under a temporary name and renamed only after the checksum passes.")
    _common(p)
    p.add_argument("--dataset", required=True, help="a data set of params.yaml (a key of datasets)")
    p.add_argument("--out", type=Path, help="output directory (default: data/raw/<dataset>)")
    p.set_defaults(func=cmd_download)


def _add_preprocess(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preprocess", help="decode, validate and pack a data set into uint8 arrays + manifest",
                       description="Decode every image once, validate it, resize, and pack uint8 arrays "
                       "(train/val/test) plus manifest.json and excluded.csv into data/prepared/<dataset>/. "
                       "Every data set: the leak audit finds exact, mirrored and near-duplicate images within and "
                       "across the splits (duplicates.json, duplicate_thumbs.npy; a pair is near when its distance is "
                       "at most datasets.<dataset>.near_duplicate_threshold) and, with "
                       "datasets.<dataset>.drop_train_duplicates_of_eval, leaves out train copies of val/test images. "
                       "`cnnbench leak-eval` measures the audit's precision and recall.")
    _common(p)
    p.add_argument("--dataset", required=True, help="a data set of params.yaml (a key of datasets)")
    p.add_argument("--raw", type=Path, help="downloaded data (default: data/raw/<dataset>)")
    p.add_argument("--out", type=Path, help="output directory (default: data/prepared/<dataset>)")
    p.set_defaults(func=cmd_preprocess)


def _add_tune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="train one tuning trial: a variant under a tuned recipe at one grid point",
                       description="Train one tuning trial (params.yaml `tuning`): the variant under the tuned recipe's "
                       "base recipe with one grid point's values, for the budget's epochs, on the training split, "
                       "scored on the validation split (the test split is never read). Writes history.csv, "
                       "train.json and, last, trial.json (no weights) into "
                       "results/tuning/<variant>/<recipe>/<point>/seed<k>/. A trial whose loss diverges is "
                       "recorded as diverged, not as a failure. `cnnbench validate` lists the grid's points.")
    _common(p)
    p.add_argument("--variant", required=True, help="a tuned variant id, <dataset>-<name> (tuning.variants)")
    p.add_argument("--recipe", required=True, help="a tuned recipe of recipes_in_study (a key of tuning.recipes)")
    p.add_argument("--point", required=True, help="a grid point, e.g. lr0.1 or lr0.1-wd0.0005")
    p.add_argument("--seed", type=int, required=True, help="a seed of tuning.seeds")
    p.add_argument("--data", type=Path, help="prepared data (default: data/prepared/<dataset of the variant>)")
    p.add_argument("--out", type=Path, help="trial directory (default: results/tuning/<variant>/<recipe>/<point>/seed<k>)")
    p.set_defaults(func=cmd_tune)


def _add_select(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("select", help="choose a variant's tuned values from its trials' validation accuracy",
                       description="Read every trial of (variant, tuned recipe) and choose the grid point with the "
                       "highest mean final validation accuracy over the tuning seeds (the first in grid order on a "
                       "tie; a diverged trial scores 0). Writes selection.json: the chosen values and every trial's "
                       "score and time. The study's runs of the tuned recipe train with the chosen values.")
    _common(p)
    p.add_argument("--variant", required=True, help="a tuned variant id, <dataset>-<name>")
    p.add_argument("--recipe", required=True, help="a tuned recipe of recipes_in_study")
    p.add_argument("--trials", type=Path, default=Path("results/tuning"), help="where the trials are (default: results/tuning)")
    p.add_argument("--out", type=Path, help="output file (default: <trials>/<variant>/<recipe>/selection.json)")
    p.set_defaults(func=cmd_select)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one run of a variant (resumes from its last complete epoch)",
                       description="Train one run: a variant under one recipe with one seed. Writes model.pt, "
                       "history.csv, train.json and a dvclive/ log into results/runs/<variant>/<recipe>/seed<k>/. "
                       "A checkpoint after every epoch lets a killed run resume.")
    _common(p)
    _run_args(p)
    p.add_argument("--out", type=Path, help="run directory (default: results/runs/<variant>/<recipe>/seed<k>)")
    p.add_argument("--checkpoint-dir", type=Path, help="where the per-epoch checkpoint lives "
                   "(default: results/.checkpoints/<variant>/<recipe>/seed<k>; not a tracked output, so "
                   "drivers keep it)")
    p.add_argument("--no-dvclive", action="store_true", help="do not log with DVCLive")
    p.set_defaults(func=cmd_train)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="test metrics and confusion matrix of one trained run",
                       description="Evaluate <run>/model.pt on the test split: metrics.json (top-1, top-5 and "
                       "top-1 on the kept classes for butterflies, top-1 on the clean test images where preprocess audited the "
                       "data set for duplicates (duplicates.json: no duplicate in train), loss, per-class accuracy, "
                       "parameters, epoch time, peak memory, device), confusion.csv and predictions.csv (for `dvc "
                       "plots`; with a clean column where audited).")
    _common(p)
    _run_args(p)
    p.add_argument("--run", type=Path, help="run directory (default: results/runs/<variant>/<recipe>/seed<k>)")
    p.set_defaults(func=cmd_evaluate)


def _add_aggregate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("aggregate", help="every run's numbers, mean ± std and 95 %% interval per variant and recipe, the "
                       "claims' verdicts (Holm-adjusted; seed and test-set noise)",
                       description="Read every run of the study (results/runs/<variant>/<recipe>/seed<k>/) and "
                       "write runs.csv (one row per run), variants.csv (mean, std and n per variant and recipe; top-1 also on "
                       "the clean test images, where the data set was audited for duplicates), "
                       "claims.csv and summary.json (each lab-report claim under each recipe, with the verdict of "
                       "the rule in params.yaml `claims_rule`: Holm-adjusted p over every tested claim; accuracy "
                       "from the per-image predictions, counting seed and test-set noise; P(a > b); the seeds "
                       "an inconclusive claim needs). Rerunning on the same runs writes byte-identical files.")
    _common(p)
    p.add_argument("--runs", type=Path, default=RUNS, help="run directories (default: %(default)s)")
    p.add_argument("--out", type=Path, default=SUMMARY, help="output directory (default: %(default)s)")
    p.set_defaults(func=cmd_aggregate)


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="learning curves with seed bands, accuracy, Pareto and butterfly figures (PNG)")
    _common(p)
    p.add_argument("--runs", type=Path, default=RUNS, help="run directories (default: %(default)s)")
    p.add_argument("--summary", type=Path, default=SUMMARY, help="output of `cnnbench aggregate` (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("results/plots"), help="output directory (default: %(default)s)")
    _add_tuning_option(p)
    p.set_defaults(func=cmd_plot)


def _add_tuning_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tuning", type=Path, default=TUNING_ROOT,
                   help="tuning's selections, <dir>/<variant>/<recipe>/selection.json; none there: no tuning "
                        "figures or section (default: %(default)s)")


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="one self-contained HTML report plus Markdown")
    _common(p)
    p.add_argument("--runs", type=Path, default=RUNS, help="run directories (default: %(default)s)")
    p.add_argument("--summary", type=Path, default=SUMMARY, help="output of `cnnbench aggregate` (default: %(default)s)")
    p.add_argument("--plots", type=Path, default=Path("results/plots"), help="plots directory (default: %(default)s)")
    _add_tuning_option(p)
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"),
                   help="prepared data root, for the data provenance (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("results/report"), help="output directory (default: %(default)s)")
    p.add_argument("--driver", choices=("snakemake", "dvc"), default="snakemake",
                   help="which driver's command the report prints under 'reproduce with' (default: %(default)s)")
    p.add_argument("--command-line", default=None, help="print this command instead of the driver's")
    p.set_defaults(func=cmd_report)


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check params.yaml and print the resolved plan",
                       description="Validate params.yaml with the profile applied and print every variant's "
                       "resolved settings (or one variant's with --variant), and count the tuning trials. A "
                       "tuned recipe's run shows the grid tuning chooses from, and the chosen values once "
                       "selected.")
    _common(p)
    p.add_argument("--variant", help="print only the run specification (and its hash) of this variant as JSON")
    p.add_argument("--recipe", help="with --variant: the recipe (default: the first of recipes_in_study)")
    p.add_argument("--seed", type=int, help="with --variant: the seed (default: the profile's first)")
    p.set_defaults(func=cmd_validate)


DOCTOR_DESCRIPTION = """\
Check this machine for the chosen profile before a long run, in one screen: torch and the CUDA
version it was built for, the NVIDIA driver (new enough for that build?), the GPUs torch sees
(memory, compute capability; MIG instances from nvidia-smi -L), whether the profile's device is
there (the full profile wants cuda), bf16 and TF32, cuDNN, numba and its cache folder, whether
data/ and results/ in the current folder are writable, the GPU slot folder (who holds which slot)
and the SLURM job. Each line: a name, OK/WARN/FAIL, what was found; then one fix: line per
problem. Exit status 1 when any check fails (a profile that runs on the CPU on purpose does not
need a driver)."""


def _add_doctor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="is this machine ready for the profile? torch, CUDA, driver, GPUs, folders, SLURM",
                       description=DOCTOR_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--json", type=Path, metavar="FILE",
                   help="also write the findings as JSON to FILE (- : only the JSON, on stdout)")
    p.set_defaults(func=cmd_doctor, needs_params=False)  # reports a broken params.yaml as one of its findings


def _add_specs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("specs", help="write every run's specification (what DVC's train and evaluate stages depend on)",
                       description="Write results/specs/<variant>/<recipe>/seed<k>.json for every run of the study: "
                       "the run's resolved settings and their hash, its identity. DVC's train and evaluate stages "
                       "depend on their run's file instead of on params.yaml keys, so an edit that changes no run "
                       "(a lab-report figure, a description) retrains nothing.")
    _common(p)
    p.add_argument("--out", type=Path, default=Path("results/specs"), help="output directory (default: %(default)s)")
    p.set_defaults(func=cmd_specs)


def _add_exp_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("exp-run", help="run the study as a DVC experiment under the profile (sets its seeds too)",
                       description="`dvc exp run -S profile=<profile> -S seeds=<the profile's seeds>`: under DVC the "
                       "top-level seeds decide which seed stages exist, so a profile is two settings there; this sets "
                       "both. Arguments after -- go to `dvc exp run` (e.g. -- --name smoke-try).")
    _common(p)
    p.add_argument("dvc_args", nargs=argparse.REMAINDER, help="more arguments for dvc exp run, after --")
    p.set_defaults(func=cmd_exp_run)


def _add_dvc_yaml(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dvc-yaml", help="write dvc.yaml from the pipeline's description (or check it is current)",
                       description="dvc.yaml is generated from cnnbench.pipeline, the one description of the stages "
                       "that the Snakefile's rules run too: the same commands, and for each stage the code it "
                       "imports as deps. --check exits 1 when the file differs from what would be written.")
    _common(p)
    p.add_argument("--out", type=Path, default=Path("dvc.yaml"), help="the file (default: %(default)s)")
    p.add_argument("--check", action="store_true", help="only check that the file is current")
    p.set_defaults(func=cmd_dvc_yaml)


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="table of every variant's network: parameters, FLOPs, output shape",
                       description="Build every variant's network (with the profile's model_args) and print "
                       "its parameter count, forward FLOPs for one image at the data set's resolution "
                       "(torch.utils.flop_counter; a multiply-add counts as 2 FLOPs) and output shape. "
                       "--arguments instead lists the model_args every registered model takes.")
    _common(p)
    p.add_argument("--dataset", help="only variants of this data set (a key of datasets in params.yaml)")
    p.add_argument("--arguments", action="store_true",
                   help="list every registered model's arguments (type and allowed values, default, meaning) "
                   "instead of the table")
    p.add_argument("--json", type=Path, help="also write the table as JSON to this file")
    p.set_defaults(func=cmd_models)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure the training engine against the lab reports' loop",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Measure on whatever device is present (median of timed windows after a "
                       "warm-up): training images/s of the engine and of a reference loop written as the lab "
                       "reports did (PIL transforms, DataLoader workers, fp32, NCHW, in a Python process of its own) "
                       "with the same model, batch and recipe; the model alone on one fixed batch (the ceiling without data work, so the "
                       "highest engine/reference ratio this device allows); evaluation images/s; and the "
                       "butterfly data path (packed store + on-device augmentation, with the resized crop's default "
                       "kernel and its torch kernel, vs ImageFolder + PIL in a process of its own). Uses "
                       "data/prepared/<dataset> when present, else synthetic data of the right shape (the "
                       "output says which).\n\n"
                       "--accuracy instead trains the given variants for --epochs epochs per seed and reports "
                       "test and final validation accuracy (the lab vs fast recipe budget comparison; choose "
                       "settings on validation, report test).")
    _common(p)
    p.add_argument("--variants", default="cifar10-resnet18", help="comma-separated variants (default: %(default)s)")
    p.add_argument("--recipe", help="the recipe of the throughput runs (default: the first of recipes_in_study)")
    p.add_argument("--recipes", help="with --accuracy: comma-separated recipes (default: recipes_in_study)")
    p.add_argument("--batch-size", type=int, help="batch size (default: the recipe's)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: %(default)s)")
    p.add_argument("--windows", type=int, default=5, help="timed windows; the median is reported (default: %(default)s)")
    p.add_argument("--steps", type=int, default=5, help="steps per window (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference paths (default: %(default)s)")
    p.add_argument("--no-data-path", action="store_true", help="skip the butterfly data-path benchmark")
    p.add_argument("--tiles", type=_int_list(1), help="data path: also time the torch kernel of the packed store's resized crop with "
                                   "these many images per tile, comma-separated (e.g. 1,2,4,64; its default on the "
                                   "CPU is the number that fits augment.CPU_TILE_BYTES; the CPU's default kernel "
                                   "is numba's, which has no tiles)")
    p.add_argument("--optimizer-impl", type=_choice_list(("fused", "default")), metavar="IMPLS",
                   help="also time the engine step with each of these optimizer implementations, comma-separated: "
                   "fused (torch's single-kernel step) and default (its foreach step); the engine uses fused on "
                   "the CPU, default on CUDA until measured there")
    p.add_argument("--images", type=Path, help="an ImageFolder tree for the data path (default: the train "
                   "split extracted from data/raw/butterflies)")
    p.add_argument("--device", help="device (default: cuda when this machine has one, else cpu); the engine's "
                   "precision and memory format are resolved for it as train.precision/memory_format: auto say")
    p.add_argument("--accuracy", action="store_true", help="train and test instead of timing (see above)")
    p.add_argument("--epochs", type=int, default=15, help="with --accuracy: epochs per run (default: %(default)s)")
    p.add_argument("--seeds", type=_int_list(0), default="0,1", help="with --accuracy: comma-separated seeds (default: %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a params.yaml key for this benchmark only (repeatable), e.g. "
                   "--set recipes.fast.batch_size=256; the result is validated like params.yaml")
    p.add_argument("--out", type=Path, help="JSON output (default: results/bench/bench.json or accuracy.json)")
    p.set_defaults(func=cmd_bench)


def _add_gpu_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gpu-check", help="exercise every CUDA path on one GPU in minutes: one table of checks and bars",
                       description="Run the GPU checks (scripts/gpu-check.sh; docs/benchmarks.md, GPU check), each in "
                       "a process of its own with a time budget: a. training with bf16, channels_last and the EMA "
                       "under a terminal with CUDA's sync debug mode (bar: 0 syncs in the step loop); b. the same "
                       "compiled; c. deterministic mode twice, bit-identical; d. the resized crop's torch kernel "
                       "against the numba one on the same boxes; e. a checkpoint resumed bit-identically; f. two "
                       "jobs sharing the GPU's slots; g. images/s of 1, 2 and 4 concurrent CIFAR jobs; h. `cnnbench "
                       "bench` against the GPU targets. Prints one table (check, result, figure, bar, verdict) and "
                       "writes it, a JSON of every figure and each check's log into --out. Uses "
                       "data/prepared/<dataset> where present, else synthetic data of its shape (the table says "
                       "which). The networks are those of --profile (default here: full with cuda, smoke with cpu). "
                       "Exit status 1 when a check fails, or when CUDA is not available (with the reason).")
    _common(p)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cuda (default): every check at full size; cpu: the checks that need no GPU (c-f) at tiny "
                   "sizes, the others say 'needs CUDA'")
    p.add_argument("--only", help="comma-separated checks to run, e.g. a,c (default: all, a-h)")
    p.add_argument("--out", type=Path, default=Path("results/gpu-check"), help="output folder (default: %(default)s)")
    p.add_argument("--data-root", type=Path, default=Path("data/prepared"),
                   help="prepared data sets (default: %(default)s); synthetic data where one is missing")
    p.add_argument("--synthetic", action="store_true", help="synthetic data even where prepared data exists")
    p.add_argument("--keep-work", action="store_true", help="keep the scratch folder (runs, models, synthetic data)")
    p.add_argument("--time-limit", type=float, default=560.0,
                   help="seconds for all checks together; checks not started by then fail (default: %(default)s)")
    p.set_defaults(func=cmd_gpu_check)


def _add_variants(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("variants", help="list variant names (one per line), optionally of one data set")
    _common(p)
    p.add_argument("--dataset", help="only variants of this data set")
    p.set_defaults(func=cmd_variants)


PLAN_SEEDS_DESCRIPTION = """\
How many seeds per side would decide the claims a study left inconclusive, read from what
`cnnbench aggregate` wrote (claims.csv): per claim and recipe the number of seeds per side at which
its test reaches the power of params.yaml `claims_rule.power`, taking the observed difference and
variances as true, at Holm's strictest level (alpha / number of tests); or why no number would do
(the observed difference lies outside the margin of an "about the same" claim; the test set's own
noise hides the effect; training noise unmeasured with one seed per side: run 2 first). Then the
`seeds` setting that covers every claim a number decides. Adding seeds retrains only the new runs.
"""


def _add_plan_seeds(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan-seeds", help="how many seeds per side would decide the inconclusive claims",
                       description=PLAN_SEEDS_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--summary", type=Path, default=SUMMARY, help="output of `cnnbench aggregate` (default: %(default)s)")
    p.set_defaults(func=cmd_plan_seeds)


PLAN_DESCRIPTION = """\
How long the study of a profile will take on this machine, before it starts. For every distinct
cost shape of the study's runs (model and its arguments, batch size, image size, augmentation,
threads, precision, memory format: recipes and seeds that change only the numbers share one) it
times a few optimisation steps of the study's own training step, one evaluation batch and one
checkpoint, on synthetic images of the run's shape, then prints per run the estimated time of its
train and evaluate jobs:

  epochs x (train images / img/s + validation pass + checkpoint) + the evaluate job's test pass
  + each job's start-up (measured: a fresh python, imports, a trivial stage) + the train logger

and the whole study's wall time: data sets not prepared yet (their preprocess estimated from the
archive's size, in data/raw or the data mirror), the runs scheduled longest first onto the
parallel slots (CPU: --cores // the train job's cpus; GPU: visible GPUs x
resources.train.jobs_per_gpu), then aggregate, plot and report. Image counts come from
data/prepared/<dataset>/manifest.json (classes left out, train_limit applied), else from the
official data set's split sizes; the output says which. Other programs using the CPU slow the
timing as they slow the study: the output says when the machine was busy.

Tuning trials (params.yaml `tuning`) are listed and totalled apart from the runs: each is a train
job of the budget's epochs with no evaluate job; they are scheduled first, and a tuned run waits
for its variant's selection. The total says the study's time plus what tuning adds.
"""


def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="estimate how long every run and the whole study take on this machine",
                       description=PLAN_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--steps", type=_positive_int, default=5, help="timed steps per cost shape, after 2 warm-up steps; the "
                   "median counts (default: %(default)s)")
    p.add_argument("--cores", type=_positive_int, help="cores the study may use (default: this machine's, as "
                   "snakemake --cores all counts them)")
    p.add_argument("--device", help="time on this device instead of each run's own (cpu, cuda, ...)")
    p.add_argument("--data", type=Path, default=Path("data/prepared"),
                   help="prepared data root, for the image counts (default: %(default)s)")
    p.add_argument("--raw", type=Path, default=Path("data/raw"),
                   help="downloaded data root, for the preprocess estimate (default: %(default)s; then the data mirror)")
    p.add_argument("--json", type=Path, help="also write the plan as JSON to this file")
    p.set_defaults(func=cmd_plan)


COMPARE_DESCRIPTION = """\
Compare two studies' results: A and B are results folders as `cnnbench aggregate` left them
(results/ or its summary/ subfolder, holding variants.csv, claims.csv and summary.json), e.g. two
DVC experiments or one study before and after a change of params.yaml. params.yaml is not read.

Writes compare.md and compare.html (self-contained) into --out: for every variant and recipe A's and
B's mean test top-1 (and top-1 on the kept classes) with its 95 % interval and n seeds, and the
difference B - A; every claim and recipe whose verdict changed, with both verdicts and why (different
rule: which keys; claim redefined; more or fewer seeds; other test images; effect moved: both
differences with their intervals; adjusted p moved); unchanged verdicts counted; variants and claims
found in one study only.
"""

COMPARE_EPILOG = """\
examples:
  cp -r results /tmp/results-before             # keep the study, then change params.yaml and rerun
  snakemake --cores 4
  cnnbench compare /tmp/results-before results  # writes results/compare/compare.{md,html}

  dvc exp apply lr-0.01 && cp -r results /tmp/lr-0.01   # two DVC experiments: check out one, keep
  dvc exp apply lr-0.02                                  # its results, check out the other
  cnnbench compare /tmp/lr-0.01 results --out /tmp/lr-compare
"""


LEAK_EVAL_DESCRIPTION = """\
Measure the leak audit that preprocess runs (cnnbench.data.duplicates) on a labelled set built
from a data set's raw archive: --per-case random images per transform and strength (JPEG
re-encoding, centre and off-centre crops, rescaling, brightness, contrast, saturation, a colour
cast, mirroring, a mix) are copied and audited together with every source image, whose own
look-alikes (same class, same background) are the hard negatives. Prints recall and precision at
each --thresholds value and, at the data set's near_duplicate_threshold, the recall per transform
and strength. --speed instead times the audit on a full-size data set (60,000 CIFAR-10 or 13,594
butterfly images made from the archive's real images) with its peak memory. docs/duplicates.md
records what this measured."""


def _add_leak_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leak-eval", help="precision and recall (or --speed) of preprocess's near-duplicate audit",
                       description=LEAK_EVAL_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--dataset", required=True,
                   help="which data set's archive (a data set of kind cifar10 or butterflies in params.yaml)")
    p.add_argument("--archive", type=Path, help="the raw archive (default: data/raw/<dataset>/<source filename>)")
    p.add_argument("--per-case", type=int, default=10, help="copies per transform and strength (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the numpy Generator that picks and alters images (default: %(default)s)")
    p.add_argument("--thresholds", type=lambda v: [float(x) for x in v.split(",")], default="0.1,0.15,0.2,0.25,0.3",
                   help="comma-separated thresholds to score (default: %(default)s)")
    p.add_argument("--speed", action="store_true", help="time the audit at full size instead")
    p.add_argument("--out", type=Path, help="also write the result as JSON here")
    p.set_defaults(func=cmd_leak_eval)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="two studies' results side by side: accuracy, and each verdict that changed and why",
                       description=COMPARE_DESCRIPTION, epilog=COMPARE_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", metavar="A", type=Path, help="the first results folder (results/ or results/summary/), the baseline")
    p.add_argument("b", metavar="B", type=Path, help="the second results folder; differences are B - A")
    p.add_argument("--out", type=Path, default=Path("results/compare"), help="output directory (default: %(default)s)")
    p.set_defaults(func=cmd_compare, needs_params=False)


# --- commands ------------------------------------------------------------------------------
def cmd_download(cfg: Config, args) -> None:
    from .data import fetch

    out = args.out or Path("data/raw") / args.dataset
    mirror = fetch.resolve_mirror(cfg.data_mirror)
    info = fetch.fetch_dataset(args.dataset, cfg.source_settings(args.dataset), out, mirror)
    log.info("%s: %s from %s (sha256 %s)", args.dataset, info["filename"], info["location"], info["sha256"])


def cmd_preprocess(cfg: Config, args) -> None:
    settings = cfg.preprocess_settings(args.dataset)
    raw = args.raw or Path("data/raw") / args.dataset
    out = args.out or Path("data/prepared") / args.dataset
    from .data import kinds

    manifest = kinds.prepare(raw, out, settings)
    counts = ", ".join(f"{s} {v['count']}" for s, v in manifest["splits"].items())
    log.info("%s: packed %s into %s (%d excluded)", args.dataset, counts, out, len(manifest.get("excluded", [])))


def _prepared_dir(cfg: Config, args) -> Path:
    return args.data or Path("data/prepared") / cfg.variant(args.variant)["dataset"]


def _claim_gpu(cfg: Config, device: str, stage: str) -> None:
    """Before CUDA starts: a GPU slot for this job, shared by up to the stage's jobs_per_gpu jobs
    and only where gpu_mem_mb fits (see cnnbench.gpus)."""
    from .gpus import assign_gpu

    job = cfg.job_resources(stage)
    assign_gpu(device, jobs_per_gpu=job["jobs_per_gpu"], gpu_mem_mb=job.get("gpu_mem_mb"))


def _run_of(cfg: Config, args, stage: str) -> RunSpec:
    """The run of a train/evaluate job, refused before any work when it is not in the study; with
    several GPUs or GPU sharing and several concurrent jobs, this job claims its GPU slot."""
    spec = cfg.run(args.variant, args.recipe, args.seed)
    if args.recipe is not None and args.recipe not in cfg.recipes:
        raise ConfigError(f"--recipe {args.recipe}: not in recipes_in_study; allowed values: {', '.join(cfg.recipes)}")
    cfg.check_seed(spec.seed)
    _claim_gpu(cfg, spec.execution.device, stage)
    # A GPU run where CUDA is missing stops here, with why and what to do, before data or checkpoints
    # are touched (after the claim: asking torch about CUDA fixes which devices this process sees).
    from .cuda_env import require_cuda

    require_cuda(spec.execution.device)
    return spec


def _check_trial(cfg: Config, args) -> None:
    """A trial job names a tuned variant, a tuned recipe of the study and one of tuning.seeds."""
    t = cfg.tuning
    if args.recipe not in cfg.tuned_recipes:
        raise ConfigError(f"--recipe {args.recipe}: not a tuned recipe of recipes_in_study; allowed values: "
                          f"{', '.join(cfg.tuned_recipes) or '(none: params.yaml tunes no recipe)'}")
    if args.variant not in t.variants:
        raise ConfigError(f"--variant {args.variant}: not tuned (tuning.variants); allowed values: {', '.join(t.variants)}")
    if getattr(args, "seed", None) is not None and args.seed not in t.seeds:
        raise ConfigError(f"--seed {args.seed}: not among tuning.seeds {list(t.seeds)} of profile {cfg.profile!r}")


def cmd_tune(cfg: Config, args) -> None:
    from .train import run_trial
    from .tuning import trial_dir

    _check_trial(cfg, args)
    spec = cfg.trial(args.variant, args.recipe, args.point, args.seed)
    _claim_gpu(cfg, spec.execution.device, "train")
    from .cuda_env import require_cuda

    require_cuda(spec.execution.device)
    out = args.out or trial_dir(cfg.tuning_root, args.variant, args.recipe, args.point, args.seed)
    ckpt = Path("results/.checkpoints/tuning") / args.variant / args.recipe / args.point / f"seed{args.seed}"
    record = run_trial(spec, cfg.tuning.point(args.point).values, args.point, _prepared_dir(cfg, args), out, ckpt)
    outcome = "diverged" if record["diverged"] else f"final validation accuracy {100 * record['val_acc']:.2f} %"
    log.info("trial %s %s %s seed %d: %s (%d epochs, %.1f s)", args.variant, args.recipe, args.point, args.seed,
             outcome, record["epochs"], record["seconds"])


def cmd_select(cfg: Config, args) -> None:
    from .tuning import write_selection

    _check_trial(cfg, args)
    selection = write_selection(cfg, args.variant, args.recipe, args.trials, args.out)
    log.info("%s %s: chose %s (mean final validation accuracy %.2f %% over %d seed(s))%s", args.variant,
             args.recipe, selection["chosen_point"], 100 * selection["chosen_val_acc"], len(selection["seeds"]),
             f"; at the grid's edge in {', '.join(selection['at_grid_edge'])}: widen the grid"
             if selection["at_grid_edge"] else "")


def cmd_train(cfg: Config, args) -> None:
    from .train import train_run

    from .progress import progress_line

    spec = _run_of(cfg, args, "train")
    log.info(progress_line(cfg, RUNS, current=(spec.variant, spec.recipe, spec.seed)))
    out = args.out or run_dir(RUNS, spec.variant, spec.recipe, spec.seed)
    ckpt = args.checkpoint_dir or run_dir(Path("results/.checkpoints"), spec.variant, spec.recipe, spec.seed)
    train_run(spec, _prepared_dir(cfg, args), out, ckpt, use_dvclive=not args.no_dvclive)


def cmd_evaluate(cfg: Config, args) -> None:
    from .evaluate import evaluate_run

    spec = _run_of(cfg, args, "evaluate")
    evaluate_run(spec, _prepared_dir(cfg, args), args.run or run_dir(RUNS, spec.variant, spec.recipe, spec.seed))


def cmd_aggregate(cfg: Config, args) -> None:
    from .aggregate import aggregate

    summary = aggregate(cfg, args.runs, args.out)
    for recipe, counts in summary["verdicts"].items():
        log.info("recipe %s: %s", recipe, ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items())))
    log.info("wrote %s", args.out)


def cmd_plot(cfg: Config, args) -> None:
    from .plots import plot_all

    paths = plot_all(cfg, args.runs, args.summary, args.out, tuning_root=args.tuning)
    log.info("wrote %d figures into %s", len(paths), args.out)


def reproduce_command(cfg: Config, driver: str) -> str:
    """The command that reruns this study with the given driver."""
    if driver == "dvc":
        return f"cnnbench --profile {cfg.profile} exp-run"
    return f"snakemake --cores 4 --config profile={cfg.profile}"


def cmd_report(cfg: Config, args) -> None:
    from .provenance import report_context
    from .report import build_report

    context = report_context(cfg, args.prepared, command=args.command_line or reproduce_command(cfg, args.driver))
    html, md = build_report(cfg, args.summary, args.plots, args.runs, args.out, context, tuning_root=args.tuning)
    log.info("wrote %s and %s", html, md)


def cmd_validate(cfg: Config, args) -> None:
    from .plan import describe_one, describe_run, describe_trials, tuned_only

    if args.variant:
        print(json.dumps(describe_one(cfg, args.variant, args.recipe, args.seed), indent=2))
        return
    print(f"{cfg.params_path}: valid; profile {cfg.profile!r}; params hash {cfg.params_hash[:12]}")
    print(f"  {len(cfg.runs)} runs: {len(cfg.variants)} variant(s) x recipes {', '.join(cfg.recipes)}{tuned_only(cfg)} "
          f"x seeds {', '.join(map(str, cfg.seeds))}; {len(cfg.claims)} claim(s)")
    if cfg.trials:  # counted apart: a trial is no run of the study
        print(f"  {describe_trials(cfg)}")
    for ds in cfg.datasets:
        print(f"  {ds}: {len(cfg.variants_of(ds))} variant(s)")
        for v in cfg.variants_of(ds):
            for recipe in cfg.recipes:
                if cfg.runs_under(v, recipe):
                    print(f"    {describe_run(cfg, v, recipe)}")


def cmd_doctor(cfg: Config | None, args) -> None:
    from . import doctor

    doctor.run(args.params, args.profile, args.json)


def cmd_specs(cfg: Config, args) -> None:
    from .pipeline import check_dvc_yaml, write_specs

    dvc_yaml = cfg.params_path.parent / "dvc.yaml"
    if dvc_yaml.is_file():  # DVC runs this stage first: its stages must be those of params.yaml
        check_dvc_yaml(dvc_yaml, cfg)
    paths = write_specs(cfg, args.out)
    log.info("wrote %d run specifications into %s", len(paths), args.out)


def exp_run_command(cfg: Config, extra: list[str] | None = None) -> list[str]:
    """The `dvc exp run` that runs this profile's study (its seeds set too)."""
    extra = [a for a in (extra or []) if a != "--"]
    return ["dvc", "exp", "run", "-S", f"profile={cfg.profile}", "-S", f"seeds={cfg.seeds}", *extra]


def cmd_exp_run(cfg: Config, args) -> None:
    from .pipeline import dvc_yaml_is_current, render_dvc_yaml

    dvc_yaml = cfg.params_path.parent / "dvc.yaml"
    if not dvc_yaml_is_current(dvc_yaml, cfg):
        atomic_write_text(dvc_yaml, render_dvc_yaml(cfg))
        log.info("wrote %s for the data sets and variants of %s", dvc_yaml, cfg.params_path)
    cmd = exp_run_command(cfg, args.dvc_args)
    log.info("running %s", " ".join(cmd))
    sys.stderr.flush()
    os.execvp(cmd[0], cmd)


def cmd_dvc_yaml(cfg: Config, args) -> None:
    from .pipeline import check_dvc_yaml, render_dvc_yaml

    if args.check:
        check_dvc_yaml(args.out, cfg)
        log.info("%s is up to date", args.out)
        return
    atomic_write_text(args.out, render_dvc_yaml(cfg))
    log.info("wrote %s", args.out)


def dataset_shape(cfg: Config, dataset: str) -> tuple[int, int]:
    """Image side and number of classes (before filtering) of a data set: what its kind knows, else
    (an image folder, a CSV) what its prepared store holds."""
    from .data import packed

    info = cfg.describe_dataset(dataset)
    if info.num_classes is not None:
        return info.image_size, info.num_classes
    prepared = Path("data/prepared") / dataset
    if not (prepared / "classes.json").is_file():
        raise DataError(f"data set {dataset!r}: only its data tells its classes; run `cnnbench preprocess "
                        f"--dataset {dataset}` first (it writes {prepared})")
    return info.image_size, len(packed.read_classes(prepared))


def model_table(cfg: Config, dataset: str | None = None) -> list[dict]:
    """Parameters, forward FLOPs and output shape of every variant's network."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .models import build_model

    if dataset is not None:
        cfg.dataset(dataset)  # an unknown data set: a config error listing the known ones
    rows = []
    for name in cfg.variants_of(dataset) if dataset else cfg.variants:
        v = cfg.variant(name)
        size, classes = dataset_shape(cfg, v["dataset"])
        classes -= len(v["exclude_classes"])
        model = build_model(v["model"], classes, **v["model_args"]).eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            out = model(torch.zeros(1, 3, size, size))
        rows.append({
            "variant": name, "model": v["model"], "input": f"3x{size}x{size}", "classes": classes,
            "params": sum(p.numel() for p in model.parameters()), "flops": int(counter.get_total_flops()),
            "output": "x".join(str(d) for d in out.shape),
        })
    return rows


def argument_table() -> list[str]:
    """Every registered model's arguments as the registry describes them, one line each."""
    from .models import argument_specs, model_names

    lines = []
    for name in model_names():
        specs = list(argument_specs(name).values())
        w_name = max((len(s.name) for s in specs), default=0)
        w_allowed = max((len(s.allowed()) for s in specs), default=0)
        w_default = max((len(json.dumps(s.default)) for s in specs), default=0)
        lines.append(name)
        lines += [f"  {s.name:<{w_name}}  {s.allowed():<{w_allowed}}  default {json.dumps(s.default):<{w_default}}  "
                  f"{s.help}" for s in specs]
    return lines


def cmd_models(cfg: Config, args) -> None:
    if args.arguments:
        print("\n".join(argument_table()))
        return
    rows = model_table(cfg, args.dataset)
    head = ("variant", "model", "input", "params", "GFLOPs", "output")
    cells = [(r["variant"], r["model"], r["input"], f"{r['params']:,}", f"{r['flops'] / 1e9:.3f}", r["output"])
             for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(head)]
    right = {3, 4}
    fmt = lambda cols: "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cols, widths)))
    print(f"profile {cfg.profile}: forward FLOPs of one image (multiply-add = 2 FLOPs)")
    print(fmt(head))
    print(fmt(["-" * w for w in widths]))
    for c in cells:
        print(fmt(c))
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=2) + "\n")


def cmd_bench(cfg: Config, args) -> None:
    from . import bench
    from .config import with_overrides

    if args.set:
        cfg = with_overrides(cfg, args.set)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    for name in names:
        cfg.variant(name)  # unknown variant: a clear error before any work
    # Claim a GPU slot like a train job before anything asks torch about CUDA (which fixes the devices).
    _claim_gpu(cfg, cfg.run(names[0]).execution.device if args.accuracy else (args.device or "auto"), "train")
    if args.accuracy:
        import tempfile

        seeds = args.seeds
        with tempfile.TemporaryDirectory(prefix="cnnbench-accuracy-") as tmp:
            recipes = [r.strip() for r in args.recipes.split(",")] if args.recipes else None
            result = bench.bench_accuracy(cfg, names, Path("data/prepared"), epochs=args.epochs, seeds=seeds,
                                          work_dir=Path(tmp), recipes=recipes)
        out = args.out or Path("results/bench/accuracy.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
        for r in result["runs"]:
            print(f"{r['variant'] + '/' + r['recipe']:36} seed {r['seed']}: test top-1 {100 * r['test_top1']:.2f} % "
                  f"(val {100 * r['val_top1']:.2f} %; {r['epochs']} epochs, {r['seconds']:.0f} s, {r['device']})")
        for name, mean in result["mean_test_top1"].items():
            print(f"{name:36} mean of {len(seeds)} seeds: test top-1 {100 * mean:.2f} % "
                  f"(val {100 * result['mean_val_top1'][name]:.2f} %)")
        print(f"wrote {out}")
        return
    report = bench.run_bench(
        cfg, variants=names, prepared_root=Path("data/prepared"), raw_root=Path("data/raw"),
        out=args.out or Path("results/bench/bench.json"), batch_size=args.batch_size, warmup=args.warmup,
        windows=args.windows, steps=args.steps, workers=args.workers, data_path=not args.no_data_path,
        image_dir=args.images, device_name=args.device, recipe=args.recipe,
        tiles=args.tiles, optimizer_impls=args.optimizer_impl,
    )
    print(bench.format_report(report))


def _choice_list(choices: tuple[str, ...]):
    """argparse type: comma-separated values, each one of ``choices``."""
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated values of {', '.join(choices)}")
        return values
    return parse


def cmd_gpu_check(cfg: Config, args) -> None:
    from . import gpucheck

    report = gpucheck.gpu_check(device=args.device, params=args.params, profile=args.profile, out=args.out,
                                data_root=args.data_root, only=args.only, synthetic=args.synthetic,
                                keep_work=args.keep_work, time_limit=args.time_limit)
    print(gpucheck.format_report(report))
    failed = [r["key"] for r in report["checks"] if r["verdict"] == gpucheck.FAIL]
    if failed:
        raise CnnbenchError(f"{len(failed)} check(s) failed ({', '.join(failed)}); the table and every figure are in "
                            f"{args.out}, each check's output in {args.out / 'logs'}")


def _int_list(minimum: int):
    """argparse type: comma-separated integers, each at least ``minimum``."""
    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, "
                                             f"e.g. {minimum},{minimum + 1}") from None
        if any(v < minimum for v in values):
            raise argparse.ArgumentTypeError(f"{text!r}: every value must be at least {minimum}")
        return values
    return parse


def _positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def cmd_variants(cfg: Config, args) -> None:
    names = cfg.variants_of(args.dataset) if args.dataset else cfg.variants
    print("\n".join(names))


def _seeds_key(cfg: Config) -> str:
    """Where params.yaml sets this profile's seeds."""
    return f"profiles.{cfg.profile}.seeds" if "seeds" in cfg.profile_block else "seeds"


def cmd_plan_seeds(cfg: Config, args) -> None:
    from .claims import plan_seeds
    from .results import read_table

    table = read_table(args.summary / "claims.csv", "cnnbench aggregate", keep_default_na=False, na_values=[""])
    plan = plan_seeds(table)
    if not plan.rows:
        print(f"every claim of the study ({len(table)} claim x recipe pairs) is decided: no more seeds needed")
        return
    width = max(len(r["claim"]) for r in plan.rows)
    print(f"{'claim':<{width}}  recipe  seeds per side  why")
    for r in plan.rows:
        seeds = str(r["seeds"]) if r["seeds"] is not None else "-"
        print(f"{r['claim']:<{width}}  {r['recipe']:<6}  {seeds:>14}  {r['why']}")
    print()
    print(plan.sentence().replace("`", ""))
    if plan.covering:
        print(f"set in params.yaml: {_seeds_key(cfg)}: {plan.setting()}   (now: {cfg.seeds})")
        if _seeds_key(cfg) != "seeds":
            print(f"under DVC: cnnbench --profile {cfg.profile} exp-run (it sets the top-level seeds too)")


def cmd_plan(cfg: Config, args) -> None:
    from .plan import format_plan, make_plan, write_plan

    plan = make_plan(cfg, prepared_root=args.data, raw_root=args.raw, cores=args.cores, device=args.device,
                     steps=args.steps)
    print(format_plan(plan))
    if args.json:
        write_plan(plan, args.json)


def cmd_compare(cfg: Config | None, args) -> None:
    from .compare import compare_studies

    for path in compare_studies(args.a, args.b, args.out):
        print(f"wrote {path}")


BUG_REPORT = "report it with the traceback above to the cnnbench issue tracker"



def cmd_leak_eval(cfg: Config, args) -> None:
    from .data import leak_eval

    settings = cfg.preprocess_settings(args.dataset)
    kind = settings["kind"]
    if kind not in leak_eval.FULL_SIZE:
        raise ConfigError(f"--dataset {args.dataset}: leak-eval reads archives of kind {' or '.join(leak_eval.FULL_SIZE)}, "
                          f"not {kind!r}")
    archive = args.archive or Path("data/raw") / args.dataset / settings["filename"]
    if not archive.is_file():
        raise DataError(f"{archive}: no such archive; run `cnnbench download --dataset {args.dataset}` or pass --archive")
    sources = leak_eval.load_sources(kind, archive)
    if args.speed:
        row = leak_eval.time_audit(kind, leak_eval.full_size_images(sources, leak_eval.FULL_SIZE[kind], args.seed),
                                   settings["near_duplicate_threshold"])
        print(json.dumps(row, indent=2))
        result: object = row
    else:
        labelled = leak_eval.evaluate(kind, sources, per_case=args.per_case, seed=args.seed)
        scores = [labelled.score(t) for t in args.thresholds]
        print(f"{args.dataset}: {len(sources)} source images + {scores[0].copies} copies; "
              f"{scores[0].hard_negatives} same-class source pairs verified (hard negatives); audit {labelled.seconds:.1f} s")
        print("threshold  recall  precision  true found/all  false  source pairs (known real/other)")
        for sc in scores:
            print(f"{sc.threshold:9.2f}  {sc.recall:6.3f}  {sc.precision:9.3f}  {sc.found_true:5d}/{sc.true_pairs:<5d}  "
                  f"{sc.false_pairs:5d}  {len(sc.found_in_source):4d} ({sc.real_found}/{sc.real_other})")
        chosen = labelled.score(settings["near_duplicate_threshold"])
        print(f"recall per transform at near_duplicate_threshold {chosen.threshold:g} (found/copies by strength):")
        for name, cells in chosen.per_transform.items():
            print(f"  {name}: " + ", ".join(f"{k}: {v['found']}/{v['copies']}" for k, v in cells.items()))
        result = {"scores": [sc.to_dict() for sc in scores], "chosen": chosen.to_dict()}
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    try:
        # compare reads two results folders, not params.yaml
        cfg = load(args.params, profile=args.profile) if getattr(args, "needs_params", True) else None
        if getattr(args, "dataset", None) and args.command in ("download", "preprocess", "variants", "models"):
            cfg.dataset(args.dataset)  # unknown data set: clear error before any work
        args.func(cfg, args)
    # cnnbench's own errors (cnnbench.errors) carry a message written for the user: one line, no
    # traceback. Anything else is a bug in cnnbench, shown with its traceback.
    except ConfigError as exc:
        print(f"cnnbench: config error: {exc}", file=sys.stderr)
        return 2
    except CnnbenchError as exc:
        print(f"cnnbench {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cnnbench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cnnbench validate | head`: the reader left, not an error
        sys.stderr.close()
        return 0
    except Exception as exc:
        traceback.print_exc()
        print(f"cnnbench {args.command}: internal error ({type(exc).__name__}): this is a bug in cnnbench "
              f"{__version__}; {BUG_REPORT}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

