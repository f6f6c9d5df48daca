"""torchrun with two CPU (gloo) processes: same training as one process, resumable."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from utils.train import topk_wrong_and_loss

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(data: Path, out: Path, nproc: int) -> list[str]:
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
              "--master-addr", "127.0.0.1", "--master-port", str(free_port())] if nproc > 1 else [sys.executable]
    return [*launch, "train_teacher.py", "--dataset", "folder", "--data-root", str(data), "--arch", "resnet20",
            "--iters", "6", "--eval-every", "2", "--batch-size", "16", "--lr", "0.01", "--sync-bn",
            "--progress", "off", "--out", str(out)]


def descendants(pid: int) -> list[int]:
    """All processes below `pid` (torchrun's workers may leave its process group)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            children = (task / "children").read_text().split() if (task / "children").exists() else []
            found += map(int, children)
            todo += map(int, children)
    return found


def losses(out: Path):
    return [(r["iter"], r["loss_ce"], r["test_loss"])
            for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]


@pytest.mark.slow
def test_two_processes_match_one_and_resume(tiny_folder, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command(tiny_folder, tmp_path / "one", 1), cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=300)
    # two processes, killed (the whole process group, SIGKILL) after their first checkpoint
    out = tmp_path / "two"
    proc = subprocess.Popen(command(tiny_folder, out, 2), cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    interrupted = proc.poll() is None
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    assert interrupted, "the two-process run ended before it could be killed"
    assert not (out / "final.json").exists()
    first_line = (out / "metrics.jsonl").read_text().splitlines()[0]
    done = subprocess.run(command(tiny_folder, out, 2), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # resumed, not restarted: the line logged before the kill is still there, unchanged
    assert (out / "metrics.jsonl").read_text().splitlines()[0] == first_line
    one, two = losses(tmp_path / "one"), losses(out)
    assert [r[0] for r in one] == [r[0] for r in two] == [2, 4, 6]
    for a, b in zip(one, two):
        # same global batch, same augmentation, batch-norm over the global batch: equal up to
        # float summation order, which a few SGD steps amplify (1 vs 2 threads differ ~1e-5)
        assert a[1] == pytest.approx(b[1], rel=1e-3) and a[2] == pytest.approx(b[2], rel=1e-3)
    assert len(list(out.glob("events.out.tfevents.*"))) >= 1  # rank 0 alone writes


def test_topk_counts_on_a_hand_made_case():
    logits = torch.tensor([
        [9.0, 8, 7, 6, 5, 4, 0],   # label 0: right at top-1
        [9.0, 8, 7, 6, 5, 4, 0],   # label 4: wrong at top-1, right at top-5
        [9.0, 8, 7, 6, 5, 4, 0],   # label 5: wrong at both (6th)
        [0.0, 0, 0, 0, 0, 0, 1],   # label 6: right
    ])
    y = torch.tensor([0, 4, 5, 6])
    wrong1, wrong5, loss = topk_wrong_and_loss(logits, y).tolist()
    assert (wrong1, wrong5) == (2, 1)
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(logits, y, reduction="sum").item())
