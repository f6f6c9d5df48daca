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
              AT.  A run that fails is retried once without --cuda-graph, and the failure is
              reported.  At the deadline the runs still going are stopped (SIGTERM: each saves
              its checkpoint) and reported as cut by the budget, with their last test error and
              the full schedule's time extrapolated from their steady rate, labelled as such.
  the checks  tests/test_cuda_paths.py under pytest (its CUDA-only tests: no host sync in a
              stream of steps, one graph launch a step, graphed vs eager across a milestone and
              a resume), then scripts/device_check.py --quick (every stage and method eager, with
              the fast flags and graphed, kill and resume, bf16, the benchmark's step rates,
              graphed vs eager stretches), on what the budget leaves it.

OUT receives three files (the device tool returns at most 8, with plain names):

  gpu_check.json   the summary, rewritten after every step, so a cut command still says
                   what finished; `ok`, `failures`, `skipped`, `checks`, `row`
  gpu_check.log    everything (gpu_check.sh tees it)
  records.tar.gz   args.json, metrics.jsonl, final.json of every run, the device check's JSON
                   and log, the benchmark's JSON, the report of the row beside the paper's

Exit status 1 when a check failed or a row run failed (not when the budget cut it).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import repo_path  # noqa: F401  (the repository's packages, for a script run as a file)
from device_checks import analysis, common, environment
from utils import record

REPO = common.REPO
ROW = ("teacher-resnet56-s0", "para-resnet56-k0.5-s0", "ft-resnet20-from-resnet56-k0.5-s0", "ce-resnet20-s0",
       "kd-resnet20-from-resnet56-s0", "at-resnet20-from-resnet56-s0")  # the order runs are started in
ROW_FLAGS = "--cuda-graph --amp bf16 --channels-last"
FILES = ("gpu_check.json", "gpu_check.log", "records.tar.gz")
# --tiny: the CPU mode of the test suite, a few iterations a run on a small generated set
# (each also read from the environment, where a test sets other sizes)
TINY_ENV = {k: os.environ.get(k, v) for k, v in
            {"ITERS": "6", "TEACHER_ITERS": "6", "PARA_ITERS": "3", "EVAL_EVERY": "3"}.items()}
TINY_EXTRA = "--batch-size 16 --device cpu"


def row_commands(data: str, runs: Path, extra: str, env: dict) -> dict[str, list[str]]:
    """{run folder name: argv} of the row, from scripts/table1.sh's dry run."""
    only = "^folder/(" + "|".join(name.replace(".", r"\.").replace("+", r"\+") for name in ROW) + ")$"
    proc = subprocess.run(["bash", "scripts/table1.sh"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**env, "DRY_RUN": "1", "SEEDS": "1", "DATASET": "folder", "DATA_ROOT": data,
                               "RUNS": str(runs), "PYTHON": sys.executable, "ONLY": only,
                               "EXTRA_ARGS": f"{extra} --progress off".strip()})
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/table1.sh's dry run failed: {proc.stderr.strip()[-500:]}")
    commands = {}
    for line in proc.stdout.splitlines():
        if line.strip() and not line.startswith("#"):
            argv = shlex.split(line)
            commands[Path(argv[argv.index("--out") + 1]).name] = argv
    if sorted(commands) != sorted(ROW):
        raise RuntimeError(f"scripts/table1.sh's dry run gave {sorted(commands)}, not the row {sorted(ROW)}")
    return commands


def needs(name: str) -> list[str]:
    return {"para": [ROW[0]], "ft": [ROW[0], ROW[1]], "kd": [ROW[0]], "at": [ROW[0]]}.get(name.split("-")[0], [])


class Row(threading.Thread):
    """The row's runs as processes, at most `slots` at a time, until done or `deadline`."""

    def __init__(self, commands: dict[str, list[str]], slots: int, deadline: float, env: dict, report):
        super().__init__(daemon=True)
        self.commands, self.slots, self.deadline, self.env, self.report = commands, slots, deadline, env, report
        self.state = {name: {"status": "waiting", "command": shlex.join(commands[name])} for name in ROW}
        self.procs: dict[str, common.Proc] = {}
        self.retried: set[str] = set()

    def out(self, name: str) -> Path:
        argv = self.commands[name]
        return Path(argv[argv.index("--out") + 1])

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            self.reap()
            for name in ROW:
                s = self.state[name]
                if s["status"] != "waiting" or len(self.procs) >= self.slots:
                    continue
                if any(self.state[d]["status"] in ("failed", "cut", "not started") for d in needs(name)):
                    s.update(status="not started", reason="a run it needs did not finish")
                elif all(self.state[d]["status"] == "finished" for d in needs(name)):
                    self.launch(name)
            if not self.procs and all(s["status"] != "waiting" for s in self.state.values()):
                return
            time.sleep(0.5)
        self.stop()

    def launch(self, name: str) -> None:
        self.state[name].update(status="running", started_s=round(time.monotonic() - common.T0, 1),
                                command=shlex.join(self.commands[name]))
        self.procs[name] = common.Proc(self.commands[name], f"row/{name}", self.env)
        self.report()

    def reap(self) -> None:
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                continue
            del self.procs[name]
            rc, s = proc.proc.returncode, self.state[name]
            s.update(rc=rc, seconds=round(proc.seconds, 1), **summarise(self.out(name)))
            if rc == 0 and (self.out(name) / "final.json").exists():
                s["status"] = "finished"
            elif "--cuda-graph" in self.commands[name] and name not in self.retried:
                self.retried.add(name)  # once more without the graph, after saying why
                s["graph_failure"] = {"rc": rc, "error_tail": proc.output_tail(2000)}
                self.commands[name] = [a for a in self.commands[name] if a != "--cuda-graph"] + ["--force"]
                s["status"] = "waiting"
            else:
                s.update(status="failed", error_tail=proc.output_tail(2000))
            self.report()

    def stop(self) -> None:
        """The deadline: SIGTERM (each run saves its checkpoint), then what is left is killed."""
        for proc in self.procs.values():
            proc.kill(signal.SIGTERM)
        end = time.monotonic() + 30
        while self.procs and time.monotonic() < end:
            for name, proc in list(self.procs.items()):
                if proc.poll() is not None:
                    del self.procs[name]
                    self.state[name].update(status="cut", rc=proc.proc.returncode, seconds=round(proc.seconds, 1),
                                            reason="budget: stopped at the deadline", **summarise(self.out(name)))
            time.sleep(0.2)
        for name, proc in self.procs.items():
            proc.kill()
            self.state[name].update(status="cut", reason="budget: killed at the deadline", **summarise(self.out(name)))
        self.procs = {}
        for s in self.state.values():
            if s["status"] == "waiting":
                s.update(status="not started", reason="budget: the deadline came first")
        self.report()


def summarise(out: Path) -> dict:
    """Where a run stands: its last evaluation and, from its steady rate, the time of its
    whole schedule (measured when finished, extrapolated otherwise, and said so)."""
    rec = record.read(out)  # None before the run has written its args.json
    lines = record.read_metrics(out)
    iters = rec.args.get("iters") if rec is not None else None
    info = {"iters": iters, "last_iter": lines[-1]["iter"] if lines else 0}
    if lines:
        last = lines[-1]
        info.update({k: last[k] for k in ("test_error", "recon_holdout") if k in last})
        info["wall_time_s"] = last.get("wall_time_s")
    spi = analysis.steady_seconds_per_iter(lines)
    if spi:
        info["steady_ms_per_iter"] = round(1e3 * spi, 3)
        if iters and info["last_iter"] < iters:
            total = lines[-1]["wall_time_s"] + (iters - info["last_iter"]) * spi
            info["full_schedule_s"] = f"extrapolated: {total:.0f} s (steady rate x the iterations left)"
    final = record.read_json(out / record.FINAL)
    if final:
        info["full_schedule_s"] = f"measured: {final.get('wall_time_s', 0):.0f} s of training"
        info["final"] = {k: final[k] for k in final if k.endswith(("_last", "_best"))}
    return info


class GpuCheck:
    def __init__(self, args):
        self.args, self.out = args, Path(args.out).resolve()
        self.scratch = Path(args.scratch or tempfile.mkdtemp(prefix="gpu_check_"))
        self.budget = args.budget_s if args.budget_s is not None else (240.0 if args.tiny else 540.0)
        self.deadline = common.T0 + self.budget - args.reserve_s
        self.device = "cpu" if args.tiny else "cuda"
        self.checks: list[dict] = []
        self.row: Row | None = None
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "FT_CACHE_DIR": str(self.scratch / "cache")}
        if args.tiny:
            self.env["OMP_NUM_THREADS"] = "1"  # several runs share the CPU's cores
        self.report_text: str | None = None
        self.lock = threading.Lock()

    def record(self, name: str, status: str, **fields) -> None:
        self.checks.append({"name": name, "status": status, **fields})
        common.say(f"{name}: {status.upper()}" + (f" - {fields['reason']}" if fields.get("reason") else ""))
        self.write()

    def failures(self) -> list[str]:
        bad = [c["name"] for c in self.checks if c["status"] == "failed"]
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
            summary = (f"gpu_check: {'FAILED ' + ', '.join(failures) if failures else 'OK'}; row: {len(done)} of "
                       f"{len(ROW)} runs finished; {len(skipped)} skipped; "
                       f"{time.monotonic() - common.T0:.0f} s of {self.budget:.0f}")
            common.write_json_atomic(self.out / "gpu_check.json", {
                "ok": (not failures) if final else None, "finished": final, "summary": summary,
                "device": self.device, "budget_s": self.budget, "wall_s": round(time.monotonic() - common.T0, 1),
                "row_flags": self.args.row_flags, "slots": self.args.slots, "failures": failures,
                "skipped": skipped, "checks": self.checks, "row": row, "row_report": self.report_text,
                "files": list(FILES)})
        if final:
            common.say(summary)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def command(self, name: str, cmd: list[str], box: float) -> dict:
        """A check that is one command: failed on a non-zero exit, skipped when its box ran out."""
        if box < 10:
            self.record(name, "skipped", reason=f"budget: {max(box, 0):.0f} s left")
            return {}
        r = common.run_command(cmd, name, self.env, box)
        fields = {"command": common.shown(cmd), "seconds": round(r["seconds"], 1)}
        if r["timed_out"]:
            self.record(name, "skipped", reason=f"budget: cut after {box:.0f} s", **fields)
        elif r["rc"] != 0:
            self.record(name, "failed", reason=f"exit {r['rc']}", error_tail=r["tail"], **fields)
        else:
            self.record(name, "ok", tail=common.tail_text(r["tail"], 600), **fields)
        return r

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        self.scratch.mkdir(parents=True, exist_ok=True)
        common.say(f"gpu_check: {self.device}, budget {self.budget:.0f} s, out {self.out}, scratch {self.scratch}")
        self.write()
        import torch

        env = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
               "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
               "git": environment.git_info(), "nvidia_smi": environment.nvidia_smi()}
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
        if self.args.tiny:
            self.record("pytest-cuda", "skipped", reason="--tiny: the CUDA tests need a GPU")
        else:
            self.command("pytest-cuda", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                         "tests/test_cuda_paths.py"], min(150.0, self.left()))
        check_budget = min(self.args.check_budget_s, self.left() - 5)
        dc_flags = (["--device", "cpu", "--quick", "--only", "environment"] if self.args.tiny else
                    ["--device", "cuda", "--quick"])
        self.command("device-check", [sys.executable, "-u", "scripts/device_check.py", str(self.scratch / "check"),
                                      *dc_flags, "--budget-s", f"{max(check_budget, 0):.0f}", "--data", str(data)],
                     check_budget + 30)
        verdict = record.read_json(self.scratch / "check" / "device_check.json")
        if verdict:
            self.checks[-1]["device_check"] = {k: verdict.get(k) for k in ("ok", "summary", "failures", "skipped")}
            if verdict.get("failures") and self.checks[-1]["status"] == "ok":
                self.checks[-1]["status"] = "failed"
        self.row.join()
        self.report_row()
        self.pack()
        self.write(final=True)
        if self.args.scratch is None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return 1 if self.failures() else 0

    def data(self) -> Path | None:
        """The carried CIFAR-10 copy (data/cifar10-jpeg.tar.gz), decoded once into the cache
        that every run then reads; --tiny: a small generated folder."""
        if self.args.tiny:
            path = analysis.make_synthetic_folder(self.scratch / "data", 40, 20)
        else:
            path = Path(self.args.data).resolve()
            if not path.exists():
                self.record("data", "failed", reason=f"{path} is absent: carry data/cifar10-jpeg.tar.gz (docs/gpu.md)")
                return None
        r = common.run_command([sys.executable, "-c", "import sys; from utils.data import load_data; "
                                                  "load_data('folder', sys.argv[1])", str(path)],
                           "data", self.env, 300)
        if r["rc"] != 0:
            self.record("data", "failed", reason="decoding the data failed", error_tail=r["tail"])
            return None
        self.record("data", "ok", path=str(path), seconds=round(r["seconds"], 1))
        return path

    def report_row(self) -> None:
        r = common.run_command([sys.executable, "scripts/report.py", str(self.scratch / "row"), "--table", "1",
                            "--out", str(self.scratch / "report")], "report", self.env, 60)
        report = self.scratch / "report" / "report-table1.md"
        if r["rc"] == 0 and report.exists():
            self.report_text = report.read_text()
        else:
            self.record("report", "failed", reason=f"scripts/report.py: exit {r['rc']}", error_tail=r["tail"])

    def pack(self) -> None:
        """records.tar.gz: the small files of every run folder, the device check's reports."""
        with tarfile.open(self.out / "records.tar.gz", "w:gz") as tar:
            for path in sorted(self.scratch.rglob("*")):
                if path.is_file() and (path.name in record.FILES
                                       or path.parent.name in ("check", "report")):
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
                        help="the device check's budget, beside the row (default: 240, its --quick "
                             "profile's, whose reserves need it)")
    parser.add_argument("--data", default=str(REPO / "data" / "cifar10-jpeg.tar.gz"),
                        help="the CIFAR-10 copy (default: data/cifar10-jpeg.tar.gz, carried to the GPU)")
    parser.add_argument("--row-flags", default=ROW_FLAGS,
                        help=f"speed flags added to every run of the row (default: {ROW_FLAGS})")
    parser.add_argument("--slots", type=int, default=2,
                        help="row runs at a time on the GPU; the second fills the first one's gaps "
                             "(start-up, evaluations, host work) (default: 2)")
    parser.add_argument("--scratch", default=None, help="run folders and data (default: a new temporary folder)")
    parser.add_argument("--tiny", action="store_true",
                        help="the CPU mode: a few iterations a run on a generated set, the CUDA tests skipped")
    return parser


if __name__ == "__main__":
    sys.exit(GpuCheck(get_args_parser().parse_args()).run())
