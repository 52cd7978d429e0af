"""The one description of the pipeline: each stage's command and the code it runs.

Both drivers run exactly these commands: the Snakefile's rules format them with Snakemake's
wildcards, and ``dvc.yaml`` is generated from them (``cnnbench dvc-yaml``; a test fails when the
committed file is stale). A DVC stage's code deps are the cnnbench modules its command imports,
followed through every import inside the package, so a change to any of them makes the stage stale.

Under DVC a run's identity is its specification file, ``results/specs/runs/<variant>/<recipe>/seed<k>.json``
(written by the ``specs`` stage from params.yaml): train and evaluate depend on their run's file,
not on params.yaml keys, so an edit that changes no run's settings (a lab-report figure, a
description, another variant) leaves them up to date. Under Snakemake the same hash is the rule's
``params:``.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from .atomic import atomic_write_text
from .config import Config, ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
SRC_PREFIX = Path("src") / "cnnbench"  # where the package sits in the repository (dvc.yaml paths)
SPECS = "results/specs"
RUN = "results/runs/{variant}/{recipe}/seed{seed}"
TUNING = "results/tuning"
TRIAL = TUNING + "/{variant}/{recipe}/{point}/seed{seed}"
SELECTION = TUNING + "/{variant}/{recipe}/selection.json"
CHOSEN = TUNING + "/{variant}/{recipe}/chosen.json"  # written beside the selection: only the chosen values


@dataclass(frozen=True)
class Stage:
    name: str
    command: str                 # a template: {profile}, {dataset}, {variant}, {recipe}, {seed}
    entry: str                   # cli command function whose imports the stage runs
    extra_deps: tuple[str, ...] = ()  # non-Python files the stage reads (templates)


STAGES = {s.name: s for s in (
    Stage("download", "cnnbench --profile {profile} download --dataset {dataset} --out data/raw/{dataset}",
          "cmd_download"),
    Stage("preprocess", "cnnbench --profile {profile} preprocess --dataset {dataset} --raw {raw} "
          "--out data/prepared/{dataset}", "cmd_preprocess"),
    Stage("specs", f"cnnbench --profile {{profile}} specs --out {SPECS}", "cmd_specs"),
    Stage("tune", "cnnbench --profile {profile} tune --variant {variant} --recipe {recipe} --point {point} "
          f"--seed {{seed}} --data data/prepared/{{dataset}} --out {TRIAL}", "cmd_tune"),
    Stage("select", f"cnnbench --profile {{profile}} select --variant {{variant}} --recipe {{recipe}} --trials {TUNING} "
          f"--out {SELECTION}", "cmd_select"),
    Stage("train", "cnnbench --profile {profile} train --variant {variant} --recipe {recipe} --seed {seed} "
          f"--data data/prepared/{{dataset}} --out {RUN}", "cmd_train"),
    Stage("evaluate", "cnnbench --profile {profile} evaluate --variant {variant} --recipe {recipe} --seed {seed} "
          f"--data data/prepared/{{dataset}} --run {RUN}", "cmd_evaluate"),
    Stage("aggregate", "cnnbench --profile {profile} aggregate --runs results/runs --out results/summary",
          "cmd_aggregate"),
    Stage("plot", "cnnbench --profile {profile} plot --runs results/runs --summary results/summary "
          f"--tuning {TUNING} --out results/plots", "cmd_plot"),
    Stage("report", "cnnbench --profile {profile} report --runs results/runs --summary results/summary "
          f"--tuning {TUNING} --plots results/plots --out results/report --driver {{driver}}", "cmd_report",
          extra_deps=("src/cnnbench/templates",)),
)}


def command(stage: str, **fields: str) -> str:
    """The command line of one job of ``stage``. preprocess reads ``raw``: by default the data set's
    download, ``data/raw/<dataset>``; a subset's is its parent's packed store."""
    if "dataset" in fields:
        fields.setdefault("raw", f"data/raw/{fields['dataset']}")
    return STAGES[stage].command.format(**fields)


def spec_file(variant: str, recipe: str, seed: int | str, root: str = SPECS) -> str:
    """A run's specification file (its identity under DVC)."""
    return f"{root}/runs/{variant}/{recipe}/seed{seed}.json"


def trial_spec_file(variant: str, recipe: str, point: str, seed: int | str, root: str = SPECS) -> str:
    """A tuning trial's specification file (its identity under DVC)."""
    return f"{root}/trials/{variant}/{recipe}/{point}/seed{seed}.json"


def data_spec_file(dataset: str, stage: str, root: str = SPECS) -> str:
    """What ``download`` or ``preprocess`` of a data set reads, profile applied."""
    return f"{root}/data/{dataset}.{stage}.json"


# --- code deps: the imports a command runs ---------------------------------------------------------
def _module_file(module: str) -> Path | None:
    """The source file of a ``cnnbench...`` module (a package's ``__init__.py``), or None."""
    parts = module.split(".")[1:]
    base = PACKAGE_DIR.joinpath(*parts)
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["cnnbench", *parts])


def _imports(nodes, module: str, is_package: bool) -> set[str]:
    """cnnbench modules named by the import statements among ``nodes`` (walked recursively)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names if a.name.split(".")[0] == "cnnbench"}
            elif isinstance(sub, ast.ImportFrom):
                if sub.level:
                    base = package.split(".")
                    base = base[: len(base) - (sub.level - 1)]
                    target = ".".join(base + ([sub.module] if sub.module else []))
                else:
                    target = sub.module or ""
                if target.split(".")[0] != "cnnbench":
                    continue
                found.add(target)
                # `from .data import packed` imports the submodule cnnbench.data.packed
                found |= {f"{target}.{a.name}" for a in sub.names if _module_file(f"{target}.{a.name}")}
    return {m for m in found if _module_file(m)}


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imported_modules(entry: str) -> list[Path]:
    """Source files a ``cnnbench <stage>`` process imports: cli's module-level imports and those of
    the command function ``entry`` and of the cli functions it calls, then every cnnbench import of
    those modules, transitively (imports inside functions included: a superset, never fewer)."""
    cli_path = PACKAGE_DIR / "cli.py"
    tree = _parse(cli_path)
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    if entry not in functions:
        raise ValueError(f"cnnbench.cli has no function {entry!r}")
    # the command function and the cli helpers it calls, transitively
    called, stack = set(), [entry]
    while stack:
        name = stack.pop()
        if name in called:
            continue
        called.add(name)
        stack += [c.func.id for c in ast.walk(functions[name])
                  if isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id in functions]
    todo = _imports([*top, *(functions[n] for n in called)], "cnnbench.cli", False) | {"cnnbench"}
    seen: set[str] = {"cnnbench.cli"}  # only its module level and ``entry`` run, not its other commands
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(module)
        # importing a.b.c runs the __init__ of a and of a.b first
        parents = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        todo |= (_imports(_parse(path).body, module, path.name == "__init__.py") | parents) - seen
    return sorted(_module_file(m) for m in seen)


def code_deps(stage: str) -> list[str]:
    """The repository paths of the code a stage runs (its imports, plus its non-Python files)."""
    files = [str(SRC_PREFIX / p.relative_to(PACKAGE_DIR)) for p in imported_modules(STAGES[stage].entry)]
    return sorted(files) + list(STAGES[stage].extra_deps)


# --- the run specifications DVC depends on ---------------------------------------------------------
def _write_if_changed(path: Path, doc: dict) -> Path:
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    if not (path.is_file() and path.read_text() == text):
        atomic_write_text(path, text)
    return path


def _run_doc(cfg: Config, variant: str, recipe: str, seed: int) -> dict:
    """A run's specification file. A tuned recipe's run is written with its base values and the keys
    tuning chooses: its train stage also depends on the selection, which holds the chosen values."""
    if recipe not in cfg.tuned_recipes:
        spec = cfg.run(variant, recipe, seed)
        return {"run": spec.run_id, "hash": spec.hash, "spec": spec.to_dict()}
    # the keys tuning chooses are left blank: a value they would have without tuning (a variant's own lr)
    # never reaches the run, so it must not make its stage stale either
    spec = cfg.run(variant, recipe, seed, chosen={key: None for key in cfg.tuning.grid})
    return {"run": spec.run_id, "spec_before_tuning": spec.to_dict(), "tuned": sorted(cfg.tuning.grid),
            "chosen_in": CHOSEN.format(variant=variant, recipe=recipe)}


def write_specs(cfg: Config, out: Path) -> list[Path]:
    """One JSON file per run of the study (its spec and hash) and per data set and data stage
    (download, preprocess: the settings each reads); a file whose content would not change is left
    as it is, and files of runs no longer in the study are removed. Refuses top-level ``seeds``
    that differ from the profile's: under DVC they decide which seed stages exist."""
    if list(cfg.raw["seeds"]) != cfg.seeds:
        raise ConfigError(
            f"{cfg.params_path}: seeds: DVC makes one stage per top-level seed {cfg.raw['seeds']}, but profile "
            f"{cfg.profile!r} has seeds {cfg.seeds}; run `cnnbench exp-run --profile {cfg.profile}` (it sets both), "
            f"or dvc exp run -S profile={cfg.profile} -S 'seeds={cfg.seeds}'"
        )
    out = Path(out)
    written = []
    for variant, recipe, seed in cfg.runs:
        written.append(_write_if_changed(Path(spec_file(variant, recipe, seed, str(out))), _run_doc(cfg, variant, recipe, seed)))
    for variant, recipe, point, seed in cfg.trials:
        spec = cfg.trial(variant, recipe, point, seed)
        doc = {"trial": f"{variant}/{recipe}/{point}/seed{seed}", "hash": spec.hash, "spec": spec.to_dict()}
        written.append(_write_if_changed(Path(trial_spec_file(variant, recipe, point, seed, str(out))), doc))
    for dataset in cfg.prepared_datasets:
        stages = (("preprocess", cfg.preprocess_settings(dataset)),) if dataset in cfg.subsets else (
            ("download", cfg.source_settings(dataset)), ("preprocess", cfg.preprocess_settings(dataset)))
        for stage, settings in stages:
            written.append(_write_if_changed(Path(data_spec_file(dataset, stage, str(out))), settings))
    for stale in set(out.rglob("*.json")) - set(written):
        stale.unlink()
    return written


# --- dvc.yaml ------------------------------------------------------------------------------------
HEADER = """\
# Generated by `cnnbench dvc-yaml` from the data sets and variants of params.yaml and the stages of
# src/cnnbench/pipeline.py: edit those, not this file. After adding a data set or variant group to
# params.yaml run `cnnbench dvc-yaml` (`cnnbench exp-run` does it for you; the `specs` stage stops
# when this file is stale, and so do `cnnbench dvc-yaml --check` and the tests).
#
# The same stages as the Snakefile, for `dvc repro` / `dvc exp run`; every stage runs the same
# `cnnbench` command as the Snakemake rule of that job. One train/evaluate stage per run: a matrix
# over the variants of a data set x recipes_in_study x seeds. A stage's deps list the cnnbench
# modules its command imports. train and evaluate depend on their run's specification
# (results/specs/runs/..., written by the `specs` stage), which holds exactly what changes the run's
# numbers, instead of on params.yaml keys; download and preprocess likewise depend on the settings
# they read (results/specs/data/...).
# The top-level `seeds` decide which seed stages exist and must equal the profile's:
# `cnnbench exp-run --profile smoke` sets both (or dvc exp run -S profile=smoke -S 'seeds=[0]').
"""

def _dvc_fields(dataset: str) -> dict:
    return {"profile": "${profile}", "dataset": dataset, "variant": f"{dataset}-${{item.variant}}",
            "recipe": "${item.recipe}", "seed": "${item.seed}", "driver": "dvc"}


def _run_stages(dataset: str, variants, recipes, tuned: bool = False) -> dict:
    """train-<ds> and evaluate-<ds>: a matrix over ``variants`` x ``recipes`` x the top-level seeds
    (``train-tuned-<ds>``/``evaluate-tuned-<ds>`` for tuned recipes: they also read the selection)."""
    f = _dvc_fields(dataset)
    run = RUN.format(**f)
    matrix = {"variant": variants, "recipe": recipes, "seed": "${seeds}"}
    spec = spec_file(f["variant"], f["recipe"], f["seed"])
    chosen = [CHOSEN.format(**f)] if tuned else []
    label = f"{f['variant']} {f['recipe']} seed {f['seed']}"
    train = {
        "matrix": matrix,
        "cmd": command("train", **f),
        "deps": [f"data/prepared/{dataset}", spec, *chosen, *code_deps("train")],
        "outs": [f"{run}/model.pt", f"{run}/train.json"],
        "plots": [{f"{run}/history.csv": {"x": "epoch", "y": "val_acc", "title": f"{label}, validation accuracy"}}],
    }
    evaluate = {
        "matrix": matrix,
        "cmd": command("evaluate", **f),
        "deps": [f"data/prepared/{dataset}", f"{run}/model.pt", f"{run}/train.json", spec, *chosen,
                 *code_deps("evaluate")],
        "outs": [f"{run}/confusion.csv"],
        # Cached (results/ is git-ignored), so `dvc exp show` reads every experiment's metrics from the cache.
        "metrics": [f"{run}/metrics.json"],
        "plots": [{f"{run}/predictions.csv": {"template": "confusion", "x": "actual", "y": "predicted",
                                              "title": f"{label}, test confusion"}}],
    }
    kind = "tuned-" if tuned else ""
    return {f"train-{kind}{dataset}": train, f"evaluate-{kind}{dataset}": evaluate}


def _tuned_names(cfg: Config, dataset: str) -> list[str]:
    """The tuned variants of ``dataset``, by name within the data set (what its matrices iterate over)."""
    return [v[len(dataset) + 1:] for v in cfg.variants_of(dataset) if v in cfg.tuning.variants]


def _tune_stage(cfg: Config, dataset: str) -> dict:
    """tune-<ds>: one stage per (tuned variant, tuned recipe, grid point, tuning seed); the grid and the
    seeds are written out (from the profile dvc.yaml is generated for): adding a point adds its stages."""
    f = {**_dvc_fields(dataset), "point": "${item.point}"}
    matrix = {"variant": _tuned_names(cfg, dataset), "recipe": cfg.tuned_recipes,
              "point": [p.name for p in cfg.tuning.points], "seed": list(cfg.tuning.seeds)}
    return {"matrix": matrix, "cmd": command("tune", **f),
            "deps": [f"data/prepared/{dataset}", trial_spec_file(f["variant"], f["recipe"], f["point"], f["seed"]),
                     *code_deps("tune")],
            "outs": [TRIAL.format(**f)]}


def _select_stage(cfg: Config) -> dict:
    """select: one stage per (tuned variant, tuned recipe), reading all of its trials."""
    f = {"profile": "${profile}", "variant": "${item.variant}", "recipe": "${item.recipe}"}
    pairs = [{"variant": v, "recipe": r} for r in cfg.tuned_recipes for v in cfg.tuning.variants]
    trials = [TRIAL.format(**f, point=p.name, seed=s) for p in cfg.tuning.points for s in cfg.tuning.seeds]
    return {"foreach": pairs, "do": {"cmd": command("select", **f), "deps": [*trials, *code_deps("select")],
                                     "outs": [SELECTION.format(**f), CHOSEN.format(**f)]}}


def _study_stages(cfg: Config) -> dict:
    """Tuning (when the study tunes a recipe), then train and evaluate, per data set."""
    stages: dict = {}
    tuned = cfg.tuned_recipes
    fixed = [r for r in cfg.recipes if r not in tuned]
    for dataset in cfg.datasets:
        if tuned and _tuned_names(cfg, dataset):
            stages[f"tune-{dataset}"] = _tune_stage(cfg, dataset)
    if tuned:
        stages["select"] = _select_stage(cfg)
    for dataset in cfg.datasets:
        # without tuned recipes the matrix follows recipes_in_study itself (dvc exp run -S can change it)
        stages.update(_run_stages(dataset, f"${{variants.{dataset}}}", fixed if tuned else "${recipes_in_study}"))
        if tuned and _tuned_names(cfg, dataset):
            stages.update(_run_stages(dataset, _tuned_names(cfg, dataset), tuned, tuned=True))
    return stages


def _subset_stage(cfg: Config) -> dict:
    """A subset is prepared from its parent's packed store, not from a download."""
    item = {"profile": "${profile}", "dataset": "${item.name}", "driver": "dvc"}
    return {"foreach": [{"name": d, "of": cfg.dataset(d)["of"]} for d in cfg.subsets], "do": {
        "cmd": command("preprocess", **item, raw="data/prepared/${item.of}"),
        "deps": ["data/prepared/${item.of}", data_spec_file("${item.name}", "preprocess"),
                 *code_deps("preprocess")],
        "outs": ["data/prepared/${item.name}"]}}


def dvc_stages(cfg: Config) -> dict:
    """The stages of dvc.yaml for the data sets and variants of ``cfg`` (a data set added to
    params.yaml gets its stages when `cnnbench dvc-yaml` writes the file again)."""
    key = {"profile": "${profile}", "driver": "dvc"}
    downloaded = [d for d in cfg.prepared_datasets if d not in cfg.subsets]
    item = {"profile": "${profile}", "dataset": "${item}", "driver": "dvc"}
    stages = {
        "specs": {
            "cmd": command("specs", **key),
            "deps": code_deps("specs"),
            # everything a run's specification is resolved from
            "params": ["profile", "profiles", "seeds", "train", "recipes", "recipes_in_study", "datasets", "variants",
                       "resources", *(["tuning"] if "tuning" in cfg.raw else [])],
            "outs": [SPECS]},
        "download": {"foreach": downloaded, "do": {
            "cmd": command("download", **item),
            "deps": [data_spec_file("${item}", "download"), *code_deps("download")],
            "outs": ["data/raw/${item}"]}},
        "preprocess": {"foreach": downloaded, "do": {
            "cmd": command("preprocess", **item),
            "deps": ["data/raw/${item}", data_spec_file("${item}", "preprocess"), *code_deps("preprocess")],
            "outs": ["data/prepared/${item}"]}},
    }
    if cfg.subsets:
        stages["subset"] = _subset_stage(cfg)
    stages.update(_study_stages(cfg))
    tuning_dep = [TUNING] if cfg.tuned_recipes else []  # the selections: figures and the report's tuning section
    stages["aggregate"] = {
        "cmd": command("aggregate", **key),
        "deps": ["results/runs", *code_deps("aggregate")],
        "params": ["profile", "profiles.${profile}", "seeds", "recipes_in_study", "variants", "claims", "claims_rule"],
        "outs": ["results/summary/runs.csv", "results/summary/variants.csv", "results/summary/claims.csv"],
        "metrics": ["results/summary/summary.json"]}
    stages["plot"] = {
        "cmd": command("plot", **key),
        "deps": ["results/runs", "results/summary", *tuning_dep, *code_deps("plot")],
        "params": ["variants", "claims"],
        "outs": ["results/plots"]}
    stages["report"] = {
        "cmd": command("report", **key),
        "deps": ["results/summary", "results/plots", "data/prepared", *tuning_dep, *code_deps("report")],
        "params": ["profile", "profiles.${profile}", "seeds", "recipes", "recipes_in_study", "variants", "claims",
                   "claims_rule"],
        "outs": ["results/report"]}
    return stages


class _PlainDumper(yaml.SafeDumper):
    """No YAML anchors and aliases (&id001 / *id001) where two stages share a list: a reader sees each in full."""

    def ignore_aliases(self, data) -> bool:
        return True


def render_dvc_yaml(cfg: Config) -> str:
    body = yaml.dump({"stages": dvc_stages(cfg)}, Dumper=_PlainDumper, sort_keys=False, width=110,
                     default_flow_style=False)
    tuned = (f"# The tuning stages list the grid points and tuning seeds of profile {cfg.profile!r}: another profile's "
             f"grid needs\n# `cnnbench --profile <profile> dvc-yaml` (`cnnbench --profile <profile> exp-run` does it).\n"
             if cfg.tuned_recipes else "")
    return HEADER + tuned + body


def dvc_yaml_is_current(path: Path, cfg: Config) -> bool:
    return Path(path).is_file() and Path(path).read_text() == render_dvc_yaml(cfg)


def check_dvc_yaml(path: Path, cfg: Config) -> None:
    if not dvc_yaml_is_current(path, cfg):
        raise ConfigError(f"{path} is stale: it differs from what `cnnbench --profile {cfg.profile} dvc-yaml` writes for "
                          f"the data sets, variants and tuning grid of {cfg.params_path} with the stages of "
                          f"src/cnnbench/pipeline.py (a data set added or removed, another profile's tuning grid, or a "
                          f"change of the code); run `cnnbench --profile {cfg.profile} exp-run`, or `cnnbench --profile "
                          f"{cfg.profile} dvc-yaml` and then dvc")
