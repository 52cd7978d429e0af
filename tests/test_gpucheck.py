"""`cnnbench gpu-check` (scripts/gpu-check.sh): the CPU mode end to end, the CUDA mode's refusal
where there is no CUDA, and, on the CPU, the machinery of the checks that need a GPU (the
terminal, the concurrent start, the verdicts against their bars)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnbench import cli, gpucheck
from cnnbench.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
TITLES = {c.key: c.title for c in gpucheck.CHECKS}


def env_with_this_checkout(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


@pytest.fixture
def cpu_ctx(tmp_path: Path) -> gpucheck.Context:
    return gpucheck.make_context("cpu", PARAMS, "smoke", tmp_path / "no-data", tmp_path / "work", tmp_path / "logs",
                                 synthetic=False)


@pytest.mark.timeout(300)
def test_cpu_mode_runs_every_check_a_cpu_can_and_each_passes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    t0 = time.monotonic()
    rc = cli.main(["--params", str(PARAMS), "gpu-check", "--device", "cpu", "--out", str(out),
                   "--data-root", str(tmp_path / "no-data")])
    seconds = time.monotonic() - t0
    printed = capsys.readouterr().out
    assert rc == 0, printed
    report = json.loads((out / "gpu-check.json").read_text())
    rows = {r["key"]: r for r in report["checks"]}
    assert {k: r["verdict"] for k, r in rows.items()} == {
        "a": "needs CUDA", "b": "needs CUDA", "c": "PASS", "d": "PASS", "e": "PASS", "f": "PASS",
        "g": "needs CUDA", "h": "needs CUDA", "total": "needs CUDA"}
    table = (out / "table.md").read_text()
    assert table.strip() == printed.strip()
    for key, title in TITLES.items():
        assert f"| {key}. {title}" in table
    assert "| wall time of the whole check" in table and table.count("synthetic data") >= 2
    # c and e: every tensor of model.pt compared, none differs, the histories are the same
    for key in ("c", "e"):
        f = rows[key]["figures"]
        assert f["tensors"] > 50 and f["tensors_differing"] == 0 and f["history_identical"] and f["epochs"] == 2
    assert rows["e"]["figures"]["checkpoint_epoch"] == 1 and rows["e"]["figures"]["set_aside"] == []
    assert "resuming" in (out / "logs" / "e-resumed.log").read_text()
    # d: the two kernels on the same boxes, each with its own flips
    d = rows["d"]["figures"]
    assert d["max_abs_diff"] <= 1e-4 and d["image_size"] == [224, 224] and d["flipped"] > 0
    # f: two processes each hold a slot of the one (pretend) GPU at the same time
    jobs = rows["f"]["figures"]["jobs"]
    assert [j["device"] for j in jobs] == ["0", "0"] and jobs[0]["pid"] != jobs[1]["pid"]
    assert report["total_seconds"] == pytest.approx(seconds, abs=5)


@pytest.mark.parametrize("venv", [sys.prefix, ""])  # the virtualenv of this python; none: the python on PATH
def test_cuda_mode_where_there_is_no_cuda_stops_with_the_reason(tmp_path: Path, venv: str) -> None:
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this holds on a GPU machine too
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    env = env_with_this_checkout(CUDA_VISIBLE_DEVICES="", VENV=venv, PATH=path)
    proc = subprocess.run([str(REPO / "scripts" / "gpu-check.sh"), "--out", str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("cnnbench gpu-check: error: CUDA is not available: ")
    assert "built for CUDA" in lines[0] and "--device cpu" in lines[0]
    assert not (tmp_path / "out").exists()


def test_the_script_says_how_to_get_its_virtualenv(tmp_path: Path) -> None:
    proc = subprocess.run([str(REPO / "scripts" / "gpu-check.sh")], env=dict(os.environ, VENV=str(tmp_path / "none")),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "run `make venv` first" in proc.stderr


def test_a_terminal_makes_tqdm_draw_its_bar(tmp_path: Path) -> None:
    code = ("import sys; from tqdm import tqdm; print('tty', sys.stderr.isatty(), flush=True)\n"
            "for _ in tqdm(range(3), desc='v epoch 1/2', unit='batch', disable=None, file=sys.stderr): pass")
    log_path = tmp_path / "term.log"
    assert gpucheck.run_in_terminal([sys.executable, "-c", code], dict(os.environ), log_path) == 0
    text = log_path.read_bytes()
    assert b"tty True" in text and gpucheck.BAR_DRAWN.search(text)
    # without a terminal tqdm draws nothing, and the check would see that
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert b"tty False" in plain.stdout and not gpucheck.BAR_DRAWN.search(plain.stderr)


@pytest.mark.timeout(180)
def test_training_check_runs_under_a_terminal_and_reads_train_json(cpu_ctx: gpucheck.Context) -> None:
    # On the CPU train.py counts no syncs, so the check cannot pass; everything before the count is real
    outcome = gpucheck.check_train_sync(cpu_ctx)
    f = outcome.figures
    assert outcome.verdict == "FAIL"
    assert "no sync_warnings_in_step_loop: train.py counts them only on CUDA" in outcome.result
    assert f["bar_live"] is True and len(f["epoch_seconds"]) == 2 and f["train_images"] == 100
    asked = (f["precision"], f["memory_format"], f["ema"], f["compiled"])
    assert asked == ("bf16 autocast", "channels_last", 0.999, False)
    assert b"epoch 2/2" in (Path(cpu_ctx.logs) / "a-train.log").read_bytes()


def summary(**changes) -> dict:
    base = {"precision": "bf16 autocast", "memory_format": "channels_last", "ema": 0.999, "compiled": False,
            "train_images": 10_000, "device": "cuda:0 (H100)", gpucheck.SYNC_KEY: 0}
    return {**base, **changes}


@pytest.mark.parametrize("changes, verdict, words", [
    ({}, "PASS", "0 sync warnings"),
    ({gpucheck.SYNC_KEY: 3}, "FAIL", "3 sync warnings"),
    ({gpucheck.SYNC_KEY: None}, "FAIL", "CNNBENCH_SYNC_DEBUG hook is missing"),
    ({"precision": "fp32 (TF32 off)"}, "FAIL", "precision 'fp32 (TF32 off)' (asked for 'bf16 autocast')"),
])
def test_sync_verdict(cpu_ctx, changes, verdict, words) -> None:
    ctx = dataclasses.replace(cpu_ctx, device="cuda")
    settings = gpucheck.train_settings(compile_=False, epochs=2)
    outcome = gpucheck.sync_outcome(summary(**changes), [9.0, 1.0, 1.5], True, settings, ctx)
    assert outcome.verdict == verdict and words in outcome.result + outcome.figure
    assert outcome.figures["first_over_later"] == pytest.approx(9.0 / 1.25)
    assert gpucheck.sync_outcome(summary(), [1.0, 1.0], False, settings, ctx).verdict == "FAIL"  # no live bar


@pytest.mark.timeout(180)
def test_concurrent_jobs_start_timing_together(cpu_ctx: gpucheck.Context) -> None:
    result = gpucheck.run_round(cpu_ctx, 2)
    a, b = result["per_job"]
    assert a["images"] > 0 and b["images"] > 0
    assert result["images_per_s"] == pytest.approx(a["images_per_s"] + b["images_per_s"])
    assert max(a["start"], b["start"]) < min(a["end"], b["end"])  # the timed stretches overlap
    assert abs(a["start"] - b["start"]) < 0.5


def test_sharing_verdict(cpu_ctx) -> None:
    rounds = {1: {"images_per_s": 1000.0}, 2: {"images_per_s": 1600.0}, 4: {"images_per_s": 1900.0}}
    outcome = gpucheck.throughput_outcome(rounds, cpu_ctx)
    assert outcome.verdict == "PASS" and outcome.figure == "2 jobs 1.60x, 4 jobs 1.90x of 1 job"
    rounds[2]["images_per_s"] = 900.0
    assert gpucheck.throughput_outcome(rounds, cpu_ctx).verdict == "FAIL"


def test_claims_fail_when_a_job_gets_no_slot(cpu_ctx) -> None:
    # one GPU and jobs_per_gpu 1: cnnbench.gpus leaves the choice alone and claims nothing
    outcome = gpucheck.check_gpu_claims(cpu_ctx, jobs_per_gpu=1, wait_s=30)
    assert outcome.verdict == "FAIL" and "a job was given no device" in outcome.result
    one = {"device": "0", "pid": 1, "cuda_devices": 1}
    assert gpucheck.claims_outcome([one, {**one, "device": "1"}], ["0"], 2, True).verdict == "FAIL"
    assert gpucheck.claims_outcome([one, {**one, "cuda_devices": 0}], ["0"], 2, True).verdict == "FAIL"
    assert gpucheck.claims_outcome([one, {**one, "pid": 2}], ["0"], 2, True).verdict == "PASS"


def bench_report(seconds_per_50k: float, speedup: float | None) -> dict:
    v = {"variant": gpucheck.BENCH_VARIANT, "batch_size": 128, "data": "synthetic", "engine": {},
         "engine_train_images_per_s": {"median": 50_000 / seconds_per_50k},
         "engine_seconds_per_50k_images": seconds_per_50k}
    if speedup is not None:
        v["speedup"] = speedup
        v["reference_train_images_per_s"] = {"median": v["engine_train_images_per_s"]["median"] / speedup}
    return {"device": "cuda:0 (NVIDIA H200)", "variants": [v]}


@pytest.mark.parametrize("seconds, speedup, verdict", [(2.5, 6.0, "PASS"), (3.5, 6.0, "FAIL"), (2.5, 4.0, "FAIL"),
                                                       (2.5, None, "FAIL")])
def test_bench_verdict_against_the_gpu_targets(seconds, speedup, verdict) -> None:
    outcome = gpucheck.bench_outcome(bench_report(seconds, speedup))
    assert outcome.verdict == verdict and outcome.figures["seconds_per_50k_images"] == seconds


def test_a_check_over_its_budget_is_killed_and_fails(cpu_ctx) -> None:
    t0 = time.monotonic()
    outcome = gpucheck.run_isolated(gpucheck.CHECKS_BY_KEY["c"], cpu_ctx, timeout=0.5)
    assert outcome.verdict == "FAIL" and outcome.result.startswith("killed after 0.5 s, its budget")
    assert time.monotonic() - t0 < 10


def test_only_names_known_checks() -> None:
    assert gpucheck.parse_only("a, c") == ["a", "c"] and gpucheck.parse_only(None) == list("abcdefgh")
    with pytest.raises(ConfigError, match=r"--only 'a,z': the checks are a, b, c, d, e, f, g, h .* not z"):
        gpucheck.parse_only("a,z")
