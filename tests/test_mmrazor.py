"""MMRazor's Factor Transfer setting (scripts/mmrazor_r50_r18.sh, docs/mmrazor.md): the
mmcls networks with MMRazor's pre-BN taps, the commands the script issues, MMRazor's
paraphraser loss and data preprocessing, and the script end to end at a tiny scale."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import helpers
from models import MODELS, VARIANTS, build_model, check_model_name
from models.features import default_tap, forward_tap

REPO = Path(__file__).resolve().parent.parent
# (variant, base network, the last block's last convolution: mmcls's layer4.1.conv2 / layer4.2.conv3)
NETWORKS = [("resnet18_cifar_mmcls", "resnet18_cifar", "conv2", 512),
            ("resnet50_cifar_mmcls", "resnet50_cifar", "conv3", 2048)]


# ----------------------------------------------------------------------------- networks
@pytest.mark.parametrize("name,base,conv,channels", NETWORKS)
def test_tap_is_the_last_conv_before_its_bn_and_logits_are_unchanged(name, base, conv, channels):
    """The `_mmcls` names build the same network as their base with FT's default tap set to
    "pre_bn" (models/features.py): each group's map is its last block's last convolution
    output before its BN.  The plain forward is the base network's."""
    torch.manual_seed(0)
    plain, mmcls = build_model(base, 10), build_model(name, 10)
    assert mmcls.arch == name and name in VARIANTS and name not in MODELS
    assert type(mmcls) is type(plain)
    assert default_tap(mmcls) == "pre_bn" and default_tap(plain) == "post"
    check_model_name(name)
    # Same parameters and buffers under the same names: only which maps FT takes differs.
    assert list(plain.state_dict()) == list(mmcls.state_dict())
    mmcls.load_state_dict(plain.state_dict())
    x = torch.randn(3, 3, 32, 32)
    for train in (False, True):
        plain.train(train), mmcls.train(train)
        seen = []
        last_conv = getattr(mmcls.groups[-1][-1], conv)
        hook = last_conv.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
        with torch.no_grad():
            logits_p, feats_p = plain(x)
            logits_m, feats_m = forward_tap(mmcls, x, default_tap(mmcls))
            logits_plain_m, feats_plain_m = mmcls(x)
        hook.remove()
        assert len(seen) == 2  # the tap's forward and the plain one
        assert torch.equal(feats_m[-1], seen[0]) and feats_m[-1].shape == (3, channels, 4, 4)
        assert (feats_m[-1] < 0).any()  # before BN and ReLU
        assert torch.equal(logits_m, logits_p) and torch.equal(logits_plain_m, logits_p)
        assert all(torch.equal(a, b) for a, b in zip(feats_plain_m, feats_p))
        assert not torch.equal(feats_m[-1], feats_p[-1])
        for stage, f in zip(mmcls.groups, feats_m):  # every group's tap is its last conv's output
            assert f.shape[1] == getattr(stage[-1], conv).out_channels


def test_gradients_reach_the_student_through_the_tap():
    torch.manual_seed(0)
    model = build_model("resnet18_cifar_mmcls", 10)
    _, feats = forward_tap(model, torch.randn(2, 3, 32, 32), "pre_bn")
    feats[-1].pow(2).mean().backward()
    last = model.groups[-1][-1]
    assert last.conv2.weight.grad.abs().sum() > 0 and model.stem[0].weight.grad.abs().sum() > 0
    assert last.bn2.weight.grad is None or last.bn2.weight.grad.abs().sum() == 0  # after the tap
    assert model.fc.weight.grad is None


@pytest.mark.parametrize("name,base,conv,channels", NETWORKS)
def test_mmcls_initialization(name, base, conv, channels):
    torch.manual_seed(0)
    model = build_model(name, 10)
    blocks = [b for stage in model.groups for b in stage]
    assert all(torch.all(b.last_bn.weight == 0) for b in blocks)  # zero_init_residual
    assert all(torch.all(b.bn1.weight == 1) for b in blocks)
    assert torch.all(model.fc.bias == 0) and 0.008 < model.fc.weight.std().item() < 0.012
    assert not torch.all(build_model(base, 10).groups[-1][-1].last_bn.weight == 0)


def test_folding_the_frozen_teachers_bns_keeps_the_tap_before_bn():
    from utils.perf import fold_batchnorm

    torch.manual_seed(0)
    model = build_model("resnet18_cifar_mmcls", 10).eval()
    for m in model.modules():  # non-trivial BN statistics and affine parameters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 32, 32)
    logits, feats = forward_tap(model, x, "pre_bn")
    _, feats_plain = model(x)
    folded = fold_batchnorm(copy.deepcopy(model), "pre_bn")
    assert all(isinstance(stage[-1].bn2, torch.nn.BatchNorm2d) for stage in folded.groups)  # the taps' BNs stay
    assert isinstance(folded.groups[-1][0].bn2, torch.nn.Identity)
    logits_f, feats_f = forward_tap(folded, x, "pre_bn")
    torch.testing.assert_close(logits_f, logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(feats_f[-1], feats[-1], rtol=1e-4, atol=1e-4)
    # folded for the plain forward, every BN that follows a conv goes; its maps stay right
    plain = fold_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    for a, b in zip(plain(x)[1], feats_plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- the script's commands
def dry_run(**settings) -> list[list[str]]:
    return helpers.dry_run("mmrazor_r50_r18", timeout=120, **settings)


def parse(words: list[str]):
    """A dry-run line through its script's own parser (so every flag exists)."""
    import train_paraphraser
    import train_student
    import train_teacher

    script = {"train_teacher.py": train_teacher, "train_paraphraser.py": train_paraphraser,
              "train_student.py": train_student}[words[1]]
    return script.get_args_parser().parse_args(words[2:])


def by_stage(lines: list[list[str]]) -> dict:
    out = {}
    for words in lines:
        args = parse(words)
        key = words[1] if words[1] != "train_student.py" else args.method
        out[key] = args
    return out


def test_dry_run_issues_mmrazors_setting(tmp_path):
    runs = by_stage(dry_run(SEEDS=1, RUNS=tmp_path))
    assert set(runs) == {"train_teacher.py", "train_paraphraser.py", "ce", "ft"}
    teacher, para, ce, ft = runs["train_teacher.py"], runs["train_paraphraser.py"], runs["ce"], runs["ft"]
    # mmcls's CIFAR-10 recipe for the teacher and the student alone: 200 epochs of 390 steps,
    # lr 0.1 x0.1 at epochs 100 / 150 (the default 50% / 75% milestones), wd 1e-4, RGB + its mean/std.
    for args in (teacher, ce, ft):
        assert (args.iters, args.milestones, args.milestone_fractions) == (78000, None, [0.5, 0.75])
        assert (args.lr, args.momentum, args.wd, args.batch_size) == (0.1, 0.9, 1e-4, 128)
        assert args.dataset == "cifar10"
        assert args.bn_images == 16  # MMRazor's 8 GPUs x 16 images with per-GPU BN, on one device
    assert teacher.arch == "resnet50_cifar_mmcls" and teacher.norm == ce.norm == "cifar10"
    assert ce.arch == ft.arch == "resnet18_cifar_mmcls"
    # The pretrain config: k = 0.5 (2048 -> 1024), no BN, normalized L2, 20 epochs at constant lr.
    assert (para.k, para.bn, para.recon_loss, para.kind, para.layers, para.group) == \
        (0.5, False, "unit-l2", "conv", 3, -1)
    assert (para.epochs, para.iters, para.milestones, para.milestone_fractions) == (20, None, None, [])
    assert (para.lr, para.momentum, para.wd, para.batch_size, para.holdout) == (0.1, 0.9, 1e-4, 128, 0)
    # The train config: CE + 1.0 x FTLoss, translator with BN, MMRazor's preprocessing.
    assert (ft.beta, ft.p, ft.translator_bn, ft.ft_groups) == (1.0, 1, True, "last")
    assert para.norm == ft.norm == "imagenet_bgr"
    assert ft.teacher == para.teacher and ft.paraphraser == [str(Path(ft.teacher).parent /
                                                                 "para-resnet50_cifar_mmcls-k0.5-s0")]


def test_scale_knobs_reach_the_commands(tmp_path):
    runs = by_stage(dry_run(SEEDS=1, RUNS=tmp_path, ITERS=400, TEACHER_ITERS=1600, PARA_ITERS=60,
                            DATASET="folder", DATA_ROOT="/data/c10.tar.gz", EXTRA_ARGS="--batch-size 64"))
    assert runs["train_teacher.py"].iters == 1600 and runs["ce"].iters == runs["ft"].iters == 400
    assert runs["train_paraphraser.py"].iters == 60  # --iters wins over --epochs
    assert all(a.batch_size == 64 and a.dataset == "folder" for a in runs.values())
    para = by_stage(dry_run(SEEDS=1, RUNS=tmp_path, PARA_EPOCHS=5))["train_paraphraser.py"]
    assert (para.epochs, para.iters) == (5, None)


# ----------------------------------------------------------------------------- loss and data
def test_unit_l2_reconstruction_loss_is_mmrazors_l2loss():
    from utils.distill.paraphrase import reconstruction_loss

    torch.manual_seed(0)
    x, rec = torch.randn(4, 8, 3, 3) * 5, torch.randn(4, 8, 3, 3)
    # MMRazor's L2Loss(normalize=True, div_element=False, dist=False), written out.
    a = x.view(4, -1) / x.view(4, -1).norm(2, dim=1, keepdim=True)
    b = rec.view(4, -1) / rec.view(4, -1).norm(2, dim=1, keepdim=True)
    expected = (a - b).pow(2).sum() / 4
    torch.testing.assert_close(reconstruction_loss(rec, x, "unit-l2"), expected)
    # Scale-invariant per sample, unlike "l2".
    torch.testing.assert_close(reconstruction_loss(rec * torch.tensor([1., 2, 3, 4]).view(4, 1, 1, 1), x,
                                                   "unit-l2"), expected)
    assert not torch.allclose(reconstruction_loss(rec, x, "l2"), reconstruction_loss(rec * 2, x, "l2"))


def test_imagenet_bgr_reverses_channels_then_normalizes(tiny_folder):
    from utils.data import load_data

    rgb = load_data("folder", tiny_folder, norm="imagenet")
    bgr = load_data("folder", tiny_folder, norm="imagenet_bgr")
    assert torch.equal(bgr.train_x, rgb.train_x.flip(1)) and torch.equal(bgr.test_x, rgb.test_x.flip(1))
    x = bgr.normalize(bgr.test_x[:2])
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)   # MMRazor's config, 0-255
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (rgb.test_x[:2].flip(1).float() - mean) / std, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_script_end_to_end_on_a_tiny_folder(tmp_path, tiny_folder):
    runs = tmp_path / "runs"
    proc = helpers.run_script(  # every core: ResNet-50 and its 2,048-channel paraphraser are real work
        "mmrazor_r50_r18", check=False, timeout=900, SEEDS=1, RUNS=runs, DATASET="folder", DATA_ROOT=tiny_folder,
        ITERS=2, PARA_ITERS=2, EVAL_EVERY=2, EXTRA_ARGS="--batch-size 4 --progress off", PYTHON=sys.executable)
    assert proc.returncode == 0 and proc.stderr.count("[done]") == 4, proc.stderr[-3000:]
    ft = runs / "folder/ft-resnet18_cifar_mmcls-from-resnet50_cifar_mmcls-k0.5-s0"
    final = json.loads((ft / "final.json").read_text())
    assert final["iters"] == 2 and 0 <= final["test_error_last"] <= 100
    ckpt = torch.load(ft / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["arch"] == "resnet18_cifar_mmcls" and ckpt["teacher"]["arch"] == "resnet50_cifar_mmcls"
    assert ckpt["translator_config"]["bn"] is True
    assert ckpt["translator_config"]["factor_channels"] == 1024
    para = torch.load(runs / "folder/para-resnet50_cifar_mmcls-k0.5-s0/checkpoint.pt", map_location="cpu",
                      weights_only=False)
    assert para["paraphraser_config"]["bn"] is False and para["paraphraser_config"]["in_channels"] == 2048
    # The report renders the table from these runs.
    out = subprocess.run([sys.executable, str(REPO / "scripts/report.py"), str(runs), "--table", "mmrazor"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    ours = next(line for line in out.stdout.splitlines() if line.startswith("| ResNet-18 FT (k=0.5) |"))
    assert "(n=1)" in ours
