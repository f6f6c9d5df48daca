"""Child processes of scripts/gpu_check.py, streamed to its log with a label; what the
machine is (git, nvidia-smi); the small generated data set of its --tiny mode."""

from __future__ import annotations

import collections
import hashlib
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
T0 = time.monotonic()
_print_lock = threading.Lock()


def say(message: str) -> None:
    with _print_lock:
        print(f"[{time.monotonic() - T0:7.1f}s] {message}", flush=True)


def tail_text(text: str, chars: int = 3000) -> str:
    text = text.strip()
    return text if len(text) <= chars else "..." + text[-chars:]


def shown(cmd: list[str]) -> str:
    """A command as one would type it from the repository root."""
    return shlex.join(["python" if i == 0 and c == sys.executable else c for i, c in enumerate(cmd)])


class Proc:
    """A child process in its own session, its output streamed to the log with a label and
    its tail kept; its stdout kept whole instead when `keep_stdout` (a JSON printed there)."""

    def __init__(self, cmd: list[str], label: str, env: dict, keep_stdout: bool = False):
        self.cmd, self.label = cmd, label
        say(f"[{label}] $ {shown(cmd)}")
        self.start = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE if keep_stdout else subprocess.STDOUT,
                                     start_new_session=True, text=True, errors="replace", bufsize=1)
        self.tail = collections.deque(maxlen=80)
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
        """Signal the child's whole session (a training script and anything it started)."""
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    @property
    def seconds(self) -> float:
        return round(time.monotonic() - self.start, 2)

    def output_tail(self, chars: int = 3000) -> str:
        return tail_text("\n".join(self.tail), chars)


def run_command(cmd, label, env, timeout, keep_stdout=False) -> dict:
    p = Proc(cmd, label, env, keep_stdout)
    rc, timed_out = p.wait(timeout)
    return {"rc": rc, "timed_out": timed_out, "seconds": p.seconds, "tail": p.output_tail(),
            "stdout": "".join(p.stdout)}


# ============================================================================ the machine

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
        if rel.parts[0] in (".venv", "runs", "data") or "__pycache__" in rel.parts:
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


# ============================================================================ --tiny's data

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
    gratings = [np.sin(2 * math.pi / 6 * (math.cos(math.pi * c / classes) * xx + math.sin(math.pi * c / classes) * yy))
                for c in range(classes)]
    for split, count in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"class{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pattern = np.roll(gratings[c], rng.integers(0, 6), axis=1)[..., None]
                pixels = (colours[c] + 14 * pattern + rng.normal(0, 18) +
                          rng.normal(0, 45, size=(size, size, 3)))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.png")
    return root
