"""Malformed params.yaml: one clear message naming the key, before any job starts, through the
CLI (`cnnbench train`), through Snakemake (`snakemake --cores 1`) and through DVC (`dvc repro`).

Afterwards nothing exists under data/, results/ or logs/: no stage did any work. (Under DVC the
first stage's `cnnbench` process is what validates, so it starts and exits at once with status 2;
Snakemake validates while loading the workflow, before it schedules anything.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relsupport import (
    VARIANT,
    all_variants,
    cli,
    describe,
    env_for,
    make_project,
    run,
    run_args,
    set_key,
    snakemake_target,
    dvc_stage,
    variant_key,
    variant_spec,
)

VK = variant_key()  # "variants.<id>" as messages name it
P = "params.yaml: "


def _set(key: str, value):
    return lambda doc: set_key(doc, key, value)


def _variant(key: str, value):
    return lambda doc: set_key(variant_spec(doc), key, value)


def _empty_variants(doc):
    all_variants(doc).clear()


def _drop_variant_key(key: str):
    return lambda doc: variant_spec(doc).pop(key)


# id -> (edit of the parsed params, or a text transform for "yaml:" ids; fragment the message must contain)
CASES = {
    "epochs-wrong-type": (_set("train.epochs", "ten"), f"{P}train.epochs: expected integer, got 'ten' (str)"),
    "lr-wrong-type": (_variant("train.optimizer.lr", "fast"),
                      f"{P}{VK}.train.optimizer.lr: expected number, got 'fast' (str)"),
    "lr-negative": (_variant("train.optimizer.lr", -0.1),
                    f"{P}{VK}.train.optimizer.lr: -0.1 is out of range; allowed: > 0"),
    "epochs-zero": (_set("profiles.smoke.train.epochs", 0), f"{P}profiles.smoke.train.epochs: 0 is out of range; allowed: >= 1"),
    "unknown-model": (_variant("model", "resnet99"), f"{P}{VK}.model: 'resnet99' is not allowed; allowed values: mobilenet_v2"),
    "unknown-recipe": (_set("recipes_in_study", ["lab", "turbo"]),
                       f"{P}recipes_in_study.1: 'turbo' is not defined under recipes or tuning.recipes; allowed values: lab, fast, tuned"),
    "empty-variants": (_empty_variants, f"{P}variants: must not be empty"),
    "batch-larger-than-data": (_set("profiles.smoke.train.batch_size", 512),
                               "train.batch_size 512 is larger than train.train_limit 256"),
    "unknown-profile": (_set("profile", "turbo"), f"{P}profile: 'turbo' is not defined under profiles; allowed values: full, quick, smoke"),
    "yaml-syntax-error": ("yaml", "params.yaml: YAML syntax error at line"),
    "unknown-key": (_set("train.lerning_rate", 0.1), f"{P}train: unknown key 'lerning_rate'; allowed keys:"),
    "bool-wrong-type": (_set("train.deterministic", "yes please"), f"{P}train.deterministic: expected boolean"),
    "on-bad-image-unknown": (_set("datasets.butterflies.on_bad_image", "ignore"),
                             f"{P}datasets.butterflies.on_bad_image: 'ignore' is not allowed; allowed values: skip, fail"),
    "unknown-dataset": (lambda doc: all_variants(doc).update(imagenet={"resnet18": {"model": "resnet18"}}),
                        f"{P}variants.imagenet: 'imagenet' is not defined under datasets; allowed values: cifar10, "
                        "butterflies, cifar5"),
    "model-arg-not-taken": (_variant("model_args", {"cifar": True}),
                            f"{P}{VK}.model_args.cifar: model 'resnet18_small_stem_3stage' does not take 'cifar'"),
    # model_args are checked against each builder's own description of its arguments
    "resnext-dropout-not-a-pair": (_set("variants.cifar5.resnext18_3stage-dropout35.model_args.dropout", 0.3),
                                   f"{P}variants.cifar5.resnext18_3stage-dropout35.model_args.dropout: "
                                   "expected a list of 2 numbers, each >= 0 and < 1, got 0.3 (float)"),
    "mobilenet-dropout-pair": (_set("variants.cifar10.mobilenet_v2.model_args.dropout", [0.2, 0.4]),
                               f"{P}variants.cifar10.mobilenet_v2.model_args.dropout: "
                               "expected a number >= 0 and < 1, got [0.2, 0.4] (list)"),
    "profile-width-out-of-range": (_set("profiles.smoke.model_args.width_mult", 0),
                                   f"{P}profiles.smoke.model_args.width_mult: 0 is out of range; allowed: > 0 and <= 4"),
    "label-smoothing-too-big": (_set("recipes.lab.label_smoothing", 1.5), f"{P}recipes.lab.label_smoothing: 1.5 is out of range"),
    "device-unknown": (_set("profiles.smoke.train.device", "gpu"),
                       f"{P}profiles.smoke.train.device: 'gpu' does not match the required pattern"),
    "val-fraction-one": (_set("datasets.cifar10.val_fraction", 1.0), f"{P}datasets.cifar10.val_fraction: 1.0 is out of range"),
    "variant-without-model": (_drop_variant_key("model"), f"{P}{VK}: 'model' is a required property"),
    "md5-not-hex": (_set("datasets.cifar10.source.md5", "not-a-checksum"),
                    f"{P}datasets.cifar10.source.md5: 'not-a-checksum' does not match the required pattern"),
}


def _write_case(root: Path, original: str, case: str) -> None:
    import yaml

    edit, _ = CASES[case]
    if edit == "yaml":  # an unclosed flow sequence
        text = original.replace("train_limit: 256", "train_limit: [256")
        assert text != original
        (root / "params.yaml").write_text(text)
        return
    doc = yaml.safe_load(original)
    edit(doc)
    (root / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def _config_errors(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if "config error" in ln]


def _assert_nothing_ran(root: Path) -> None:
    for d in ("data", "results", "logs"):
        assert not (root / d).exists(), f"{d}/ was created: a job ran"


def test_at_least_15_cases():
    assert len(CASES) >= 15


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("bad-params"), git=True)
    original = (root / "params.yaml").read_text()
    # The smoke profile's train_limit, which two cases rely on, is written in flow style on one line.
    assert "train_limit: 256" in original
    yield root, original
    (root / "params.yaml").write_text(original)


@pytest.mark.parametrize("case", list(CASES))
def test_cli(project, case):
    root, original = project
    _write_case(root, original, case)
    rc, err = cli(root, "train", *run_args(), "--no-dvclive")
    assert rc == 2, err
    errors = _config_errors(err)
    assert len(errors) == 1 and errors[0].startswith("cnnbench: config error: "), err
    assert CASES[case][1] in errors[0], errors[0]
    assert "Traceback" not in err
    _assert_nothing_ran(root)


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(CASES))
def test_snakemake(project, case):
    root, original = project
    _write_case(root, original, case)
    proc = run(["snakemake", "--cores", "1"], root, env_for(), timeout=120)
    assert proc.returncode != 0, describe(proc, root)
    errors = _config_errors(proc.stderr)
    assert len(errors) == 1, describe(proc)
    assert CASES[case][1] in errors[0], errors[0]
    assert "Traceback" not in proc.stderr
    _assert_nothing_ran(root)


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(CASES))
def test_dvc(project, case):
    root, original = project
    _write_case(root, original, case)
    proc = run(["dvc", "repro"], root, env_for(), timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, describe(proc, root)
    if case == "yaml-syntax-error":
        # DVC parses params.yaml itself (dvc.yaml interpolates it) and stops with its own message.
        assert "unable to read: 'params.yaml', YAML file structure is corrupted" in out and "line" in out, out
        assert "Running stage" not in out
    elif case == "empty-variants":
        # dvc.yaml's matrix stages iterate over variants.<dataset>: DVC itself refuses to build them.
        assert "Could not find 'variants.cifar10'" in out, out
        assert "Running stage" not in out
    else:
        errors = _config_errors(out)
        assert len(errors) == 1, describe(proc)
        assert CASES[case][1] in errors[0], errors[0]
        # Only the first stage's process started (specs: every other stage depends on what it writes),
        # and it stopped at the configuration.
        stages = re.findall(r"Running stage '([^']+)'", out)
        assert stages == ["specs"], out
    _assert_nothing_ran(root)


def test_unknown_variant_is_named_by_every_entry_point(project):
    root, original = project
    (root / "params.yaml").write_text(original)
    rc, err = cli(root, "train", "--variant", "cifar10-resnet99")
    assert rc == 2 and "unknown variant 'cifar10-resnet99'; variants in params.yaml:" in err, err
    assert VARIANT in err  # the allowed ones are listed
    _assert_nothing_ran(root)


@pytest.mark.e2e
def test_unknown_variant_through_the_drivers(project):
    root, original = project
    (root / "params.yaml").write_text(original)
    target = snakemake_target("cifar10-resnet99")
    proc = run(["snakemake", "--cores", "1", target], root, env_for(), timeout=120)
    assert proc.returncode != 0 and target in proc.stderr, describe(proc)
    stage = dvc_stage("cifar10-resnet99", "train")
    proc = run(["dvc", "repro", stage], root, env_for(), timeout=120)
    assert proc.returncode != 0 and f"'{stage}' not found" in proc.stdout + proc.stderr, describe(proc)
    _assert_nothing_ran(root)
