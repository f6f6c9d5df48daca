"""A run folder: arguments, lock, checkpoints, metrics, TensorBoard events, final result.

    OUT/args.json        resolved arguments, what the run is ("run"), git commit, torch version
    OUT/checkpoint.pt    latest state, written atomically (tmp file + rename), so the
                         previous checkpoint stays whole until the new one is complete
    OUT/metrics.jsonl    one JSON line per evaluation
    OUT/events.*         TensorBoard scalars
    OUT/final.json       written last; its presence means the run is finished; its "run"
                         says what the run is, as args.json does

utils/record.py reads and writes the records (args.json, metrics.jsonl, final.json) and
migrates older ones; this module owns the folder for a training process.

Re-running the same command on the same folder resumes from checkpoint.pt; on a
finished run it reports the result and exits.  One process writes a folder at a
time (an advisory lock that the OS drops when the process dies, even on SIGKILL).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

import torch

from utils import record
from utils.errors import UserError
from utils.record import ARGS, FINAL, METRICS  # noqa: F401 (the run folder's names)

CHECKPOINT = "checkpoint.pt"
LOCK = ".lock"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file, flushed to disk, then renamed over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class RunDir:
    """Owns one output folder for the lifetime of a training process.

    Creating it only reads (is the folder finished? does it hold other arguments?
    is it writable?), so a command that fails before training writes nothing;
    `start()` creates the folder, takes its lock and records the arguments.
    """

    def __init__(self, out: str | os.PathLike, args: dict, force: bool = False):
        self.path = Path(out)
        self.args = args
        self.force = force
        self._lock_fh = None
        existing = self.path if self.path.exists() else next(p for p in self.path.parents if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"cannot write to --out {self.path} ({existing} is not a writable folder); "
                            f"choose a writable folder")
        if not force:
            self._check_args()

    def start(self, identity: dict | None = None) -> None:
        """Create the folder, take its lock, record the arguments and `identity` (what the
        run is: stage, method, networks, data, the teacher's and paraphrasers' identities)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock_fh = open(self.path / LOCK, "a+")
        except OSError as exc:
            raise UserError(f"cannot write to --out {self.path} ({exc.strerror}); choose a writable folder") from None
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_fh.close()
            self._lock_fh = None
            raise UserError(f"{self.path} is in use by another training process; wait for it or "
                            f"choose another --out") from None
        if self.force:
            for child in self.path.iterdir():
                if child.name != LOCK:
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        else:
            self._check_args()
        if not (self.path / ARGS).exists():
            record.write_args(self.path, self.args, identity or {}, git_commit(), torch.__version__)

    # -- arguments ----------------------------------------------------------------
    def _check_args(self) -> None:
        saved_path = self.path / ARGS
        if not saved_path.exists():
            return
        try:
            saved = record.migrate(json.loads(saved_path.read_text()), record.read_json(self.path / FINAL))["args"]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UserError(f"{saved_path} is unreadable; pass --force to start this run afresh") from None
        differ = record.resume_differences(saved, self.args)  # self.args is the script's vars(args)
        if differ:
            listing = ", ".join(f"--{k.replace('_', '-')} {old!r} -> {new!r}" for k, old, new in differ)
            raise UserError(f"{self.path} holds a run with different arguments ({listing}); "
                            f"use another --out, or --force to overwrite it")

    # -- state ----------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return not self.force and (self.path / FINAL).exists()

    def read_final(self) -> dict:
        return record.read_json(self.path / FINAL)

    def write_final(self, result: dict) -> None:
        record.write_final(self.path, result)

    def load_checkpoint(self) -> dict | None:
        path = self.path / CHECKPOINT
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception:
            raise UserError(f"{path} is corrupt or truncated; delete it to restart the run "
                            f"(or pass --force)") from None

    def save_checkpoint(self, state: dict) -> None:
        atomic_save(state, self.path / CHECKPOINT)

    # -- metrics --------------------------------------------------------------------
    def truncate_metrics(self, iteration: int) -> None:
        """Drop metric lines written after the checkpoint we resume from."""
        record.truncate_metrics(self.path, iteration)

    def last_metrics(self) -> dict:
        return record.read_metrics(self.path / METRICS)[-1]

    def append_metrics(self, line: dict) -> None:
        record.append_metrics(self.path, line)

    def close(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None
