"""End to end: snakemake and dvc as real processes on the smoke profile against the real mirror.

Each driver runs in its own temporary copy of the repository (a git repo, for DVC). The tests
check: every output exists and the report names every variant; a second run does nothing;
changing one variant's learning rate reruns exactly that variant's train and evaluate plus the
stages after them; a lab-report figure or a description retrains nothing; adding a seed trains
only the new seed's runs (their train and evaluate, plus the stages after them); both drivers ran the
same command with the same run hash for every job; under DVC every module a stage's command
imported is among its deps, and a change to one makes the stages that import it stale;
`dvc exp show --csv` lists params and test accuracy per variant.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from cnnbench.stats import IMAGES_ONLY
from study_layout import keep_variants, stage, tune_stage

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
COPY = ["Snakefile", "dvc.yaml", "params.yaml", "workflow", "src", ".dvc/config", ".dvc/.gitignore", ".dvcignore",
        ".gitignore", "pyproject.toml"]
CHANGED_VARIANT = "cifar10-resnet18"
DVC_VARIANTS = [CHANGED_VARIANT, "cifar10-resnet18_small_stem", "cifar5-resnext18_3stage", "cifar5-resnext18_4stage",
                "butterflies-resnet18", "butterflies-resnet18-unfiltered"]


def copy_repo(dest: Path) -> Path:
    for item in COPY:
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            (dest / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / item)
    # Smoke profile on disk, so plain `dvc repro` and `snakemake` both use it.
    # (DVC iterates over the top-level seeds, so they are set to the smoke profile's too.)
    params = (dest / "params.yaml").read_text()
    params = re.sub(r"(?m)^profile: \w+", "profile: smoke", params)
    (dest / "params.yaml").write_text(re.sub(r"(?m)^seeds: \[.*\]", "seeds: [0]", params))
    from cnnbench.pipeline import render_dvc_yaml  # dvc.yaml's tuning stages list the smoke grid

    (dest / "dvc.yaml").write_text(render_dvc_yaml(study_of(dest)))
    git = ["git", "-c", "user.email=test@cnnbench.invalid", "-c", "user.name=cnnbench tests"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "study copy"], cwd=dest, check=True)
    return dest


def env_for(mirror: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["CNNBENCH_DATA_MIRROR"] = str(mirror)
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "cnnbench tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "test@cnnbench.invalid"
    env["DVC_NO_ANALYTICS"] = "1"
    env.pop("DVC_EXP_BASELINE_REV", None)
    return env


def sh(args: list[str], cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        logs = ""
        for log in sorted((cwd / "logs").rglob("*.log")) if (cwd / "logs").exists() else []:
            logs += f"\n--- {log.relative_to(cwd)}\n{log.read_text()[-2000:]}"
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode})\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-6000:]}{logs}"
        )
    return proc


def study_of(repo: Path):
    from cnnbench.config import load

    return load(repo / "params.yaml")


def change_one_lr(repo: Path) -> None:
    doc = yaml.safe_load((repo / "params.yaml").read_text())
    train = doc["variants"]["cifar10"][CHANGED_VARIANT.split("-", 1)[1]].setdefault("train", {})
    train.setdefault("optimizer", {})["lr"] = 0.02
    (repo / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def edit_lab_report(doc: dict) -> None:
    doc["variants"]["cifar10"]["resnet18"]["lab_report"][0]["accuracy"] = 84.0  # a corrected figure


def edit_descriptions(doc: dict) -> None:
    for profile in doc["profiles"].values():
        profile["description"] = "edited"
    doc["variants"]["butterflies"]["resnet18-unfiltered"]["description"] = "edited"


def seeds_0_and_1(doc: dict) -> None:
    """A second seed for the smoke profile (Snakemake reads the profile's seeds)."""
    doc["profiles"]["smoke"]["seeds"] = [0, 1]


def seeds_0_and_1_for_dvc(doc: dict) -> None:
    """The same, and the top-level seeds DVC makes one stage per seed of (`cnnbench exp-run` sets both)."""
    seeds_0_and_1(doc)
    doc["seeds"] = [0, 1]


@contextmanager
def params_edited(repo: Path, *edits):
    """params.yaml with ``edits`` applied, restored afterwards."""
    original = (repo / "params.yaml").read_text()
    doc = yaml.safe_load(original)
    for edit in edits:
        edit(doc)
    (repo / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        yield
    finally:
        (repo / "params.yaml").write_text(original)


def ran_stages(dvc_output: str) -> list[str]:
    return sorted(re.findall(r"Running stage '([^']+)'", dvc_output))


def assert_study_complete(repo: Path) -> None:
    cfg = study_of(repo)
    # smoke: lab and fast for every variant, tuned for the six it tunes; one seed
    assert len(cfg.runs) == len(cfg.variants) * 2 + len(cfg.tuning.variants)
    for v, recipe, seed in cfg.runs:
        run = repo / "results" / "runs" / v / recipe / f"seed{seed}"
        for f in ("model.pt", "history.csv", "train.json", "metrics.json", "confusion.csv", "predictions.csv"):
            assert (run / f).is_file(), f"missing {run / f}"
        metrics = json.loads((run / "metrics.json").read_text())
        assert 0.0 <= metrics["test_top1"] <= 1.0 and (metrics["recipe"], metrics["seed"]) == (recipe, seed)
    for ds in ("cifar10", "butterflies"):
        manifest = json.loads((repo / "data/prepared" / ds / "manifest.json").read_text())
        assert manifest["source"]["source"] == "mirror"
    claims = list(csv.DictReader(open(repo / "results/summary/claims.csv")))
    tuned = [c for c in cfg.claims if {c["a"], c["b"]} <= set(cfg.tuning.variants)]
    assert len(claims) == 2 * len(cfg.claims) + len(tuned) and len(tuned) == 3  # a claim of each kind of data
    assert_tuning_complete(repo, cfg)
    # one seed: accuracy claims are decided from the test set alone and say so; instability (one value
    # per run) is not tested; every tested claim has a Holm-adjusted p
    for c in claims:
        if c["metric"] in ("test_top1", "top1_kept"):
            assert c["noise"] == IMAGES_ONLY and float(c["p_adjusted"]) >= float(c["p"]), c
        if c["metric"] == "instability":
            assert c["verdict"] == "inconclusive" and c["p_adjusted"] == "", c
    figures = json.loads((repo / "results/plots/figures.json").read_text())
    for fig in figures:
        assert (repo / "results/plots" / fig["file"]).stat().st_size > 1000
    html = (repo / "results/report/report.html").read_text()
    md = (repo / "results/report/report.md").read_text()
    for v in cfg.variants:
        assert v in html and v in md, f"report does not name {v}"
    for claim in cfg.claims:
        assert claim["text"] in html
    # The leak audit of each data set: its section, and the thumbnails of the groups that span splits
    # (the first 24 of each) beside the figures.
    thumbnails = 0
    for dataset in cfg.datasets:
        assert f'id="data-quality-{dataset}"' in html
        audit = json.loads((repo / "data/prepared" / dataset / "duplicates.json").read_text())
        spanning = [g for g in audit["groups"] if len(g["splits"]) > 1][:24]
        thumbnails += sum(m["thumb"] is not None for g in spanning for m in g["members"])
        for g in spanning:
            assert all(m["file"] in html for m in g["members"])
    assert "train/ULYSES/005.jpg" in html and "test_batch[546]" in html  # mirror findings (docs/duplicates.md)
    assert "smoke data: not evidence" in html
    assert html.count("<img src=\"data:image/png;base64,") == len(figures) + thumbnails


def selections(repo: Path, cfg) -> dict:
    """(variant, recipe) -> its selection.json."""
    return {(v, r): json.loads((repo / "results/tuning" / v / r / "selection.json").read_text())
            for v in cfg.tuning.variants for r in cfg.tuned_recipes}


def assert_tuning_complete(repo: Path, cfg) -> None:
    """Every trial ran for the budget's epochs, every selection chose a grid value, and each tuned run
    trained with its variant's choice."""
    points = [p.values["lr"] for p in cfg.tuning.points]
    for (v, r), sel in selections(repo, cfg).items():
        assert len(sel["trials"]) == len(points) * len(cfg.tuning.seeds)
        assert all(t["epochs"] == 1 and (t["diverged"] or 0 <= t["val_acc"] <= 1) for t in sel["trials"])
        assert sel["chosen"]["lr"] in points
        for seed in cfg.seeds:
            train = json.loads((repo / "results/runs" / v / r / f"seed{seed}" / "train.json").read_text())
            assert train["settings"]["train"]["optimizer"]["lr"] == sel["chosen"]["lr"]
            assert train["settings"]["train"]["epochs"] == cfg.run(v, "fast", seed).train.epochs


def add_grid_point(doc: dict) -> None:
    """A third learning rate in the smoke grid, between the two it has."""
    doc["profiles"]["smoke"]["tuning"]["grid"]["lr"] = [0.05, 0.1, 0.2]


def ran_jobs(snakemake_output: str) -> list[str]:
    """`rule[:wildcards]` of every job a (real) snakemake run executed."""
    return [j for j in planned_jobs(snakemake_output) if j != "all"]


@pytest.fixture(scope="module")
def mirror(request) -> Path:
    path = REPO.parent / "shared" / "data" / "mirror"
    if not (path / "SHA256SUMS").is_file():
        pytest.skip(f"{path} not found: the real-data mirror sits beside the checkout in CI (../shared/data/mirror)")
    return path


# --- Snakemake ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def snakemake_study(tmp_path_factory, mirror):
    repo = copy_repo(tmp_path_factory.mktemp("snakemake-study"))
    env = env_for(mirror)
    t0 = time.perf_counter()
    sh(["snakemake", "--cores", "2", "--config", "profile=smoke"], repo, env, timeout=1800)  # ~10 min alone on 2 cores
    print(f"\nsmoke study under snakemake: {time.perf_counter() - t0:.1f} s wall")
    return repo, env


def planned_jobs(dry_run_output: str) -> list[str]:
    """`rule[:wildcard]` for every job in a snakemake dry run."""
    jobs, current = [], None
    for line in dry_run_output.splitlines():
        m = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):", line.strip())
        if m:
            if current:
                jobs.append(current)
            current = m.group(1)
            continue
        m = re.match(r"^wildcards: (.*)$", line.strip())
        if m and current and ":" not in current:
            current += ":" + "/".join(kv.split("=", 1)[1] for kv in m.group(1).split(", "))
    if current:
        jobs.append(current)
    return sorted(jobs)


def test_snakemake_study_completes(snakemake_study):
    repo, _ = snakemake_study
    assert_study_complete(repo)
    assert "snakemake --cores 4 --config profile=smoke" in (repo / "results/report/report.html").read_text()


def test_snakemake_run_created_no_dvc_experiment(snakemake_study):
    repo, env = snakemake_study
    # DVCLive logged metrics, but neither edited dvc.yaml nor made an experiment of its own.
    assert (repo / "results/runs" / CHANGED_VARIANT / "lab/seed0/dvclive/metrics.json").is_file()
    committed = subprocess.run(["git", "show", "HEAD:dvc.yaml"], cwd=repo, capture_output=True, text=True, check=True)
    assert (repo / "dvc.yaml").read_text() == committed.stdout
    out = sh(["dvc", "exp", "list", "--all-commits"], repo, env)
    assert out.stdout.strip() == ""


def test_snakemake_second_run_does_nothing(snakemake_study):
    repo, env = snakemake_study
    out = sh(["snakemake", "-n", "--cores", "2", "--config", "profile=smoke"], repo, env)
    assert "Nothing to be done" in out.stdout + out.stderr


def _planned(repo: Path, env: dict) -> list[str]:
    out = sh(["snakemake", "-n", "--cores", "2", "--config", "profile=smoke"], repo, env)
    return [j for j in planned_jobs(out.stdout + out.stderr) if j != "all"]  # `all` is the no-op target


def test_snakemake_lab_report_edit_reruns_only_what_shows_it(snakemake_study):
    repo, env = snakemake_study
    with params_edited(repo, edit_lab_report):
        assert _planned(repo, env) == ["plot", "report"]  # the figures draw it, the report prints it


def test_snakemake_description_edits_retrain_nothing(snakemake_study):
    repo, env = snakemake_study
    with params_edited(repo, edit_descriptions):
        assert _planned(repo, env) == ["report"]


def test_snakemake_new_seed_trains_only_its_runs(snakemake_study):
    repo, env = snakemake_study
    with params_edited(repo, seeds_0_and_1):
        cfg = study_of(repo)
        jobs = _planned(repo, env)
    assert cfg.seeds == [0, 1]
    new = [f"{v}/{recipe}/{seed}" for v, recipe, seed in cfg.runs if seed == 1]
    assert len(new) == len(cfg.variants) * 2 + len(cfg.tuning.variants)  # every run at seed 1; no trial reruns
    assert not [j for j in jobs if j.endswith("/0")], jobs  # no seed-0 run is retrained or re-evaluated
    assert jobs == sorted([*(f"train:{r}" for r in new), *(f"evaluate:{r}" for r in new),
                           "aggregate", "plot", "report"])


def test_snakemake_one_variant_change_reruns_exactly_its_jobs(snakemake_study):
    repo, env = snakemake_study
    change_one_lr(repo)
    out = sh(["snakemake", "-n", "--cores", "2", "--config", "profile=smoke"], repo, env)
    jobs = [j for j in planned_jobs(out.stdout + out.stderr) if j != "all"]  # `all` is the no-op target
    runs = [f"{CHANGED_VARIANT}/{r}/0" for r in ("lab", "fast")]
    assert jobs == sorted([*(f"train:{r}" for r in runs), *(f"evaluate:{r}" for r in runs),
                           "aggregate", "plot", "report"]), out.stdout


def test_snakemake_new_grid_point_reruns_its_trials_and_only_the_runs_whose_choice_changed(snakemake_study,
                                                                                           tmp_path):
    """On a copy of the finished study: a learning rate added to the grid trains its trials, selects
    again, and retrains (and re-evaluates) exactly the tuned runs whose chosen value changed."""
    study, env = snakemake_study
    repo = tmp_path / "study"
    shutil.copytree(study, repo, symlinks=True)
    subprocess.run(["git", "checkout", "-q", "--", "params.yaml"], cwd=repo, check=True)  # undo the tests' edits
    before = selections(repo, study_of(repo))
    with params_edited(repo, add_grid_point):
        cfg = study_of(repo)
        out = sh(["snakemake", "--cores", "2", "--config", "profile=smoke"], repo, env, timeout=1200)
        after = selections(repo, cfg)
        assert_tuning_complete(repo, cfg)
        again = sh(["snakemake", "-n", "--cores", "2", "--config", "profile=smoke"], repo, env)
    changed = [v for (v, _), sel in after.items() if sel["chosen"] != before[(v, "tuned")]["chosen"]]
    retrained = [f"{v}/tuned/0" for v in changed]
    jobs = ran_jobs(out.stdout + out.stderr)
    # aggregate follows a changed run; without one, Snakemake may still run it (it was planned downstream of
    # the tuned runs before the selections were made): it reads the runs, which are unchanged
    assert retrained == [] or "aggregate" in jobs
    assert [j for j in jobs if j != "aggregate"] == sorted([
        *(f"tune:{v}/tuned/lr0.1/1000" for v in cfg.tuning.variants),
        *(f"select:{v}/tuned" for v in cfg.tuning.variants),
        *(f"train:{r}" for r in retrained), *(f"evaluate:{r}" for r in retrained), "plot", "report"])
    assert "Nothing to be done" in again.stdout + again.stderr
    print(f"\nnew grid point: {len(changed)} of {len(after)} choices changed: {changed}")


def test_snakemake_rejects_bad_config_before_any_job(snakemake_study, tmp_path):
    repo, env = snakemake_study
    proc = subprocess.run(["snakemake", "-n", "--cores", "1", "--config", "profile=turbo"], cwd=repo, env=env,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "profile: 'turbo' is not defined under profiles; allowed values: full, quick, smoke" in proc.stderr
    proc = subprocess.run(["snakemake", "-n", "--cores", "1", "--config", "train=3"], cwd=repo, env=env,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "--config may only set profile" in proc.stderr


# --- DVC -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dvc_study(tmp_path_factory, mirror):
    """The smoke study under `dvc repro` on DVC_VARIANTS: DVC runs one stage at a time, so the whole
    study (34 runs, ~76 processes) took 9 minutes of CI alone; these six cover every data set, a
    subset, a claim of each kind of data and the filtering ablation (Snakemake runs them all)."""
    repo = copy_repo(tmp_path_factory.mktemp("dvc-study"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(keep_variants(params, DVC_VARIANTS), sort_keys=False))
    env = env_for(mirror)
    sh(["cnnbench", "dvc-yaml"], repo, env)  # its tuning stages list these variants
    subprocess.run(["git", "commit", "-qam", "the DVC study's variants"], cwd=repo, check=True, env=env)
    # every cnnbench process logs the modules it imported (test_dvc_stage_deps_hold_every_module_...)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent / "importlog"), env.get("PYTHONPATH", "")])
    env["CNNBENCH_IMPORT_LOG"] = str(repo / "imports.jsonl")
    t0 = time.perf_counter()
    sh(["dvc", "repro"], repo, env, timeout=2400)  # one stage at a time: about 76 processes in a row
    print(f"\nsmoke study under dvc repro: {time.perf_counter() - t0:.1f} s wall")
    return repo, env


def test_dvc_study_completes(dvc_study):
    repo, _ = dvc_study
    assert_study_complete(repo)
    assert (repo / "dvc.lock").is_file()


def test_dvc_second_run_does_nothing(dvc_study):
    repo, env = dvc_study
    status = sh(["dvc", "status", "--json"], repo, env)
    assert json.loads(status.stdout) == {}
    out = sh(["dvc", "repro"], repo, env)
    assert "Running stage" not in out.stdout


def test_dvc_exp_show_lists_params_and_accuracy(dvc_study):
    repo, env = dvc_study
    out = sh(["dvc", "exp", "show", "--csv"], repo, env)
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    header = rows[0].keys()
    workspace = next(r for r in rows if r["Experiment"] == "" and r["rev"] == "workspace")
    cfg = study_of(repo)
    for v, recipe, seed in cfg.runs:
        col = f"results/runs/{v}/{recipe}/seed{seed}/metrics.json:test_top1"
        assert col in header, f"{col} not in dvc exp show"
        assert 0.0 <= float(workspace[col]) <= 1.0
    for v in cfg.variants:
        ds, name = v.split("-", 1)
        # dvc prefixes a column with its file only where the name is ambiguous
        assert {f"variants.{ds}.{name}.model", f"params.yaml:variants.{ds}.{name}.model"} & set(header)
    profile_col = "profile" if "profile" in header else "params.yaml:profile"
    assert workspace[profile_col] == "smoke"
    assert workspace.get("train.optimizer.lr", workspace.get("params.yaml:train.optimizer.lr")) == "0.01"


def test_dvc_stage_deps_hold_every_module_its_command_imported(dvc_study):
    """Every cnnbench process of the study logged the cnnbench modules it had imported (see
    importlog/sitecustomize.py); each must be a dep of the stage that ran it."""
    repo, _ = dvc_study
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]

    def deps_of(command: str) -> set[str]:
        name = command.split()[3]  # cnnbench --profile smoke <stage> ...
        stage = stages.get(name) or stages.get(f"{name}-{command.split('--data data/prepared/')[-1].split()[0]}")
        return set((stage.get("do") or stage)["deps"])

    records = [json.loads(line) for line in (repo / "imports.jsonl").read_text().splitlines()]
    assert {r["argv"][3] for r in records} == {"download", "preprocess", "specs", "tune", "select", "train", "evaluate",
                                               "aggregate", "plot", "report"}  # cnnbench --profile smoke <stage> ...
    for r in records:
        command = " ".join(r["argv"])
        missing = {m for m in r["modules"] if m.startswith("src/cnnbench/")} - deps_of(command)
        assert not missing, f"{command} imported {sorted(missing)}, which its stage does not list as deps"


def test_dvc_module_change_makes_the_stages_that_import_it_stale(dvc_study):
    repo, env = dvc_study
    engine = repo / "src/cnnbench/engine.py"
    original = engine.read_text()
    engine.write_text(original + "\n# an edit\n")
    try:
        stale = set(json.loads(sh(["dvc", "status", "--json"], repo, env).stdout))
    finally:
        engine.write_text(original)
    cfg = study_of(repo)
    expected = {stage(kind, v, r, s) for v, r, s in cfg.runs for kind in ("train", "evaluate")}
    expected |= {tune_stage(v, point, r, s) for v, r, point, s in cfg.trials}
    assert len(expected) == 2 * len(DVC_VARIANTS) * 3 + len(DVC_VARIANTS) * 2  # the six smoke tunes are these
    assert stale == expected  # not download, preprocess, specs, select, ...


def test_dvc_new_seed_makes_only_its_runs_stale(dvc_study):
    """The seed-1 stages exist once the top-level seeds hold 1, but their run files come from the
    `specs` stage: run only that (it trains nothing), then ask `dvc status` which stages are stale."""
    repo, env = dvc_study
    assert json.loads(sh(["dvc", "status", "--json"], repo, env).stdout) == {}
    spec_dir = repo / "results/specs/runs"
    seed0_specs = {p: p.read_text() for p in spec_dir.rglob("seed0.json")}
    try:
        with params_edited(repo, seeds_0_and_1_for_dvc):
            cfg = study_of(repo)
            out = sh(["dvc", "repro", "specs"], repo, env)
            assert ran_stages(out.stdout) == ["specs"], out.stdout
            seed1_specs = sorted(spec_dir.rglob("seed1.json"))
            seed0_specs_then = {p: p.read_text() for p in spec_dir.rglob("seed0.json")}
            stale = json.loads(sh(["dvc", "status", "--json"], repo, env).stdout)
    finally:
        # params.yaml is back as committed: rewrite the run files for it, so the stages after this
        # test find the pipeline up to date again (asserted below)
        sh(["dvc", "repro", "specs"], repo, env)
    assert cfg.seeds == [0, 1]
    new, old = set(), set()
    for variant, recipe, seed in cfg.runs:
        (new if seed == 1 else old).update(stage(kind, variant, recipe, seed) for kind in ("train", "evaluate"))
    assert len(new) == len(old) == 6 * len(DVC_VARIANTS) and len(seed1_specs) == 3 * len(DVC_VARIANTS)
    assert seed0_specs_then == seed0_specs  # the specs stage left the seed-0 run files as they were
    assert not old & set(stale), sorted(old & set(stale))  # every seed-0 train and evaluate is up to date
    # ... and only the seed-1 runs and the stages whose params hold the seeds are not: `dvc status`
    # lists a stage whose own inputs changed, so plot (which reads the summary) follows aggregate
    assert set(stale) == new | {"aggregate", "report"}, sorted(stale)
    assert json.loads(sh(["dvc", "status", "--json"], repo, env).stdout) == {}
    assert not list(spec_dir.rglob("seed1.json"))


def test_dvc_report_only_edits_retrain_nothing(dvc_study):
    repo, env = dvc_study
    with params_edited(repo, edit_lab_report, edit_descriptions):
        out = sh(["dvc", "repro"], repo, env)
    # the specs stage reruns (its params changed) and rewrites no run's file; only what shows the edits follows
    assert ran_stages(out.stdout) == ["aggregate", "plot", "report", "specs"], out.stdout
    # (the params are back as committed: specs, aggregate, plot and report are stale again, and the
    # next test's repro, which reruns them anyway, brings them back)


def _snakemake_record(repo: Path, output: str) -> dict:
    """Snakemake's own record of the job that made ``output`` (its file persistence backend)."""
    name = base64.urlsafe_b64encode(output.encode()).decode()
    return json.loads((repo / ".snakemake" / "metadata" / name).read_text())


def test_both_drivers_ran_the_same_command_with_the_same_run_hash(snakemake_study, dvc_study):
    (snake, _), (dvc, _) = snakemake_study, dvc_study
    lock = yaml.safe_load((dvc / "dvc.lock").read_text())["stages"]
    cfg = study_of(dvc)
    for variant, recipe, seed in cfg.runs:
        run = f"results/runs/{variant}/{recipe}/seed{seed}"
        # a tuned run's hash holds the values its selection chose: both drivers chose the same
        run_hash = json.loads((dvc / run / "train.json").read_text())["settings_hash"]
        if recipe not in cfg.tuned_recipes:
            spec = json.loads((dvc / "results/specs/runs" / variant / recipe / f"seed{seed}.json").read_text())
            assert spec["hash"] == run_hash
        for kind, output in (("train", "model.pt"), ("evaluate", "metrics.json")):
            _same_command_and_hash(_snakemake_record(snake, f"{run}/{output}"), lock[stage(kind, variant, recipe, seed)],
                                   run_hash)
        assert json.loads((snake / run / "train.json").read_text())["settings_hash"] == run_hash
    for variant, recipe, point, seed in cfg.trials:
        trial = f"results/tuning/{variant}/{recipe}/{point}/seed{seed}/trial.json"
        trial_hash = json.loads((dvc / trial).read_text())["settings_hash"]
        _same_command_and_hash(_snakemake_record(snake, trial), lock[tune_stage(variant, point, recipe, seed)],
                               trial_hash)
        assert json.loads((snake / trial).read_text())["val_acc"] == json.loads((dvc / trial).read_text())["val_acc"]
    assert len(cfg.runs) == 3 * len(DVC_VARIANTS)  # the DVC study's runs, each also in Snakemake's


def _same_command_and_hash(record: dict, lock_stage: dict, settings_hash: str) -> None:
    snake_cmd = re.sub(r"\s*>\s*logs/\S+ 2>&1\s*$", "", record["shellcmd"]).split()
    assert snake_cmd == lock_stage["cmd"].split()
    assert settings_hash in [p.strip("'") for p in record["params"]]  # the rule's params (as reprs): the hash


def test_dvc_one_variant_change_reruns_exactly_its_stages(dvc_study):
    repo, env = dvc_study
    change_one_lr(repo)
    out = sh(["dvc", "repro"], repo, env)
    name = CHANGED_VARIANT.split("-", 1)[1]
    stages = [f"{kind}-cifar10@{name}-{recipe}-0" for kind in ("train", "evaluate") for recipe in ("lab", "fast")]
    assert ran_stages(out.stdout) == sorted([*stages, "specs", "aggregate", "plot", "report"]), out.stdout


def test_dvc_plots_show_renders_every_run(dvc_study, tmp_path):
    repo, env = dvc_study
    out = sh(["dvc", "plots", "show", "--json"], repo, env)
    text = out.stdout
    for v, recipe, seed in study_of(repo).runs:
        assert f"results/runs/{v}/{recipe}/seed{seed}/history.csv" in text
        assert f"results/runs/{v}/{recipe}/seed{seed}/predictions.csv" in text


def test_dvc_new_grid_point_reruns_its_trials_and_only_the_runs_whose_choice_changed(dvc_study, tmp_path):
    """On a copy of the finished study: `cnnbench exp-run`'s dvc.yaml for the wider grid, then dvc repro runs the
    new point's trials, the selections, and only the tuned runs whose chosen value changed."""
    study, env = dvc_study
    repo = tmp_path / "study"
    shutil.copytree(study, repo, symlinks=True)
    subprocess.run(["git", "checkout", "-q", "--", "params.yaml"], cwd=repo, check=True)  # undo the tests' edits
    sh(["dvc", "repro"], repo, env)  # ... and bring the copy back to the committed study
    cfg = study_of(repo)
    before = selections(repo, cfg)
    with params_edited(repo, add_grid_point):
        sh(["cnnbench", "dvc-yaml"], repo, env)
        out = sh(["dvc", "repro"], repo, env, timeout=1200)
        cfg = study_of(repo)
        after = selections(repo, cfg)
        assert json.loads(sh(["dvc", "status", "--json"], repo, env).stdout) == {}
    changed = [v for (v, _), sel in after.items() if sel["chosen"] != before[(v, "tuned")]["chosen"]]
    retrained = [stage(kind, v, "tuned", 0) for v in changed for kind in ("train", "evaluate")]
    selects = [f"select@{i}" for i in range(len(after))]
    assert ran_stages(out.stdout) == sorted([*(tune_stage(v, "lr0.1") for v in cfg.tuning.variants), *selects, *retrained,
                                             "specs", "aggregate", "plot", "report"]), out.stdout
    print(f"\nnew grid point under DVC: {len(changed)} of {len(after)} choices changed: {changed}")
