"""Reusable pieces for end-to-end tests: running the real scripts' `main()`, reading
run folders, and a tiny teacher with paraphrasers trained on demand.

Use the fixtures by importing them into a test module (they build on
`tests/conftest.py`'s `tiny_folder`):

    from helpers import tiny_runs  # noqa: F401  (a pytest fixture)

    def test_something(tiny_runs):
        teacher = tiny_runs.teacher
        para = tiny_runs.paraphraser("--kind", "cae")
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

import train_paraphraser
import train_student
import train_teacher
import utils.data
import utils.train
from utils.cli import run_main


def run(script, argv: list[str]):
    """Parse `argv` with the script's own parser and run its `main` (errors propagate)."""
    args = script.get_args_parser().parse_args([str(a) for a in argv])
    script.main(args)
    return args


def run_cli(script, argv: list[str], capsys) -> tuple[int, str]:
    """Run as from the command line: (exit status, stderr); a UserError exits with 2."""
    try:
        run_main(script.main, script.get_args_parser(), [str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def metrics(out: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock times (which differ between identical runs)."""
    lines = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("wall_time_s")
    return lines


def checkpoint(out: Path) -> dict:
    return torch.load(Path(out) / "checkpoint.pt", weights_only=False)


def final(out: Path) -> dict:
    return json.loads((Path(out) / "final.json").read_text())


def interrupt_at(monkeypatch, iteration: int) -> None:
    """Send this process SIGTERM while iteration `iteration` (0-based) is being trained:
    the loop saves a checkpoint after that step and raises `utils.train.Interrupted`."""
    original = utils.data.train_batch

    def batch(data, sampler, it, seed, augment=True):
        if it == iteration:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(data, sampler, it, seed, augment=augment)

    monkeypatch.setattr(utils.data, "train_batch", batch)


class TinyRuns:
    """A ResNet-20 teacher on the tiny folder and paraphrasers for it, each trained
    (a few iterations) the first time it is asked for, then reused."""

    def __init__(self, root: Path, data: Path):
        self.root, self.data = root, data
        self.common = ["--dataset", "folder", "--data-root", str(data), "--batch-size", "16",
                       "--progress", "off"]
        self._teacher = None

    def args(self, out: Path, iters: int = 4, eval_every: int = 2) -> list[str]:
        """Common arguments of a tiny run in `out`."""
        return [*self.common, "--iters", str(iters), "--eval-every", str(eval_every), "--out", str(out)]

    @property
    def teacher(self) -> Path:
        out = self.root / "teacher"
        if not (out / "final.json").exists():
            run(train_teacher, [*self.args(out), "--arch", "resnet20"])
        return out

    def paraphraser(self, *flags) -> Path:
        """A paraphraser run for the teacher, trained with train_paraphraser.py `flags`
        (e.g. "--kind", "cae" or "--group", 0); the same flags give the same run."""
        flags = [str(f) for f in flags]
        out = self.root / ("para" + "".join(f.replace("--", "_") for f in flags))
        if not (out / "final.json").exists():
            run(train_paraphraser, [*self.args(out, iters=2), "--teacher", str(self.teacher), *flags])
        return out


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, tiny_folder) -> TinyRuns:
    return TinyRuns(tmp_path_factory.mktemp("tiny_runs"), tiny_folder)


__all__ = ["TinyRuns", "tiny_runs", "run", "run_cli", "metrics", "checkpoint", "final", "interrupt_at",
           "train_paraphraser", "train_student", "train_teacher"]
