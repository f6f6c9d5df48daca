"""Fast paths change speed, not results: bf16, channels-last and folded-BN runs end near
the fp32 run, keeping freed memory changes no number and stops the page faults, the
probe-guarded channels-last stem of frozen networks changes no bit, the
benchmark's reference pipeline computes our loss, the proposed inference-mode teacher
gives the same step, and the benchmark itself runs."""

import copy
import json
import statistics
import subprocess
import sys
import textwrap

import pytest
import torch
from pathlib import Path

from models.resnet_cifar import CifarResNet
from paraphraser import Paraphraser
from scripts import benchmark
from translator import Translator
from utils.data import BatchSampler, train_batch
from utils.methods import FactorTransfer
from utils import perf
from utils.train import make_step

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one thread is as fast, and it does not collapse when other
    processes share the cores (a parallel op waits at its barrier for a descheduled thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_ft_task(seed: int = 0) -> FactorTransfer:
    """FT with ResNet-8s: every part of the real student step (frozen teacher and
    paraphraser with BN, student, translator, both losses), small enough to run quickly."""
    torch.manual_seed(seed)
    teacher, student = CifarResNet(8), CifarResNet(8)
    paraphraser = Paraphraser(64, 0.5)
    for module in (*teacher.modules(), *paraphraser.modules()):  # frozen BN with real statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return FactorTransfer(student, Translator(64, paraphraser.factor_channels), teacher, paraphraser.eval())


def short_run(amp: str = "none", channels_last: bool = False, steps: int = 8, fold_bn: bool = False,
              exact_stem: bool = False) -> list[float]:
    """`fit`'s step sequence (train_batch + make_step) on random images; the total loss per step."""
    data = benchmark.synthetic_data(256, seed=0)
    task = tiny_ft_task().train()
    if exact_stem:
        assert perf.exact_channels_last_stem(task) == ["teacher"]
    if fold_bn:
        perf.fold_frozen_batchnorm(task)
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in task.student.modules())  # trained: kept
    params = [p for m in task.trainable().values() for p in m.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
    if channels_last:
        task.to(memory_format=torch.channels_last)
    step = make_step(task, optimizer, CPU, amp)
    sampler = BatchSampler(256, 32, seed=0, device=CPU)
    losses = []
    for it in range(steps):
        x, y = train_batch(data, sampler, it, seed=0)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        losses.append(step(x, y)[2].item())
    return losses


@pytest.fixture(scope="module")
def fp32_run():
    return short_run()


def assert_ends_near(losses: list[float], reference: list[float], first_rtol: float, final_rtol: float):
    """Same first loss up to `first_rtol` (same weights, same batch: only rounding differs);
    after the run, final loss within `final_rtol`, and the loss falls by as much (10%)."""
    assert all(torch.isfinite(torch.tensor(losses)))
    assert abs(losses[0] - reference[0]) <= first_rtol * abs(reference[0]), (losses, reference)
    assert abs(losses[-1] - reference[-1]) <= final_rtol * abs(reference[-1]), (losses, reference)
    fall, fall_ref = losses[0] - losses[-1], reference[0] - reference[-1]
    assert fall_ref > 0 and abs(fall - fall_ref) <= 0.1 * fall_ref, (losses, reference)


# Tolerances.  The first step sees identical weights and batch, so only rounding differs:
# channels-last reorders float32 sums (relative ~1e-7 per op, 1e-5 leaves 100x room);
# bf16 rounds every autocast op's output to 8 significant bits (2^-9 = 0.2% each), a few
# such errors add up in the logits and in beta * L_FT (1%).  Later steps drift apart
# more: L_FT is an L1 loss whose gradient is a sign, so rounding flips the sign of
# near-zero elements and the runs diverge slowly (measured after 8 steps: 0.1% for
# channels-last, 0.1-0.4% for bf16 along the run).  1% of the final loss (about 3% of
# what the run learns, a fall of ~2.9 from ~12) bounds that, while a broken fast path (no
# update, a loss in the wrong dtype or scale) misses the fall by far more than 10%.

def test_channels_last_run_ends_near_fp32(fp32_run):
    assert_ends_near(short_run(channels_last=True), fp32_run, first_rtol=1e-5, final_rtol=0.01)


def test_bf16_run_ends_near_fp32(fp32_run):
    assert_ends_near(short_run(amp="bf16"), fp32_run, first_rtol=0.01, final_rtol=0.01)


def test_folded_batchnorm_run_ends_near_fp32(fp32_run):
    """Folding reorders a product per weight (conv(x) * g/s + b' instead of (conv(x) - m) *
    g/s + b): float32 rounding only, like channels-last."""
    assert_ends_near(short_run(fold_bn=True), fp32_run, first_rtol=1e-5, final_rtol=0.01)


def test_folding_keeps_each_frozen_network_s_function():
    """The folded teacher, paraphraser encoder and decoder (transposed convolutions) compute
    what the unfolded eval-mode networks compute, and stay frozen."""
    task, plain = tiny_ft_task(), tiny_ft_task()
    perf.fold_frozen_batchnorm(task)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for name in ("teacher", "paraphraser")
                   for m in getattr(task, name).modules())
    x = torch.randn(4, 3, 32, 32)
    tol = dict(rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        feat = plain.teacher.eval()(x)[1][-1]
        torch.testing.assert_close(task.teacher(x)[1][-1], feat, **tol)
        torch.testing.assert_close(task.paraphraser.encode(feat), plain.paraphraser.encode(feat), **tol)
        torch.testing.assert_close(task.paraphraser(feat), plain.paraphraser(feat), **tol)
    assert all(not p.requires_grad for name in ("teacher", "paraphraser") for p in getattr(task, name).parameters())


class _LayoutSensitive(torch.nn.Module):
    """Adds 1e-3 where its input is channels-last: a first group whose layouts disagree."""

    def forward(self, x):
        return x + 1e-3 * float(x.is_contiguous(memory_format=torch.channels_last)
                                and not x.is_contiguous())


@pytest.fixture
def stem_always_faster(monkeypatch):
    """The probe's clock says channels-last wins (as on the AVX-512 machine the README
    measured): what decides is then the bit-for-bit comparison alone."""
    ticks = iter([2.0, 1.0] * 100)  # plain, fast, plain, fast, ...
    monkeypatch.setattr(perf, "_seconds", lambda fn: (fn(), next(ticks))[1])


def test_exact_stem_changes_no_bit_and_leaves_features_nchw(stem_always_faster):
    """Whatever the probe decides on this machine, the frozen teacher's logits and features
    are those of the plain network, every shape is probed once, and features leave NCHW."""
    task, plain = tiny_ft_task(), tiny_ft_task()
    assert perf.exact_channels_last_stem(task) == ["teacher"]
    teacher, hooks = task.teacher.eval(), task.teacher._exact_stem
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n in (8, 5, 8):
            x = torch.randn(n, 3, 32, 32, generator=gen)
            logits, feats = teacher(x)
            ref_logits, ref_feats = plain.teacher.eval()(x)
            assert torch.equal(logits, ref_logits)
            assert all(torch.equal(f, g) and f.is_contiguous() for f, g in zip(feats, ref_feats))
    assert sorted(key[0] for key in hooks.verdicts) == [(5, 3, 32, 32), (8, 3, 32, 32)]


def test_exact_stem_refuses_a_layout_that_changes_bits(stem_always_faster):
    task = tiny_ft_task()
    task.teacher.groups[0].append(_LayoutSensitive())
    plain = copy.deepcopy(task.teacher).eval()
    perf.exact_channels_last_stem(task)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        out = task.teacher.eval()(x)
    assert list(task.teacher._exact_stem.verdicts.values()) == [False]
    with torch.no_grad():
        assert perf._identical(out, plain(x))


def test_exact_stem_refuses_a_layout_that_is_slower(monkeypatch):
    ticks = iter([1.0, 2.0] * 100)  # channels-last slower
    monkeypatch.setattr(perf, "_seconds", lambda fn: (fn(), next(ticks))[1])
    task = tiny_ft_task()
    perf.exact_channels_last_stem(task)
    with torch.no_grad():
        task.teacher.eval()(torch.randn(4, 3, 32, 32))
    assert list(task.teacher._exact_stem.verdicts.values()) == [False]


def test_exact_stem_stays_out_of_training_and_autograd(monkeypatch):
    task = tiny_ft_task()
    perf.exact_channels_last_stem(task)
    x = torch.randn(4, 3, 32, 32)
    task.teacher.train()(x)  # training mode
    with torch.no_grad():
        task.teacher(x)
    task.teacher.eval()(x)  # autograd on
    assert task.teacher._exact_stem.verdicts == {}
    monkeypatch.setenv("FT_EXACT_LAYOUT", "0")
    assert perf.exact_channels_last_stem(tiny_ft_task()) == []


def test_exact_stem_run_equals_the_plain_run(fp32_run, stem_always_faster):
    """fit's steps with the stem on (the training scripts' CPU default) give the plain
    run's losses to the last bit."""
    assert short_run(exact_stem=True) == fp32_run


KEEP_FREED = textwrap.dedent("""
    import resource, sys, torch
    from utils import perf
    from models import build_model
    if sys.argv[1] == "on":
        assert perf.keep_freed_memory()
    torch.manual_seed(0)
    model = build_model("resnet20", 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    faults = []
    for step in range(16):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        loss = torch.nn.functional.cross_entropy(model(x)[0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(" ".join(map(str, faults[4:])))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")
def test_keep_freed_memory_stops_refaulting_freed_blocks():
    """Training steps of a ResNet-20 (batch 64): without the setting, glibc hands freed
    activations back to the kernel and later steps page-fault them in again (thousands of
    faults per step); with it, later steps reuse them and most fault no page at all.  The
    per-step median, not the sum: a step may still grow the heap once (a one-off burst of a
    few thousand faults), which says nothing about refaulting.  In a subprocess: the
    setting is process-wide and cannot be undone."""
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", KEEP_FREED, mode], capture_output=True, text=True,
                             check=True, cwd=str(Path(__file__).resolve().parent.parent))
        return [int(n) for n in out.stdout.split()]

    off, on = faults("off"), faults("on")
    assert len(off) == len(on) == 12
    assert statistics.median(on) <= 64, on
    assert statistics.mean(off) >= 500, off


@pytest.mark.parametrize("stage", ["teacher", "paraphraser", "student"])
def test_reference_pipeline_computes_our_loss(stage):
    """Same weights, same normalized batch: the authors' way of computing the step's loss
    (autograd on for the frozen parts, nn.L1Loss on F.normalize) equals our task's."""
    nets = benchmark.build_networks(stage, seed=0)
    task = benchmark.build_task(stage, nets).train()
    ref = benchmark.reference_networks(stage, nets, CPU)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, 32, 32, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    _, losses = task(x, y)
    ours = sum(losses.values())
    theirs, logits = benchmark.reference_loss(stage, ref, x, y)
    assert (logits is None) == (stage == "paraphraser")
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    # and the gradients the step applies agree as well
    ours.backward()
    theirs.backward()
    for name in benchmark.TRAINED[stage]:
        for (key, p), q in zip(getattr(task, name if stage != "teacher" else "model").named_parameters(),
                               ref[name].parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=f"{name}.{key}")
    # their paraphraser step backpropagates on into the frozen teacher; their student step does not
    if stage == "paraphraser":
        stem_grad = ref["teacher"].stem[0].weight.grad  # down to the first convolution
        assert stem_grad is not None and stem_grad.abs().sum() > 0
    elif stage == "student":
        assert all(p.grad is None for p in ref["teacher"].parameters())


@pytest.mark.parametrize("proposal", ["inference_mode"])
@pytest.mark.parametrize("stage", ["paraphraser", "student"])
def test_proposed_changes_give_the_same_step(stage, proposal):
    """The benchmark's proposal changes no number: the inference-mode teacher none at all."""
    nets = benchmark.build_networks(stage, seed=0)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))

    def one_step(task):
        optimizer = torch.optim.SGD([p for m in task.trainable().values() for p in m.parameters()], lr=0.1)
        _, _, total = make_step(task.train(), optimizer, CPU)(x, y)
        return total, [p.detach().clone() for m in task.trainable().values() for p in m.parameters()]

    plain = one_step(benchmark.build_task(stage, nets))
    with benchmark.proposed_changes(**{proposal: True}):
        task = benchmark.build_task(stage, nets)
        patched = one_step(task)
    tol = dict(rtol=0, atol=0)
    torch.testing.assert_close(patched[0], plain[0], **tol)
    for a, b in zip(patched[1], plain[1]):
        torch.testing.assert_close(a, b, **tol)


def test_benchmark_runs_and_reports(capsys):
    args = benchmark.get_args_parser().parse_args(
        ["--stages", "ce", "--windows", "2", "--window-steps", "1", "--warmup", "1", "--fast", "channels_last",
         "--synthetic-size", "64", "--batch-size", "16", "--num-workers", "1", "--device", "cpu", "--retries", "0",
         "--json"])
    benchmark.main(args)
    report = json.loads(capsys.readouterr().out)
    stage = report["stages"]["ce"]
    assert report["device_type"] == "cpu" and stage["fast_flags"] == ["channels_last"]
    assert report["disturbed_windows"] == {"rerun": 0, "kept": 0}  # --retries 0: never waits
    for key in ("default", "fast", "reference"):
        assert stage["images_per_s"][key] > 0 and len(stage["windows"][key]) == 2
        assert stage["peak_memory_mb"][key] > 0
    ips = stage["images_per_s"]
    assert stage["speedup_default"] == pytest.approx(ips["default"] / ips["reference"], rel=1e-2)
    assert stage["speedup_fast"] == pytest.approx(ips["fast"] / ips["reference"], rel=1e-2)
    assert report["targets"] == []  # the stage 'ce' carries no target


def test_targets_are_judged_on_the_measured_ratios():
    results = [{"stage": "student", "speedup_default": 1.39, "speedup_fast": 2.0},
               {"stage": "paraphraser", "speedup_default": 1.0, "speedup_fast": 2.6}]
    met = {(t["stage"], t["ratio"]): t["met"] for t in benchmark.check_targets(results, "cpu")}
    assert met == {("student", "speedup_default"): False, ("student", "speedup_fast"): True,
                   ("paraphraser", "speedup_fast"): True}
    assert benchmark.check_targets(results, "cuda") == []  # the CPU targets say nothing of a GPU
    assert "speedup_default >= 1.4: 1.39 NOT met" in benchmark.table(
        [dict(r, images_per_s=dict(default=1, fast=1, reference=1), fast_flags=[],
              peak_memory_mb=dict(default=1, fast=1, reference=1)) for r in results],
        "cpu", benchmark.check_targets(results, "cpu"))


def test_reference_runs_the_authors_op_sequence():
    """(c) runs ReLUs out of place and the residual add in place, as the authors' ResNet
    does; our networks run all three in place.  Counted at the ATen level."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[func.__name__.split(".")[0]] += 1
            return func(*args, **(kwargs or {}))

    nets = {"teacher": CifarResNet(8).eval()}  # stem + 3 blocks; eval: no running-statistics updates
    ref = benchmark.reference_networks("teacher", nets, CPU)["teacher"].eval()
    x = torch.randn(2, 3, 32, 32)
    counts = {}
    for name, net in (("ours", nets["teacher"]), ("reference", ref)):
        with Count() as mode:
            net(x)
        counts[name] = {op: mode.ops[op] for op in ("relu", "relu_", "add", "add_")}
    assert counts["ours"] == {"relu": 0, "relu_": 7, "add": 0, "add_": 3}
    assert counts["reference"] == {"relu": 7, "relu_": 0, "add": 0, "add_": 3}
