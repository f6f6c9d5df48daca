"""What the training loop promises on CUDA, tested where a CPU can test it: the step's
bookkeeping makes no tensor from a Python number (each would be a blocking host-to-device
copy), TF32 and cuDNN's autotuner are decisions recorded in final.json, and the process
group of a torchrun worker is left before exit.  The tests marked `cuda` run only where
a GPU is (scripts/gpu_check.sh runs them on the lent one): a stream of steps issues no
host sync at all, the graphed step is one graph launch, and a graphed run follows the
eager one across a milestone and a resume."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist

from helpers import final, interrupt_at, metrics, run, tiny_runs, train_student  # noqa: F401
from utils import distributed, perf
from utils.cli import run_main
from utils.progress import TrainingDiverged, add_to_window, read_window
from utils.train import Interrupted

CPU = torch.device("cpu")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh)")


def one_step(device, total=1.0):
    losses = {"ce": torch.tensor(total, device=device), "ft": torch.tensor(0.5, device=device)}
    logits = torch.randn(4, 10, device=device)
    return losses, logits, torch.arange(4, device=device), losses["ce"] + losses["ft"]


def test_window_bookkeeping_makes_no_tensor_from_a_python_number(monkeypatch):
    """After the window's first step (its zeros), a step adds nothing made on the host:
    counted by wrapping every constructor that takes a Python number."""
    steps = [one_step(CPU) for _ in range(6)]
    window = add_to_window(None, *steps[0])
    made = []
    for name in ("tensor", "as_tensor", "full", "scalar_tensor", "zeros", "ones"):
        original = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *a, _o=original, _n=name, **k: made.append(_n) or _o(*a, **k))
    for step in steps[1:]:
        window = add_to_window(window, *step)
    monkeypatch.undo()
    assert made == []
    record = read_window(window, 6)
    assert record["loss_ce"] == pytest.approx(1.0) and record["loss_ft"] == pytest.approx(0.5)


@pytest.mark.parametrize("bad_at", [1, 3, 5])
def test_a_nan_is_reported_at_its_iteration_in_any_window(bad_at):
    """The window keeps the position of the first bad step; `read_window` names its
    iteration (1-based) in a window that does not start at iteration 1."""
    window = None
    for k in range(1, 6):  # the window of iterations 11..15 (done = 15)
        window = add_to_window(window, *one_step(CPU, math.nan if k in (bad_at, 5) else 1.0))
    with pytest.raises(TrainingDiverged, match=rf"iteration {10 + bad_at} \(parts: ce\)"):
        read_window(window, 15)


def test_tf32_and_the_autotuner_are_decided_and_recorded(tiny_runs, tmp_path):
    """--tf32 is off by default (IEEE float32 on CUDA), on when asked; on the CPU neither
    applies and final.json says so; the flags change no CPU number."""
    assert perf.configure_backends(CPU, tf32=True) == {"tf32": False, "cudnn_benchmark": False,
                                                       "cudnn_deterministic": False}
    parser = train_student.get_args_parser()
    base = [*tiny_runs.args(tmp_path / "a"), "--method", "ce", "--arch", "resnet20"]
    assert parser.parse_args(base).tf32 is False and parser.parse_args(base).deterministic is False
    assert parser.parse_args([*base, "--tf32"]).tf32 is True
    run(train_student, base)
    run(train_student, [*tiny_runs.args(tmp_path / "b"), "--method", "ce", "--arch", "resnet20", "--tf32",
                        "--deterministic"])
    assert final(tmp_path / "a")["backends"] == {"tf32": False, "cudnn_benchmark": False,
                                                 "cudnn_deterministic": False}
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")


@cuda
def test_tf32_setting_reaches_the_cuda_backends():
    try:
        assert perf.configure_backends(torch.device("cuda"), tf32=False)["tf32"] is False
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.benchmark
        assert perf.configure_backends(torch.device("cuda"), tf32=True, deterministic=True) == {
            "tf32": True, "cudnn_benchmark": False, "cudnn_deterministic": True}
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cudnn.deterministic
    finally:
        perf.configure_backends(torch.device("cuda"))


def test_run_main_leaves_the_process_group(tmp_path):
    """A script's entry point destroys the process group it ran in, also when the run
    fails with a one-line error."""
    from utils.errors import UserError

    parser = train_student.get_args_parser()

    def failing(args):
        raise UserError("bad input")

    for main in (lambda args: None, failing):
        store = dist.FileStore(str(tmp_path / f"store{id(main)}"), 1)
        dist.init_process_group("gloo", store=store, rank=0, world_size=1)
        try:
            run_main(main, parser, ["--out", str(tmp_path / "x")])
        except SystemExit:
            pass
        assert not dist.is_initialized()
    distributed.teardown()  # nothing to leave: no error


# ---------------------------------------------------------------------- CUDA only

@cuda
def test_a_stream_of_steps_issues_no_host_sync():
    """Batches, the graphed and the eager step and the window bookkeeping, step after step,
    under torch's sync debug mode set to raise on any synchronizing call."""
    from models.resnet_cifar import CifarResNet
    from utils.distill.base import Classification
    from utils.train import make_step

    device = torch.device("cuda")
    torch.manual_seed(0)
    for graphed in (False, True):
        task = Classification(CifarResNet(20)).to(device).train()
        optimizer = torch.optim.SGD(task.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        step = make_step(task, optimizer, device, graph=graphed)
        if graphed:
            step = perf.GraphedStep(step, {"model": task}, optimizer, device)
        x = torch.randn(128, 3, 32, 32, device=device)
        y = torch.randint(0, 10, (128,), device=device)
        window = add_to_window(None, *reorder(step(x, y), y))  # warm-up, capture, the window's zeros
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(5):
                window = add_to_window(window, *reorder(step(x, y), y))
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert math.isfinite(read_window(window, 6)["loss_ce"])


def reorder(out, y):
    logits, losses, total = out
    return losses, logits, y, total


@cuda
def test_the_graphed_step_is_one_graph_launch():
    """After capture, a step is two copies into the static inputs and one graph launch:
    no kernel is launched one by one (counted with torch's profiler)."""
    from torch.profiler import ProfilerActivity, profile

    from models.resnet_cifar import CifarResNet
    from utils.distill.base import Classification
    from utils.train import make_step

    device = torch.device("cuda")
    task = Classification(CifarResNet(20)).to(device).train()
    optimizer = torch.optim.SGD(task.parameters(), lr=0.1, momentum=0.9)
    step = perf.GraphedStep(make_step(task, optimizer, device, graph=True), {"model": task}, optimizer, device)
    x, y = torch.randn(128, 3, 32, 32, device=device), torch.randint(0, 10, (128,), device=device)
    step(x, y)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step(x, y)
        torch.cuda.synchronize()
    calls = {e.key: e.count for e in prof.key_averages()}
    assert calls.get("cudaGraphLaunch", 0) == 1
    assert calls.get("cudaLaunchKernel", 0) == 0 and calls.get("cuLaunchKernel", 0) == 0


@cuda
@pytest.mark.parametrize("method", ["ce", "ft"])
def test_a_graphed_run_follows_the_eager_run_across_a_milestone_and_a_resume(tiny_runs, tmp_path,
                                                                             monkeypatch, method):
    """train_student.py on CUDA, --deterministic so that two eager runs agree: the graphed
    run's logged losses and errors equal the eager run's within float32 reordering (1e-4
    relative on losses, 1 point of error on the tiny test set), across the lr milestone, and
    a graphed run killed mid-way and resumed (a new warm-up and capture) does too."""
    teacher = ["--teacher", str(tiny_runs.teacher)]
    extra = {"ce": [], "ft": [*teacher, "--paraphraser", str(tiny_runs.paraphraser())]}[method]

    def go(out, *flags):
        run(train_student, [*tiny_runs.args(out, iters=12, eval_every=3), "--device", "cuda", "--deterministic",
                            "--method", method, "--arch", "resnet20", "--milestones", "5", *extra, *flags])

    go(tmp_path / "eager")
    go(tmp_path / "graph", "--cuda-graph")
    with monkeypatch.context() as patch:
        interrupt_at(patch, 7)
        with pytest.raises(Interrupted):
            go(tmp_path / "resumed", "--cuda-graph")
    go(tmp_path / "resumed", "--cuda-graph")
    eager = metrics(tmp_path / "eager")
    for other in ("graph", "resumed"):
        lines = metrics(tmp_path / other)
        assert [line["iter"] for line in lines] == [line["iter"] for line in eager]
        for a, b in zip(eager, lines):
            for key, value in a.items():
                if key.startswith("loss_"):
                    assert b[key] == pytest.approx(value, rel=1e-4), (other, a["iter"], key)
                elif key.endswith("error"):
                    assert abs(b[key] - value) <= 1.0, (other, a["iter"], key)
    # the graph updated the weights: the loss fell as the eager run's did
    assert metrics(tmp_path / "graph")[-1]["loss_ce"] < metrics(tmp_path / "graph")[0]["loss_ce"]
