"""The README's worked example, "compare your own variants on your own images", as a user follows
it: examples/own-images/params.yaml copied over params.yaml, a folder of images in my_images/ (made
here: three classes of synthetic shapes of mixed sizes, modes and formats, two corrupt files), then
Snakemake, and DVC through `cnnbench exp-run` (which writes dvc.yaml for the new data set). Only the
profile differs from the README: smoke, so the six runs (three variants, one of them a timm model,
two seeds) take about two minutes on two cores.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from image_fixtures import make_image_folder
from test_e2e import REPO, copy_repo, env_for, sh

pytestmark = pytest.mark.e2e

EXAMPLE = REPO / "examples" / "own-images" / "params.yaml"
VARIANTS = ["mine-resnet18_small_stem", "mine-mobilenet_v2", "mine-resnet10t"]


def example_repo(dest: Path) -> tuple[Path, dict]:
    """A copy of the repository set up as the README says, on the smoke profile; and what
    make_image_folder wrote."""
    repo = copy_repo(dest)
    params = EXAMPLE.read_text()
    (repo / "params.yaml").write_text(re.sub(r"(?m)^profile: \w+", "profile: smoke", params))
    images = make_image_folder(repo / "my_images", corrupt=2)
    git = ["git", "-c", "user.email=test@cnnbench.invalid", "-c", "user.name=cnnbench tests"]
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "my own study"], cwd=repo, check=True)
    return repo, images


def assert_example_complete(repo: Path, images: dict) -> None:
    for variant in VARIANTS:
        for seed in (0, 1):
            metrics = json.loads((repo / f"results/runs/{variant}/lab/seed{seed}/metrics.json").read_text())
            assert 0.0 <= metrics["test_top1"] <= 1.0
    manifest = json.loads((repo / "data/prepared/mine/manifest.json").read_text())
    assert manifest["classes"] == ["circle", "square", "triangle"]
    excluded = [e["file"] for e in manifest["excluded"]]
    assert len(images["corrupt"]) == 2 and all(any(f.endswith(bad) for f in excluded) for bad in images["corrupt"])
    assert manifest["train_stats"]["images"] == manifest["splits"]["train"]["count"]
    claims = list(csv.DictReader(io.StringIO((repo / "results/summary/claims.csv").read_text())))
    assert [(c["claim"], c["a"], int(c["n_a"])) for c in claims] == [("small-stem-vs-mobilenet", "mine-resnet18_small_stem", 2)]
    html = (repo / "results/report/report.html").read_text()
    for variant in VARIANTS:
        assert variant.split("-", 1)[1] in html
    assert "timm/resnet10t" in html and "The small-stem ResNet-18 beats MobileNetV2 on my images" in html
    # nothing of the lab reports' data sets, but the citation of how ciFAIR reports clean accuracy
    assert "butterfl" not in html.lower() and "CIFAR" not in html.replace("ciFAIR reports CIFAR accuracy", "")


@pytest.fixture(scope="module")
def mirror_env(tmp_path_factory):
    return env_for(tmp_path_factory.mktemp("no-mirror"))  # the example downloads nothing from a mirror


def test_the_worked_example_runs_under_snakemake(tmp_path, mirror_env):
    repo, images = example_repo(tmp_path / "repo")
    t0 = time.perf_counter()
    sh(["snakemake", "--cores", "2"], repo, mirror_env, timeout=1800)
    print(f"\nworked example under snakemake: {time.perf_counter() - t0:.1f} s wall")
    assert_example_complete(repo, images)
    committed = subprocess.run(["git", "show", "HEAD:dvc.yaml"], cwd=repo, capture_output=True, text=True, check=True)
    assert (repo / "dvc.yaml").read_text() == committed.stdout  # Snakemake needs no dvc.yaml edit


def test_the_worked_example_runs_under_dvc(tmp_path, mirror_env):
    repo, images = example_repo(tmp_path / "repo")
    t0 = time.perf_counter()
    sh(["cnnbench", "exp-run"], repo, mirror_env, timeout=2400)
    print(f"\nworked example under cnnbench exp-run (dvc): {time.perf_counter() - t0:.1f} s wall")
    assert_example_complete(repo, images)
    dvc_yaml = (repo / "dvc.yaml").read_text()
    assert "train-mine:" in dvc_yaml and "train-cifar10" not in dvc_yaml
    out = sh(["dvc", "exp", "show", "--csv"], repo, mirror_env)
    header = next(csv.reader(io.StringIO(out.stdout)))
    for variant in VARIANTS:
        assert f"results/runs/{variant}/lab/seed1/metrics.json:test_top1" in header
