"""Every stage and student method trained on the device under test with the default flags,
the fast flags and the captured step, and a run killed with SIGKILL that resumes to the
uninterrupted run's numbers.

In the suite (the CPU) the runs are a few steps on the tiny folder and are judged on finite
numbers, the graphed step following the eager one, and exact resumption.  scripts/gpu_check.sh
runs this file on a lent GPU with FT_TEST_DEVICE=cuda and FT_TEST_DATA=<the CIFAR-10 copy>:
100 iterations of 128 images a run and a ResNet-56 teacher, where each run's error (the
paraphraser's held-out reconstruction loss) must also fall, and the resumed run must equal
the uninterrupted one as closely as two uninterrupted runs equal each other."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import (compare_runs, evaluations_logged, graph_follows_eager, interrupt, metrics, run,
                     run_problems, train_paraphraser, train_student, train_teacher)
from utils.distill import METHODS
from utils.errors import UserError

REPO = Path(__file__).resolve().parent.parent
DEVICE = os.environ.get("FT_TEST_DEVICE", "cpu")
CUDA = DEVICE == "cuda"
if CUDA:
    SIZE = dict(iters=100, eval_every=20, batch_size=128, teacher_arch="resnet56", test_subset=1000,
                kill_iters=200, kill_eval_every=50)
    FAST = ["--amp", "bf16", "--channels-last", "--fold-bn"]
else:
    # bf16 autocast is left out on the CPU: without native bf16 a few steps take most of a minute
    SIZE = dict(iters=4, eval_every=2, batch_size=16, teacher_arch="resnet20", test_subset=None,
                kill_iters=16, kill_eval_every=2)
    FAST = ["--channels-last", "--fold-bn"]
FLAGS = {"default": [], "fast": FAST, "graph": [*FAST, "--cuda-graph"]}
STAGES = ["teacher", "paraphraser", *(f"student-{m}" for m in METHODS)]
# KTAN's discriminator has a second optimizer, which one captured step cannot hold
CASES = [(g, s) for g in FLAGS for s in STAGES if not (g == "graph" and s == "student-ktan")]


class DeviceRuns:
    """The runs of this file, each trained (in this process, through the script's own
    main) the first time it is asked for; students learn from the default teacher and
    paraphraser."""

    def __init__(self, root: Path, data: Path):
        self.root = root
        self.common = ["--dataset", "folder", "--data-root", str(data), "--device", DEVICE, "--progress", "off",
                       "--batch-size", str(SIZE["batch_size"])]
        if SIZE["test_subset"]:
            self.common += ["--test-subset", str(SIZE["test_subset"])]

    def student_argv(self, method: str, iters: int, eval_every: int, out: Path) -> list[str]:
        argv = [*self.common, "--method", method, "--arch", "resnet20", "--iters", str(iters),
                "--eval-every", str(eval_every), "--out", str(out)]
        if METHODS[method].teacher:
            argv += ["--teacher", str(self.get("default", "teacher"))]
        if METHODS[method].paraphraser:
            argv += ["--paraphraser", str(self.get("default", "paraphraser")), "--beta", "500"]
        return argv

    def get(self, group: str, stage: str) -> Path:
        out = self.root / group / stage
        if (out / "final.json").exists():
            return out
        schedule = ["--iters", str(SIZE["iters"]), "--eval-every", str(SIZE["eval_every"]), "--out", str(out)]
        if stage == "teacher":
            run(train_teacher, [*self.common, "--arch", SIZE["teacher_arch"], *schedule, *FLAGS[group]])
        elif stage == "paraphraser":
            run(train_paraphraser, [*self.common, "--teacher", str(self.get("default", "teacher")), "--k", "0.5",
                                    *schedule, *FLAGS[group]])
        else:
            method = stage.removeprefix("student-")
            run(train_student, [*self.student_argv(method, SIZE["iters"], SIZE["eval_every"], out),
                                *FLAGS[group]])
        return out


@pytest.fixture(scope="module")
def device_runs(tmp_path_factory, request) -> DeviceRuns:
    if CUDA and not torch.cuda.is_available():
        pytest.fail("FT_TEST_DEVICE=cuda, but torch.cuda.is_available() is False")
    data = os.environ.get("FT_TEST_DATA") or request.getfixturevalue("tiny_folder")
    return DeviceRuns(tmp_path_factory.mktemp("device_runs"), Path(data))


@pytest.mark.parametrize("group,stage", CASES, ids=[f"{g}-{s}" for g, s in CASES])
def test_each_stage_learns_with_each_set_of_flags(device_runs, group, stage):
    out = device_runs.get(group, stage)
    assert run_problems(out, require_fall=CUDA) == []
    if group == "graph":  # the captured step must learn as the eager one with the same flags does
        eager = device_runs.get("fast", stage)
        assert graph_follows_eager(metrics(out), metrics(eager), require_fall=CUDA) == []


def test_ktan_refuses_the_captured_step(device_runs):
    with pytest.raises(UserError, match="--cuda-graph"):
        device_runs.get("graph", "student-ktan")
    assert not (device_runs.root / "graph" / "student-ktan" / "checkpoint.pt").exists()


def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_runs_numbers(device_runs, tmp_path):
    """An FT student killed half-way (located by its logged evaluations, not by time) and
    started again with the same command.  On CUDA every run takes --deterministic (cuDNN's
    deterministic algorithms, not its autotuner's per-process choice) and the uninterrupted
    run is made twice: bit-for-bit equality is required where the two are equal, else the
    tolerance of `helpers.compare_runs`."""
    iters, every = SIZE["kill_iters"], SIZE["kill_eval_every"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if not CUDA:
        env["OMP_NUM_THREADS"] = "1"

    def command(out: Path) -> list[str]:
        argv = device_runs.student_argv("ft", iters, every, out) + (["--deterministic"] if CUDA else [])
        return [sys.executable, "train_student.py", *argv]

    references = [tmp_path / "reference"] + ([tmp_path / "repeat"] if CUDA else [])
    for out in references:
        subprocess.run(command(out), cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    out = tmp_path / "killed"
    proc = subprocess.Popen(command(out), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    landed = interrupt(proc, out, (iters // every) // 2, signal.SIGKILL, timeout=600)
    proc.wait(timeout=120)
    assert landed and not (out / "final.json").exists(), "the run ended before the kill"
    before = metrics(out)
    done = subprocess.run(command(out), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    said = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("resuming ")]
    assert said, "the second run did not resume from the checkpoint"
    resumed_from = int(said[-1].rsplit(" from iteration ", 1)[1].split()[0])
    assert resumed_from > 0 and evaluations_logged(out) == iters // every
    kept = [line for line in before if line["iter"] <= resumed_from]
    assert metrics(out)[:len(kept)] == kept  # what was logged before the kill stands
    comparison = compare_runs(references[0], out, references[1] if CUDA else None)
    assert comparison["ok"], comparison
