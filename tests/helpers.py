"""Reusable pieces for end-to-end tests: running the real scripts' `main()`, reading
run folders, a tiny teacher with paraphrasers trained on demand, the rules that judge a
run (finite, learning, equal to another run within what the device allows), the kill of
a kill-and-resume test (tests/test_device_paths.py, tests/test_reliability.py), and running
the table scripts (scripts/*.sh) in an environment cleared of their knobs: `run_script`,
and `dry_run` for the command lines a script would issue.

Use the fixtures by importing them into a test module (they build on
`tests/conftest.py`'s `tiny_folder`):

    from helpers import tiny_runs  # noqa: F401  (a pytest fixture)

    def test_something(tiny_runs):
        teacher = tiny_runs.teacher
        para = tiny_runs.paraphraser("--kind", "cae")
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

import train_paraphraser
import train_student
import train_teacher
import utils.data
import utils.train
from utils import record
from utils.cli import run_main


REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"


@functools.cache
def script_knobs() -> frozenset[str]:
    """Every environment setting the scripts read with a default (`${NAME:-...}`), and the
    GPU mask they set per run: what a test must clear so that the caller's shell never leaks in."""
    names = set()
    for script in SCRIPTS.glob("*.sh"):
        names.update(re.findall(r"\$\{([A-Z][A-Z0-9_]*):?[-=]", script.read_text()))
    return frozenset(names | {"CUDA_VISIBLE_DEVICES"})


def script_env(**settings) -> dict[str, str]:
    """This process's environment without any script knob, then `settings` (as strings)."""
    knobs = script_knobs()
    env = {k: v for k, v in os.environ.items() if k not in knobs}
    env.update({k: str(v) for k, v in settings.items()})
    return env


def run_script(name: str, *args, check: bool = True, timeout: float = 300, **settings) -> subprocess.CompletedProcess:
    """`bash scripts/<name>.sh ARGS` from the repository root with exactly the knobs in `settings`."""
    proc = subprocess.run(["bash", str(SCRIPTS / f"{name}.sh"), *map(str, args)], env=script_env(**settings),
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def dry_run(name: str, finished: bool = False, timeout: float = 300, **settings) -> list[list[str]]:
    """The command lines `name` would issue (DRY_RUN=1), as argv lists; with `finished`, also
    those of runs already finished (printed as "# finished: ...")."""
    lines = run_script(name, timeout=timeout, DRY_RUN=1, **settings).stdout.splitlines()
    if finished:
        lines = [line.removeprefix("# finished: ") for line in lines]
    return [shlex.split(line) for line in lines if line and not line.startswith("#")]


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



# ----------------------------------------------------------------------------- judging a run

# Kill-and-resume where the device is not deterministic (two uninterrupted runs differ): a
# logged number of the resumed run may differ from the uninterrupted run's by TOL_FACTOR
# times the largest difference between the two uninterrupted runs, and always by the floor
# (points of error; relative for losses).
TOL_FACTOR = 3.0
TOL_FLOOR_ERROR = 1.0
TOL_FLOOR_RELATIVE = 0.02
# A --cuda-graph run against the eager run with the same flags: the total loss at each
# evaluation within this fraction (the kernels accumulate in other orders; not bit for bit).
GRAPH_LOSS_REL = 0.25


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def primary_metric(final_json: dict) -> str:
    """The metric final.json reports as <name>_last (test_error, recon_holdout)."""
    names = [k[:-len("_last")] for k in final_json if k.endswith("_last")]
    return names[0] if names else "test_error"


def run_problems(out: Path, require_fall: bool) -> list[str]:
    """What is wrong with a finished run folder: no final.json or evaluations, a non-finite
    logged number, and (where `require_fall`) a primary metric (test error; the
    paraphraser's held-out reconstruction loss) not lower at the end than at the first
    evaluation."""
    lines, final_json = record.read_metrics(out), record.read_json(Path(out) / record.FINAL)
    if final_json is None:
        return ["no final.json"]
    if not lines:
        return ["no metrics.jsonl lines"]
    primary = primary_metric(final_json)
    problems = []
    bad = sorted({k for line in lines for k, v in line.items() if is_number(v) and not math.isfinite(v)})
    if bad:
        problems.append(f"non-finite values logged: {', '.join(bad)}")
    first, last = lines[0].get(primary), lines[-1].get(primary)
    if first is None or last is None:
        problems.append(f"{primary} missing from metrics.jsonl")
    elif require_fall and len(lines) < 2:
        problems.append("fewer than two evaluations: cannot tell whether the error fell")
    elif require_fall and not last < first:
        problems.append(f"{primary} did not fall: {first:.4g} at iteration {lines[0]['iter']} -> "
                        f"{last:.4g} at iteration {lines[-1]['iter']}")
    return problems


def comparable(out: Path) -> tuple[list[dict], dict]:
    """metrics.jsonl and final.json without wall-clock times (which differ between identical runs)."""
    lines = record.read_metrics(out)
    for line in lines:
        line.pop("wall_time_s", None)
    final_json = record.read_json(Path(out) / record.FINAL) or {}
    final_json.pop("wall_time_s", None)
    if isinstance(final_json.get("last"), dict):
        final_json["last"].pop("wall_time_s", None)
    return lines, final_json


def max_differences(a: list[dict], b: list[dict]) -> dict[str, float]:
    """Per key, the largest |a - b| over the evaluation lines (errors in points; losses relative)."""
    out: dict[str, float] = {}
    for la, lb in zip(a, b):
        for k, va in la.items():
            vb = lb.get(k)
            if not (is_number(va) and is_number(vb)) or k in ("iter", "lr"):
                continue
            if not (math.isfinite(va) and math.isfinite(vb)):
                d = 0.0 if va == vb else math.inf
            elif "error" in k:
                d = abs(va - vb)
            else:
                d = abs(va - vb) / max(abs(va), abs(vb), 1e-12)
            out[k] = max(out.get(k, 0.0), d)
    return out


def compare_runs(reference: Path, resumed: Path, repeat: Path | None) -> dict:
    """Resumed vs uninterrupted run.  Exact (metrics.jsonl and final.json equal, wall times
    aside) is required when the device is deterministic: always without `repeat`, and with
    a repeat run (a second uninterrupted run) when the two uninterrupted runs are equal.
    Otherwise each logged number may differ from the reference by
    max(TOL_FACTOR x the two uninterrupted runs' difference, the floor).  `ok` and `reason`
    say the verdict."""
    ref_lines, ref_final = comparable(reference)
    res_lines, res_final = comparable(resumed)
    iters = [x.get("iter") for x in ref_lines]
    if iters != [x.get("iter") for x in res_lines]:
        return {"ok": False, "mode": "structure", "reason": "the evaluations logged differ in number or iteration"}
    exact = ref_lines == res_lines and ref_final == res_final
    result = {"exact": exact}
    if repeat is not None:
        rep_lines, rep_final = comparable(repeat)
        if [x.get("iter") for x in rep_lines] != iters:
            return {"ok": False, "mode": "structure", "reason": "the repeat uninterrupted run logged other iterations"}
        result["uninterrupted_runs_equal"] = rep_lines == ref_lines and rep_final == ref_final
    if repeat is None or result["uninterrupted_runs_equal"]:
        result.update(mode="exact", ok=exact,
                      reason=None if exact else "the resumed run differs from the uninterrupted run, "
                                                "which this device reproduces bit for bit")
        if not exact:
            result["differences"] = max_differences(ref_lines, res_lines)
        return result
    noise = max_differences(ref_lines, rep_lines)
    diff = max_differences(ref_lines, res_lines)
    allowed = {k: max(TOL_FACTOR * noise.get(k, 0.0), TOL_FLOOR_ERROR if "error" in k else TOL_FLOOR_RELATIVE)
               for k in diff}
    over = {k: {"difference": round(diff[k], 6), "allowed": round(allowed[k], 6)}
            for k in diff if not diff[k] <= allowed[k]}
    result.update(mode="tolerance", ok=not over, run_to_run=noise, differences=diff, allowed=allowed,
                  reason=None if not over else f"beyond tolerance: {over}")
    return result


def graph_follows_eager(graph: list[dict], eager: list[dict], require_fall: bool) -> list[str]:
    """Problems of a --cuda-graph run against the eager run of the same command: a graph
    that stopped updating the weights would finish with finite numbers, so its total loss
    must fall (where `require_fall`) and, at each evaluation both logged, stay within
    GRAPH_LOSS_REL of the eager run's."""
    def total(line):
        return sum(v for k, v in line.items() if k.startswith("loss_"))

    problems = []
    if require_fall and len(graph) >= 2 and not total(graph[-1]) < total(graph[0]):
        problems.append(f"the graphed run's loss did not fall ({total(graph[0]):.4g} -> {total(graph[-1]):.4g}): "
                        f"are the captured updates replayed?")
    by_iter = {line["iter"]: total(line) for line in eager}
    for line in graph:
        ref = by_iter.get(line["iter"])
        if ref is not None and not abs(total(line) - ref) <= GRAPH_LOSS_REL * abs(ref):
            problems.append(f"at iteration {line['iter']} the graphed run's loss {total(line):.4g} is more than "
                            f"{GRAPH_LOSS_REL:.0%} from the eager run's {ref:.4g}")
            break
    return problems


# ----------------------------------------------------------------------------- killing a run

def evaluations_logged(out: Path) -> int:
    """Evaluations a run folder has logged (lines of its metrics.jsonl; 0 before the first)."""
    try:
        return len((Path(out) / record.METRICS).read_text().splitlines())
    except OSError:
        return 0


def interrupt(proc, out: Path, evaluations: int, sig: int, timeout: float, pause: float = 0.0) -> bool:
    """The kill of a kill-and-resume test: once the process `proc` (a Popen) training into
    `out` has logged `evaluations` evaluations, and `pause` seconds more (somewhere in the
    next steps, an evaluation or a save), send it `sig`.  The kill is located by progress,
    not by wall-clock time, so that it lands at the same point on a fast or a slow machine.
    True when the signal reached the running process; False when the run ended or
    `timeout` seconds passed first (then nothing is sent)."""
    end = time.monotonic() + timeout
    while proc.poll() is None and evaluations_logged(out) < evaluations:
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    time.sleep(pause)
    if proc.poll() is not None:
        return False
    proc.send_signal(sig)
    return True

__all__ = ["TinyRuns", "tiny_runs", "run", "run_cli", "metrics", "checkpoint", "final", "interrupt_at",
           "run_problems", "comparable", "compare_runs", "graph_follows_eager", "evaluations_logged", "interrupt",
           "train_paraphraser", "train_student", "train_teacher"]
