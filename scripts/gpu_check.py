"""The one command for a lent GPU: every CUDA path checked, and Table 1's ResNet-56 ->
ResNet-20 row trained at the paper's full schedule, within one time budget.

    bash scripts/gpu_check.sh OUT              # on the GPU, at most --budget-s (540) seconds
    bash scripts/gpu_check.sh OUT --tiny       # the same flow on the CPU, a few iterations a run

Two things run side by side from the start (docs/gpu.md says why and what each costs):

  the row     the six runs of scripts/table1.sh for ResNet-56 -> ResNet-20, seed 0, exactly
              the command lines its dry run prints (64,000 iterations each; the teacher, its
              k = 0.5 paraphraser, the student alone, KD, AT and FT), with --row-flags added
              (default: the captured step, bf16 autocast, channels-last), at most --slots at
              a time on the one GPU, in the order teacher, paraphraser, FT, student alone, KD,
              AT (scripts/gpu/row.py).  A run that fails is retried once without --cuda-graph,
              and the failure is reported.  At the deadline the runs still going are stopped
              (SIGTERM: each saves its checkpoint) and reported as cut by the budget, with
              their last test error and the full schedule's time extrapolated from their
              steady rate, labelled as such.
  the checks  the test suite's device tests on the GPU: tests/test_cuda_paths.py (no host sync
              in a stream of steps, one graph launch a step, graphed vs eager across a
              milestone and a resume) and tests/test_device_paths.py (every stage and method
              with the default flags, bf16 + channels-last + folded BN, and the captured step,
              100 iterations of 128 images each whose error must fall, the graphed runs
              following the eager ones; SIGKILL and resume against two uninterrupted runs),
              each test's outcome written as it ends; then scripts/benchmark.py --quick (the
              step rates).  --no-checks leaves the GPU to the row.

OUT receives three files (the device tool returns at most 8, with plain names):

  gpu_check.json   the summary, rewritten after every step, so a cut command still says
                   what finished; `ok`, `failures`, `skipped`, `checks`, `tests`, `row`
  gpu_check.log    everything (gpu_check.sh tees it)
  records.tar.gz   args.json, metrics.jsonl, final.json of every run, the tests' outcomes,
                   the benchmark's JSON, the report of the row beside the paper's

Exit status 1 when a check failed or a row run failed (not when the budget cut it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import repo_path  # noqa: F401  (the repository's packages, for a script run as a file)
from gpu.proc import REPO, T0, git_info, make_synthetic_folder, nvidia_smi, run_command, say, shown, tail_text
from gpu.row import ROW, Row, row_commands
from utils import record

ROW_FLAGS = "--cuda-graph --amp bf16 --channels-last"
FILES = ("gpu_check.json", "gpu_check.log", "records.tar.gz")
DEVICE_TESTS = ["tests/test_cuda_paths.py", "tests/test_device_paths.py"]
BENCHMARK = ["--quick"]
# --tiny: the CPU mode of the test suite, a few iterations a run on a small generated set
# (each also read from the environment, where a test sets other sizes), one device test,
# the benchmark's smallest measurement
TINY_ENV = {k: os.environ.get(k, v) for k, v in
            {"ITERS": "6", "TEACHER_ITERS": "6", "PARA_ITERS": "3", "EVAL_EVERY": "3"}.items()}
TINY_EXTRA = "--batch-size 16 --device cpu"
TINY_TESTS = ["tests/test_device_paths.py", "-k", "default-teacher or default-student-ce"]
TINY_BENCHMARK = ["--quick", "--stages", "ce", "--batch-size", "16", "--windows", "1", "--window-steps", "1",
                  "--warmup", "1", "--fast", "", "--synthetic-size", "64", "--num-workers", "0", "--retries", "0"]


class GpuCheck:
    def __init__(self, args):
        self.args, self.out = args, Path(args.out).resolve()
        self.scratch = Path(args.scratch or tempfile.mkdtemp(prefix="gpu_check_"))
        self.budget = args.budget_s if args.budget_s is not None else (240.0 if args.tiny else 540.0)
        self.deadline = T0 + self.budget - args.reserve_s
        self.device = "cpu" if args.tiny else "cuda"
        self.checks: list[dict] = []
        self.tests: list[dict] = []
        self.row: Row | None = None
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "FT_CACHE_DIR": str(self.scratch / "cache")}
        if args.tiny:
            self.env["OMP_NUM_THREADS"] = "1"  # several runs share the CPU's cores
        self.report_text: str | None = None
        self.lock = threading.Lock()

    def record(self, name: str, status: str, **fields) -> None:
        self.checks.append({"name": name, "status": status, **fields})
        say(f"{name}: {status.upper()}" + (f" - {fields['reason']}" if fields.get("reason") else ""))
        self.write()

    def failures(self) -> list[str]:
        bad = [c["name"] for c in self.checks if c["status"] == "failed"]
        bad += [f"test/{t['test']}" for t in self.tests if t["outcome"] == "failed"]
        if self.row is not None:
            bad += [f"row/{n}" for n, s in self.row.state.items() if s["status"] == "failed" or "graph_failure" in s]
        return bad

    def write(self, final: bool = False) -> None:
        with self.lock:
            row = self.row.state if self.row is not None else {}
            skipped = {c["name"]: c.get("reason") for c in self.checks if c["status"] == "skipped"}
            skipped |= {f"row/{n}": s.get("reason") for n, s in row.items() if s["status"] in ("cut", "not started")}
            failures = self.failures()
            done = [n for n, s in row.items() if s["status"] == "finished"]
            passed = sum(t["outcome"] == "passed" for t in self.tests)
            summary = (f"gpu_check: {'FAILED ' + ', '.join(failures) if failures else 'OK'}; tests: {passed} "
                       f"passed; row: {len(done)} of {len(ROW)} runs finished; {len(skipped)} skipped; "
                       f"{time.monotonic() - T0:.0f} s of {self.budget:.0f}")
            record.atomic_write_json({
                "ok": (not failures) if final else None, "finished": final, "summary": summary,
                "device": self.device, "budget_s": self.budget, "wall_s": round(time.monotonic() - T0, 1),
                "row_flags": self.args.row_flags, "slots": self.args.slots, "failures": failures,
                "skipped": skipped, "checks": self.checks, "tests": self.tests, "row": row,
                "row_report": self.report_text, "files": list(FILES)}, self.out / "gpu_check.json", sort_keys=False)
        if final:
            say(summary)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def command(self, name: str, cmd: list[str], box: float, env: dict | None = None, keep_stdout=False) -> dict:
        """A check that is one command: failed on a non-zero exit, skipped when its box ran out."""
        if box < 10:
            self.record(name, "skipped", reason=f"budget: {max(box, 0):.0f} s left")
            return {}
        r = run_command(cmd, name, env or self.env, box, keep_stdout=keep_stdout)
        fields = {"command": shown(cmd), "seconds": round(r["seconds"], 1)}
        if r["timed_out"]:
            self.record(name, "skipped", reason=f"budget: cut after {box:.0f} s", **fields)
        elif r["rc"] != 0:
            self.record(name, "failed", reason=f"exit {r['rc']}", error_tail=r["tail"], **fields)
        else:
            self.record(name, "ok", tail=tail_text(r["tail"], 600), **fields)
        return r

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        self.scratch.mkdir(parents=True, exist_ok=True)
        say(f"gpu_check: {self.device}, budget {self.budget:.0f} s, out {self.out}, scratch {self.scratch}")
        self.write()
        import torch

        env = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
               "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
               "git": git_info(), "nvidia_smi": nvidia_smi()}
        if self.device == "cuda" and not torch.cuda.is_available():
            self.record("environment", "failed", reason="no CUDA device: this command is for a GPU (--tiny on a CPU)",
                        **env)
            self.write(final=True)
            return 1
        self.record("environment", "ok", **env)
        data = self.data()
        if data is None:
            self.write(final=True)
            return 1
        extra = f"{self.args.row_flags} {TINY_EXTRA if self.args.tiny else ''}".strip()
        row_env = {**self.env, **(TINY_ENV if self.args.tiny else {})}
        try:
            commands = row_commands(str(data), self.scratch / "row", extra, row_env)
        except (RuntimeError, subprocess.SubprocessError) as exc:
            self.record("row", "failed", reason=str(exc))
            self.write(final=True)
            return 1
        self.row = Row(commands, self.args.slots, self.deadline, self.env, self.write)
        self.row.start()
        if self.args.no_checks:
            self.record("checks", "skipped", reason="--no-checks")
        else:
            checks_end = time.monotonic() + min(self.args.check_budget_s, self.left() - 5)
            self.device_tests(data, checks_end - time.monotonic())
            self.benchmark(checks_end - time.monotonic())
        self.row.join()
        self.report_row()
        self.pack()
        self.write(final=True)
        if self.args.scratch is None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return 1 if self.failures() else 0

    def data(self) -> Path | None:
        """The carried CIFAR-10 copy (data/cifar10-jpeg.tar.gz), decoded once into the cache
        that every run and test then reads; --tiny: a small generated folder."""
        if self.args.tiny:
            path = make_synthetic_folder(self.scratch / "data", 40, 20)
        else:
            path = Path(self.args.data).resolve()
            if not path.exists():
                self.record("data", "failed", reason=f"{path} is absent: carry data/cifar10-jpeg.tar.gz (docs/gpu.md)")
                return None
        r = run_command([sys.executable, "-c", "import sys; from utils.data import load_data; "
                                               "load_data('folder', sys.argv[1])", str(path)],
                        "data", self.env, 300)
        if r["rc"] != 0:
            self.record("data", "failed", reason="decoding the data failed", error_tail=r["tail"])
            return None
        self.record("data", "ok", path=str(path), seconds=round(r["seconds"], 1))
        return path

    def device_tests(self, data: Path, box: float) -> None:
        """The device tests under pytest, on the GPU (--tiny: one on the CPU); each test's
        outcome is read from the log it writes as it ends, so that a cut run keeps them."""
        log = self.scratch / "tests" / "tests.jsonl"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "FT_TEST_DATA": str(data), "FT_TEST_LOG": str(log)}
        if not self.args.tiny:
            env["FT_TEST_DEVICE"] = "cuda"
        self.command("tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               *(TINY_TESTS if self.args.tiny else DEVICE_TESTS)], box - 30, env)
        self.tests = record.read_metrics(log) if log.exists() else []  # failures() names each failed test
        if self.checks[-1]["status"] == "failed" and not any(t["outcome"] == "failed" for t in self.tests):
            self.checks[-1]["reason"] += " with no test failed (pytest's own error: collection, a crash)"
        self.write()

    def benchmark(self, box: float) -> None:
        """scripts/benchmark.py's step rates on this device; its JSON kept in the records."""
        cmd = [sys.executable, "scripts/benchmark.py", "--device", self.device, "--json",
               *(TINY_BENCHMARK if self.args.tiny else BENCHMARK)]
        r = self.command("benchmark", cmd, box, keep_stdout=True)
        if r.get("rc") != 0 or r.get("timed_out"):
            return
        try:
            report = json.loads(r["stdout"])
        except ValueError:
            self.checks[-1].update(status="failed", reason="its stdout is not one JSON object",
                                   error_tail=tail_text(r["stdout"]))
            return self.write()
        (self.scratch / "benchmark").mkdir(exist_ok=True)
        record.atomic_write_json(report, self.scratch / "benchmark" / "benchmark.json")
        self.checks[-1]["images_per_s"] = {s: v.get("images_per_s") for s, v in report.get("stages", {}).items()}
        self.write()

    def report_row(self) -> None:
        r = run_command([sys.executable, "scripts/report.py", str(self.scratch / "row"), "--table", "1",
                         "--out", str(self.scratch / "report")], "report", self.env, 60)
        report = self.scratch / "report" / "report-table1.md"
        if r["rc"] == 0 and report.exists():
            self.report_text = report.read_text()
        else:
            self.record("report", "failed", reason=f"scripts/report.py: exit {r['rc']}", error_tail=r["tail"])

    def pack(self) -> None:
        """records.tar.gz: the small files of every run folder, the tests' outcomes, the
        benchmark's JSON, the row's report."""
        with tarfile.open(self.out / "records.tar.gz", "w:gz") as tar:
            for path in sorted(self.scratch.rglob("*")):
                if path.is_file() and (path.name in record.FILES
                                       or path.parent.name in ("tests", "benchmark", "report")):
                    tar.add(path, arcname=str(path.relative_to(self.scratch)))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="The CUDA checks and Table 1's ResNet-56 -> ResNet-20 row at "
                                                 "the full schedule, in one time budget (run through "
                                                 "scripts/gpu_check.sh, which tees the log).")
    parser.add_argument("out", help="output folder: gpu_check.json, gpu_check.log, records.tar.gz, nothing else")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds for everything (default: 540; --tiny: 240)")
    parser.add_argument("--reserve-s", type=float, default=25.0,
                        help="seconds kept at the end to stop the row, report and pack (default: 25)")
    parser.add_argument("--check-budget-s", type=float, default=240.0,
                        help="seconds for the device tests and the benchmark, beside the row (default: 240)")
    parser.add_argument("--no-checks", action="store_true", help="the row alone: no device tests, no benchmark")
    parser.add_argument("--data", default=str(REPO / "data" / "cifar10-jpeg.tar.gz"),
                        help="the CIFAR-10 copy (default: data/cifar10-jpeg.tar.gz, carried to the GPU)")
    parser.add_argument("--row-flags", default=ROW_FLAGS,
                        help=f"speed flags added to every run of the row (default: {ROW_FLAGS})")
    parser.add_argument("--slots", type=int, default=2,
                        help="row runs at a time on the GPU; the second fills the first one's gaps "
                             "(start-up, evaluations, host work) (default: 2)")
    parser.add_argument("--scratch", default=None, help="run folders and data (default: a new temporary folder)")
    parser.add_argument("--tiny", action="store_true",
                        help="the CPU mode: a few iterations a run on a generated set, one device test on the CPU")
    return parser


if __name__ == "__main__":
    sys.exit(GpuCheck(get_args_parser().parse_args()).run())
