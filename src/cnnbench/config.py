"""Load params.yaml, merge the chosen profile, validate, and resolve per-stage settings.

Every stage and both drivers go through :func:`load`, so a bad configuration fails the same
way everywhere: one message that names the key path and what is allowed.

A run is one (variant, recipe, seed): every variant is trained under each of ``recipes_in_study``
once per seed of the profile (``profiles.<profile>.seeds``, else the top-level ``seeds``).
:meth:`Config.run` resolves one into a :class:`~cnnbench.spec.RunSpec` (the merge order is in
:mod:`cnnbench.spec`); a data set's settings are ``datasets.<ds>`` with
``profiles.<profile>.datasets.<ds>`` merged in.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .spec import RunSpec, SpecError, canonical_hash, resolve_execution, resolve_train
from . import tuning as tuning_mod
from .errors import ConfigError  # defined with cnnbench's other error types; `cnnbench.config.ConfigError` stays valid

SCHEMA_RELPATH = Path("workflow") / "schemas" / "params.schema.yaml"
DEFAULT_PARAMS = Path("params.yaml")


def run_dir(root: str | Path, variant: str, recipe: str, seed: int) -> Path:
    """Where one run (variant, recipe, seed) keeps its outputs: ``<root>/<variant>/<recipe>/seed<seed>``."""
    return Path(root) / variant / recipe / f"seed{seed}"


def deep_merge(base: dict, override: dict | None) -> dict:
    """Return a copy of ``base`` with ``override`` merged in recursively (override wins)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def find_schema(params_path: Path) -> Path:
    """The schema sits in the repository beside params.yaml: ``workflow/schemas/``."""
    candidates = [params_path.resolve().parent / SCHEMA_RELPATH]
    # An installed package run from elsewhere still finds the schema of its source checkout.
    candidates.append(Path(__file__).resolve().parents[2] / SCHEMA_RELPATH)
    for cand in candidates:
        if cand.is_file():
            return cand
    raise ConfigError(
        f"cannot find the params schema {SCHEMA_RELPATH} next to {params_path}; "
        "run cnnbench from the root of the cnnbench repository or pass --params <repo>/params.yaml"
    )


def read_yaml(path: Path) -> Any:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (pass --params PATH or run from the repository root)") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None


def _key_path(path) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    """One human line for a schema error: key path, what is wrong, what is allowed."""
    where = _key_path(error.absolute_path)
    validator, schema, inst = error.validator, error.schema, error.instance
    if validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(inst) - set(allowed)) if isinstance(inst, dict) else []
        bad = ", ".join(repr(e) for e in extra)
        return f"{where}: unknown key {bad}; allowed keys: {', '.join(allowed)}"
    if validator == "enum":
        allowed = ", ".join(str(v) for v in schema["enum"])
        return f"{where}: {inst!r} is not allowed; allowed values: {allowed}"
    if validator == "type":
        want = schema["type"]
        want = " or ".join(want) if isinstance(want, list) else want
        return f"{where}: expected {want}, got {inst!r} ({type(inst).__name__})"
    if validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        bounds = []
        for key, sym in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
            if key in schema:
                bounds.append(f"{sym} {schema[key]}")
        return f"{where}: {inst!r} is out of range; allowed: {' and '.join(bounds)}"
    if validator == "required":
        allowed = sorted(schema.get("properties", {}))
        return f"{where}: {error.message}; keys of this block: {', '.join(allowed)}"
    if validator == "minProperties":
        return f"{where}: must not be empty"
    if validator == "pattern":
        return f"{where}: {inst!r} does not match the required pattern {schema['pattern']}"
    return f"{where}: {error.message}"


def validate_against_schema(doc: Any, schema: dict, source: str) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    errors = list(validator.iter_errors(doc))
    if not errors:
        return
    # best_match descends into allOf/anyOf and prefers the most specific error.
    best = jsonschema.exceptions.best_match(errors)
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    raise ConfigError(f"{source}: {_describe(best)}{more}")


@dataclass
class Config:
    """A validated params.yaml with one profile applied."""

    raw: dict
    profile: str
    params_path: Path
    tuning_root: Path = tuning_mod.TUNING_ROOT  # where the runs of a tuned recipe read the chosen values

    # --- views -------------------------------------------------------------------------
    @property
    def profile_block(self) -> dict:
        return self.raw["profiles"][self.profile]

    @property
    def _variant_specs(self) -> dict[str, tuple[str, dict]]:
        """Variant id (``<dataset>-<name>``) -> (dataset, spec), in params.yaml order."""
        return {f"{ds}-{name}": (ds, spec)
                for ds, group in self.raw["variants"].items() for name, spec in (group or {}).items()}

    @property
    def variants(self) -> list[str]:
        return list(self._variant_specs)

    @property
    def datasets(self) -> list[str]:
        """Datasets that at least one variant uses, in params.yaml order."""
        return [ds for ds, group in self.raw["variants"].items() if group]

    @property
    def subsets(self) -> list[str]:
        """The data sets of ``prepared_datasets`` that are subsets of another (kind ``subset``)."""
        from .data.kinds import SUBSET

        return [d for d in self.prepared_datasets if self.raw["datasets"][d]["kind"] == SUBSET]

    @property
    def prepared_datasets(self) -> list[str]:
        """The data sets the study prepares: those its variants use, then the parents of subsets among
        them (in params.yaml order)."""
        used = set(self.datasets)
        used |= {self.raw["datasets"][d].get("of") for d in self.datasets} - {None}
        return [d for d in self.raw["datasets"] if d in used]

    @property
    def recipes(self) -> list[str]:
        """The recipes every variant is trained under (``recipes_in_study``)."""
        return list(self.raw["recipes_in_study"])

    @property
    def seeds(self) -> list[int]:
        """The profile's seeds, else the top-level ``seeds``."""
        return list(self.profile_block.get("seeds", self.raw["seeds"]))

    @property
    def runs(self) -> list[tuple[str, str, int]]:
        """Every (variant, recipe, seed) of the study: one train job each (a tuned recipe's runs only for
        the variants tuning tunes)."""
        return [(v, r, s) for v in self.variants for r in self.recipes if self.runs_under(v, r) for s in self.seeds]

    def runs_under(self, variant: str, recipe: str) -> bool:
        """Whether the study trains ``variant`` under ``recipe`` (a tuned recipe: only tuned variants)."""
        return recipe not in self.tuned_recipes or variant in self.tuning.variants

    # --- tuning (cnnbench.tuning) ----------------------------------------------------------------
    @functools.cached_property
    def tuning(self) -> "tuning_mod.Tuning | None":
        """The ``tuning`` block with the profile's tuning keys applied, or None without one (resolved once:
        a Config is read, not edited; with_overrides makes a new one)."""
        return tuning_mod.resolve(self.raw.get("tuning"), self.profile_block.get("tuning"), self.variants)

    @property
    def tuned_recipes(self) -> list[str]:
        """The recipes of the study whose hyper-parameters are tuned per variant."""
        t = self.tuning
        return [r for r in self.recipes if t is not None and r in t.recipes]

    @property
    def trials(self) -> list[tuple[str, str, str, int]]:
        """Every tuning trial of the study: (variant, tuned recipe, grid point name, seed)."""
        t = self.tuning
        return [(v, r, p.name, s) for r in self.tuned_recipes for v in t.variants
                for p in t.points for s in t.seeds]

    def recipe_block(self, recipe: str) -> dict:
        """``recipes.<recipe>``; a tuned recipe's is its base recipe's (the tuned values come later)."""
        t = self.tuning
        if t is not None and recipe in t.recipes:
            return self.raw["recipes"][t.recipes[recipe]]
        if recipe not in self.raw["recipes"]:
            known = [*self.raw["recipes"], *(t.recipes if t else [])]
            raise ConfigError(f"unknown recipe {recipe!r}; recipes in {self.params_path}: {', '.join(known)}")
        return self.raw["recipes"][recipe]

    def trial(self, name: str, recipe: str, point: str, seed: int, *, device: str | None = None) -> RunSpec:
        """One tuning trial: the run of ``name`` under tuned ``recipe``'s base with the grid point's values,
        for the budget's epochs."""
        t = self.tuning
        if recipe not in self.tuned_recipes:
            raise ConfigError(f"recipe {recipe!r} is not a tuned recipe of the study; tuned recipes: "
                              f"{', '.join(self.tuned_recipes) or 'none'}")
        train = tuning_mod.apply_point(self._merged_train(name, recipe), t.point(point).values)
        train["epochs"] = t.budget_epochs(train["epochs"])
        return self._spec(name, recipe, int(seed), train, device)

    @property
    def claims(self) -> list[dict]:
        return list(self.raw["claims"])

    @property
    def data_mirror(self) -> str | None:
        return self.raw.get("data_mirror")

    def variants_of(self, dataset: str) -> list[str]:
        return [v for v, (ds, _) in self._variant_specs.items() if ds == dataset]

    def dataset(self, name: str) -> dict:
        """Dataset settings with the profile's overrides applied."""
        if name not in self.raw["datasets"]:
            raise ConfigError(
                f"unknown dataset {name!r}; datasets in {self.params_path}: {', '.join(self.raw['datasets'])}"
            )
        override = self.profile_block.get("datasets", {}).get(name)
        return deep_merge(self.raw["datasets"][name], override)

    def kind(self, name: str) -> str:
        """The data set's kind (``datasets.<name>.kind``), which cnnbench.data.kinds describes."""
        return self.dataset(name)["kind"]

    def source_settings(self, name: str) -> dict:
        """What `download` reads: ``datasets.<name>.source`` (none for a subset: it downloads nothing)."""
        return dict(self.dataset(name).get("source", {}))

    def preprocess_settings(self, name: str) -> dict:
        """What `preprocess` reads: the data set block (source keys flattened in), without training
        settings, plus its ``name`` (for messages) and ``kind``."""
        ds = self.dataset(name)
        flat = {k: v for k, v in ds.items() if k not in ("train", "source")}
        flat.update(ds.get("source", {}))
        flat["name"] = name
        if "of" in ds:  # a subset: what it is drawn from, so its kind can describe it
            flat["parent"] = self.preprocess_settings(ds["of"])
        return flat

    def describe_dataset(self, name: str):
        """What the data set's kind says of it before any data is read (cnnbench.data.kinds.Description)."""
        from .data import kinds

        return kinds.describe(self.preprocess_settings(name))

    def dataset_train(self, name: str) -> dict:
        """The data set's training settings: its kind's defaults, then ``datasets.<name>.train``."""
        from .data import kinds

        if self.kind(name) == kinds.SUBSET:  # a subset trains like the data set it is drawn from
            return deep_merge(self.dataset_train(self.dataset(name)["of"]), self.dataset(name).get("train"))
        return deep_merge(kinds.default_train(self.kind(name), f"datasets.{name}"), self.dataset(name).get("train"))

    def _spec_of(self, name: str) -> tuple[str, dict]:
        specs = self._variant_specs
        if name not in specs:
            raise ConfigError(
                f"unknown variant {name!r}; variants in {self.params_path}: {', '.join(self.variants)}"
            )
        return specs[name]

    def variant(self, name: str) -> dict:
        """What the report, plots and model table show of a variant: its data set, model and
        arguments, the classes it leaves out, its lab-report rows and description (no training
        settings: those belong to a run, see :meth:`run`)."""
        dataset, spec = self._spec_of(name)
        profile_args = self.profile_block.get("model_args")
        if profile_args:  # a profile's model_args apply where the variant's builder takes them
            from .models import accepted_args

            profile_args = accepted_args(spec["model"], profile_args)
        return {
            "variant": name,
            "dataset": dataset,
            "model": spec["model"],
            "model_args": deep_merge(spec.get("model_args", {}), profile_args),
            "exclude_classes": (list(self.dataset(dataset).get("noisy_classes", []))
                                if spec.get("filter_noisy", True) else []),
            "lab_report": spec.get("lab_report"),
            "description": spec.get("description", ""),
        }

    def run(self, name: str, recipe: str | None = None, seed: int | None = None, *,
            device: str | None = None, chosen: dict | None = None) -> RunSpec:
        """One run of variant ``name`` resolved into its :class:`RunSpec` (see :mod:`cnnbench.spec`).

        ``recipe`` defaults to the first of ``recipes_in_study`` and ``seed`` to the first seed of
        the profile; train and evaluate always pass both. ``device`` replaces ``train.device``
        (``cnnbench bench`` measures on the device at hand). A tuned recipe's run takes the values
        tuning chose (``chosen``, else ``<tuning_root>/<variant>/<recipe>/selection.json``; raises
        :class:`cnnbench.tuning.SelectionMissing` before the selection exists).
        """
        recipe = self.recipes[0] if recipe is None else recipe
        train = self._merged_train(name, recipe)
        if recipe in self.tuned_recipes:  # the values tuning chose for this variant (selection.json)
            if chosen is None:
                chosen = tuning_mod.read_choice(self.tuning_root, name, recipe)
            train = tuning_mod.apply_point(train, chosen)
        return self._spec(name, recipe, self.seeds[0] if seed is None else int(seed), train, device)

    def _merged_train(self, name: str, recipe: str) -> dict:
        """The train block of a run, merged in the order of cnnbench.spec (before tuned values)."""
        dataset, spec = self._spec_of(name)
        train = deep_merge(self.raw["train"], self.recipe_block(recipe))
        train = deep_merge(train, self.dataset_train(dataset))
        train = deep_merge(train, spec.get("train"))
        return deep_merge(train, self.profile_block.get("train"))

    def _spec(self, name: str, recipe: str, seed: int, train: dict, device: str | None) -> RunSpec:
        dataset, _ = self._spec_of(name)
        shown = self.variant(name)  # model, its arguments and the classes it leaves out
        if device is not None:
            train["device"] = device
        job = self.job_resources("train")
        try:
            return RunSpec(
                variant=name,
                dataset=dataset,
                model=shown["model"],
                model_args=shown["model_args"],
                exclude_classes=tuple(shown["exclude_classes"]),
                recipe=recipe,
                seed=seed,
                train=resolve_train(train),
                execution=resolve_execution(train, gpu_job=bool(job["gpu"]) if "gpu" in job else None,
                                            job_cpus=job.get("cpus")),
            )
        except SpecError as exc:
            raise ConfigError(f"{self.params_path}: variant {name!r}, recipe {recipe!r}: {exc}") from None

    def job_resources(self, stage: str) -> dict:
        """What one Snakemake job of ``stage`` (preprocess, train, evaluate) asks for:
        ``resources.<stage>`` with ``resources.profiles.<profile>.<stage>`` merged in. Always
        holds ``jobs_per_gpu`` (default 1: jobs do not share a GPU; see cnnbench.gpus); nothing
        else when params.yaml has no ``resources`` block."""
        block = self.raw.get("resources")
        if not block:
            return {"jobs_per_gpu": 1}
        if stage not in ("preprocess", "train", "evaluate"):
            raise ConfigError(f"resources: no stage {stage!r}; allowed: preprocess, train, evaluate")
        override = block.get("profiles", {}).get(self.profile, {}).get(stage)
        return {"jobs_per_gpu": 1, **deep_merge(block[stage], override)}

    def check_seed(self, seed: int) -> None:
        """Refuse a seed outside the profile's seeds (DVC users who forgot ``-S seeds=[...]``)."""
        if int(seed) not in self.seeds:
            where = f"profiles.{self.profile}.seeds" if "seeds" in self.profile_block else "seeds"
            raise ConfigError(
                f"seed {seed} is not among {where} {self.seeds} of profile {self.profile!r}; with DVC set the "
                f"top-level seeds to match, e.g. dvc exp run -S profile={self.profile} -S 'seeds={self.seeds}'"
            )

    @property
    def params_hash(self) -> str:
        """Fingerprint of everything the report is made from: profile, data sets, every run's
        identity, what the report shows of each variant, the claims and their rule. A tuned recipe's runs
        count with their base values and the tuning settings (the chosen values reach the report
        through the runs' results, which are its inputs)."""
        return canonical_hash(
            {
                "profile": self.profile,
                "profile_settings": self.profile_block,  # its description is in the report
                "datasets": {d: self.dataset(d) for d in self.raw["datasets"]},
                "runs": {f"{v}/{r}/seed{s}": self.run(v, r, s, chosen={}).hash for v, r, s in self.runs},
                "tuning": self.raw.get("tuning"),
                "variants": {v: self.variant(v) for v in self.variants},
                "claims": self.claims,
                "claims_rule": self.raw["claims_rule"],
            }
        )


def _check_semantics(cfg: "Config", source: str) -> None:
    """Rules a JSON schema cannot say well."""
    # imports torch: only after the cheap checks passed
    from .models import check_model, check_model_args, check_profile_model_args

    for name in cfg.raw.get("resources", {}).get("profiles", {}):
        if name not in cfg.raw["profiles"]:
            raise ConfigError(
                f"{source}: resources.profiles.{name}: {name!r} is not defined under profiles; "
                f"allowed values: {', '.join(cfg.raw['profiles'])}"
            )
    tuned = list(cfg.raw.get("tuning", {}).get("recipes", {}))
    for i, recipe in enumerate(cfg.recipes):
        if recipe not in cfg.raw["recipes"] and recipe not in tuned:
            raise ConfigError(
                f"{source}: recipes_in_study.{i}: {recipe!r} is not defined under recipes or tuning.recipes; "
                f"allowed values: {', '.join([*cfg.raw['recipes'], *tuned])}"
            )
    _check_datasets(cfg, source)
    if not cfg.variants:
        raise ConfigError(f"{source}: variants: no variant defined; add one under variants.<data set>, "
                          f"e.g. variants.{next(iter(cfg.raw['datasets']))}")
    _check_tuning(cfg, source)
    for name, (dataset, spec) in cfg._variant_specs.items():
        key = f"variants.{dataset}.{name[len(dataset) + 1:]}"
        if spec.get("filter_noisy") and "noisy_classes" not in cfg.dataset(dataset):
            raise ConfigError(
                f"{source}: {key}.filter_noisy: datasets.{dataset} lists no noisy_classes to filter; "
                f"list them under datasets.{dataset}.noisy_classes or remove the key"
            )
        # The model builders describe their own arguments (models/registry.py): names, types, ranges.
        check_model(spec["model"], f"{source}: {key}.model")
        check_model_args(spec["model"], spec.get("model_args", {}), f"{source}: {key}.model_args")
        for recipe in cfg.recipes:
            train = cfg.run(name, recipe, chosen={}).train
            if train.train_limit and train.batch_size > train.train_limit:
                raise ConfigError(
                    f"{source}: variants.{name}: train.batch_size {train.batch_size} is larger than "
                    f"train.train_limit {train.train_limit} (the number of training images the variant keeps) "
                    f"under recipe {recipe!r}; lower batch_size or raise train_limit (profile {cfg.profile!r} applied)"
                )
    if cfg.tuning is not None:
        _check_tuning_budget(cfg, source)
    # Every profile's model_args, against each variant model that takes them (the others skip them),
    # so what the schema accepts builds under any profile.
    models = [spec["model"] for _, spec in cfg._variant_specs.values()]
    for profile, block in cfg.raw["profiles"].items():
        check_profile_model_args(models, block.get("model_args", {}), f"{source}: profiles.{profile}.model_args")
    ids = [c["id"] for c in cfg.claims]
    for i, claim in enumerate(cfg.claims):
        if claim["id"] in ids[:i]:
            raise ConfigError(f"{source}: claims.{i}.id: {claim['id']!r} is used twice; claim ids must be unique")
        for side in ("a", "b"):
            if claim[side] not in cfg.variants:
                raise ConfigError(
                    f"{source}: claims.{i}.{side}: {claim[side]!r} is not a variant; "
                    f"allowed values: {', '.join(cfg.variants)}"
                )
        if claim["metric"] == "top1_kept":
            sets = {cfg.variant(claim[s])["dataset"] for s in "ab"}
            if len(sets) != 1 or "noisy_classes" not in cfg.dataset(sets.pop()):
                raise ConfigError(f"{source}: claims.{i}.metric: top1_kept compares two variants of one data set "
                                  f"that lists noisy_classes (the classes both keep)")


def _check_tuning(cfg: "Config", source: str) -> None:
    """What the schema cannot say of the tuning block: names that must exist elsewhere."""
    block = cfg.raw.get("tuning")
    for profile, pblock in cfg.raw["profiles"].items():
        if "tuning" in pblock and not block:
            raise ConfigError(f"{source}: profiles.{profile}.tuning: params.yaml has no top-level tuning block for "
                              f"it to override; add one (README \"Fair comparison: tuning\") or remove the key")
    if not block:
        return
    for name, spec in block["recipes"].items():
        if name in cfg.raw["recipes"]:
            raise ConfigError(f"{source}: tuning.recipes.{name}: {name!r} is already a recipe under recipes; "
                              f"give the tuned recipe its own name (e.g. {name}_tuned)")
        if spec["base"] not in cfg.raw["recipes"]:
            raise ConfigError(f"{source}: tuning.recipes.{name}.base: {spec['base']!r} is not defined under recipes; "
                              f"allowed values: {', '.join(cfg.raw['recipes'])}")
    blocks = [("tuning", block), *((f"profiles.{p}.tuning", pb["tuning"]) for p, pb in cfg.raw["profiles"].items()
                                   if "tuning" in pb)]
    for key, tb in blocks:  # every profile's, so what validates under one profile runs under any
        for i, v in enumerate(tb.get("variants", "all") if tb.get("variants", "all") != "all" else []):
            if v not in cfg.variants:
                raise ConfigError(f"{source}: {key}.variants.{i}: {v!r} is not a variant of the study; "
                                  f"allowed values: {', '.join(cfg.variants)}")
        for hp, values in tb.get("grid", {}).items():
            if isinstance(values, dict) and values["min"] > values["max"]:
                raise ConfigError(f"{source}: {key}.grid.{hp}: min {values['min']} is larger than max {values['max']}")


def _check_tuning_budget(cfg: "Config", source: str) -> None:
    """A trial must not be longer than the runs it stands for."""
    t = cfg.tuning
    where = "tuning" if "tuning" not in cfg.profile_block else f"tuning (with profiles.{cfg.profile}.tuning)"
    for recipe in cfg.tuned_recipes:
        for v in t.variants:
            epochs = cfg.run(v, recipe, chosen={}).train.epochs
            if "epochs" in t.budget and t.budget["epochs"] > epochs:
                raise ConfigError(
                    f"{source}: {where}.budget.epochs: {t.budget['epochs']} is longer than the {epochs} epochs "
                    f"variant {v} trains under recipe {recipe!r} (profile {cfg.profile!r} applied); a trial must not "
                    f"cost more than the run it tunes: lower it, or give budget.fraction")


def _check_datasets(cfg: "Config", source: str) -> None:
    """Every variant group names a data set; a subset's parent exists and is not itself a subset."""
    from .data.kinds import SUBSET

    for dataset in cfg.raw["variants"]:
        if dataset not in cfg.raw["datasets"]:
            raise ConfigError(f"{source}: variants.{dataset}: {dataset!r} is not defined under datasets; "
                              f"allowed values: {', '.join(cfg.raw['datasets'])}")
    for name, block in cfg.raw["datasets"].items():
        if block["kind"] != SUBSET:
            continue
        parent = block["of"]
        if parent not in cfg.raw["datasets"] or cfg.raw["datasets"][parent]["kind"] == SUBSET:
            others = [d for d, b in cfg.raw["datasets"].items() if b["kind"] != SUBSET]
            raise ConfigError(f"{source}: datasets.{name}.of: {parent!r} is not a data set a subset can be drawn "
                              f"from (one that is not itself a subset); allowed values: {', '.join(others)}")


def load(params_path: str | Path = DEFAULT_PARAMS, profile: str | None = None) -> Config:
    """Read, merge and validate params.yaml. ``profile`` overrides the file's ``profile`` key."""
    params_path = Path(params_path)
    raw = read_yaml(params_path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{params_path}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    if profile is not None:
        raw = dict(raw, profile=profile)
    return from_raw(raw, params_path)


def from_raw(raw: dict, params_path: Path, source: str | None = None) -> Config:
    """Validate an already-parsed params document (profile included) and wrap it."""
    source = source or str(params_path)
    schema = read_yaml(find_schema(params_path))
    validate_against_schema(raw, schema, source)
    chosen = raw["profile"]
    if chosen not in raw["profiles"]:
        raise ConfigError(
            f"{source}: profile: {chosen!r} is not defined under profiles; "
            f"allowed values: {', '.join(raw['profiles'])}"
        )
    cfg = Config(raw=raw, profile=chosen, params_path=params_path)
    _check_semantics(cfg, source)
    # The merged view must satisfy the schema too: validate every resolved block.
    merged = copy.deepcopy(raw)
    for ds in raw["datasets"]:
        merged["datasets"][ds] = cfg.dataset(ds)
    validate_against_schema(merged, schema, f"{source} (profile {chosen!r} merged)")
    return cfg


def with_overrides(cfg: Config, assignments: list[str]) -> Config:
    """A new Config with ``key.path=value`` assignments (values parsed as YAML), validated again."""
    raw = copy.deepcopy(cfg.raw)
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. recipes.fast.batch_size=256")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc})") from None
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"--set {item!r}: {key} does not name a key inside a block of {cfg.params_path}")
            node = node[part]
        node[parts[-1]] = value
    return from_raw(raw, cfg.params_path, source=f"{cfg.params_path} with --set {' '.join(assignments)}")
