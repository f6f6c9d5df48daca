"""Settings of each mode, and the process and file helpers every check uses."""

from __future__ import annotations

import collections
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
GROUPS = ("environment", "default", "fast", "graph", "kill-resume", "distributed", "benchmark", "ft-timing",
          "ft-timing-fast", "ft-timing-graph")
FAST_FLAGS = ["--amp", "bf16", "--channels-last", "--fold-bn"]
# graph/: the fast flags and the captured step, for every method whose step is one optimizer's
# (KTAN's discriminator has a second one; train_student.py refuses --cuda-graph for it)
GRAPH_REFUSED = {"ktan"}
INJECTED = "--device-check-injected-failure"  # an argument no script knows: argparse exits 2
FULL_ITERS = 64_000
STUDENT_ARCH = "resnet20"
PARA_K = "0.5"
FT_BETA = "500"

# Per mode: iterations, evaluation cadence, batch, time boxes (s), and the seconds kept in
# reserve for each later check so that an overrunning earlier one cannot starve it.
PROFILES = {
    "cuda": dict(budget_s=480, iters=300, eval_every=30, batch_size=128, teacher_arch="resnet56",
                 kill_iters=400, kill_eval_every=100, stretch_iters=3000, stretch_eval_every=500,
                 entry_cap_s=75, compile_cap_s=200, compile_method="ft", require_fall=True,
                 synthetic_train=500, synthetic_test=100, real_test_subset=2000, bench_args=["--quick"],
                 bench_cap_s=150, env_cap_s=90, dist_cap_s=90,
                 reserve={"graph": 45, "kill-resume": 45, "distributed": 30, "benchmark": 90, "ft-timing": 45,
                          "ft-timing-fast": 40, "ft-timing-graph": 0}),
    "cuda-quick": dict(budget_s=240, iters=100, eval_every=20, batch_size=128, teacher_arch="resnet56",
                       kill_iters=200, kill_eval_every=50, stretch_iters=1000, stretch_eval_every=250,
                       entry_cap_s=60, compile_cap_s=200, compile_method="none", require_fall=True,
                       synthetic_train=300, synthetic_test=50, real_test_subset=1000, bench_args=["--quick"],
                       bench_cap_s=120, env_cap_s=90, dist_cap_s=60,
                       reserve={"graph": 30, "kill-resume": 25, "distributed": 20, "benchmark": 40, "ft-timing": 20,
                                "ft-timing-fast": 20, "ft-timing-graph": 0}),
    "cpu": dict(budget_s=1800, iters=20, eval_every=10, batch_size=32, teacher_arch="resnet56",
                kill_iters=12, kill_eval_every=3, stretch_iters=40, stretch_eval_every=20,
                entry_cap_s=300, compile_cap_s=600, compile_method="none", require_fall=False,
                synthetic_train=32, synthetic_test=16, real_test_subset=500, real_train_subset=2000, bench_args=["--quick"],
                bench_cap_s=400, env_cap_s=120, dist_cap_s=300,
                reserve={"graph": 60, "kill-resume": 60, "distributed": 0, "benchmark": 60, "ft-timing": 60,
                         "ft-timing-fast": 60, "ft-timing-graph": 0}),
    # The CPU's --quick: the smallest runs that still go through every path (a few
    # minutes on 2 busy cores; tests/test_device_check.py runs it).
    # bf16 autocast is left out of its fast flags: on this project's CPU (no native bf16) a
    # 4-step bf16 run takes 15-30 s, most of the test's time; the other profiles keep it.
    "cpu-quick": dict(budget_s=600, iters=4, eval_every=2, batch_size=16, teacher_arch="resnet20",
                      fast_flags=["--channels-last", "--fold-bn"],
                      kill_iters=8, kill_eval_every=2, stretch_iters=8, stretch_eval_every=4,
                      entry_cap_s=120, compile_cap_s=400, compile_method="none", require_fall=False,
                      synthetic_train=16, synthetic_test=8, real_test_subset=200, real_train_subset=200,
                      bench_args=["--quick", "--stages", "ce", "--batch-size", "16", "--windows", "1",
                                  "--window-steps", "1", "--warmup", "1", "--fast", "",
                                  "--synthetic-size", "64", "--num-workers", "0", "--retries", "0"],
                      bench_cap_s=200, env_cap_s=120, dist_cap_s=200,
                      reserve={"graph": 30, "kill-resume": 30, "distributed": 0, "benchmark": 30, "ft-timing": 20,
                               "ft-timing-fast": 20, "ft-timing-graph": 0}),
}

# Kill-and-resume tolerance where the device is not deterministic (two uninterrupted runs
# differ): a logged number of the resumed run may differ from the uninterrupted run's by
# TOL_FACTOR times the largest difference between the two uninterrupted runs, and always
# by the floor (percentage points of error; relative for losses).
TOL_FACTOR = 3.0
TOL_FLOOR_ERROR = 1.0
TOL_FLOOR_RELATIVE = 0.02
# --cuda-graph stretch vs the eager stretch with the same flags: the total loss at each
# evaluation within this fraction (runs of thousands of steps drift apart, not far).
GRAPH_LOSS_REL = 0.25


# ============================================================================ small helpers

T0 = time.monotonic()
_print_lock = threading.Lock()


def say(message: str) -> None:
    with _print_lock:
        print(f"[{time.monotonic() - T0:7.1f}s] {message}", flush=True)


def tail_text(text: str, chars: int = 3000) -> str:
    text = text.strip()
    return text if len(text) <= chars else "..." + text[-chars:]


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A child process in its own session, its output streamed to the log with a label and
    its tail kept; stdout kept whole when `keep_stdout` (a JSON printed there)."""

    def __init__(self, cmd: list[str], label: str, env: dict, keep_stdout: bool = False):
        self.cmd, self.label = cmd, label
        say(f"[{label}] $ {shown(cmd)}")
        self.start = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE if keep_stdout else subprocess.STDOUT,
                                     start_new_session=True, text=True, errors="replace", bufsize=1)
        self.tail = collections.deque(maxlen=80)
        self.resuming: list[str] = []  # the training scripts' "resuming ... from iteration N" lines
        self.stdout: list[str] = []
        self.threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, keep_stdout), daemon=True)]
        if keep_stdout:
            self.threads.append(threading.Thread(target=self._pump, args=(self.proc.stderr, False), daemon=True))
        for t in self.threads:
            t.start()

    def _pump(self, pipe, keep: bool) -> None:
        for line in pipe:
            if keep:
                self.stdout.append(line)
                continue
            line = line.rstrip("\n")
            self.tail.append(line)
            if line.startswith("resuming ") and " from iteration " in line:
                self.resuming.append(line)
            with _print_lock:
                print(f"    [{self.label}] {line}", flush=True)

    def poll(self):
        return self.proc.poll()

    def wait(self, timeout: float | None) -> tuple[int | None, bool]:
        """(exit status, timed out); on time-out the whole session is killed."""
        try:
            rc = self.proc.wait(timeout=None if timeout is None else max(timeout, 0.1))
            timed_out = False
        except subprocess.TimeoutExpired:
            self.kill()
            rc, timed_out = self.proc.wait(), True
        for t in self.threads:
            t.join(timeout=10)
        return rc, timed_out

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    send_signal = kill  # as a Popen's: the signal `interrupt` sends, here to the whole session

    @property
    def seconds(self) -> float:
        return round(time.monotonic() - self.start, 2)

    def output_tail(self, chars: int = 3000) -> str:
        return tail_text("\n".join(self.tail), chars)


def evaluations_logged(out: Path) -> int:
    """Evaluations a run folder has logged (lines of its metrics.jsonl; 0 before the first)."""
    try:
        return len((Path(out) / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


def wait_for_evaluations(proc, out: Path, evaluations: int, timeout: float) -> bool:
    """Wait until the process `proc` (a Popen or a Proc) training into `out` has logged
    `evaluations` evaluations: True then, with the process still running; False if it ended
    or `timeout` seconds passed first.  Kill-and-resume checks locate their kill by progress
    this way, not by wall-clock time, so that they kill at the same point on any machine
    (the device check's and tests/test_reliability.py's)."""
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        if evaluations_logged(out) >= evaluations:
            return proc.poll() is None
        time.sleep(0.005)
    return False


def interrupt(proc, out: Path, evaluations: int, sig: int, timeout: float, pause: float = 0.0) -> bool:
    """The kill of a kill-and-resume check (the device check's and tests/test_reliability.py's):
    once the process `proc` (a Popen or a Proc) training into `out` has logged `evaluations`
    evaluations, and `pause` seconds more (somewhere in the next steps, an evaluation or a
    save), send it `sig`.  True when the signal reached the running process; False when the
    run ended or `timeout` seconds passed first (then nothing is sent)."""
    if not wait_for_evaluations(proc, out, evaluations, timeout):
        return False
    time.sleep(pause)
    if proc.poll() is not None:
        return False
    proc.send_signal(sig)
    return True


def shown(cmd: list[str]) -> str:
    """A command as one would type it from the repository root."""
    return shlex.join(["python" if i == 0 and c == sys.executable else c for i, c in enumerate(cmd)])


def run_command(cmd, label, env, timeout, keep_stdout=False) -> dict:
    p = Proc(cmd, label, env, keep_stdout)
    rc, timed_out = p.wait(timeout)
    return {"rc": rc, "timed_out": timed_out, "seconds": p.seconds, "tail": p.output_tail(),
            "stdout": "".join(p.stdout), "resuming": p.resuming}


