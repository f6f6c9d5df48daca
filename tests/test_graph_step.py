"""--cuda-graph (utils.perf.GraphedStep): the whole step through static buffers, warm-up
undone, a new capture at each learning-rate change.  Without a GPU the protocol runs with
the step executed eagerly, which is what these tests check: the numbers equal the plain
run's to the last bit, across a milestone and a kill-and-resume, and the flag is refused
where one graph cannot hold the step."""

import pytest
import torch

from helpers import (checkpoint, interrupt_at, metrics, run, run_cli, tiny_runs,  # noqa: F401
                     train_student)
from models.resnet_cifar import CifarResNet
from paraphraser import Paraphraser
from translator import Translator
from utils import perf
from utils.distill.ft import FactorTransfer, Link
from utils.train import Interrupted, make_step

CPU = torch.device("cpu")


def ft_task() -> FactorTransfer:
    torch.manual_seed(0)
    paraphraser = Paraphraser(64, 0.5).eval()
    return FactorTransfer(CifarResNet(8), CifarResNet(8), Link(Translator(64, paraphraser.factor_channels), paraphraser))


def trajectory(graphed: bool, steps: int = 6, milestone: int = 3):
    """Total loss per step and the final weights of an FT task trained `steps` SGD steps
    (lr 0.1, x0.1 from `milestone`), through GraphedStep or plainly."""
    task = ft_task().train()
    optimizer = torch.optim.SGD([p for m in task.trainable().values() for p in m.parameters()], lr=0.1,
                                momentum=0.9, weight_decay=5e-4)
    step = make_step(task, optimizer, CPU, graph=graphed)
    if graphed:
        step = perf.GraphedStep(step, task.trainable(), optimizer, CPU)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for it in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = 0.1 if it < milestone else 0.01
        x, y = torch.randn(8, 3, 32, 32, generator=gen), torch.randint(0, 10, (8,), generator=gen)
        losses.append(step(x, y)[2].item())
    weights = {f"{n}.{k}": v.clone() for n, m in task.trainable().items() for k, v in m.state_dict().items()}
    return losses, weights, step


def test_graphed_step_follows_the_plain_step_bit_for_bit():
    """The warm-up steps on the first batch are undone (weights, BatchNorm statistics, the
    momentum buffers zeroed: the same first update), so every loss and the final weights
    are the plain run's; the milestone's new learning rate is a second capture."""
    plain_losses, plain_weights, _ = trajectory(graphed=False)
    losses, weights, step = trajectory(graphed=True)
    assert losses == plain_losses
    assert weights.keys() == plain_weights.keys()
    assert all(torch.equal(weights[k], plain_weights[k]) for k in weights)
    assert step.captures == 2


def test_graphed_step_warm_up_changes_no_state():
    task = ft_task().train()
    optimizer = torch.optim.SGD([p for m in task.trainable().values() for p in m.parameters()], lr=0.1,
                                momentum=0.9)
    before = {f"{n}.{k}": v.clone() for n, m in task.trainable().items() for k, v in m.state_dict().items()}
    step = perf.GraphedStep(make_step(task, optimizer, CPU, graph=True), task.trainable(), optimizer, CPU)
    step.static_x, step.static_y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    step._warm_up()
    after = {f"{n}.{k}": v for n, m in task.trainable().items() for k, v in m.state_dict().items()}
    assert all(torch.equal(before[k], after[k]) for k in before)
    buffers = [s["momentum_buffer"] for s in optimizer.state.values()]
    assert buffers and all(b.abs().sum() == 0 for b in buffers)


def _ft(tiny_runs, out, *flags, iters=6):
    run(train_student, [*tiny_runs.args(out, iters=iters, eval_every=2), "--method", "ft", "--arch",
                        "resnet20", "--teacher", str(tiny_runs.teacher), "--paraphraser",
                        str(tiny_runs.paraphraser()), "--milestones", "3", "5", *flags])


def test_cuda_graph_flag_runs_resumes_and_matches_the_plain_run(tiny_runs, tmp_path, monkeypatch, capsys):
    """Through train_student.py: --cuda-graph logs the plain run's metrics exactly, and a
    run killed mid-way and resumed with it (a fresh warm-up and capture) ends there too."""
    _ft(tiny_runs, tmp_path / "plain")
    _ft(tiny_runs, tmp_path / "graph", "--cuda-graph")
    assert "--cuda-graph: no CUDA device" in capsys.readouterr().err
    assert metrics(tmp_path / "graph") == metrics(tmp_path / "plain")
    with monkeypatch.context() as patch:
        interrupt_at(patch, 2)
        with pytest.raises(Interrupted):
            _ft(tiny_runs, tmp_path / "resumed", "--cuda-graph")
    assert checkpoint(tmp_path / "resumed")["iteration"] == 3
    _ft(tiny_runs, tmp_path / "resumed", "--cuda-graph")
    assert metrics(tmp_path / "resumed") == metrics(tmp_path / "plain")


def test_cuda_graph_refuses_a_second_optimizer(tiny_runs, tmp_path, capsys):
    code, err = run_cli(train_student, [*tiny_runs.args(tmp_path / "k"), "--method", "ktan", "--arch", "resnet20",
                                        "--teacher", str(tiny_runs.teacher), "--cuda-graph"], capsys)
    assert code == 2 and "--cuda-graph" in err and "KTAN" in err
