"""The rules of tests/helpers.py that judge runs (tests/test_device_paths.py's, on the CPU
and on a lent GPU): a run that is broken or does not learn, a resumed run against the
uninterrupted ones, a graphed run against the eager one."""

import json
import math
from pathlib import Path

from helpers import compare_runs, graph_follows_eager, run_problems


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
    assert compare_runs(ref, same, None)["ok"] is True
    result = compare_runs(ref, off, None)
    assert result["ok"] is False and result["differences"]["test_error"] == 0.5
    # a repeat equal to the reference: the device is deterministic, exact is required
    assert compare_runs(ref, off, same)["ok"] is False
    # a repeat that differs: tolerance max(3 x run-to-run, floor)
    noisy = write_run(tmp_path / "noisy", curve([80, 61, 42], [2.0, 1.52, 1.0]))
    result = compare_runs(ref, off, noisy)
    assert result["mode"] == "tolerance" and result["ok"] is True
    assert result["allowed"]["test_error"] == 6.0
    far = write_run(tmp_path / "far", curve([80, 60, 49], [2.0, 1.5, 1.0]))
    assert compare_runs(ref, far, noisy)["ok"] is False
    short = write_run(tmp_path / "short", curve([80, 60], [2.0, 1.5]))
    assert compare_runs(ref, short, None)["mode"] == "structure"
    assert compare_runs(ref, off, short)["mode"] == "structure"


def test_run_problems_flags_nan_and_an_error_that_does_not_fall(tmp_path):
    good = write_run(tmp_path / "good", curve([80, 60, 40], [2.0, 1.5, 1.0]))
    assert run_problems(good, require_fall=True) == []
    flat = write_run(tmp_path / "flat", curve([80, 85, 80], [2.0, 1.5, 1.0]))
    assert "did not fall" in run_problems(flat, require_fall=True)[0]
    assert run_problems(flat, require_fall=False) == []
    nan = write_run(tmp_path / "nan", curve([80, 60, 40], [2.0, math.nan, 1.0]))
    assert "non-finite values logged: loss_ce" in run_problems(nan, require_fall=False)
    one = write_run(tmp_path / "one", curve([80], [2.0]))
    assert "fewer than two evaluations" in run_problems(one, require_fall=True)[0]
    assert run_problems(tmp_path / "missing", False) == ["no final.json"]


def test_a_graphed_run_must_learn_and_follow_the_eager_one():
    """A graph that stopped updating the weights finishes with finite numbers: the rule
    catches it by its flat loss and by its distance from the eager run."""
    eager = [{"iter": i, "loss_ce": c, "loss_ft": 0.1} for i, c in ((500, 2.0), (1000, 1.5), (1500, 1.2))]
    follows = [{"iter": i, "loss_ce": c, "loss_ft": 0.1} for i, c in ((500, 2.1), (1000, 1.4), (1500, 1.25))]
    frozen = [{"iter": i, "loss_ce": 2.3, "loss_ft": 0.1} for i in (500, 1000, 1500)]
    assert graph_follows_eager(follows, eager, require_fall=True) == []
    problems = graph_follows_eager(frozen, eager, require_fall=True)
    assert "did not fall" in problems[0] and "from the eager run's" in problems[1]
    # on the CPU (no fall required) the distance from the eager run still counts
    assert graph_follows_eager(frozen, eager, require_fall=False) == problems[1:]
    assert len(graph_follows_eager(frozen, [], require_fall=True)) == 1
