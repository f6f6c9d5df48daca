"""One command that checks this code on a device, within a time budget, and writes what it saw.

    bash scripts/device_check.sh OUT --device cuda      # the GPU check: at most --budget-s (480) seconds
    bash scripts/device_check.sh OUT --device cpu --quick   # the same checks, tiny, on the CPU

Writes OUT/device_check.json (one record per check, written again after each check, so a
run cut short still leaves what it did), OUT/device_check.log (the shell script tees
everything there), OUT/runs/<check>/ (each run's args.json, metrics.jsonl, final.json),
OUT/benchmark.json.  Scratch (data, checkpoints) goes to OUT/tmp, removed at the end
unless --keep-tmp.

The checks, in order of importance (docs/device_check.md says why each is built as it is):

  environment       torch, CUDA, cuDNN, NCCL versions, the devices, the git commit; on
                    --device cuda a convolution, a matmul and bf16 autocast on the GPU.  With
                    --device cuda and no usable GPU this fails and every later check is
                    marked failed (not run), never skipped.
  default/<run>     teacher, paraphraser and a student with every method (ce kd at fact ft
                    at+kd ft+kd ktan), default flags, --iters N: exit 0, every logged loss
                    finite and (on CUDA) the primary metric (test error; the paraphraser's
                    held-out reconstruction loss) lower at the end than at the first evaluation.
  fast/<run>        the same with --amp bf16 --channels-last --fold-bn, and --compile for one
                    method (--compile-method).
  graph/<run>       the fast flags and --cuda-graph (every method but KTAN, whose second
                    optimizer cannot be captured): the same, and the loss must fall and stay
                    within 25% of fast/<run>'s at each evaluation.
  kill-resume       an FT student killed with SIGKILL mid-run and re-run with the same
                    command, against an uninterrupted run: bit-for-bit equal where the device
                    is deterministic (the CPU; on CUDA, when two uninterrupted runs are
                    themselves equal), otherwise within a tolerance measured from two
                    uninterrupted runs; see `compare_runs`.
  distributed       a two-process torchrun FT student (NCCL) when two GPUs exist; otherwise a
                    recorded skip ("skipped: 1 GPU"), the only skip besides the budget.
  benchmark         scripts/benchmark.py --device DEV --json --quick; its JSON in OUT/benchmark.json.
  ft-timing         a timed FT student (ResNet-56 -> ResNet-20, default flags) of S iterations
                    and the paper's 64,000-iteration run's time, extrapolated from it and said
                    so, or measured when the budget holds the full run.
  ft-timing-fast    the same with --amp bf16 --channels-last --fold-bn.
  ft-timing-graph   the same with those flags and --cuda-graph (the whole step one CUDA graph).

Any check that errors (non-zero exit, exception, NaN, time box exceeded) is recorded with
"ok": false and the tail of its output, the remaining checks still run, and the script
exits 1 with a summary line naming every failure.

The default/ and fast/ runs share one worker process that runs the training scripts'
own entry points (`utils.cli.run_main`) one after another, as the command line would: on
a GPU a process start costs seconds (imports, CUDA context, cuDNN's autotuner) that 20
runs cannot afford in 8 minutes.  A run that fails ends the worker (a CUDA error can poison
the process); a fresh one takes the remaining runs.  Each record still carries the
equivalent command line.  The kill/resume, torchrun, benchmark and timing checks run real
command lines in processes of their own.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import math
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
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


def read_jsonl(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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

    @property
    def seconds(self) -> float:
        return round(time.monotonic() - self.start, 2)

    def output_tail(self, chars: int = 3000) -> str:
        return tail_text("\n".join(self.tail), chars)


def shown(cmd: list[str]) -> str:
    """A command as one would type it from the repository root."""
    return shlex.join(["python" if i == 0 and c == sys.executable else c for i, c in enumerate(cmd)])


def run_command(cmd, label, env, timeout, keep_stdout=False) -> dict:
    p = Proc(cmd, label, env, keep_stdout)
    rc, timed_out = p.wait(timeout)
    return {"rc": rc, "timed_out": timed_out, "seconds": p.seconds, "tail": p.output_tail(),
            "stdout": "".join(p.stdout), "resuming": p.resuming}


# ============================================================================ analysis (pure)

def primary_metric(final: dict) -> str:
    """The metric final.json reports as <name>_last (test_error, recon_holdout)."""
    names = [k[:-len("_last")] for k in final if k.endswith("_last")]
    return names[0] if names else "test_error"


def steady_seconds_per_iter(lines: list[dict]) -> float | None:
    """Seconds per iteration between the first and the last evaluation (evaluations and
    checkpoints at the run's cadence included; the first window's warm-up excluded)."""
    if len(lines) < 2:
        return None
    di = lines[-1]["iter"] - lines[0]["iter"]
    dt = lines[-1]["wall_time_s"] - lines[0]["wall_time_s"]
    return dt / di if di > 0 and dt > 0 else None


def analyse_run(out: Path, batch_size: int, require_fall: bool) -> tuple[dict, list[str]]:
    """Key numbers of a finished run folder and the problems found in it."""
    lines, final = read_jsonl(out / "metrics.jsonl"), read_json(out / "final.json")
    problems = []
    if final is None:
        return {}, ["no final.json"]
    if not lines:
        return {}, ["no metrics.jsonl lines"]
    primary = primary_metric(final)
    bad = sorted({k for line in lines for k, v in line.items() if is_number(v) and not math.isfinite(v)})
    first, last = lines[0].get(primary), lines[-1].get(primary)
    info = {
        "primary": primary, "iters": final.get("iters"),
        "first_eval_iter": lines[0]["iter"], f"first_{primary}": first,
        "last_eval_iter": lines[-1]["iter"], f"last_{primary}": last,
        f"best_{primary}": final.get(f"{primary}_best"),
        "losses_finite": not bad,
        "final_losses": {k: v for k, v in lines[-1].items() if k.startswith("loss_")},
        "train_wall_s": final.get("wall_time_s"),
    }
    spi = steady_seconds_per_iter(lines)
    if spi:
        info["steady_s_per_iter"] = round(spi, 6)
        info["steady_img_per_s"] = round(batch_size / spi, 1)
    info["fell"] = (first is not None and last is not None and last < first)
    if bad:
        problems.append(f"non-finite values logged: {', '.join(bad)}")
    if first is None or last is None:
        problems.append(f"{primary} missing from metrics.jsonl")
    elif require_fall and len(lines) >= 2 and not last < first:
        problems.append(f"{primary} did not fall: {first:.4g} at iteration {lines[0]['iter']} -> "
                        f"{last:.4g} at iteration {lines[-1]['iter']}")
    if require_fall and len(lines) < 2:
        problems.append("fewer than two evaluations: cannot tell whether the error fell")
    return info, problems


def comparable(out: Path) -> tuple[list[dict], dict]:
    """metrics.jsonl and final.json without wall-clock times (which differ between identical runs)."""
    lines = read_jsonl(out / "metrics.jsonl")
    for line in lines:
        line.pop("wall_time_s", None)
    final = read_json(out / "final.json") or {}
    final.pop("wall_time_s", None)
    if isinstance(final.get("last"), dict):
        final["last"].pop("wall_time_s", None)
    return lines, final


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
    max(TOL_FACTOR x the two uninterrupted runs' difference, the floor)."""
    ref_lines, ref_final = comparable(reference)
    res_lines, res_final = comparable(resumed)
    result = {"iterations_reference": [x.get("iter") for x in ref_lines],
              "iterations_resumed": [x.get("iter") for x in res_lines]}
    if result["iterations_reference"] != result["iterations_resumed"]:
        result.update(ok=False, mode="structure", reason="the evaluations logged differ in number or iteration")
        return result
    exact = ref_lines == res_lines and ref_final == res_final
    result["exact"] = exact
    if repeat is None:
        result.update(mode="exact", deterministic_assumed=True, ok=exact,
                      reason=None if exact else "the resumed run differs from the uninterrupted run")
        if not exact:
            result["differences"] = max_differences(ref_lines, res_lines)
        return result
    rep_lines, rep_final = comparable(repeat)
    deterministic = rep_lines == ref_lines and rep_final == ref_final
    result["uninterrupted_runs_equal"] = deterministic
    if deterministic:
        result.update(mode="exact", ok=exact,
                      reason=None if exact else "two uninterrupted runs are equal bit for bit, "
                                                "the resumed one differs")
        if not exact:
            result["differences"] = max_differences(ref_lines, res_lines)
        return result
    if [x.get("iter") for x in rep_lines] != result["iterations_reference"]:
        result.update(ok=False, mode="structure", reason="the repeat uninterrupted run logged other iterations")
        return result
    noise = max_differences(ref_lines, rep_lines)
    diff = max_differences(ref_lines, res_lines)
    allowed = {k: max(TOL_FACTOR * noise.get(k, 0.0), TOL_FLOOR_ERROR if "error" in k else TOL_FLOOR_RELATIVE)
               for k in diff}
    over = {k: {"difference": round(diff[k], 6), "allowed": round(allowed[k], 6)}
            for k in diff if not diff[k] <= allowed[k]}
    result.update(mode="tolerance", ok=not over, run_to_run=noise, differences=diff, allowed=allowed,
                  tolerance_rule=f"|resumed - uninterrupted| <= max({TOL_FACTOR} x |uninterrupted - "
                                 f"uninterrupted repeat|, {TOL_FLOOR_ERROR} point of error / "
                                 f"{TOL_FLOOR_RELATIVE:.0%} of a loss), per logged number",
                  reason=None if not over else f"beyond tolerance: {over}")
    return result


def graph_follows_eager(graph: list[dict], eager: list[dict], require_fall: bool) -> list[str]:
    """Problems of a --cuda-graph stretch against the eager stretch of the same command:
    a graph that stopped updating the weights would finish with finite numbers, so its
    total loss must fall (where `require_fall`) and, at each evaluation both logged, stay
    within GRAPH_LOSS_REL of the eager run's (the two runs' kernels accumulate in other
    orders, and bf16 rounding grows the gap, so not bit for bit)."""
    problems = []
    total = [sum(v for k, v in line.items() if k.startswith("loss_")) for line in graph]
    if require_fall and len(total) >= 2 and not total[-1] < total[0]:
        problems.append(f"the graphed run's loss did not fall ({total[0]:.4g} -> {total[-1]:.4g}): "
                        f"are the captured updates replayed?")
    by_iter = {line["iter"]: sum(v for k, v in line.items() if k.startswith("loss_")) for line in eager}
    for line, value in zip(graph, total):
        ref = by_iter.get(line["iter"])
        if ref is not None and not abs(value - ref) <= GRAPH_LOSS_REL * abs(ref):
            problems.append(f"at iteration {line['iter']} the graphed run's loss {value:.4g} is more than "
                            f"{GRAPH_LOSS_REL:.0%} from the eager run's {ref:.4g}")
            break
    return problems


def extrapolate(process_s: float, iters: int, spi: float, full: int = FULL_ITERS) -> float:
    """The measured process time of `iters` iterations plus the rest at the steady rate."""
    return process_s + (full - iters) * spi


# ============================================================================ synthetic data

def make_synthetic_folder(root: Path, train: int, test: int, classes: int = 10, size: int = 32,
                          seed: int = 0) -> Path:
    """A learnable, not trivial, image-folder set: each class a colour close to the others'
    and a faint oriented grating; each image a random brightness shift and strong pixel
    noise on top.  Written as PNGs, read by utils/data.py like any folder."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = 128 + rng.normal(0, 18, size=(classes, 3))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    gratings = []
    for c in range(classes):
        angle = math.pi * c / classes
        gratings.append(np.sin(2 * math.pi / 6 * (math.cos(angle) * xx + math.sin(angle) * yy)))
    for split, count in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"class{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                phase = rng.integers(0, 6)
                pattern = np.roll(gratings[c], phase, axis=1)[..., None]
                pixels = (colours[c] + 14 * pattern + rng.normal(0, 18) +
                          rng.normal(0, 45, size=(size, size, 3)))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.png")
    return root


# ============================================================================ environment

ENV_PROBE = r"""
import json, os, platform, sys
info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count()}
import torch
info.update(torch=torch.__version__, torch_cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            cuda_available=torch.cuda.is_available(),
            device_count=torch.cuda.device_count() if torch.cuda.is_available() else 0,
            torch_threads=torch.get_num_threads())
try:
    from importlib.metadata import version
    info["torchvision"] = version("torchvision")
except Exception as exc:
    info["torchvision"] = f"unavailable: {exc}"
# the student methods and what each needs, from train_student.py's registry
sys.path.insert(0, os.getcwd())
from utils.distill import METHODS
info["methods"] = {name: {"teacher": m.teacher, "paraphraser": m.paraphraser} for name, m in METHODS.items()}
device = sys.argv[1]
if info["cuda_available"]:
    info["devices"] = []
    for i in range(info["device_count"]):
        p = torch.cuda.get_device_properties(i)
        info["devices"].append({"name": p.name, "capability": f"{p.major}.{p.minor}",
                                "memory_gib": round(p.total_memory / 2**30, 1),
                                "multiprocessors": p.multi_processor_count})
    info["bf16_supported"] = torch.cuda.is_bf16_supported()
    try:
        v = torch.cuda.nccl.version()
        info["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
    except Exception as exc:
        info["nccl"] = f"unavailable: {exc}"
if device == "cuda":
    if not info["cuda_available"]:
        print(json.dumps(info))
        raise SystemExit("--device cuda but torch.cuda.is_available() is False "
                         f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    x = torch.randn(8, 3, 32, 32, device="cuda")
    w = torch.randn(16, 3, 3, 3, device="cuda")
    y = torch.nn.functional.conv2d(x, w, padding=1)
    m = torch.randn(256, 256, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        z = m @ m
    torch.cuda.synchronize()
    if not (torch.isfinite(y).all() and torch.isfinite(z.float()).all()):
        raise SystemExit("a convolution / bf16 matmul on the GPU gave non-finite values")
    info["gpu_smoke_test"] = "conv2d (cuDNN), bf16 autocast matmul: finite"
print(json.dumps(info))
"""


def git_info() -> dict:
    info = {}
    try:
        info["commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                        text=True, timeout=20, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=20).stdout
        info["modified_tracked_files"] = len(dirty.splitlines())
    except (OSError, subprocess.SubprocessError):
        info["commit"] = "unknown (no git repository here)"
    # The device copy of the tree may have no .git: a digest of the Python sources names it anyway.
    digest = hashlib.sha256()
    for path in sorted(REPO.rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[0] in (".venv", "runs", "data", "__pycache__") or "__pycache__" in rel.parts:
            continue
        digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    info["python_sources_sha256"] = digest.hexdigest()[:16]
    return info


def nvidia_smi() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                               "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


# ============================================================================ worker (default/ and fast/ runs)

class _Tee(io.TextIOBase):
    def __init__(self, stream, keep: collections.deque):
        self.stream, self.keep = stream, keep

    def write(self, s):
        self.stream.write(s)
        self.keep.append(s)
        return len(s)

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return False

    def fileno(self):
        return self.stream.fileno()


def worker_main(spec_path: str) -> int:
    """Run spec['entries'] (name, script, argv) one after another through each script's own
    entry point; append start / done lines to spec['results']; stop after a failure."""
    spec = json.loads(Path(spec_path).read_text())
    sys.path.insert(0, str(REPO))
    os.chdir(REPO)
    import gc
    import importlib

    import torch

    from utils.cli import run_main

    results = open(spec["results"], "a", buffering=1)

    def emit(record):
        results.write(json.dumps(record) + "\n")
        results.flush()
        os.fsync(results.fileno())

    for entry in spec["entries"]:
        left = entry["deadline"] - time.time()
        if left < entry["min_start_s"]:
            emit({"name": entry["name"], "event": "skipped",
                  "reason": f"budget: {max(left, 0):.0f} s left for it, {entry['min_start_s']:.0f} s needed to start"})
            continue
        emit({"name": entry["name"], "event": "start"})
        keep = collections.deque(maxlen=400)
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, keep), _Tee(err, keep)
        start = time.monotonic()
        rc, error = 0, None
        try:
            script = importlib.import_module(entry["script"].removesuffix(".py"))
            run_main(script.main, script.get_args_parser(), entry["argv"])
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # an asynchronous CUDA error belongs to this run
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - every failure is recorded, KeyboardInterrupt too
            rc, error = 1, traceback.format_exc()
            print(error, file=sys.stderr)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = out, err
        seconds = time.monotonic() - start
        emit({"name": entry["name"], "event": "done", "rc": rc, "seconds": round(seconds, 2),
              "tail": tail_text("".join(keep))})
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if rc != 0:
            return 3  # a failure may leave the process (a CUDA context) unusable: start afresh
    return 0


# ============================================================================ the driver

class Check:
    """The driver: the configuration, the records, the JSON."""

    def __init__(self, args):
        self.args = args
        self.out = Path(args.out).resolve()
        self.tmp = self.out / "tmp"
        self.runs_dir = self.tmp / "runs"
        self.keep_dir = self.out / "runs"
        self.profile = dict(PROFILES[args.device + ("-quick" if args.quick else "")])
        p = self.profile
        for name in ("iters", "eval_every", "batch_size", "teacher_arch", "compile_method", "stretch_iters",
                     "stretch_eval_every", "kill_iters", "kill_eval_every"):
            value = getattr(args, name, None)
            if value is not None:
                p[name] = value
        if args.require_fall is not None:
            p["require_fall"] = args.require_fall
        self.fast_flags = (shlex.split(args.fast_flags) if args.fast_flags is not None
                           else list(p.get("fast_flags", FAST_FLAGS)))
        self.budget = args.budget_s if args.budget_s is not None else p["budget_s"]
        self.deadline = time.monotonic() + self.budget
        self.methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
        self.selected = set(GROUPS if not args.only else [g.strip() for g in args.only.split(",")])
        unknown = self.selected - set(GROUPS)
        if unknown:
            raise SystemExit(f"device_check.py: unknown --only group(s) {sorted(unknown)}; choose from {GROUPS}")
        self.selected.add("environment")
        self.records: list[dict] = []
        self.env_ok = True
        self.environment: dict = {}
        self.data: dict = {}
        self.child_env = dict(os.environ)
        self.child_env.setdefault("FT_CACHE_DIR", str(self.tmp / "cache"))
        self.child_env["PYTHONUNBUFFERED"] = "1"
        self.python = sys.executable

    # ---------------------------------------------------------------- records and JSON
    def record(self, name: str, status: str, **fields) -> dict:
        rec = {"name": name, "ok": status != "failed", "status": status, **fields}
        self.records.append(rec)
        line = f"{name}: {status.upper()}"
        if fields.get("seconds") is not None:
            line += f" in {fields['seconds']:.1f} s"
        if fields.get("reason"):
            line += f" - {fields['reason']}"
        say(line)
        if status == "failed" and fields.get("error_tail"):
            for part in fields["error_tail"].splitlines()[-15:]:
                say(f"    | {part}")
        self.write()
        return rec

    def failed(self, name, reason, **fields):
        return self.record(name, "failed", reason=reason, **fields)

    def status(self, name: str) -> str | None:
        for rec in self.records:
            if rec["name"] == name:
                return rec["status"]
        return None

    def summary(self) -> tuple[bool, str]:
        failures = [r for r in self.records if r["status"] == "failed"]
        skipped = [r for r in self.records if r["status"] == "skipped"]
        passed = [r for r in self.records if r["status"] == "ok"]
        wall = time.monotonic() - T0
        skip_text = "; skipped: " + ", ".join(f"{r['name']} ({r['reason']})" for r in skipped) if skipped else ""
        if failures:
            ran = [r for r in failures if not (r.get("reason") or "").startswith("not run: ")]
            not_run = collections.defaultdict(list)
            for r in failures:
                if r not in ran:
                    not_run[r["reason"].removeprefix("not run: ")].append(r["name"])
            parts = [f"{r['name']} ({(r.get('reason') or '').splitlines()[0][:160]})" for r in ran]
            parts += [f"not run ({why}): {', '.join(names)}" for why, names in not_run.items()]
            text = (f"device_check: FAILED {len(failures)} of {len(self.records)} checks: " + "; ".join(parts)
                    + f"; {len(passed)} passed{skip_text}; {wall:.0f} s")
        else:
            text = (f"device_check: OK, {len(passed)} checks passed{skip_text}; {wall:.0f} s "
                    f"(budget {self.budget:.0f} s)")
        return not failures, text

    def write(self, final: bool = False) -> tuple[bool, str]:
        ok, text = self.summary()
        doc = {
            "ok": ok if final else None,
            "finished": final,
            "summary": text,
            "device": self.args.device,
            "quick": self.args.quick,
            "budget_s": self.budget,
            "wall_s": round(time.monotonic() - T0, 1),
            "environment": self.environment,
            "data": self.data,
            "config": {k: v for k, v in self.profile.items() if k != "reserve"} | {
                "methods": self.methods, "student_arch": STUDENT_ARCH, "k": PARA_K, "beta": FT_BETA,
                "fast_flags": self.fast_flags, "full_schedule_iters": FULL_ITERS, "reserve_s": self.profile["reserve"],
                "inject_failure": self.args.inject_failure, "only": sorted(self.selected)},
            "failures": [r["name"] for r in self.records if r["status"] == "failed"],
            "skipped": {r["name"]: r.get("reason") for r in self.records if r["status"] == "skipped"},
            "checks": self.records,
        }
        write_json_atomic(self.out / "device_check.json", doc)
        return ok, text

    # ---------------------------------------------------------------- budget
    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def time_box(self, group: str, cap: float) -> float:
        """Seconds `group` may use: its cap, less what the later selected checks keep in reserve."""
        later = [g for g in GROUPS[GROUPS.index(group) + 1:] if g in self.selected]
        if "distributed" in later and not self.distributed_runs():
            later.remove("distributed")  # it will be a recorded skip: nothing to keep for it
        reserve = sum(self.profile["reserve"].get(g, 0) for g in later)
        return min(cap, self.remaining() - reserve)

    def distributed_runs(self) -> bool:
        if self.args.device == "cpu":
            return self.args.distributed_on_cpu
        return (self.environment.get("device_count") or 0) >= 2

    def not_run(self, name: str, box: float, needed: float = 5.0) -> bool:
        """Record a budget skip when `box` seconds cannot hold the check; True if skipped."""
        if box >= needed:
            return False
        self.record(name, "skipped", reason=f"budget: {max(box, 0):.0f} s left of --budget-s {self.budget:.0f} "
                                            f"for it, {needed:.0f} s needed")
        return True

    def budget_cut(self, name: str, what: str, start: float, **fields) -> dict:
        """Record a check whose time box (what the budget left it) ran out: skipped, not failed."""
        return self.record(name, "skipped", seconds=round(time.monotonic() - start, 1),
                           reason=f"budget: {what} was cut when the time left for this check ran out "
                                  f"(raise --budget-s)", **fields)

    def blocked(self, name: str, needs: list[str]) -> bool:
        """Record a failure (not run) when the environment or a run this check needs failed."""
        if not self.env_ok:
            self.failed(name, "not run: the environment check failed")
            return True
        missing = [n for n in needs if self.status(n) != "ok"]
        if missing:
            self.failed(name, f"not run: needs {', '.join(missing)}, which "
                              f"{'did not pass' if len(missing) == 1 else 'did not all pass'}")
            return True
        return False

    def inject(self, name: str, argv: list[str]) -> list[str]:
        return [*argv, INJECTED] if self.args.inject_failure == name else argv

    # ---------------------------------------------------------------- commands
    def common(self) -> list[str]:
        p = self.profile
        argv = ["--dataset", "folder", "--data-root", self.data.get("root", "<no data>"), "--device", self.args.device,
                "--progress", "off", "--batch-size", str(p["batch_size"])]
        if self.data.get("test_subset"):
            argv += ["--test-subset", str(self.data["test_subset"])]
        if self.data.get("train_subset"):
            argv += ["--train-subset", str(self.data["train_subset"])]
        return argv

    def teacher_dir(self) -> Path:
        return self.runs_dir / "default" / "teacher"

    def para_dir(self) -> Path:
        return self.runs_dir / "default" / "paraphraser"

    def student_argv(self, method: str, iters: int, eval_every: int, out: Path, extra=()) -> list[str]:
        argv = [*self.common(), "--method", method, "--arch", STUDENT_ARCH, "--iters", str(iters),
                "--eval-every", str(eval_every), "--out", str(out)]
        needs = self.needs(method)
        if "default/teacher" in needs:
            argv += ["--teacher", str(self.teacher_dir())]
        if "default/paraphraser" in needs:
            argv += ["--paraphraser", str(self.para_dir()), "--beta", FT_BETA]
        return [*argv, *extra]

    def needs(self, method: str) -> list[str]:
        """The default/ runs a student method needs, from utils.distill.METHODS (read by the
        environment probe); a name not there needs a teacher (and fails as an unknown method)."""
        spec = self.environment.get("methods", {}).get(method, {"teacher": True, "paraphraser": False})
        return ["default/teacher"] * spec["teacher"] + ["default/paraphraser"] * spec["paraphraser"]

    def stage_entries(self, group: str) -> list[dict]:
        """(name, script, argv, needs) of every run of default/ or fast/."""
        p = self.profile
        n, e = str(p["iters"]), str(p["eval_every"])
        root = self.runs_dir / group
        flags = {"default": [], "fast": self.fast_flags, "graph": [*self.fast_flags, "--cuda-graph"]}[group]
        entries = [
            {"name": f"{group}/teacher", "script": "train_teacher.py", "needs": [],
             "argv": [*self.common(), "--arch", p["teacher_arch"], "--iters", n, "--eval-every", e,
                      "--out", str(root / "teacher"), *flags]},
            {"name": f"{group}/paraphraser", "script": "train_paraphraser.py", "needs": ["default/teacher"],
             "argv": [*self.common(), "--teacher", str(self.teacher_dir()), "--k", PARA_K, "--iters", n,
                      "--eval-every", e, "--out", str(root / "paraphraser"), *flags]},
        ]
        for m in self.methods:
            if group == "graph" and m in GRAPH_REFUSED:
                continue
            extra = list(flags)
            if group == "fast" and m == p["compile_method"]:
                extra.append("--compile")
            entries.append({"name": f"{group}/student-{m}", "script": "train_student.py", "needs": self.needs(m),
                            "argv": self.student_argv(m, p["iters"], p["eval_every"], root / f"student-{m}", extra)})
        # the compiled run last: its compile time is the least predictable
        entries.sort(key=lambda entry: "--compile" in entry["argv"])
        for entry in entries:
            entry["argv"] = self.inject(entry["name"], entry["argv"])
            entry["out"] = entry["argv"][entry["argv"].index("--out") + 1]
            entry["compile"] = "--compile" in entry["argv"]
        return entries

    def keep_run(self, name: str, out: Path) -> None:
        """Copy the small files of a run folder to OUT/runs/<name>/ (the rest is scratch)."""
        dest = self.keep_dir / name.replace("/", "__")
        dest.mkdir(parents=True, exist_ok=True)
        for f in ("args.json", "metrics.jsonl", "final.json"):
            if (out / f).exists():
                shutil.copy2(out / f, dest / f)

    # ---------------------------------------------------------------- 1. environment
    def check_environment(self) -> None:
        name = "environment"
        self.environment = {"git": git_info(), "nvidia_smi": nvidia_smi(), "python_executable": self.python,
                            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
        cmd = [self.python, "-c", ENV_PROBE, self.args.device]
        if self.args.inject_failure == name:
            cmd = [self.python, "-c", "raise SystemExit('injected failure (--inject-failure environment)')"]
        r = run_command(cmd, name, self.child_env, self.profile["env_cap_s"], keep_stdout=True)
        probe = None
        for line in reversed(r["stdout"].splitlines()):
            try:
                probe = json.loads(line)
                break
            except ValueError:
                continue
        if probe:
            self.environment.update(probe)
        if r["rc"] != 0 or probe is None or r["timed_out"]:
            self.env_ok = False
            self.failed(name, f"exit {r['rc']}" + (" (timed out)" if r["timed_out"] else "") +
                        f": {r['tail'].splitlines()[-1] if r['tail'] else 'no output'}",
                        command="python -c <probe> " + self.args.device, seconds=r["seconds"],
                        error_tail=r["tail"])
            return
        fields = {"torch": probe.get("torch"), "cuda": probe.get("torch_cuda"), "cudnn": probe.get("cudnn"),
                  "device_count": probe.get("device_count"),
                  "devices": [d["name"] for d in probe.get("devices", [])]}
        self.record(name, "ok", command="python -c <probe> " + self.args.device, seconds=r["seconds"], **fields)

    # ---------------------------------------------------------------- data
    def prepare_data(self) -> None:
        start = time.monotonic()
        choice = self.args.data
        p = self.profile
        if choice == "auto":
            bundled = REPO / "data" / "cifar10-jpeg.tar.gz"
            choice = str(bundled) if bundled.exists() else "synthetic"
        if choice == "synthetic":
            root = self.tmp / "data"
            if not (root / "train").exists():
                make_synthetic_folder(root, p["synthetic_train"], p["synthetic_test"])
            self.data = {"source": "synthetic", "root": str(root),
                         "description": "10 classes of 32x32 PNGs generated by scripts/device_check.py "
                                        "(class colour + faint oriented grating + per-image brightness "
                                        "shift + pixel noise)",
                         "train_images": 10 * p["synthetic_train"], "test_images": 10 * p["synthetic_test"]}
        else:
            path = Path(choice).resolve()
            if not path.exists():
                raise SystemExit(f"device_check.py: --data {choice} does not exist")
            self.data = {"source": "folder", "root": str(path), "test_subset": p["real_test_subset"],
                         "train_subset": p.get("real_train_subset"),
                         "description": f"image folder / archive {path} (test error on a class-balanced "
                                        f"{p['real_test_subset']}-image subset of its test set"
                                        + (f", training on {p['real_train_subset']} images)"
                                           if p.get("real_train_subset") else ")")}
        self.data["seconds"] = round(time.monotonic() - start, 1)
        say(f"data: {self.data['source']} at {self.data['root']} ({self.data['seconds']} s)")

    # ---------------------------------------------------------------- 2-3. stage runs in a worker
    def check_stage_groups(self) -> None:
        groups = [g for g in ("default", "fast", "graph") if g in self.selected]
        if self.methods is None:
            if not self.env_ok:  # the method registry is unknown too
                for g in groups:
                    self.failed(f"{g}/*", "not run: the environment check failed")
                return
            self.methods = list(self.environment["methods"])
        needed = set()
        if "default" not in groups and self.selected & {"fast", "graph", "kill-resume", "distributed", "ft-timing",
                                                          "ft-timing-fast", "ft-timing-graph"}:
            needed = {"default/teacher", "default/paraphraser"}  # later checks need them: train them anyway
        pending = []
        for g in ("default", "fast", "graph"):
            for e in self.stage_entries(g):
                if g in groups or e["name"] in needed:
                    e["group"] = g
                    pending.append(e)
        launch = 0
        while pending:
            ready = []
            for e in pending:
                deps = {n: self.status(n) for n in e["needs"]}
                if not self.env_ok:
                    self.failed(e["name"], "not run: the environment check failed", command=self.cli(e))
                elif any(s == "failed" for s in deps.values()):
                    bad = [n for n, s in deps.items() if s == "failed"]
                    self.failed(e["name"], f"not run: needs {', '.join(bad)}, which failed", command=self.cli(e))
                elif any(s == "skipped" for s in deps.values()):
                    self.record(e["name"], "skipped", command=self.cli(e),
                                reason="budget: a run it needs was skipped for the budget")
                elif self.time_box(e["group"], math.inf) < 0.25 * self.entry_cap(e):
                    left = max(self.time_box(e["group"], math.inf), 0)
                    self.record(e["name"], "skipped", command=self.cli(e),
                                reason=f"budget: {left:.0f} s left for it, {0.25 * self.entry_cap(e):.0f} s "
                                       f"needed to start")
                else:
                    ready.append(e)
            if not ready:
                break
            launch += 1
            pending = self.run_worker(ready, launch)

    @staticmethod
    def cli(entry: dict) -> str:
        return shlex.join(["python", entry["script"], *entry["argv"]])

    def entry_cap(self, e: dict) -> float:
        return self.profile["compile_cap_s"] if e["compile"] else self.profile["entry_cap_s"]

    def run_worker(self, entries: list[dict], launch: int) -> list[dict]:
        """Run `entries` in one worker process and record each; return those it did not reach
        (it stops after a failure).  The worker skips a run when less than a quarter of the
        run's time box is left of the budget; the driver kills a run that outlives its box."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        results = self.tmp / f"worker{launch}.jsonl"
        spec = self.tmp / f"worker{launch}.json"
        deadlines = {g: time.time() + self.time_box(g, math.inf) for g in {e["group"] for e in entries}}
        spec.write_text(json.dumps({
            "entries": [{"name": e["name"], "script": e["script"], "argv": e["argv"],
                         "deadline": deadlines[e["group"]], "min_start_s": 0.25 * self.entry_cap(e)}
                        for e in entries],
            "results": str(results)}))
        results.write_text("")
        proc = Proc([self.python, "-u", str(Path(__file__).resolve()), "--worker", str(spec)],
                    f"worker{launch}", self.child_env)
        by_name = {e["name"]: e for e in entries}
        reached: set[str] = set()
        consumed = 0
        current, started_at, box = None, 0.0, 0.0
        killed = False

        def consume():
            nonlocal consumed, current, started_at, box
            lines = read_jsonl(results)
            for rec in lines[consumed:]:
                e = by_name[rec["name"]]
                reached.add(rec["name"])
                if rec["event"] == "start":
                    current, started_at = rec["name"], time.monotonic()
                    box = max(0.0, min(self.entry_cap(e), deadlines[e["group"]] - time.time()))
                    say(f"{current}: started (time box {box:.0f} s) $ {self.cli(e)}")
                elif rec["event"] == "skipped":
                    self.record(rec["name"], "skipped", command=self.cli(e), reason=rec["reason"])
                else:
                    self.finish_entry(e, rec)
                    current = None
            consumed = len(lines)

        while True:
            consume()
            if proc.poll() is not None:
                break
            if current is not None and time.monotonic() - started_at > box:
                killed = True
                proc.kill()
                break
            time.sleep(0.1)
        rc, _ = proc.wait(60)
        consume()
        if current is not None:
            e = by_name[current]
            cap = self.entry_cap(e)
            seconds = round(time.monotonic() - started_at, 1)
            if killed and box < cap:  # the budget ran out, not the run's own time box
                self.record(current, "skipped", command=self.cli(e), seconds=seconds, process="shared worker",
                            reason=f"budget: cut after {box:.0f} s, less than its own time box of {cap:.0f} s "
                                   f"(raise --budget-s)")
            else:
                why = (f"exceeded its time box of {box:.0f} s; killed" if killed else
                       f"the worker process died (exit {rc}) during this run")
                self.failed(current, why, command=self.cli(e), seconds=seconds,
                            error_tail=proc.output_tail(), process="shared worker")
        elif rc not in (0, 3):
            for e in entries:
                if e["name"] not in reached:
                    self.failed(e["name"], f"not run: the worker process exited {rc} before it",
                                command=self.cli(e), error_tail=proc.output_tail(), process="shared worker")
            return []
        return [e for e in entries if e["name"] not in reached]

    def finish_entry(self, e: dict, rec: dict) -> None:
        out = Path(e["out"])
        fields = {"command": self.cli(e), "seconds": rec["seconds"], "process": "shared worker",
                  "flags": e["group"], "compile": e["compile"]}
        if rec["rc"] != 0:
            last = [x for x in rec["tail"].splitlines() if x.strip()]
            self.failed(e["name"], f"exit {rec['rc']}: {last[-1][:300] if last else 'no output'}",
                        error_tail=rec["tail"], **fields)
            return
        self.keep_run(e["name"], out)
        info, problems = analyse_run(out, self.profile["batch_size"], self.profile["require_fall"])
        fields.update(info)
        if e["name"].endswith("student-ft") and info.get("steady_s_per_iter"):
            fields["extrapolated_64000_s"] = round(extrapolate(rec["seconds"], info["iters"],
                                                               info["steady_s_per_iter"]), 1)
            fields["extrapolated_note"] = (f"extrapolated from {info['iters']} iterations (evaluations every "
                                           f"{self.profile['eval_every']}); see ft-timing for the measured stretch")
        if e["group"] == "graph":  # the captured step must learn as the eager one with the same flags
            eager = e["name"].replace("graph/", "fast/", 1)
            if self.status(eager) == "ok":
                problems += graph_follows_eager(read_jsonl(out / "metrics.jsonl"),
                                                read_jsonl(Path(e["out"].replace("/graph/", "/fast/"))
                                                           / "metrics.jsonl"), self.profile["require_fall"])
                fields["graph_vs_eager"] = f"compared with {eager}"
        if problems:
            self.failed(e["name"], "; ".join(problems), error_tail=rec["tail"], **fields)
        else:
            self.record(e["name"], "ok", **fields)

    # ---------------------------------------------------------------- 4. kill and resume
    def check_kill_resume(self) -> None:
        name = "kill-resume"
        if self.blocked(name, ["default/teacher", "default/paraphraser"]):
            return
        p = self.profile
        box = self.time_box(name, math.inf)
        if self.not_run(name, box, needed=max(10, 0.5 * p["reserve"]["kill-resume"])):
            return
        end = time.monotonic() + box
        start = time.monotonic()
        root = self.runs_dir / "kill"
        iters, every = p["kill_iters"], p["kill_eval_every"]
        kill_after_lines = max(1, (iters // every) // 2)  # half-way: checkpoints logged before the kill

        # On CUDA each process's cuDNN autotuner may choose other algorithms: --deterministic
        # takes cuDNN's deterministic ones, so that equality between processes means something.
        det = ["--deterministic"] if self.args.device == "cuda" else []

        def cmd(out):
            argv = self.student_argv("ft", iters, every, out, det)
            return [self.python, "train_student.py", *(self.inject(name, argv) if out.name == "reference" else argv)]

        repeat_reference = (self.args.repeat_reference if self.args.repeat_reference is not None
                            else self.args.device == "cuda")
        steps = {}
        fields = {"command": shown(cmd(root / "killed")), "method": "ft", "iters": iters, "eval_every": every}
        # uninterrupted reference (and, on CUDA, a repeat to measure run-to-run differences)
        refs = ["reference"] + (["repeat"] if repeat_reference else [])
        for ref in refs:
            r = run_command(cmd(root / ref), f"{name}/{ref}", self.child_env, end - time.monotonic())
            steps[ref] = {"rc": r["rc"], "seconds": r["seconds"]}
            if r["timed_out"]:
                return self.budget_cut(name, f"the uninterrupted {ref} run", start, steps=steps, **fields)
            if r["rc"] != 0:
                return self.failed(name, f"the uninterrupted {ref} run: exit {r['rc']}"
                                   + (" (time box exceeded)" if r["timed_out"] else ""),
                                   seconds=round(time.monotonic() - start, 1), error_tail=r["tail"],
                                   steps=steps, **fields)
        # the run to kill: SIGKILL once `kill_after_lines` evaluations are logged
        out = root / "killed"
        proc = Proc(cmd(out), f"{name}/killed", self.child_env)
        landed, lines_at_kill = False, 0
        while proc.poll() is None and time.monotonic() < end:
            lines_at_kill = len(read_jsonl(out / "metrics.jsonl"))
            if lines_at_kill >= kill_after_lines:
                proc.kill(signal.SIGKILL)
                landed = True
                break
            time.sleep(0.005)
        rc, timed_out = proc.wait(max(end - time.monotonic(), 1))
        finished_before = (out / "final.json").exists()
        steps["killed"] = {"rc": rc, "seconds": proc.seconds, "evaluations_logged_at_kill": lines_at_kill}
        if not landed and not finished_before and time.monotonic() >= end:
            return self.budget_cut(name, "the run to kill", start, steps=steps, **fields)
        if not landed or finished_before:
            why = ("the run finished before the kill landed; raise --kill-iters" if finished_before else
                   f"the run ended (exit {rc}) or the time box ran out before {kill_after_lines} evaluations")
            return self.failed(name, why, seconds=round(time.monotonic() - start, 1), error_tail=proc.output_tail(),
                               steps=steps, **fields)
        before = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
        r = run_command(cmd(out), f"{name}/resumed", self.child_env, end - time.monotonic())
        steps["resumed"] = {"rc": r["rc"], "seconds": r["seconds"]}
        if r["timed_out"]:
            return self.budget_cut(name, "the resumed run", start, steps=steps, **fields)
        if r["rc"] != 0:
            return self.failed(name, f"the resumed run: exit {r['rc']}" + (" (time box)" if r["timed_out"] else ""),
                               seconds=round(time.monotonic() - start, 1), error_tail=r["tail"], steps=steps, **fields)
        resumed_from = None
        for line in r["resuming"]:
            resumed_from = int(line.rsplit(" from iteration ", 1)[1].split()[0])
        after = (out / "metrics.jsonl").read_text().splitlines()
        problems = []
        if resumed_from is None:
            problems.append("the re-run did not say it resumed from a checkpoint")
        kept = [x for x in before if json.loads(x)["iter"] <= (resumed_from or 0)]
        if after[:len(kept)] != kept:
            problems.append("lines logged before the kill changed on resume")
        repeat = root / "repeat" if "repeat" in refs else None
        comparison = compare_runs(root / "reference", out, repeat)
        if not comparison["ok"]:
            problems.append(comparison.get("reason") or "differs from the uninterrupted run")
        self.keep_run(f"{name}/resumed", out)
        self.keep_run(f"{name}/reference", root / "reference")
        fields.update(steps=steps, resumed_from_iter=resumed_from, comparison=comparison,
                      equality=("bit for bit (this device is deterministic: "
                                + ("the CPU" if repeat is None else "two uninterrupted runs were equal") + ")")
                      if comparison.get("mode") == "exact" else
                      "within tolerance: two uninterrupted runs differ on this device (nondeterministic "
                      "kernels, e.g. cuDNN autotuner choices, atomics in backward passes)")
        seconds = round(time.monotonic() - start, 1)
        if problems:
            self.failed(name, "; ".join(problems), seconds=seconds, **fields)
        else:
            self.record(name, "ok", seconds=seconds, **fields)

    # ---------------------------------------------------------------- 5. two processes
    def check_distributed(self) -> None:
        name = "distributed"
        count = self.environment.get("device_count") or 0
        use_gloo = self.args.device == "cpu" and self.args.distributed_on_cpu
        if self.args.device == "cuda" and self.env_ok and count < 2:
            self.record(name, "skipped", reason=f"skipped: {count} GPU" + ("" if count == 1 else "s")
                        + " (NCCL two-process training needs 2)", device_count=count)
            return
        if self.args.device == "cpu" and not use_gloo:
            self.record(name, "skipped", reason="skipped: CPU mode, no GPU (NCCL needs 2 GPUs; "
                        "--distributed-on-cpu runs the two processes with gloo)", device_count=count)
            return
        if self.blocked(name, ["default/teacher", "default/paraphraser"]):
            return
        box = self.time_box(name, self.profile["dist_cap_s"])
        if self.not_run(name, box, needed=10):
            return
        p = self.profile
        out = self.runs_dir / "distributed"
        batch = p["batch_size"] - p["batch_size"] % 2
        argv = self.student_argv("ft", p["iters"], p["eval_every"], out,
                                 [] if batch == p["batch_size"] else ["--batch-size", str(batch)])
        cmd = [self.python, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(free_port()), "train_student.py", *self.inject(name, argv)]
        env = dict(self.child_env)
        env.setdefault("OMP_NUM_THREADS", "1")
        r = run_command(cmd, name, env, box)
        fields = {"command": shown(cmd), "seconds": r["seconds"], "backend": "gloo" if use_gloo else "nccl",
                  "processes": 2}
        if r["rc"] != 0:
            return self.failed(name, f"exit {r['rc']}" + (" (time box exceeded)" if r["timed_out"] else ""),
                               error_tail=r["tail"], **fields)
        self.keep_run(name, out)
        info, problems = analyse_run(out, batch, p["require_fall"])
        fields.update(info)
        if problems:
            self.failed(name, "; ".join(problems), error_tail=r["tail"], **fields)
        else:
            self.record(name, "ok", **fields)

    # ---------------------------------------------------------------- 6. benchmark
    def check_benchmark(self) -> None:
        name = "benchmark"
        if self.blocked(name, []):
            return
        box = self.time_box(name, self.profile["bench_cap_s"])
        if self.not_run(name, box, needed=20):
            return
        cmd = [self.python, "scripts/benchmark.py", "--device", self.args.device, "--json",
               *self.profile["bench_args"]]
        cmd = self.inject(name, cmd)
        r = run_command(cmd, name, self.child_env, box, keep_stdout=True)
        fields = {"command": shown(cmd), "seconds": r["seconds"]}
        if r["rc"] != 0:
            return self.failed(name, f"exit {r['rc']}" + (" (time box exceeded)" if r["timed_out"] else ""),
                               error_tail=r["tail"], **fields)
        try:
            report = json.loads(r["stdout"])
        except ValueError:
            return self.failed(name, "its stdout is not one JSON object", error_tail=tail_text(r["stdout"]), **fields)
        write_json_atomic(self.out / "benchmark.json", report)
        stages = {}
        problems = []
        for stage, res in report.get("stages", {}).items():
            ips = res.get("images_per_s", {})
            stages[stage] = {"img_per_s": ips, "a_over_c": res.get("speedup_default"),
                             "b_over_c": res.get("speedup_fast"), "fast_flags": res.get("fast_flags")}
            if not ips or not all(is_number(v) and math.isfinite(v) and v > 0 for v in ips.values()):
                problems.append(f"{stage}: images/s not all positive and finite: {ips}")
        if not stages:
            problems.append("no stages in its JSON")
        fields.update(benchmark_device=report.get("device"), stages=stages, saved="benchmark.json")
        if problems:
            self.failed(name, "; ".join(problems), **fields)
        else:
            self.record(name, "ok", **fields)

    # ---------------------------------------------------------------- 7. timed FT student
    def timed_run(self, cmd: list[str], label: str, out: Path, box: float) -> dict:
        """Run `cmd` for at most `box` seconds, noting when each evaluation line appears
        (seconds since the process started); a run cut by the box keeps what it logged."""
        proc = Proc(cmd, label, self.child_env)
        seen: list[float] = []
        end = proc.start + box
        timed_out = False
        while proc.poll() is None:
            n = len(read_jsonl(out / "metrics.jsonl"))
            while len(seen) < n:
                seen.append(round(time.monotonic() - proc.start, 2))
            if time.monotonic() > end:
                timed_out = True
                proc.kill()
                break
            time.sleep(0.05)
        rc, _ = proc.wait(30)
        n = len(read_jsonl(out / "metrics.jsonl"))
        while len(seen) < n:  # lines written in the last poll interval
            seen.append(proc.seconds)
        return {"rc": rc, "timed_out": timed_out, "seconds": proc.seconds, "tail": proc.output_tail(),
                "line_seen_s": seen}

    def check_ft_timing(self, variant: str) -> None:
        """A timed FT student stretch and the full schedule's time: measured when the budget
        holds the full run, otherwise extrapolated as the time the stretch took to its last
        evaluation (start-up, data, warm-up included) plus the remaining iterations at the
        steady rate between its first and last evaluation.  A stretch cut short by its time
        box still gives the estimate when it logged two evaluations."""
        name = {"default": "ft-timing", "fast": "ft-timing-fast", "graph": "ft-timing-graph"}[variant]
        if self.blocked(name, ["default/teacher", "default/paraphraser"]):
            return
        p = self.profile
        box = self.time_box(name, math.inf)
        if self.not_run(name, box, needed=15):
            return
        iters, every = p["stretch_iters"], p["stretch_eval_every"]
        flags = {"default": [], "fast": self.fast_flags, "graph": [*self.fast_flags, "--cuda-graph"]}[variant]
        out = self.runs_dir / name / "stretch"
        argv = self.inject(name, self.student_argv("ft", iters, every, out, flags))
        cmd = [self.python, "train_student.py", *argv]
        r = self.timed_run(cmd, f"{name}/stretch", out, box)
        fields = {"command": shown(cmd), "seconds": r["seconds"], "flags": " ".join(flags) or "default",
                  "teacher_arch": p["teacher_arch"], "student_arch": STUDENT_ARCH, "batch_size": p["batch_size"],
                  "data": self.data.get("source")}
        lines = read_jsonl(out / "metrics.jsonl")
        if r["timed_out"] and len(lines) < 2:
            return self.record(name, "skipped", reason=f"budget: its {box:.0f} s ran out before two evaluations",
                               **fields)
        if r["rc"] != 0 and not r["timed_out"]:
            return self.failed(name, f"exit {r['rc']}", error_tail=r["tail"], **fields)
        self.keep_run(f"{name}/stretch", out)
        spi = steady_seconds_per_iter(lines)
        bad = sorted({k for line in lines for k, v in line.items() if is_number(v) and not math.isfinite(v)})
        done = lines[-1]["iter"]
        reached_s = r["line_seen_s"][len(lines) - 1]
        fields.update(stretch_iters=iters, stretch_eval_every=every, stretch_iters_done=done,
                      stretch_cut_by_time_box=r["timed_out"], stretch_process_s=r["seconds"],
                      stretch_last_eval_reached_s=reached_s, steady_s_per_iter=round(spi, 6) if spi else None,
                      steady_img_per_s=round(p["batch_size"] / spi, 1) if spi else None, losses_finite=not bad,
                      last_test_error=lines[-1].get("test_error"))
        if bad:
            return self.failed(name, f"non-finite values logged: {', '.join(bad)}", **fields)
        if not spi:
            return self.failed(name, "fewer than two evaluations in the stretch: no steady rate", **fields)
        if variant == "graph":
            problems = graph_follows_eager(lines, read_jsonl(self.runs_dir / "ft-timing-fast" / "stretch" /
                                                             "metrics.jsonl"), self.profile["require_fall"])
            fields["graph_vs_eager"] = problems or "the graphed stretch learned and followed the eager one"
            if problems:
                return self.failed(name, "; ".join(problems), **fields)
        full_iters = self.args.full_iters
        estimate = extrapolate(reached_s, done, spi, full_iters)
        fields.update(full_schedule_iters=full_iters, extrapolated_full_s=round(estimate, 1),
                      extrapolated_full_min=round(estimate / 60, 2),
                      full_schedule_time=(
                          f"extrapolated from {done} iterations: {estimate:.0f} s ({estimate / 60:.1f} min) = "
                          f"{reached_s:.1f} s to iteration {done} (process start-up, data, warm-up included) + "
                          f"{full_iters - done} x {spi * 1e3:.3f} ms (the seconds per iteration between its "
                          f"evaluations at iterations {lines[0]['iter']} and {done}, evaluations and checkpoints "
                          f"every {every} included)"))
        room = self.time_box(name, math.inf)
        if not r["timed_out"] and estimate * 1.15 + 10 < room:
            out_full = self.runs_dir / name / "full"
            cmd_full = [self.python, "train_student.py",
                        *self.student_argv("ft", full_iters, min(1000, full_iters), out_full, flags)]
            rf = run_command(cmd_full, f"{name}/full", self.child_env, room)
            fields["full_run"] = {"run": True, "command": shown(cmd_full), "rc": rf["rc"], "seconds": rf["seconds"],
                                  "iters": full_iters, "predicted_s": round(estimate, 1)}
            if rf["rc"] != 0:
                return self.failed(name, f"the full {full_iters}-iteration run: exit {rf['rc']}"
                                   + (" (time box exceeded)" if rf["timed_out"] else ""),
                                   error_tail=rf["tail"], **fields)
            self.keep_run(f"{name}/full", out_full)
            fields["full_schedule_time"] = f"measured: {rf['seconds']:.0f} s for {full_iters} iterations (process)"
            fields["full_run"]["final"] = read_json(out_full / "final.json")
        else:
            fields["full_run"] = {"run": False, "iters": full_iters,
                                  "reason": f"budget: the estimated {estimate:.0f} s exceed the "
                                            f"{max(room, 0):.0f} s left" if not r["timed_out"] else
                                            "budget: the stretch itself was cut by its time box"}
        self.record(name, "ok", **fields)

    # ---------------------------------------------------------------- all
    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        say(f"device_check: --device {self.args.device}{' --quick' if self.args.quick else ''}, budget "
            f"{self.budget:.0f} s, out {self.out}")
        self.write()
        self.check_environment()
        if not self.env_ok:
            self.data = {"source": "not prepared: the environment check failed"}
        else:
            try:
                self.prepare_data()
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - no data fails every run
                self.env_ok = False
                self.failed("data", f"preparing the data failed: {exc}", error_tail=traceback.format_exc())
        self.check_stage_groups()
        for group, check in (("kill-resume", self.check_kill_resume), ("distributed", self.check_distributed),
                             ("benchmark", self.check_benchmark), ("ft-timing", lambda: self.check_ft_timing("default")),
                             ("ft-timing-fast", lambda: self.check_ft_timing("fast")),
                             ("ft-timing-graph", lambda: self.check_ft_timing("graph"))):
            if group not in self.selected:
                continue
            try:
                check()
            except Exception:  # noqa: BLE001 - a bug here fails this check, not the others
                self.failed(group, "device_check.py raised", error_tail=traceback.format_exc())
        if not self.args.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        ok, text = self.write(final=True)
        say(text)
        return 0 if ok else 1


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Check every stage, method and fast path of this code on a device, within a time budget; "
                    "write OUT/device_check.json (run through scripts/device_check.sh, which tees the log). "
                    "Sizes left unset come from the mode's profile (PROFILES in this file).")
    parser.add_argument("out", help="output folder (device_check.json, runs/, benchmark.json; scratch in tmp/)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda fails loudly when CUDA is unavailable; cpu runs the same checks small "
                             "(default: cuda)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="total seconds (default: 480 on cuda, 240 with --quick; 1800 / 600 on cpu)")
    parser.add_argument("--quick", action="store_true", help="smaller runs (on the CPU: a few iterations each)")
    parser.add_argument("--data", default="auto",
                        help="synthetic (generated into OUT/tmp), a folder / .tar.gz of train/ test/ class "
                             "folders, or auto: data/cifar10-jpeg.tar.gz under the repository when present, "
                             "else synthetic (default: auto)")
    parser.add_argument("--methods", default=None,
                        help="comma list of student methods (default: every one in utils.distill.METHODS)")
    parser.add_argument("--only", default=None, help=f"comma list of check groups ({','.join(GROUPS)}); "
                        "the default teacher and paraphraser are trained when a selected check needs them")
    parser.add_argument("--iters", type=int, default=None, help="iterations of each default/ and fast/ run (cuda: 300)")
    parser.add_argument("--eval-every", type=int, default=None, help="their evaluation interval (cuda: 30)")
    parser.add_argument("--batch-size", type=int, default=None, help="every run's batch (cuda: 128)")
    parser.add_argument("--teacher-arch", default=None, help="default: resnet56 (resnet20 with --device cpu --quick)")
    parser.add_argument("--compile-method", default=None,
                        help="the fast/ student run with --compile (none: no compile run; default: ft on "
                             "cuda, none on cpu and with --quick on cuda)")
    parser.add_argument("--fast-flags", default=None,
                        help="the fast/ runs' flags (default: --amp bf16 --channels-last --fold-bn; "
                             "--device cpu --quick: --channels-last --fold-bn)")
    parser.add_argument("--kill-iters", type=int, default=None, help="iterations of the kill-resume runs (cuda: 400)")
    parser.add_argument("--kill-eval-every", type=int, default=None, help="(cuda: 100)")
    parser.add_argument("--stretch-iters", type=int, default=None, help="iterations of the timed FT stretch (cuda: 3000)")
    parser.add_argument("--stretch-eval-every", type=int, default=None, help="(cuda: 500)")
    parser.add_argument("--full-iters", type=int, default=FULL_ITERS,
                        help="the full schedule the stretch is extrapolated to, run when the budget holds "
                             "it (default: 64,000, the paper's)")
    parser.add_argument("--require-fall", action=argparse.BooleanOptionalAction, default=None,
                        help="fail a run whose error at the end is not below its first evaluation's "
                             "(default: on cuda)")
    parser.add_argument("--repeat-reference", action=argparse.BooleanOptionalAction, default=None,
                        help="kill-resume: run the uninterrupted reference twice, to tell a deterministic "
                             "device (exact equality required) from one that is not (tolerance) "
                             "(default: on cuda; the CPU is deterministic)")
    parser.add_argument("--distributed-on-cpu", action="store_true",
                        help="with --device cpu, run the two-process check with gloo instead of skipping it")
    parser.add_argument("--inject-failure", default=None, metavar="CHECK",
                        help="make CHECK's command fail (an unknown argument), to see the script fail loudly")
    parser.add_argument("--keep-tmp", action="store_true", help="keep OUT/tmp (data, checkpoints)")
    return parser


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2]))
    sys.exit(Check(get_args_parser().parse_args()).run())
