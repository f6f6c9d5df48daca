"""The shared worker process of the default/, fast/ and graph/ runs."""

from __future__ import annotations

import collections
import io
import json
import os
import sys
import time
import traceback
from pathlib import Path

from .common import tail_text

from .common import REPO


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
    os.chdir(REPO)  # the repository's packages import: scripts/repo_path.py, imported by device_check.py
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


