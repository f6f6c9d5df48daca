"""scripts/gpu_check.sh, the one command for a lent GPU, end to end in its CPU mode (--tiny):
the six runs of the row as scripts/table1.sh issues them, started in the row's order beside
the checks; exactly three plain-named files in OUT (the device tool returns at most 8); a
run cut by the budget reported as skipped, a run that fails reported as a failure; the
device tests' outcomes and the benchmark's rates in the summary."""

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from helpers import script_env

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_check.sh"
ROW = ["teacher-resnet56-s0", "para-resnet56-k0.5-s0", "ft-resnet20-from-resnet56-k0.5-s0", "ce-resnet20-s0",
       "kd-resnet20-from-resnet56-s0", "at-resnet20-from-resnet56-s0"]


def gpu_check(out: Path, *flags: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    environ = script_env(PYTHON=sys.executable, **(env or {}))
    environ.pop("FT_CACHE_DIR", None)
    proc = subprocess.run(["bash", str(SCRIPT), str(out), "--tiny", *flags], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=600)
    return proc, json.loads((out / "gpu_check.json").read_text())


def check_out_folder(out: Path) -> None:
    """What the device tool can return: at most 8 files, plain names, no subfolders."""
    files = sorted(p.name for p in out.iterdir())
    assert files == ["gpu_check.json", "gpu_check.log", "records.tar.gz"]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", f) and (out / f).is_file() for f in files)


@pytest.mark.slow
def test_the_whole_command_trains_the_row_in_order_and_returns_three_files(tmp_path):
    out = tmp_path / "out"
    proc, doc = gpu_check(out, "--row-flags=--cuda-graph")
    assert proc.returncode == 0, proc.stdout[-3000:]
    check_out_folder(out)
    assert doc["ok"] is True and doc["finished"] is True and doc["failures"] == []
    row = doc["row"]
    assert list(row) == ROW and all(row[n]["status"] == "finished" for n in ROW)
    # table1.sh's own command lines, with the row's flags added
    assert all(" train_" in row[n]["command"] and "--cuda-graph" in row[n]["command"] for n in ROW)
    assert "--method ft" in row[ROW[2]]["command"] and "--beta 500" in row[ROW[2]]["command"]
    # the student alone starts beside the teacher; FT only once the paraphraser is done
    start = {n: row[n]["started_s"] for n in ROW}
    assert start["ce-resnet20-s0"] < start["para-resnet56-k0.5-s0"]
    assert start["ft-resnet20-from-resnet56-k0.5-s0"] >= start["para-resnet56-k0.5-s0"] + row[ROW[1]]["seconds"] - 1
    assert row["teacher-resnet56-s0"]["final"]["test_error_last"] == row["teacher-resnet56-s0"]["test_error"]
    assert "| ResNet-20 | ResNet-56 | ours |" in doc["row_report"]
    with tarfile.open(out / "records.tar.gz") as tar:
        names = set(tar.getnames())
    for n in ROW:
        assert {f"row/folder/{n}/{f}" for f in ("args.json", "metrics.jsonl", "final.json")} <= names
    assert {"tests/tests.jsonl", "benchmark/benchmark.json", "report/report-table1.md"} <= names
    # the device tests ran (on the CPU: one stage's), each outcome recorded as it ended
    assert [t["outcome"] for t in doc["tests"]] == ["passed", "passed"]
    assert {t["test"].split("[")[1] for t in doc["tests"]} == {"default-teacher]", "default-student-ce]"}
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["tests"]["status"] == "ok" and checks["benchmark"]["status"] == "ok"
    assert checks["benchmark"]["images_per_s"]["ce"]["default"] > 0


@pytest.mark.slow
def test_a_run_cut_by_the_budget_is_skipped_and_one_that_fails_is_a_failure(tmp_path):
    # the budget: the teacher and the student alone are stopped at the deadline (each saves
    # its checkpoint), the runs that need the teacher never start; nothing failed. The row has
    # 50 s (budget less reserve): room for two processes to start and evaluate twice on a
    # loaded CPU, far short of 5,000 iterations
    out = tmp_path / "cut"
    proc, doc = gpu_check(out, "--row-flags=", "--budget-s", "60", "--reserve-s", "10",
                          env={"ITERS": "5000", "TEACHER_ITERS": "5000", "EVAL_EVERY": "2"})
    assert proc.returncode == 0, proc.stdout[-3000:]
    check_out_folder(out)
    row = doc["row"]
    assert row["teacher-resnet56-s0"]["status"] == "cut" and row["ce-resnet20-s0"]["status"] == "cut"
    assert row["teacher-resnet56-s0"]["reason"].startswith("budget")
    assert all(row[n]["status"] == "not started" for n in ROW if n not in ("teacher-resnet56-s0", "ce-resnet20-s0"))
    assert doc["ok"] is True and doc["failures"] == [] and "row/teacher-resnet56-s0" in doc["skipped"]
    assert row["ce-resnet20-s0"]["last_iter"] >= 2 and "extrapolated" in row["ce-resnet20-s0"]["full_schedule_s"]
    # a real error: every run refuses an unknown flag; retried once without --cuda-graph, still failing
    out = tmp_path / "bad"
    proc, doc = gpu_check(out, "--row-flags=--cuda-graph --no-such-flag", env={"ITERS": "4"})
    assert proc.returncode == 1
    check_out_folder(out)
    assert "row/teacher-resnet56-s0" in doc["failures"] and doc["ok"] is False
    teacher = doc["row"]["teacher-resnet56-s0"]
    assert teacher["status"] == "failed" and "graph_failure" in teacher and "--no-such-flag" in teacher["error_tail"]
    assert doc["summary"].startswith("gpu_check: FAILED")


def test_each_tests_outcome_is_written_as_it_ends(tmp_path):
    """FT_TEST_LOG (tests/conftest.py's hook): a line per test, failures with their detail,
    written as each test ends, so that gpu_check keeps what a budget cut leaves."""
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n"
        "def test_good():\n    assert True\n"
        "def test_bad():\n    assert 1 == 2, 'one is not two'\n"
        "@pytest.fixture\ndef broken():\n    raise RuntimeError('set-up failed')\n"
        "def test_setup(broken):\n    pass\n"
        "@pytest.mark.skip(reason='not here')\ndef test_skipped():\n    pass\n")
    log = tmp_path / "tests.jsonl"
    env = {**os.environ, "FT_TEST_LOG": str(log), "PYTHONPATH": str(REPO / "tests")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                           str(tmp_path / "test_sample.py")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout[-2000:]
    lines = {json.loads(x)["test"].split("::")[1]: json.loads(x) for x in log.read_text().splitlines()}
    assert {k: v["outcome"] for k, v in lines.items()} == {"test_good": "passed", "test_bad": "failed",
                                                           "test_setup": "failed", "test_skipped": "skipped"}
    assert "one is not two" in lines["test_bad"]["detail"] and lines["test_setup"]["when"] == "setup"
