"""scripts/device_check.sh: end to end in its CPU mode, failing loudly, and the pieces its
CUDA mode relies on (run comparison with a tolerance, analysis, extrapolation)."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from device_checks import analysis, common
from utils.distill import METHODS

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "device_check.sh"

spec = importlib.util.spec_from_file_location("device_check", REPO / "scripts" / "device_check.py")
dc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dc)


def run_check(out: Path, *flags: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    env.pop("FT_CACHE_DIR", None)  # the check's own cache, under OUT/tmp
    return subprocess.run(["bash", str(SCRIPT), str(out), *flags], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def load(out: Path) -> dict:
    return json.loads((out / "device_check.json").read_text())


def by_name(doc: dict) -> dict:
    return {r["name"]: r for r in doc["checks"]}


@pytest.mark.slow
def test_cpu_quick_runs_every_check_end_to_end(tmp_path):
    out = tmp_path / "out"
    proc = run_check(out, "--device", "cpu", "--quick", "--data", "synthetic")
    assert proc.returncode == 0, proc.stdout[-4000:]
    doc = load(out)
    checks = by_name(doc)
    expected = {"environment", "kill-resume", "distributed", "benchmark", "ft-timing", "ft-timing-fast",
                "ft-timing-graph"}
    for group in ("default", "fast", "graph"):
        expected |= {f"{group}/teacher", f"{group}/paraphraser"} | {f"{group}/student-{m}" for m in METHODS
                                                                    if not (group == "graph" and m == "ktan")}
    assert set(checks) == expected
    assert doc["ok"] is True and doc["finished"] is True and doc["failures"] == []
    # the one skip is the explicit one, and it says why
    assert doc["skipped"] == {"distributed": checks["distributed"]["reason"]}
    assert checks["distributed"]["reason"].startswith("skipped: CPU mode")
    for name, rec in checks.items():
        if name != "distributed":
            assert rec["status"] == "ok" and rec["ok"] is True, rec
    for name in expected - {"environment", "distributed", "benchmark", "kill-resume"}:
        assert checks[name].get("losses_finite") is True, name
    assert checks["environment"]["torch"] == torch.__version__
    assert doc["data"]["source"] == "synthetic"
    assert checks["fast/student-ft"]["command"].endswith("--channels-last --fold-bn")
    kill = checks["kill-resume"]
    assert kill["steps"]["killed"]["rc"] == -9 and kill["resumed_from_iter"] >= 2
    assert kill["comparison"]["mode"] == "exact" and kill["comparison"]["exact"] is True
    assert checks["benchmark"]["stages"]["ce"]["img_per_s"]["default"] > 0
    assert (out / "benchmark.json").exists()
    timing = checks["ft-timing"]
    assert timing["full_schedule_time"].startswith("extrapolated from 8 iterations")
    assert timing["full_run"]["run"] is False and timing["extrapolated_full_s"] > 0
    log = (out / "device_check.log").read_text()
    assert log.strip().splitlines()[-1].split("] ", 1)[1] == doc["summary"]
    assert "--cuda-graph" in checks["ft-timing-graph"]["command"]
    assert doc["summary"].startswith("device_check: OK, 35 checks passed; skipped: distributed")
    assert not (out / "tmp").exists()
    assert (out / "runs" / "default__student-ktan" / "final.json").exists()


@pytest.mark.slow
def test_a_failing_check_is_loud_and_the_others_still_run(tmp_path):
    out = tmp_path / "out"
    proc = run_check(out, "--device", "cpu", "--quick", "--only", "default", "--methods", "ce",
                     "--inject-failure", "default/teacher")
    assert proc.returncode == 1, proc.stdout[-4000:]
    doc = load(out)
    checks = by_name(doc)
    assert set(checks) == {"environment", "default/teacher", "default/paraphraser", "default/student-ce"}
    assert doc["ok"] is False and doc["failures"] == ["default/teacher", "default/paraphraser"]
    teacher = checks["default/teacher"]
    assert teacher["ok"] is False and teacher["status"] == "failed"
    assert "exit 2" in teacher["reason"] and common.INJECTED in teacher["error_tail"]
    assert checks["default/paraphraser"]["reason"] == "not run: needs default/teacher, which failed"
    assert checks["default/student-ce"]["ok"] is True  # the run that needs no teacher still ran
    last = proc.stdout.strip().splitlines()[-1]
    assert "device_check: FAILED 2 of 4 checks: default/teacher (exit 2" in last
    assert "not run (needs default/teacher, which failed): default/paraphraser; 2 passed" in last


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure without a GPU")
def test_device_cuda_without_a_gpu_fails_every_check(tmp_path):
    out = tmp_path / "out"
    proc = run_check(out, "--device", "cuda", "--methods", "ce")
    assert proc.returncode == 1
    doc = load(out)
    checks = by_name(doc)
    assert "torch.cuda.is_available() is False" in checks["environment"]["reason"]
    assert all(not r["ok"] for r in doc["checks"]), [r for r in doc["checks"] if r["ok"]]
    assert checks["benchmark"]["reason"] == "not run: the environment check failed"
    assert doc["skipped"] == {}  # nothing passes as a skip, the distributed check included


def test_usage_error_without_out():
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage:" in proc.stderr


# ----------------------------------------------------------------------------- pure pieces

def write_run(folder: Path, lines: list[dict], wall_step: float = 1.0) -> Path:
    folder.mkdir(parents=True)
    with open(folder / "metrics.jsonl", "w") as f:
        for i, line in enumerate(lines):
            f.write(json.dumps({**line, "wall_time_s": wall_step * (i + 1)}) + "\n")
    last = lines[-1]
    (folder / "final.json").write_text(json.dumps({
        "test_error_last": last["test_error"], "test_error_best": min(x["test_error"] for x in lines),
        "iters": last["iter"], "wall_time_s": wall_step * len(lines), "last": {**last, "wall_time_s": 0}}))
    return folder


def curve(errors, losses):
    return [{"iter": 10 * (i + 1), "test_error": e, "loss_ce": c, "lr": 0.1} for i, (e, c) in
            enumerate(zip(errors, losses))]


def test_compare_runs_exact_and_within_tolerance(tmp_path):
    ref = write_run(tmp_path / "ref", curve([80, 60, 40], [2.0, 1.5, 1.0]))
    same = write_run(tmp_path / "same", curve([80, 60, 40], [2.0, 1.5, 1.0]), wall_step=2.0)
    off = write_run(tmp_path / "off", curve([80, 60, 40.5], [2.0, 1.5, 1.0]))
    # deterministic device (no repeat run): exact, wall times aside
    assert analysis.compare_runs(ref, same, None)["ok"] is True
    result = analysis.compare_runs(ref, off, None)
    assert result["ok"] is False and result["differences"]["test_error"] == 0.5
    # a repeat equal to the reference: the device is deterministic, exact is required
    assert analysis.compare_runs(ref, off, same)["ok"] is False
    # a repeat that differs: tolerance max(3 x run-to-run, floor)
    noisy = write_run(tmp_path / "noisy", curve([80, 61, 42], [2.0, 1.52, 1.0]))
    result = analysis.compare_runs(ref, off, noisy)
    assert result["mode"] == "tolerance" and result["ok"] is True
    assert result["allowed"]["test_error"] == 6.0
    far = write_run(tmp_path / "far", curve([80, 60, 49], [2.0, 1.5, 1.0]))
    assert analysis.compare_runs(ref, far, noisy)["ok"] is False
    short = write_run(tmp_path / "short", curve([80, 60], [2.0, 1.5]))
    assert analysis.compare_runs(ref, short, None)["mode"] == "structure"


def test_analyse_run_flags_nan_and_an_error_that_does_not_fall(tmp_path):
    good = write_run(tmp_path / "good", curve([80, 60, 40], [2.0, 1.5, 1.0]))
    info, problems = analysis.analyse_run(good, batch_size=128, require_fall=True)
    assert problems == [] and info["fell"] and info["steady_img_per_s"] == pytest.approx(128 / 0.1)
    flat = write_run(tmp_path / "flat", curve([80, 85, 80], [2.0, 1.5, 1.0]))
    assert "did not fall" in analysis.analyse_run(flat, 128, require_fall=True)[1][0]
    assert analysis.analyse_run(flat, 128, require_fall=False)[1] == []
    nan = write_run(tmp_path / "nan", curve([80, 60, 40], [2.0, math.nan, 1.0]))
    assert "non-finite values logged: loss_ce" in analysis.analyse_run(nan, 128, require_fall=False)[1]
    assert analysis.analyse_run(tmp_path / "missing", 128, False)[1] == ["no final.json"]


def test_extrapolation_adds_the_remaining_iterations_at_the_steady_rate():
    assert analysis.extrapolate(30.0, 3000, 0.01) == pytest.approx(30.0 + 61_000 * 0.01)
    lines = [{"iter": 500, "wall_time_s": 10.0}, {"iter": 3000, "wall_time_s": 35.0}]
    assert analysis.steady_seconds_per_iter(lines) == pytest.approx(0.01)
    assert analysis.steady_seconds_per_iter(lines[:1]) is None


def test_synthetic_folder_is_a_readable_dataset(tmp_path):
    from utils.data import load_data

    root = analysis.make_synthetic_folder(tmp_path / "data", train=3, test=2)
    data = load_data("folder", root)
    assert data.train_x.shape == (30, 3, 32, 32) and data.test_x.shape == (20, 3, 32, 32)
    assert data.num_classes == 10 and data.train_x.dtype == torch.uint8


def test_the_full_schedule_is_the_papers():
    """device_checks/common.py imports nothing of the repository (it drives subprocesses), so
    it states the paper's 64,000 iterations itself: the same number as the training scripts'
    default and the report's label."""
    from utils.cli import PAPER_ITERS

    import paper

    assert common.FULL_ITERS == PAPER_ITERS == paper.PAPER_ITERS[0]


def test_a_graphed_stretch_must_learn_and_follow_the_eager_one():
    """A graph that stopped updating the weights finishes with finite numbers: the check
    catches it by its flat loss and by its distance from the eager stretch."""
    eager = [{"iter": i, "loss_ce": c, "loss_ft": 0.1} for i, c in ((500, 2.0), (1000, 1.5), (1500, 1.2))]
    follows = [{"iter": i, "loss_ce": c, "loss_ft": 0.1} for i, c in ((500, 2.1), (1000, 1.4), (1500, 1.25))]
    frozen = [{"iter": i, "loss_ce": 2.3, "loss_ft": 0.1} for i in (500, 1000, 1500)]
    assert analysis.graph_follows_eager(follows, eager, require_fall=True) == []
    problems = analysis.graph_follows_eager(frozen, eager, require_fall=True)
    assert "did not fall" in problems[0] and "from the eager run's" in problems[1]
    # without the eager stretch (skipped for the budget) the fall alone is checked
    assert analysis.graph_follows_eager(follows, [], require_fall=True) == []
    assert len(analysis.graph_follows_eager(frozen, [], require_fall=True)) == 1


def test_a_check_cut_by_the_budget_is_skipped_not_failed(tmp_path):
    """Only the budget ran out: the record is a skip with its reason, and the summary is OK."""
    args = dc.get_args_parser().parse_args([str(tmp_path / "out"), "--device", "cpu", "--quick"])
    check = dc.Check(args)
    check.out.mkdir(parents=True)
    check.budget_cut("kill-resume", "the resumed run", time.monotonic(), command="x")
    ok, text = check.summary()
    assert ok and check.status("kill-resume") == "skipped"
    assert "skipped: kill-resume (budget: the resumed run was cut" in text
