"""The GPU path's logic, tested on the CPU: host reads in the step loop, the EMA, the compiled
step's shapes, checkpoints across device kinds, per-epoch peak memory, process settings."""

from __future__ import annotations

import io
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnbench import engine as engine_mod
from cnnbench import train as train_mod
from cnnbench.config import load
from cnnbench.engine import Engine, configure_process
from cnnbench.train import Batches, Trainer, WeightEMA, build_trainer, epoch_seconds, train_one_epoch

from test_train import CIFAR_CLASSES, kill_after_first_epoch, make_prepared, run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cfg():
    c = load(REPO / "params.yaml", profile="smoke")
    c.raw["profiles"]["smoke"]["train"].update(train_limit=None, max_batches_per_epoch=None, batch_size=32)
    return c


class _Terminal(io.StringIO):
    def isatty(self) -> bool:  # tqdm draws a live bar only on a terminal
        return True


class _HostReads:
    """Counts the calls that copy a device value to the host (each one waits for a GPU)."""

    def __init__(self, monkeypatch) -> None:
        self.calls = {"item": 0, "tolist": 0}
        for name in self.calls:
            real = getattr(torch.Tensor, name)

            def counting(t, *a, _real=real, _name=name, **k):
                self.calls[_name] += 1
                return _real(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, counting)


def test_a_live_progress_bar_reads_the_device_once_per_50_steps(cfg, tmp_path, monkeypatch):
    """With stderr a terminal (dvc repro, a manual train), the bar's figures cost one host read per
    50 steps, and the divergence flag one per 25 steps as on a GPU: never one per step."""
    cfg.raw["profiles"]["smoke"]["train"]["batch_size"] = 2
    spec = cfg.run("cifar10-resnet18")
    data, _, classes = train_mod.load_training_data(spec, make_prepared(tmp_path, CIFAR_CLASSES), torch.device("cpu"))
    engine = Engine(spec.execution, torch.device("cpu"))
    engine.host_check_every = engine_mod.GPU_HOST_CHECK_EVERY  # look at the flag as a GPU run does
    gen = torch.Generator().manual_seed(0)
    batches = Batches(data, spec.train, engine, gen)
    trainer = build_trainer(spec, len(classes), engine, steps_per_epoch=80)
    terminal = _Terminal()
    monkeypatch.setattr(train_mod.sys, "stderr", terminal)
    reads = _HostReads(monkeypatch)
    stats = train_one_epoch(trainer, batches, spec, 0, 80, torch.Generator().manual_seed(1))
    assert "epoch 1/2:" in terminal.getvalue() and "/80" in terminal.getvalue()  # the bar was live
    assert reads.calls["tolist"] == math.ceil(80 / 50)  # the bar: steps 0 and 50
    # the divergence flag after steps 25, 50, 75 and 80, then the epoch's loss and accuracy once
    assert reads.calls["item"] == math.ceil(80 / 25) + 2
    assert stats["images"] == 160


def test_weight_ema_averages_exactly_as_averaged_model_does():
    """Independent computation: torch's own AveragedModel with the EMA multi-average function."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 3, 8, 8))
    ours = WeightEMA(model, 0.9)
    theirs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(4, 3, 8, 8))  # moves the BN running statistics
        ours.update_parameters(model)
        theirs.update_parameters(model)
    a, b = ours.module.state_dict(), theirs.module.state_dict()
    for key in a:
        if a[key].is_floating_point():
            assert torch.equal(a[key], b[key]), key
    assert int(ours.n_averaged) == int(theirs.n_averaged) == 5
    # A state dict of either loads into the other (checkpoints written before this class resume).
    again = WeightEMA(model, 0.9)
    again.load_state_dict(theirs.state_dict())
    assert again._updates == 5


def test_weight_ema_update_never_reads_a_device_value(monkeypatch):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ema = WeightEMA(model, 0.99)
    reads = _HostReads(monkeypatch)
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda t: pytest.fail("EMA update branched on a tensor"))
    for _ in range(3):
        ema.update_parameters(model)
    assert reads.calls == {"item": 0, "tolist": 0}


class _Recorder(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.shapes = inner, []

    def forward(self, x):
        self.shapes.append(x.shape[0])
        return self.inner(x)


def test_a_compiled_model_only_sees_full_batches():
    """The partial last batch goes through the eager model (same weights): torch.compile never
    meets a second shape and never recompiles for it."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    compiled = _Recorder(model)  # stands in for torch.compile(model): it shares the weights
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    trainer = Trainer(model, compiled, opt, sched, None, nn.CrossEntropyLoss(), Engine.plain(torch.device("cpu")), 8)
    for n in (8, 8, 5):
        trainer.step(torch.randn(n, 3, 2, 2), torch.randint(0, 3, (n,)))
    assert compiled.shapes == [8, 8]


def test_a_checkpoint_of_another_device_kind_is_set_aside_not_a_crash(cfg, tmp_path, monkeypatch):
    """A checkpoint written by a CUDA job (one RNG state per GPU it saw, as torch's
    get_rng_state_all gives) found by a rerun on the CPU: set aside, the run starts afresh."""
    prepared = make_prepared(tmp_path, CIFAR_CLASSES)
    kill_after_first_epoch(cfg, prepared, tmp_path / "run", monkeypatch)
    ckpt_file = tmp_path / "run-ckpt/last.pt"
    ckpt = torch.load(ckpt_file, weights_only=True)
    assert ckpt["device_kind"] == "cpu" and "cuda" not in ckpt["rng"]  # a CPU run saves no CUDA state
    ckpt.update(device_kind="cuda")
    ckpt["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 4  # four GPUs' states, wrong size here
    torch.save(ckpt, ckpt_file)
    summary = run(cfg, prepared, tmp_path / "run")
    assert summary["epochs"] == 2 and (tmp_path / "run/model.pt").exists()
    assert list((tmp_path / "run-ckpt").glob("stale-*.pt"))


def test_cuda_rng_state_is_the_run_devices_own(monkeypatch):
    from cnnbench import checkpoint

    got = {}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: torch.full((8,), 7, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: got.update(state=state, device=device))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all",
                        lambda: pytest.fail("saved every visible GPU's state, not the run device's"))
    gens = torch.Generator(), torch.Generator()
    state = checkpoint._rng_state(*gens, torch.device("cuda:0"))
    assert torch.equal(state["cuda"], torch.full((8,), 7, dtype=torch.uint8))
    checkpoint._set_rng_state(state, *gens, torch.device("cuda:0"))
    assert got["device"] == torch.device("cuda:0") and torch.equal(got["state"], state["cuda"])
    got.clear()
    checkpoint._set_rng_state(state, *gens, torch.device("cpu"))  # a CPU run leaves CUDA's generators alone
    assert not got


def test_deterministic_mode_and_tf32_are_set_both_ways_in_one_process(cfg):
    spec = cfg.run("cifar10-resnet18")  # the smoke profile trains deterministically
    assert spec.execution.deterministic
    try:
        configure_process(spec.execution)
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        torch.backends.cudnn.allow_tf32 = True  # torch's own default
        import dataclasses

        configure_process(dataclasses.replace(spec.execution, deterministic=False))
        assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
        assert torch.backends.cudnn.benchmark
        # fp32 means fp32: no TF32 convolutions or matmuls
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, False


def test_bench_sets_the_process_up_for_the_run_it_times_and_compares_optimizer_steps(cfg, monkeypatch):
    from cnnbench import bench

    seen = []
    monkeypatch.setattr(bench, "configure_process", lambda execution: seen.append(execution.deterministic))
    cfg.raw["profiles"]["smoke"]["train"]["deterministic"] = False
    result = bench.bench_variant(cfg, "cifar10-resnet18", Path("/nonexistent"), batch_size=8, warmup=1, windows=1,
                                 steps=1, workers=0, device=torch.device("cpu"), reference=False,
                                 optimizer_impls=["fused", "default"])
    assert seen == [False]
    # both optimizer steps timed on the same model and batches (what decides Engine.fused_optimizer)
    assert set(result["engine_train_images_per_s_by_optimizer"]) == {"fused", "default"}
    assert "optimizer step: fused" in bench.format_report({"device": "cpu", "torch_version": "x", "variants": [result]})


PEAK_WINDOW = """
import torch
from cnnbench.engine import peak_memory, reset_peak_memory
cpu = torch.device("cpu")
assert reset_peak_memory(cpu)
block = torch.ones(300 * 2**20 // 4)  # 300 MiB, touched
high = peak_memory(cpu)["peak_memory_mb"]
del block
assert reset_peak_memory(cpu)
print(high, peak_memory(cpu)["peak_memory_mb"])
"""


@pytest.mark.skipif(not engine_mod.CLEAR_REFS.exists(), reason="per-epoch peak RSS needs Linux's clear_refs")
def test_peak_memory_is_per_window_not_since_the_start():
    # In a fresh process: a long test session's freed but resident heap would hold the 300 MiB
    # without the resident size (what the CPU peak measures) growing.
    import subprocess

    out = subprocess.run([sys.executable, "-c", PEAK_WINDOW], capture_output=True, text=True, check=True).stdout
    high, low = map(float, out.split())
    assert high - low > 250, (high, low)


def test_epoch_seconds_leave_out_the_first_epoch():
    history = [{"seconds": 30.0}, {"seconds": 10.0}, {"seconds": 12.0}]
    assert epoch_seconds(history) == 11.0
    assert epoch_seconds(history[:1]) == 30.0


def test_sync_counter_watches_only_the_step_loop(monkeypatch):
    """CNNBENCH_SYNC_DEBUG=warn on a CUDA run: torch warns at each synchronising call while the
    mode is 'warn'; the deliberate reads (divergence flag, bar) switch it off around them."""
    modes = []

    def set_mode(mode):
        modes.append(mode)

    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", set_mode)
    monkeypatch.setenv(train_mod.SYNC_DEBUG_ENV, "warn")
    with train_mod.SyncCounter(torch.device("cuda")) as syncs:
        warnings.warn("called a synchronizing CUDA operation", UserWarning)
        with syncs.pause():
            pass
        warnings.warn("something else", UserWarning)
    assert syncs.count == 1
    assert modes == ["warn", "default", "warn", "default"]
    monkeypatch.delenv(train_mod.SYNC_DEBUG_ENV)
    with train_mod.SyncCounter(torch.device("cuda")) as off:
        pass
    assert off.count is None and len(modes) == 4
