"""`cnnbench plan` (the study's time estimate) and the study progress line of the train jobs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cnnbench import plan
from cnnbench.cli import main
from cnnbench.config import load, run_dir
from cnnbench.plan import Job, Rates, RunEstimate, Splits, list_schedule
from cnnbench.progress import progress_line, trained_runs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def smoke(monkeypatch):
    monkeypatch.delenv("CNNBENCH_DATA_MIRROR", raising=False)  # no archive but the ones a test makes
    return load(REPO / "params.yaml", profile="smoke")


# --- the schedule -------------------------------------------------------------------------------------
def test_list_schedule_puts_the_longest_job_first_on_the_slot_that_frees_first():
    # By hand, 2 slots: 8 -> A (0-8), 7 -> B (0-7), 6 -> B (7-13), 5 -> A (8-13), 4 -> A (13-17, the tie
    # goes to the first slot). 17, not the 15 that the sum over the slots would say.
    jobs = [Job(name, s) for name, s in (("e", 4), ("a", 8), ("c", 6), ("b", 7), ("d", 5))]
    done = list_schedule(jobs, 2)
    assert done.end == 17 and done.free == [17, 13]
    assert done.starts == {"a": 0, "b": 0, "c": 7, "d": 8, "e": 13}
    # one long job sets the end however the short ones are spread: 10, not (10 + 3 * 3) / 2
    assert list_schedule([Job("long", 10)] + [Job(f"s{i}", 3) for i in range(3)], 2).end == 10
    assert list_schedule([Job("x", 2), Job("y", 3)], 1).end == 5
    with pytest.raises(ValueError, match="slots must be at least 1"):
        list_schedule([Job("x", 1)], 0)


def test_list_schedule_waits_for_a_job_to_be_ready():
    # "b" cannot start before 3 (its data set's preprocess): the idle slot B takes it at 3, not A at 4
    done = list_schedule([Job("a", 4), Job("b", 2, ready=3)], 2)
    assert done.starts == {"a": 0, "b": 3} and done.end == 5
    # a slot that frees while the longest job is not ready yet takes the longest job that is
    done = list_schedule([Job("long", 9, ready=5), Job("short", 2)], 1)
    assert done.starts == {"short": 0, "long": 5} and done.end == 14
    # slots busy until given times
    done = list_schedule([Job("a", 1)], 2, free=[5.0, 2.0])
    assert done.starts == {"a": 2.0} and done.end == 5.0


# --- one run --------------------------------------------------------------------------------------------
def estimate(run_id="v/lab/seed0", dataset="cifar10", seconds_scale=1.0, checkpoint_s=0.0, **kw) -> RunEstimate:
    rates = Rates(train_images_per_s=100.0 / seconds_scale, eval_images_per_s=400.0 / seconds_scale,
                  first_step_extra_s=1.5, checkpoint_s=checkpoint_s)
    args = dict(run_id=run_id, dataset=dataset, device="cpu", splits=Splits(1000, 200, 500, "by hand"), epochs=3,
                epoch_images=1000, eval_passes=2, rates=rates, startup_s=4.0)
    return RunEstimate(**{**args, **kw})


def test_run_estimate_arithmetic_by_hand():
    r = estimate()
    assert r.epoch_seconds == 10.0            # 1000 images at 100 img/s
    assert r.val_seconds == 1.0               # 200 images x 2 passes (flip TTA) at 400 img/s
    assert r.test_seconds == 2.5              # 500 x 2 / 400
    assert r.train_job_seconds == 4.0 + 1.5 + 3 * (10.0 + 1.0)
    assert r.evaluate_job_seconds == 4.0 + 2.5
    assert r.seconds == 45.0
    d = r.to_dict()
    assert d["seconds"] == 45.0 and d["train_images_per_s"] == 100.0 and d["images_from"] == "by hand"
    # a checkpoint each epoch and the train job's logger: 4 + 2 + 1.5 + 3 x (10 + 1 + 0.5), the evaluate job as before
    r = estimate(checkpoint_s=0.5, logger_s=2.0)
    assert r.train_job_seconds == 42.0 and r.seconds == 48.5


def test_study_seconds_preprocess_then_runs_longest_first_then_the_final_stages(monkeypatch):
    monkeypatch.setattr(plan, "FINAL_STAGES_SECONDS", {"aggregate": (1.0, 0.5), "plot": (0.0, 0.0)})
    runs = [estimate("c/lab/seed0"), estimate("c/fast/seed0", seconds_scale=2.0),
            estimate("b/lab/seed0", dataset="butterflies")]
    # the slow one: 4 + 1.5 + 3 x (20 + 2) for training, 4 + 5 for the test pass
    assert [r.seconds for r in runs] == [45.0, 80.5, 45.0]
    # butterflies must be preprocessed first: start-up 4 + 20 s, on a slot of its own
    pre = [{"dataset": "butterflies", "seconds": 20.0}]
    study = plan.study_seconds(runs, pre, slots=2, preprocess_slots=2, startup_s=4.0)
    # By hand: preprocess on slot A 0-24. At 0 slot B takes the longest ready run, c/fast (0-80.5); at 24
    # slot A takes b/lab (45, ready at 24; the tie with c/lab goes by name) 24-69, then c/lab 69-114.
    # Then aggregate 4 + 1 + 0.5 x 3 = 6.5 and plot 4.
    assert study["preprocess_end_seconds"] == 24.0 and study["runs_end_seconds"] == 114.0
    assert study["final_stages_seconds"] == {"aggregate": 6.5, "plot": 4.0}
    assert study["seconds"] == 114.0 + 10.5
    assert study["serial_seconds"] == 24.0 + 45 + 80.5 + 45 + 10.5


def test_a_tuning_trial_is_a_train_job_without_an_evaluate_job():
    trial = estimate("v/tuned/lr0.1/seed1000", kind="trial", selection="v/tuned")
    assert trial.evaluate_job_seconds == 0.0 and trial.seconds == trial.train_job_seconds == 4.0 + 1.5 + 3 * 11.0
    assert trial.to_dict()["kind"] == "trial" and trial.to_dict()["selection"] == "v/tuned"


def test_study_seconds_trials_first_and_a_tuned_run_waits_for_its_selection(monkeypatch):
    monkeypatch.setattr(plan, "FINAL_STAGES_SECONDS", {"aggregate": (1.0, 0.0)})
    trials = [estimate(f"c/tuned/lr{lr}/seed1000", kind="trial", selection="c/tuned") for lr in (0.05, 0.2)]
    runs = [estimate("c/tuned/seed0", selection="c/tuned"), estimate("c/lab/seed0")]
    assert [t.seconds for t in trials] == [38.5, 38.5] and [r.seconds for r in runs] == [45.0, 45.0]
    study = plan.study_seconds(runs, [], slots=2, preprocess_slots=2, startup_s=4.0, trials=trials)
    # By hand: the trials 0-38.5 on both slots, the selection 38.5-42.5 (a start-up); slot A takes the
    # longest ready run at 38.5, c/lab (c/tuned is not ready), 38.5-83.5; slot B waits for the
    # selection and runs c/tuned 42.5-87.5. Then aggregate 4 + 1.
    assert study["runs_end_seconds"] == 87.5 and study["seconds"] == 92.5
    assert study["trials"] == 2 and study["selections"] == 1
    assert study["tuning_serial_seconds"] == 38.5 * 2 + 4.0
    assert study["serial_seconds"] == 45 * 2 + 38.5 * 2 + 4.0 + 5.0
    # the same study with the chosen values known: both runs at once, 0-45, then aggregate
    assert study["without_tuning_seconds"] == 50.0
    assert "without_tuning_seconds" not in plan.study_seconds(runs, [], slots=2, preprocess_slots=2, startup_s=4.0)


def test_parallel_slots_cpu_cores_and_gpus_with_jobs_per_gpu(smoke):
    assert plan.parallel_slots(smoke, "cpu", cores=2, gpus=0)[0] == 2        # smoke train jobs: 1 cpu
    assert plan.parallel_slots(smoke, "cpu", cores=1, gpus=0) == (1, "1 parallel job on 1 core")
    smoke.raw["resources"]["profiles"]["smoke"]["train"].update(cpus=4, jobs_per_gpu=3)
    assert plan.parallel_slots(smoke, "cpu", cores=2, gpus=0)[0] == 1        # fewer cores than one job asks
    assert plan.parallel_slots(smoke, "cuda", cores=32, gpus=2)[0] == 6      # 2 GPUs x 3 jobs each
    slots, text = plan.parallel_slots(smoke, "cuda", cores=16, gpus=2)       # the cores allow 4
    assert slots == 4 and text == "4 parallel jobs on 2 GPUs (3 per GPU) and 16 cores"


def test_visible_gpus_counts_what_the_jobs_may_claim(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,GPU-2f1e,MIG-7a3b")
    assert plan.visible_gpus() == 3


# --- the data a run sees ---------------------------------------------------------------------------------
def write_manifest(root: Path, dataset: str, size: int, per_class: dict[str, dict[str, int]]) -> None:
    (root / dataset).mkdir(parents=True)
    splits = {s: {"count": sum(c.values()), "per_class": c} for s, c in per_class.items()}
    (root / dataset / "manifest.json").write_text(json.dumps({"splits": splits, "image_size": [size, size]}))


def test_split_sizes_from_the_manifest_without_left_out_classes_and_with_train_limit(smoke, tmp_path):
    noisy = smoke.dataset("butterflies")["noisy_classes"]
    per_class = {"train": {noisy[0]: 30, "ADONIS": 200, "ZEBRA": 150}, "val": {noisy[0]: 5, "ADONIS": 7},
                 "test": {noisy[1]: 4, "ADONIS": 6}}
    write_manifest(tmp_path, "butterflies", 64, per_class)
    filtered = plan.split_sizes(smoke, smoke.run("butterflies-resnet18"), tmp_path)
    assert (filtered.train, filtered.val, filtered.test) == (256, 7, 6)        # 350 train, then train_limit 256
    assert filtered.source == str(tmp_path / "butterflies" / "manifest.json")
    unfiltered = plan.split_sizes(smoke, smoke.run("butterflies-resnet18-unfiltered"), tmp_path)
    assert (unfiltered.val, unfiltered.test) == (12, 10)


def test_split_sizes_of_a_data_set_not_prepared_are_the_official_ones(smoke, tmp_path):
    cifar = plan.split_sizes(smoke, smoke.run("cifar10-resnet18"), tmp_path, tmp_path)
    assert (cifar.train, cifar.val, cifar.test) == (256, 5000, 10000)  # 45,000 after val_fraction 0.1, limit 256
    assert cifar.source == "the official cifar10 split sizes, not prepared here"
    # an archive at hand that is a tenth of the official one (a subset): a tenth of each split
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / smoke.source_settings("cifar10")["filename"]).write_bytes(
        b"\0" * int(plan.kind_sizes(smoke, "cifar10").bytes_per_image * 6000))
    small = plan.split_sizes(smoke, smoke.run("cifar10-resnet18"), tmp_path / "prepared", tmp_path)
    assert (small.val, small.test) == (500, 1000)  # a tenth of 5,000 and 10,000
    assert "the official cifar10 split sizes x 0.100, as " in small.source
    assert "holds about 6,000 images (a guess until it is prepared)" in small.source
    full = load(REPO / "params.yaml", profile="full")
    butterflies = plan.split_sizes(full, full.run("butterflies-resnet18"), tmp_path, tmp_path)
    assert (butterflies.train, butterflies.val, butterflies.test) == (11838, 470, 470)  # 94 of 100 classes
    assert plan.epoch_images(smoke.run("cifar10-resnet18"), 256) == 4 * 64     # max_batches_per_epoch 4
    assert plan.epoch_images(full.run("cifar10-resnet18"), 45000) == 45000


def test_preprocess_estimate_only_for_data_not_prepared_at_the_profile_size(smoke, tmp_path):
    prepared, raw = tmp_path / "prepared", tmp_path / "raw"
    write_manifest(prepared, "cifar10", 32, {"train": {"cat": 1}, "val": {"cat": 1}, "test": {"cat": 1}})
    write_manifest(prepared, "butterflies", 96, {"train": {"A": 1}, "val": {"A": 1}, "test": {"A": 1}})
    assert plan.preprocess_estimate(smoke, "cifar10", prepared, raw) is None
    stale = plan.preprocess_estimate(smoke, "butterflies", prepared, raw)   # smoke asks for 64 px
    assert stale["why"] == "prepared at 96 px, the profile asks 64 px"
    assert stale["images"] == 13594 and "official" in stale["how"]
    assert stale["seconds"] == pytest.approx(13594 * plan.kind_sizes(smoke, "butterflies").seconds_per_image)
    (raw / "cifar10").mkdir(parents=True)
    archive = raw / "cifar10" / smoke.source_settings("cifar10")["filename"]
    archive.write_bytes(b"\0" * int(plan.kind_sizes(smoke, "cifar10").bytes_per_image * 1000))
    fresh = plan.preprocess_estimate(smoke, "cifar10", tmp_path / "nothing", raw)
    assert fresh["images"] == 1000 and fresh["why"] == "not prepared" and f"the size of {archive}" in fresh["how"]


def test_preprocess_estimate_reads_the_archive_download_will_copy_from_the_data_mirror(smoke, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "butterflies").mkdir(parents=True)
    archive = mirror / "butterflies" / smoke.source_settings("butterflies")["filename"]
    archive.write_bytes(b"\0" * int(plan.kind_sizes(smoke, "butterflies").bytes_per_image * 3000))
    monkeypatch.setenv("CNNBENCH_DATA_MIRROR", str(mirror))
    estimate = plan.preprocess_estimate(smoke, "butterflies", tmp_path / "prepared", tmp_path / "raw")
    assert estimate["images"] == 3000 and f"the size of {archive}" in estimate["how"]


# --- the command -------------------------------------------------------------------------------------------
def test_plan_on_the_smoke_profile_times_each_shape_once_and_prints_the_study_total(smoke, tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["--params", str(REPO / "params.yaml"), "--profile", "smoke", "-q", "plan", "--steps", "1",
                 "--cores", "2", "--data", str(tmp_path / "none"), "--raw", str(tmp_path / "none"),
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert len(result["runs"]) == 40 and len(result["trials"]) == 12 and result["slots"] == 2
    # recipes, seeds, tuned values, epochs and dropout change no cost: 10 shapes at 32 px (CIFAR-10, cifar5) and 4
    # butterfly ones for 40 runs and 12 tuning trials
    assert len(result["timing"]["shapes"]) == 14
    assert result["startup_seconds"] > 0.5
    for r in result["runs"]:
        assert r["train_images_per_s"] > 0 and r["eval_images_per_s"] > 0
        assert r["seconds"] > 2 * result["startup_seconds"]
        assert r["eval_passes"] == (1 if "/lab/" in r["run"] else 2)   # flip TTA in the fast recipe (tuned's base)
    assert {p["dataset"] for p in result["preprocess"]} == {"cifar10", "butterflies", "cifar5"}  # nothing prepared
    study = result["study"]
    assert study["seconds"] < study["serial_seconds"]
    assert study["seconds"] >= max(r["seconds"] for r in result["runs"])
    last = text.strip().splitlines()[-1]
    assert last.startswith("study (profile smoke, 40 runs, 2 parallel jobs on 2 cores): about ")
    assert " + tuning (12 trials) about " in last
    assert "tuning: 12 tuning trials: 6 variants x 2 grid points x 1 seed, 1 epoch each" in text
    assert "cifar10-resnet18/tuned/lr0.05/seed1000" in text
    assert "cifar10: image counts from the official cifar10 split sizes, not prepared here (its first run: 256 " \
           "training images per epoch, 5,000 validation, 10,000 test)" in text
    assert "cifar10-resnet18/lab/seed0" in text and "est. min" in text


def fixed_timing(monkeypatch):
    """Every shape at 100 img/s training, 400 img/s evaluation, no extra first step, checkpoint or logger."""
    rates = Rates(train_images_per_s=100.0, eval_images_per_s=400.0, first_step_extra_s=0.0, checkpoint_s=0.0)
    monkeypatch.setattr(plan, "time_shape", lambda *a, **k: rates)
    monkeypatch.setattr(plan, "time_logger", lambda epochs: 0.0)


def quick_plan(cfg, tmp_path) -> dict:
    return plan.make_plan(cfg, prepared_root=tmp_path / "none", raw_root=tmp_path / "none", cores=2, device="cpu",
                          startup_s=0.0)


def test_plan_counts_tuning_trials_apart_in_proportion_to_trials_x_epochs(smoke, tmp_path, monkeypatch):
    from cnnbench.config import with_overrides

    fixed_timing(monkeypatch)
    result = quick_plan(smoke, tmp_path)
    assert len(result["runs"]) == 40 and len(result["trials"]) == 12        # 6 variants x 2 points x 1 seed
    assert {t["kind"] for t in result["trials"]} == {"trial"} and {r["kind"] for r in result["runs"]} == {"run"}
    assert {t["epochs"] for t in result["trials"]} == {1}                   # smoke's budget: 1 epoch
    tuning = result["tuning"]
    assert tuning["trials"] == 12 and tuning["epochs"] == 12
    assert tuning["text"].startswith("12 tuning trials: 6 variants x 2 grid points x 1 seed, 1 epoch each")
    assert result["study"]["seconds"] > result["study"]["without_tuning_seconds"]
    twice = quick_plan(with_overrides(smoke, ["profiles.smoke.tuning.budget.epochs=2"]), tmp_path)["tuning"]
    assert twice["epochs"] == 24 and twice["seconds"] == pytest.approx(2 * tuning["seconds"])
    one = quick_plan(with_overrides(smoke, ["profiles.smoke.tuning.variants=[cifar10-resnet18]"]), tmp_path)
    assert len(one["runs"]) == 35 and one["tuning"]["trials"] == 2          # one tuned variant: 2 trials, 1 run
    # by hand: 2 trials x 1 epoch x (256 training images at 100 img/s + 5,000 validation x 2 passes at 400 img/s)
    assert one["tuning"]["seconds"] == pytest.approx(2 * 1 * (256 / 100 + 5000 * 2 / 400))
    assert quick_plan(with_overrides(smoke, ["recipes_in_study=[lab, fast]"]), tmp_path)["tuning"] is None


def test_plan_times_a_tuned_run_with_the_chosen_values_once_selected(smoke, tmp_path):
    import dataclasses

    cfg = dataclasses.replace(smoke, tuning_root=tmp_path)
    assert plan.run_spec(cfg, "cifar10-resnet18", "tuned").train.optimizer.lr == 0.1   # fast's, before tuning
    write_selection(tmp_path, "cifar10-resnet18", {"lr": 0.2})
    assert plan.run_spec(cfg, "cifar10-resnet18", "tuned").train.optimizer.lr == 0.2


def write_selection(root: Path, variant: str, chosen: dict, recipe: str = "tuned") -> None:
    """What `cnnbench select` leaves for the tuned runs: chosen.json beside selection.json."""
    from cnnbench.tuning import chosen_path, selection_path

    path = selection_path(root, variant, recipe)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"variant": variant, "recipe": recipe, "chosen": chosen}))
    chosen_path(root, variant, recipe).write_text(json.dumps(chosen))


# --- cnnbench validate ------------------------------------------------------------------------------------------
def validate(capsys, *args, profile="smoke") -> str:
    assert main(["--params", str(REPO / "params.yaml"), "--profile", profile, "-q", "validate", *args]) == 0
    return capsys.readouterr().out


def test_validate_counts_the_tuning_trials_apart_and_shows_the_grid_before_tuning(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no results/tuning here
    out = validate(capsys, profile="quick")
    assert "  41 runs: 17 variant(s) x recipes lab, fast, tuned (tuned: its 7 tuned variants only) x seeds 0" in out
    assert "  21 tuning trials: 7 variants x 3 grid points x 1 seed, 3 epochs each (budget: 0.5 of each run's " \
           "epochs)\n" in out
    line = next(x for x in out.splitlines() if "cifar10-resnet18 / tuned:" in x)
    assert "lr chosen by tuning from [0.05, 0.1, 0.2], cpu fp32" in line and line.endswith("hash after tuning")
    assert "cifar5-resnext18_3stage / tuned" not in out                    # not tuned under quick: no such run
    one = json.loads(validate(capsys, "--variant", "cifar10-resnet18", "--recipe", "tuned", profile="quick"))
    assert one["hash"] is None and one["tuning"]["chosen"] is None and one["tuning"]["grid"] == {"lr": [0.05, 0.1, 0.2]}
    assert one["tuning"]["selection"] == "results/tuning/cifar10-resnet18/tuned/selection.json"


def test_validate_shows_the_chosen_values_and_the_run_hash_once_selected(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_selection(Path("results/tuning"), "cifar10-resnet18", {"lr": 0.2})
    cfg = load(REPO / "params.yaml", profile="smoke")
    expected = cfg.run("cifar10-resnet18", "tuned", chosen={"lr": 0.2}).hash
    out = validate(capsys)
    line = next(x for x in out.splitlines() if "cifar10-resnet18 / tuned:" in x)
    assert "lr 0.2 chosen by tuning from [0.05, 0.2]" in line and line.endswith(f"hash {expected[:12]}")
    assert "  12 tuning trials: 6 variants x 2 grid points x 1 seed, 1 epoch each" in out
    one = json.loads(validate(capsys, "--variant", "cifar10-resnet18", "--recipe", "tuned"))
    assert one["hash"] == expected != cfg.run("cifar10-resnet18", "tuned", chosen={}).hash
    assert one["tuning"]["chosen"] == {"lr": 0.2} and one["spec"]["train"]["optimizer"]["lr"] == 0.2


def test_validate_a_variant_tuning_leaves_out_under_the_tuned_recipe_is_one_error(capsys):
    assert main(["--params", str(REPO / "params.yaml"), "--profile", "quick", "validate", "--variant",
                 "cifar5-resnext18_3stage", "--recipe", "tuned"]) == 2
    err = capsys.readouterr().err
    assert "--variant cifar5-resnext18_3stage: not tuned (tuning.variants)" in err and "cifar10-resnet18" in err


def test_plan_notes_say_how_the_estimate_was_made():
    assert plan.plan_notes(None, 0.1, "cpu", 1) == []
    busy, = plan.plan_notes(None, 1.7, "cpu", 1)
    assert busy.startswith("load average 1.7 before the timing: other programs are using the CPU")
    device, shared = plan.plan_notes("timed on this CPU instead", None, "cuda", 3)
    assert device == "timed on this CPU instead"
    assert shared.startswith("3 jobs share each GPU (resources.train.jobs_per_gpu)") and "lower bound" in shared


def test_plan_refuses_zero_steps(capsys):
    with pytest.raises(SystemExit):
        main(["--params", str(REPO / "params.yaml"), "plan", "--steps", "0"])
    assert "--steps: '0': must be at least 1" in capsys.readouterr().err


# --- study progress --------------------------------------------------------------------------------------------
def test_progress_counts_the_runs_with_a_model(smoke, tmp_path):
    runs = tmp_path / "runs"
    done = smoke.runs[:3]
    for run in done:
        run_dir(runs, *run).mkdir(parents=True)
        (run_dir(runs, *run) / "model.pt").write_bytes(b"x")
    (run_dir(runs, *smoke.runs[3]) ).mkdir(parents=True)  # started, not finished: history but no model
    (run_dir(runs, *smoke.runs[3]) / "history.csv").write_text("epoch\n")
    (run_dir(runs, "cifar10-gone", "lab", 0)).mkdir(parents=True)  # not a run of the study
    (run_dir(runs, "cifar10-gone", "lab", 0) / "model.pt").write_bytes(b"x")
    assert trained_runs(smoke, runs) == 3
    assert progress_line(smoke, runs) == "study progress: 3 of 40 runs of profile smoke trained"
    # the run about to be (re)trained is not counted
    assert progress_line(smoke, runs, current=done[0]) == "study progress: 2 of 40 runs of profile smoke trained"


def test_train_job_logs_the_study_progress_first(monkeypatch, tmp_path, caplog):
    import cnnbench.train

    monkeypatch.chdir(tmp_path)
    cfg = load(REPO / "params.yaml", profile="smoke")
    for run in cfg.runs[:5]:
        run_dir(Path("results/runs"), *run).mkdir(parents=True)
        (run_dir(Path("results/runs"), *run) / "model.pt").write_bytes(b"x")
    trained = []
    monkeypatch.setattr(cnnbench.train, "train_run", lambda spec, *a, **k: trained.append(spec.run_id))
    with caplog.at_level(logging.INFO, logger="cnnbench"):
        assert main(["--params", str(REPO / "params.yaml"), "--profile", "smoke", "train", "--variant",
                     "butterflies-mobilenet_v2", "--recipe", "fast", "--seed", "0"]) == 0
    assert trained == ["butterflies-mobilenet_v2/fast/seed0"]
    assert "study progress: 5 of 40 runs of profile smoke trained" in caplog.messages
