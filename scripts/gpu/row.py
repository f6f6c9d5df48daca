"""Table 1's ResNet-56 -> ResNet-20 row at the paper's full schedule, trained by
scripts/gpu_check.py beside its checks: the six runs exactly as scripts/table1.sh's dry run
issues them, at most `slots` at a time, in the row's order, until done or the deadline."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from utils import record

from .proc import REPO, T0, Proc

ROW = ("teacher-resnet56-s0", "para-resnet56-k0.5-s0", "ft-resnet20-from-resnet56-k0.5-s0", "ce-resnet20-s0",
       "kd-resnet20-from-resnet56-s0", "at-resnet20-from-resnet56-s0")  # the order runs are started in


def steady_seconds_per_iter(lines: list[dict]) -> float | None:
    """Seconds per iteration between the first and the last evaluation (evaluations and
    checkpoints at the run's cadence included; the first window's warm-up excluded)."""
    if len(lines) < 2:
        return None
    di = lines[-1]["iter"] - lines[0]["iter"]
    dt = lines[-1]["wall_time_s"] - lines[0]["wall_time_s"]
    return dt / di if di > 0 and dt > 0 else None


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
        self.procs: dict[str, Proc] = {}
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
        self.state[name].update(status="running", started_s=round(time.monotonic() - T0, 1),
                                command=shlex.join(self.commands[name]))
        self.procs[name] = Proc(self.commands[name], f"row/{name}", self.env)
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
    spi = steady_seconds_per_iter(lines)
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
