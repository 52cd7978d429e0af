"""params.yaml loading, profile merge and validation messages."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import yaml

from cnnbench.config import Config, ConfigError, canonical_hash, from_raw, load
from cnnbench.models import model_names

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def params_copy(tmp_path: Path):
    """A writable copy of params.yaml with the schema beside it, plus a function to edit it."""
    (tmp_path / "workflow" / "schemas").mkdir(parents=True)
    shutil.copy(REPO / "workflow/schemas/params.schema.yaml", tmp_path / "workflow/schemas/")
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    path = tmp_path / "params.yaml"

    def write(edit=None) -> Path:
        d = yaml.safe_load(yaml.safe_dump(doc))
        if edit:
            edit(d)
        path.write_text(yaml.safe_dump(d, sort_keys=False))
        return path

    return write


def test_repo_params_valid_for_every_profile():
    for profile in ("full", "quick", "smoke"):
        cfg = load(REPO / "params.yaml", profile=profile)
        assert cfg.profile == profile
        assert len(cfg.variants_of("cifar10")) == 7 and len(cfg.variants_of("butterflies")) == 5
        assert len(cfg.variants_of("cifar5")) == 5 and cfg.prepared_datasets == ["cifar10", "butterflies", "cifar5"]
        assert cfg.recipes == ["lab", "fast", "tuned"] and cfg.tuned_recipes == ["tuned"]
        assert cfg.seeds == ([0, 1, 2] if profile == "full" else [0])
        tuned = {"full": 17, "quick": 7, "smoke": 6}[profile]  # quick: the CIFAR-10 variants; smoke: six
        assert len(cfg.runs) == (17 * 2 + tuned) * len(cfg.seeds)
        for v, recipe, seed in cfg.runs:
            resolved = cfg.run(v, recipe, seed, chosen={"lr": 0.1})  # a tuned run: as if tuning chose 0.1
            assert resolved.train.epochs >= 1 and resolved.seed == seed
            assert resolved.model in model_names() and resolved.recipe == recipe


def test_schema_keeps_no_second_list_of_models_or_their_arguments():
    """The model builders are the one description of models and their arguments; the config check asks them."""
    schema = yaml.safe_load((REPO / "workflow/schemas/params.schema.yaml").read_text())
    model = schema["$defs"]["variant"]["properties"]["model"]
    assert model["type"] == "string" and "enum" not in model
    args = schema["$defs"]["model_args"]
    assert args["type"] == "object" and not {"properties", "additionalProperties", "patternProperties"} & set(args)
    text = (REPO / "workflow/schemas/params.schema.yaml").read_text()
    for name in model_names():
        assert name not in text


def test_profile_wins_over_variant_and_defaults():
    cfg = load(REPO / "params.yaml", profile="smoke")
    raw = cfg.raw
    v = cfg.run("cifar10-resnet18")
    assert raw["variants"]["cifar10"]["resnet18"]["train"]["epochs"] != v.train.epochs
    assert v.train.epochs == raw["profiles"]["smoke"]["train"]["epochs"]
    assert v.model_args == raw["profiles"]["smoke"]["model_args"]
    # dataset-level training defaults reach the variant
    norm = raw["datasets"]["cifar10"]["train"]["normalize"]
    assert (list(v.train.normalize.mean), list(v.train.normalize.std)) == (norm["mean"], norm["std"])
    # profile dataset overrides reach preprocessing
    assert cfg.preprocess_settings("butterflies")["image_size"] == raw["profiles"]["smoke"]["datasets"]["butterflies"]["image_size"]
    full = load(REPO / "params.yaml", profile="full")
    assert full.run("cifar10-resnet18").train.epochs == raw["variants"]["cifar10"]["resnet18"]["train"]["epochs"]


def test_recipe_sits_between_defaults_and_dataset_and_variant():
    cfg = load(REPO / "params.yaml", profile="full")
    lab, fast = cfg.run("cifar10-resnet18", "lab"), cfg.run("cifar10-resnet18", "fast")
    assert lab.recipe == "lab" and fast.recipe == "fast"
    assert dataclasses.asdict(lab.train.optimizer) == cfg.raw["recipes"]["lab"]["optimizer"]
    assert fast.train.optimizer.nesterov is True and fast.train.tta_flip is True
    assert fast.train.schedule.name == "onecycle" and lab.train.schedule.name == "constant"
    # the dataset's normalisation and augmentation reach both, the variant's epochs win over the recipe
    norm = cfg.raw["datasets"]["cifar10"]["train"]["normalize"]
    assert fast.train.normalize == lab.train.normalize and list(lab.train.normalize.std) == norm["std"]
    assert fast.train.epochs == 50


def test_filter_noisy_resolves_to_excluded_classes():
    cfg = load(REPO / "params.yaml", profile="full")
    noisy = cfg.raw["datasets"]["butterflies"]["noisy_classes"]
    assert len(noisy) == 6
    assert cfg.variant("butterflies-resnet18")["exclude_classes"] == noisy
    assert cfg.variant("butterflies-resnet18-unfiltered")["exclude_classes"] == []
    assert cfg.variant("cifar10-resnet18")["exclude_classes"] == []


def _hashes(cfg) -> dict[str, str]:
    """Every run's and every tuning trial's identity (a tuned run: as if tuning chose lr 0.1)."""
    runs = {f"{v}/{r}/{s}": cfg.run(v, r, s, chosen={"lr": 0.1}).hash for v, r, s in cfg.runs}
    return runs | {f"{v}/{r}/{p}/{s}": cfg.trial(v, r, p, s).hash for v, r, p, s in cfg.trials}


def _edited(profile: str, edit) -> "Config":
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profile"] = profile
    edit(raw)
    return from_raw(raw, REPO / "params.yaml")


def test_variant_settings_are_independent():
    """Changing one variant's lr changes only that variant's run identities."""
    a = load(REPO / "params.yaml", profile="smoke")
    b = _edited("smoke", lambda raw: raw["variants"]["cifar10"]["resnet18"].setdefault("train", {}).update(
        optimizer={"lr": 0.05}))
    changed = {k for k, h in _hashes(a).items() if _hashes(b)[k] != h}
    # the tuned runs and trials set lr themselves: the variant's own lr does not reach them
    assert changed == {"cifar10-resnet18/lab/0", "cifar10-resnet18/fast/0"}


@pytest.mark.parametrize("what, edit", [
    ("lab-report figure", lambda raw: raw["variants"]["cifar10"]["resnet18"]["lab_report"][0].update(accuracy=99.9)),
    ("variant description", lambda raw: raw["variants"]["butterflies"]["resnet18-unfiltered"].update(description="x")),
    ("profile description", lambda raw: [p.update(description="edited") for p in raw["profiles"].values()]),
    ("claims", lambda raw: raw["claims"].pop()),
    ("memory and runtime requests", lambda raw: raw["resources"]["train"].update(mem_mb=123456, runtime=9)),
])
@pytest.mark.parametrize("profile", ["full", "smoke"])
def test_report_only_and_scheduling_edits_change_no_run(profile, what, edit):
    assert _hashes(_edited(profile, edit)) == _hashes(load(REPO / "params.yaml", profile=profile)), what


def test_run_identity_holds_the_resolved_execution_settings():
    smoke = load(REPO / "params.yaml", profile="smoke").run("cifar10-resnet18")
    assert (smoke.execution.device, smoke.execution.precision, smoke.execution.memory_format) == \
        ("cpu", "fp32", "contiguous")
    assert smoke.execution.num_threads == 1  # train.num_threads of the smoke profile
    # device auto: a profile whose train jobs ask for a GPU trains on it, in bf16 and channels_last
    full = load(REPO / "params.yaml", profile="full").run("cifar10-resnet18")
    assert (full.execution.device, full.execution.precision, full.execution.memory_format) == \
        ("cuda", "bf16", "channels_last")
    assert full.execution.num_threads == 4  # num_threads null: the job's cpus
    # the thread count changes the measured epoch time, so it changes the identity
    quick = load(REPO / "params.yaml", profile="quick").run("cifar10-resnet18")
    assert quick.execution.num_threads == 1  # the quick profile's train jobs ask for one core each
    more = _edited("quick", lambda raw: raw["resources"]["profiles"]["quick"]["train"].update(cpus=8))
    assert more.run("cifar10-resnet18").execution.num_threads == 8 and more.run("cifar10-resnet18").hash != quick.hash
    # asking the scheduler for a GPU moves the run to it
    gpu = _edited("quick", lambda raw: raw["resources"]["profiles"]["quick"]["train"].update(gpu=1))
    assert gpu.run("cifar10-resnet18").execution.device == "cuda"


def test_a_setting_missing_after_the_merge_is_a_config_error():
    # the butterfly kind's default augmentation is a resized crop, which has no crop_padding
    with pytest.raises(ConfigError, match=r"variant 'butterflies-resnet18', recipe 'lab': train\.augment\.crop_padding: "
                                          r"missing after the merge"):
        _edited("smoke", lambda raw: raw["datasets"]["butterflies"]["train"].update(augment={"crop": "pad"}))


def test_spec_hash_is_the_hash_of_its_plain_data():
    spec = load(REPO / "params.yaml", profile="smoke").run("butterflies-resnet18", "fast", 0)
    data = spec.to_dict()
    assert canonical_hash(data) == spec.hash and json.loads(json.dumps(data)) == data
    assert len(data["exclude_classes"]) == 6  # the noisy classes this variant leaves out
    assert "lab_report" not in json.dumps(data) and "description" not in data


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda d: d.update(bogus=1), ["(top level)", "unknown key 'bogus'", "allowed keys:"]),
        (lambda d: d["train"]["optimizer"].update(lr=-0.1), ["train.optimizer.lr", "-0.1", "allowed: > 0"]),
        (lambda d: d["train"].update(epochs="ten"), ["train.epochs", "expected integer", "'ten'"]),
        (lambda d: d["train"].update(epochs=0), ["train.epochs", "allowed: >= 1"]),
        (lambda d: d["variants"]["cifar10"]["resnet18"].update(model="resnet99"),
         ["variants.cifar10.resnet18.model", "'resnet99'", "allowed values:", "resnet18_small_stem"]),
        (lambda d: d["variants"].update(mnist={"resnet18": {"model": "resnet18"}}),
         ["variants.mnist", "'mnist' is not defined under datasets", "allowed values: butterflies, cifar10"]),
        (lambda d: d["datasets"]["cifar10"].update(kind="mnist"),
         ["datasets.cifar10.kind", "'mnist' is not allowed", "allowed values: cifar10, cifar100"]),
        (lambda d: d["datasets"].update(mine={"kind": "subset", "of": "nowhere", "seed": 0}),
         ["datasets.mine.of", "'nowhere' is not a data set a subset can be drawn from", "allowed values: butterflies, cifar10"]),
        (lambda d: d["variants"]["cifar10"]["resnet18"].update(filter_noisy=True),
         ["variants.cifar10.resnet18.filter_noisy", "datasets.cifar10 lists no noisy_classes"]),
        (lambda d: d.update(variants={}), ["variants", "must not be empty"]),
        (lambda d: d.update(variants={"cifar10": {}, "butterflies": {}}), ["variants: no variant defined"]),
        (lambda d: d.update(recipes_in_study=["lab", "turbo"]),
         ["recipes_in_study.1", "'turbo' is not defined under recipes", "allowed values:", "fast", "lab"]),
        (lambda d: d.update(seeds=[]), ["seeds", "should be non-empty"]),
        (lambda d: d["profiles"]["smoke"].update(seeds=[-1]), ["profiles.smoke.seeds.0", "allowed: >= 0"]),
        (lambda d: d["claims"][0].update(a="cifar10-resnet99"),
         ["claims.0.a", "'cifar10-resnet99' is not a variant", "allowed values:", "cifar10-resnet18"]),
        (lambda d: d["claims"][0].update(metric="speed"), ["claims.0.metric", "allowed values: test_top1"]),
        (lambda d: d["claims"][0].update(metric="top1_kept"), ["claims.0.metric", "two variants of one data set that lists noisy_classes"]),
        (lambda d: d["claims"][1].update(id=d["claims"][0]["id"]), ["claims.1.id", "is used twice"]),
        (lambda d: d["claims_rule"].update(alpha=1.5), ["claims_rule.alpha", "allowed: > 0 and < 1"]),
        (lambda d: d["train"]["schedule"].update(name="warp"), ["train.schedule.name", "allowed values:"]),
        (lambda d: d["profiles"]["smoke"]["train"].update(batch_sizes=3), ["profiles.smoke.train", "'batch_sizes'"]),
        (lambda d: d.update(profile="turbo"), ["profile", "'turbo'", "allowed values: full, quick, smoke"]),
        (lambda d: d["datasets"]["butterflies"].update(on_bad_image="ignore"),
         ["datasets.butterflies.on_bad_image", "allowed values: skip, fail"]),
        (lambda d: d["datasets"]["butterflies"].update(drop_train_duplicates_of_eval="yes"),
         ["datasets.butterflies.drop_train_duplicates_of_eval", "'yes'"]),
        (lambda d: d["datasets"]["butterflies"].pop("drop_train_duplicates_of_eval"),
         ["datasets.butterflies", "drop_train_duplicates_of_eval"]),
        (lambda d: d["datasets"]["butterflies"].update(near_duplicate_threshold=1.5),
         ["datasets.butterflies.near_duplicate_threshold", "1.5", "allowed: >= 0 and < 1"]),
        (lambda d: d["datasets"]["butterflies"].update(near_duplicate_threshold=-0.1),
         ["datasets.butterflies.near_duplicate_threshold", "-0.1", "allowed: >= 0 and < 1"]),
        (lambda d: d["datasets"]["butterflies"].update(near_duplicate_threshold="high"),
         ["datasets.butterflies.near_duplicate_threshold", "expected number", "'high'"]),
        (lambda d: d["datasets"]["cifar10"].update(near_duplicate_threshold=1.5),
         ["datasets.cifar10.near_duplicate_threshold", "1.5", "allowed: >= 0 and < 1"]),
        (lambda d: d["datasets"]["cifar10"].update(near_duplicate_threshold=-0.1),
         ["datasets.cifar10.near_duplicate_threshold", "-0.1", "allowed: >= 0 and < 1"]),
        (lambda d: d["datasets"]["cifar10"].update(near_duplicate_threshold="high"),
         ["datasets.cifar10.near_duplicate_threshold", "expected number", "'high'"]),
        (lambda d: d["datasets"]["cifar10"].update(drop_train_duplicates_of_eval="no"),
         ["datasets.cifar10.drop_train_duplicates_of_eval", "'no'"]),
        (lambda d: d["variants"]["cifar10"]["resnet18"].update(model_args={"dropout": 0.1}),
         ["variants.cifar10.resnet18.model_args.dropout", "model 'resnet18' does not take 'dropout'",
          "allowed keys: width_mult, stem_kernel_size"]),
        (lambda d: d["variants"]["cifar10"]["resnet18"].update(model_args={"width_mult": 0}),
         ["variants.cifar10.resnet18.model_args.width_mult", "allowed: > 0"]),
        # model names and model_args are the registry's to check (the schema keeps no copy)
        (lambda d: d["variants"]["cifar10"]["resnet18"].update(model="resnet_18"),
         ["variants.cifar10.resnet18.model: 'resnet_18' is not allowed; allowed values: mobilenet_v2, resnet18,",
          "did you mean resnet18"]),
        (lambda d: d["variants"]["cifar10"]["resnet18"].update(model=18), ["variants.cifar10.resnet18.model",
                                                                         "expected string, got 18 (int)"]),
        (lambda d: d["variants"]["cifar5"]["resnext18_3stage-dropout35"]["model_args"].update(dropout=0.3),
         ["variants.cifar5.resnext18_3stage-dropout35.model_args.dropout: expected a list of 2 numbers, "
          "each >= 0 and < 1, got 0.3 (float)", "model 'resnext18_3stage'"]),
        (lambda d: d["variants"]["cifar10"]["mobilenet_v2"]["model_args"].update(dropout=[0.2, 0.4]),
         ["variants.cifar10.mobilenet_v2.model_args.dropout: expected a number >= 0 and < 1, got [0.2, 0.4] (list)",
          "model 'mobilenet_v2'"]),
        (lambda d: d["variants"]["butterflies"]["resnet18_deep_stem"]["model_args"].update(stem_stride=1.5),
         ["variants.butterflies.resnet18_deep_stem.model_args.stem_stride: expected an integer >= 1 and <= 4, "
          "got 1.5 (float)"]),
        (lambda d: d["variants"]["cifar10"]["resnet18"].update(model_args=[1]),
         ["variants.cifar10.resnet18.model_args", "expected object"]),
        # every profile's model_args, not only the chosen one's (load() below uses the file's profile)
        (lambda d: d["profiles"]["quick"]["model_args"].update(width_mult=0),
         ["profiles.quick.model_args.width_mult: 0 is out of range; allowed: > 0 and <= 4"]),
        # a profile's argument applies where the builder takes it (cifar: mobilenet_v2 only); none: a typo
        (lambda d: d["profiles"]["smoke"]["model_args"].update(cifar=1),
         ["profiles.smoke.model_args.cifar: expected true or false, got 1 (int); model 'mobilenet_v2'"]),
        (lambda d: d["profiles"]["smoke"]["model_args"].update(widht_mult=0.5),
         ["profiles.smoke.model_args.widht_mult: no variant's model takes 'widht_mult'; did you mean width_mult?"]),
        (lambda d: d["variants"]["cifar10"]["resnet18"].update(recipe="turbo"),
         ["variants.cifar10.resnet18", "unknown key 'recipe'", "allowed keys:"]),
        (lambda d: d["recipes"]["fast"].update(precision="fp8"),
         ["recipes.fast.precision", "allowed values: auto, fp32, bf16"]),
        (lambda d: d["variants"]["cifar10"]["resnet18"].update(lab_report=[{"report": "x"}]),
         ["variants.cifar10.resnet18.lab_report.0", "'row' is a required property"]),
    ],
)
def test_bad_params_give_one_message_naming_the_key(params_copy, edit, expected):
    path = params_copy(edit)
    with pytest.raises(ConfigError) as info:
        load(path)
    msg = str(info.value)
    assert "\n" not in msg
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"


@pytest.mark.parametrize("dataset", ["cifar10", "butterflies"])
def test_near_duplicate_threshold_edges_are_valid(params_copy, dataset):
    """0 (only exact and mirrored copies) and anything below 1 are allowed."""
    load(params_copy(lambda d: d["datasets"][dataset].update(near_duplicate_threshold=0)))
    load(params_copy(lambda d: d["datasets"][dataset].update(near_duplicate_threshold=0.99)))


def test_cifar10_drop_switch_is_optional(params_copy):
    load(params_copy(lambda d: d["datasets"]["cifar10"].pop("drop_train_duplicates_of_eval")))


def test_yaml_syntax_error_names_line(tmp_path, params_copy):
    path = params_copy()
    path.write_text(path.read_text() + "\ntrain: [unclosed\n")
    with pytest.raises(ConfigError, match=r"params.yaml: YAML syntax error at line \d+"):
        load(path)


def test_unknown_variant_lists_allowed():
    cfg = load(REPO / "params.yaml")
    with pytest.raises(ConfigError, match="unknown variant 'nope'; variants in .*cifar10-resnet18"):
        cfg.variant("nope")


def test_with_overrides_sets_and_revalidates():
    from cnnbench.config import with_overrides

    cfg = load(REPO / "params.yaml", profile="smoke")
    new = with_overrides(cfg, ["recipes.fast.batch_size=256", "recipes.fast.optimizer.lr=0.2"])
    assert new.run("cifar10-resnet18", "fast").train.optimizer.lr == 0.2
    assert cfg.raw["recipes"]["fast"]["optimizer"]["lr"] != 0.2  # the original is untouched
    with pytest.raises(ConfigError, match=r"recipes.fast.optimizer.lr: -1 is out of range"):
        with_overrides(cfg, ["recipes.fast.optimizer.lr=-1"])
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        with_overrides(cfg, ["recipes.fast.batch_size"])
    with pytest.raises(ConfigError, match="does not name a key inside a block"):
        with_overrides(cfg, ["nothere.x=1"])


def test_seed_outside_the_profile_is_refused_with_the_dvc_hint():
    cfg = load(REPO / "params.yaml", profile="smoke")
    cfg.check_seed(0)
    with pytest.raises(ConfigError, match=r"seed 2 is not among profiles.smoke.seeds \[0\].*-S 'seeds=\[0\]'"):
        cfg.check_seed(2)
    assert load(REPO / "params.yaml", profile="full").seeds == cfg.raw["seeds"]  # full: the top-level seeds


def test_runs_differ_only_in_recipe_and_seed():
    cfg = load(REPO / "params.yaml", profile="full")
    a, b = cfg.run("cifar10-resnet18", "lab", 0), cfg.run("cifar10-resnet18", "lab", 1)
    assert a.seed == 0 and b.seed == 1
    assert dataclasses.replace(a, seed=1) == b and a.hash != b.hash
    with pytest.raises(ConfigError, match="unknown recipe 'turbo'"):
        cfg.run("cifar10-resnet18", "turbo")


def test_model_errors_through_from_raw_name_the_key_path():
    from cnnbench.config import from_raw

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["variants"]["cifar5"]["resnext18_3stage-dropout35"]["model_args"]["dropout"] = 0.3
    with pytest.raises(ConfigError, match=r"^src: variants\.cifar5\.resnext18_3stage-dropout35\.model_args\.dropout: "
                                          r"expected a list of 2 numbers"):
        from_raw(raw, REPO / "params.yaml", source="src")


@pytest.mark.parametrize(
    "edit, argv, expected",
    [
        (lambda d: d["variants"]["cifar5"]["resnext18_3stage-dropout35"]["model_args"].update(dropout=0.3),
         ["validate"], "variants.cifar5.resnext18_3stage-dropout35.model_args.dropout: expected a list of 2 numbers"),
        (lambda d: d["variants"]["cifar10"]["mobilenet_v2"]["model_args"].update(dropout=[0.2, 0.4]),
         ["validate"], "variants.cifar10.mobilenet_v2.model_args.dropout: expected a number >= 0 and < 1"),
        (lambda d: d["variants"]["cifar10"]["resnet18"].update(model="resnet99"),
         ["models"], "variants.cifar10.resnet18.model: 'resnet99' is not allowed; allowed values: mobilenet_v2"),
        (None, ["models", "--dataset", "nope"], "unknown dataset 'nope'; datasets in "),
        (None, ["models", "--dataset", ""], "unknown dataset ''; datasets in "),
    ],
)
def test_model_errors_through_the_cli_are_one_config_error_line(params_copy, capsys, edit, argv, expected):
    from cnnbench.cli import main

    path = params_copy(edit)
    assert main([*argv, "--params", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnbench: config error: "), captured.err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    if "--dataset" in argv:
        assert sorted(lines[0].rsplit(": ", 1)[1].split(", ")) == ["butterflies", "cifar10", "cifar5"]  # the data sets


def test_models_lists_the_arguments_the_registry_describes(capsys):
    from cnnbench.cli import main

    assert main(["models", "--arguments", "--params", str(REPO / "params.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == model_names()[0]
    assert all(name in out.splitlines() for name in model_names())
    dropout = [ln.split() for ln in out.splitlines() if ln.strip().startswith("dropout")]
    assert any("[0.2, 0.4]" in " ".join(ln) and "list" in ln for ln in dropout)
    assert any(ln[1:4] == ["a", "number", ">="] for ln in dropout)


def test_the_schema_allows_exactly_the_registered_data_set_kinds():
    from cnnbench.config import find_schema, read_yaml
    from cnnbench.data import kinds

    schema = read_yaml(find_schema(REPO / "params.yaml"))
    assert schema["$defs"]["dataset"]["properties"]["kind"]["enum"] == kinds.kind_names()
    dispatched = [rule["if"]["properties"]["kind"]["const"] for rule in schema["$defs"]["dataset"]["allOf"]]
    assert dispatched == kinds.kind_names()
