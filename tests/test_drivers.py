"""The two drivers run one pipeline: dvc.yaml is what cnnbench.pipeline generates, every train and
evaluate job runs the same command under Snakemake and DVC, and a DVC stage's code deps are the
modules its command imports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from cnnbench import pipeline
from cnnbench.config import ConfigError, load
from test_e2e import copy_repo, env_for

REPO = Path(__file__).resolve().parents[1]


def test_committed_dvc_yaml_is_what_the_pipeline_generates(tmp_path):
    cfg = load(REPO / "params.yaml")
    pipeline.check_dvc_yaml(REPO / "dvc.yaml", cfg)
    stale = tmp_path / "dvc.yaml"
    stale.write_text((REPO / "dvc.yaml").read_text().replace("src/cnnbench/engine.py\n", "", 1))
    with pytest.raises(ConfigError, match=r"dvc.yaml is stale: .* run `cnnbench --profile full exp-run`, or `cnnbench --profile full dvc-yaml`"):
        pipeline.check_dvc_yaml(stale, cfg)


def test_dvc_yaml_has_stages_for_every_data_set_of_params_and_subsets_read_their_parent(tmp_path):
    import yaml

    cfg = load(REPO / "params.yaml")
    stages = yaml.safe_load(pipeline.render_dvc_yaml(cfg))["stages"]
    assert stages["download"]["foreach"] == stages["preprocess"]["foreach"] == ["cifar10", "butterflies"]
    assert stages["subset"]["foreach"] == [{"name": "cifar5", "of": "cifar10"}]
    assert "--raw data/prepared/${item.of} --out data/prepared/${item.name}" in stages["subset"]["do"]["cmd"]
    assert "data/prepared/${item.of}" in stages["subset"]["do"]["deps"]
    assert {f"train-{d}" for d in ("cifar10", "cifar5", "butterflies")} <= set(stages)
    # a data set added to params.yaml alone gets its stages once dvc.yaml is written again
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["datasets"]["mine"] = {"kind": "subset", "of": "butterflies", "classes": None, "max_per_class": 5, "seed": 1}
    raw["variants"]["mine"] = {"net": {"model": "resnet18"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (tmp_path / "workflow" / "schemas").mkdir(parents=True)
    (tmp_path / "workflow" / "schemas" / "params.schema.yaml").write_text(
        (REPO / "workflow" / "schemas" / "params.schema.yaml").read_text())
    grown = load(tmp_path / "params.yaml")
    assert "train-mine" in yaml.safe_load(pipeline.render_dvc_yaml(grown))["stages"]
    with pytest.raises(ConfigError, match="stale"):
        pipeline.check_dvc_yaml(REPO / "dvc.yaml", grown)


def test_code_deps_are_the_modules_each_command_imports():
    deps = {stage: set(pipeline.code_deps(stage)) for stage in pipeline.STAGES}
    src = "src/cnnbench/"
    # train runs the engine, its checkpoints, the spec, the augmentation, every model and the GPU slot claim
    for module in ("train.py", "engine.py", "checkpoint.py", "spec.py", "augment.py", "gpus.py", "config.py",
                   "data/packed.py", "models/registry.py", "models/resnet.py", "models/resnext.py",
                   "models/mobilenetv2.py", "cli.py", "__init__.py", "models/__init__.py", "data/__init__.py"):
        assert src + module in deps["train"], module
    assert src + "evaluate.py" in deps["evaluate"] and src + "train.py" in deps["evaluate"]
    # ... and nothing of another command's
    assert src + "evaluate.py" not in deps["train"] and src + "bench.py" not in deps["train"]
    assert src + "train.py" not in deps["preprocess"] and src + "data/butterflies.py" in deps["preprocess"]
    assert src + "pipeline.py" in deps["specs"] and "src/cnnbench/templates" in deps["report"]
    for stage, files in deps.items():
        assert all((REPO / f).exists() for f in files), stage


def _snakemake_commands(repo: Path, env: dict) -> list[str]:
    proc = subprocess.run(["snakemake", "-n", "-p", "--forceall", "--cores", "1", "--config", "profile=smoke"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands = re.findall(r"^(?:Shell command: )?\s*(cnnbench --profile smoke (?:tune|select|train|evaluate) .*?)\s*> logs/\S+ 2>&1\s*$",
                          proc.stdout + proc.stderr, flags=re.M)
    return sorted(" ".join(c.split()) for c in commands)


def _dvc_commands(repo: Path) -> list[str]:
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        stages = [s for s in dvc.index.stages if s.name.startswith(("tune-", "select", "train-", "evaluate-"))]
        return sorted(" ".join(s.cmd.split()) for s in stages)


def test_every_train_and_evaluate_job_runs_the_same_command_under_both_drivers(tmp_path, monkeypatch):
    repo = copy_repo(tmp_path / "repo")  # the smoke profile and its seeds on disk
    env = env_for(tmp_path)
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    cfg = load(repo / "params.yaml")
    snake, dvc = _snakemake_commands(repo, env), _dvc_commands(repo)
    runs = cfg.runs
    pairs = len(cfg.tuning.variants) * len(cfg.tuned_recipes)
    assert len(snake) == 2 * len(runs) + len(cfg.trials) + pairs == 2 * 40 + 12 + 6
    assert snake == dvc
    for variant, recipe, seed in runs:
        assert (f"cnnbench --profile smoke train --variant {variant} --recipe {recipe} --seed {seed} --data "
                f"data/prepared/{variant.split('-')[0]} --out results/runs/{variant}/{recipe}/seed{seed}") in snake


@pytest.mark.parametrize("profile", ["full", "quick", "smoke"])
def test_exp_run_sets_the_profile_and_its_seeds_so_the_dvc_stages_are_the_profiles_runs(profile, tmp_path):
    import yaml

    from cnnbench.cli import exp_run_command
    from cnnbench.config import from_raw

    cmd = exp_run_command(load(REPO / "params.yaml", profile=profile), ["--", "--name", "try"])
    assert cmd[:3] == ["dvc", "exp", "run"] and cmd[3::2][:2] == ["-S", "-S"] and cmd[-2:] == ["--name", "try"]
    sets = dict(arg.split("=", 1) for arg in cmd[4:8:2])
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw.update(profile=sets["profile"], seeds=yaml.safe_load(sets["seeds"]))  # what `-S` does to params.yaml
    cfg = from_raw(raw, REPO / "params.yaml")
    written = pipeline.write_specs(cfg, tmp_path / "specs")
    # download and preprocess settings per data set; a subset has no download
    assert len(written) == len(cfg.runs) + len(cfg.trials) + 2 * len(cfg.prepared_datasets) - len(cfg.subsets)
    if profile != "full":  # the profile alone, as `dvc exp run -S profile=...` would leave it: refused at once
        raw["seeds"] = [0, 1, 2]
        with pytest.raises(ConfigError, match=rf"cnnbench exp-run --profile {profile}"):
            pipeline.write_specs(from_raw(raw, REPO / "params.yaml"), tmp_path / "specs")


def test_make_dvc_study_runs_the_profile_through_exp_run():
    out = subprocess.run(["make", "-n", "dvc-study", "PROFILE=smoke"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and "cnnbench --profile smoke exp-run" in out.stdout, out.stdout + out.stderr


def test_specs_keeps_unchanged_files_and_removes_runs_no_longer_in_the_study(tmp_path):
    import yaml

    from cnnbench.config import from_raw

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    cfg = from_raw(dict(raw, profile="smoke", seeds=[0]), REPO / "params.yaml")
    first = pipeline.write_specs(cfg, tmp_path)
    spec = tmp_path / "runs/cifar10-resnet18/lab/seed0.json"
    stamp = spec.stat().st_mtime_ns
    extra = tmp_path / "runs/gone/lab/seed0.json"
    extra.parent.mkdir(parents=True)
    extra.write_text("{}")
    assert pipeline.write_specs(cfg, tmp_path) == first
    assert spec.stat().st_mtime_ns == stamp and not extra.exists()
    doc = __import__("json").loads(spec.read_text())
    assert doc["hash"] == cfg.run("cifar10-resnet18", "lab", 0).hash and doc["run"] == "cifar10-resnet18/lab/seed0"
