"""--recipe at (Table 2's environment, the attention-transfer authors' CIFAR recipe):
flags resolved from the recipe, explicit flags winning, epochs turned into iterations,
the lr decay factor, reflect padding, normalization, and old runs still resuming."""

import json

import numpy as np
import pytest
import torch

import train_paraphraser
import train_student
import train_teacher
import utils.data
import utils.train
from helpers import checkpoint, interrupt_at, metrics, run, tiny_runs  # noqa: F401
from utils.data import NORM_STATS, crop_flip, load_data, random_crop_flip, augment_generator
from utils.errors import UserError
from utils.run import RunDir
from utils.train import Interrupted, lr_at


def _teacher_args(*argv):
    return train_teacher.resolve(train_teacher.get_args_parser().parse_args(["--out", "unused", *argv]))


def test_paper_recipe_is_the_default():
    args = _teacher_args()
    assert (args.recipe, args.iters, args.milestones, args.lr_decay, args.pad_mode) == \
        ("paper", 64000, [32000, 48000], 0.1, "zero")
    assert args.norm is None  # the dataset's own constants


def test_at_recipe_200_epochs_lr_x02_before_epochs_60_120_160():
    """CIFAR: 50,000 // 128 = 390 steps an epoch.  The AT code's drop runs in torchnet's
    on_start_epoch of the epochs it numbers 60 / 120 / 160 from 1: after 59 / 119 / 159
    finished epochs, with a new optimizer (momentum restarted)."""
    args = _teacher_args("--recipe", "at")
    assert args.iters == 200 * 390
    assert args.milestones == [59 * 390, 119 * 390, 159 * 390]
    assert (args.lr_decay, args.pad_mode, args.norm, args.reset_momentum) == (0.2, "reflect", "at", True)
    assert _teacher_args().reset_momentum is False
    assert _teacher_args("--recipe", "at", "--no-reset-momentum").reset_momentum is False
    assert (args.lr, args.momentum, args.wd, args.batch_size) == (0.1, 0.9, 5e-4, 128)
    # the student script takes the same recipe
    s = train_student.resolve(train_student.get_args_parser().parse_args(["--out", "u", "--method", "ce",
                                                                          "--recipe", "at"]))
    assert (s.iters, s.milestones, s.lr_decay) == (args.iters, args.milestones, 0.2)


def test_explicit_flags_override_the_recipe():
    args = _teacher_args("--recipe", "at", "--iters", "100", "--pad-mode", "zero", "--lr-decay", "0.5")
    assert (args.iters, args.milestones, args.pad_mode, args.lr_decay, args.norm) == \
        (100, [30, 60, 80], "zero", 0.5, "at")  # the recipe's milestone fractions of --iters
    args = _teacher_args("--train-subset", "1280", "--epochs", "4", "--milestone-epochs", "2", "3")
    assert (args.iters, args.milestones, args.lr_decay) == (40, [20, 30], 0.1)
    with pytest.raises(UserError, match="--iters or --epochs"):
        _teacher_args("--iters", "10", "--epochs", "2")
    with pytest.raises(UserError, match="--milestones or --milestone-epochs"):
        _teacher_args("--epochs", "2", "--milestones", "5", "--milestone-epochs", "1")


def test_at_recipe_scales_its_milestones_with_a_shorter_run():
    """--epochs 10 on 1,280 images (10 steps an epoch): 100 iterations, lr x0.2 at the
    recipe's 29.5 % / 59.5 % / 79.5 % of them (rounded half to even: 30, 60, 80); 20
    epochs: 59, 119, 159 steps, as 200 epochs of one step would."""
    args = _teacher_args("--recipe", "at", "--train-subset", "1280", "--epochs", "10")
    assert (args.iters, args.milestones, args.lr_decay) == (100, [30, 60, 80], 0.2)
    args = _teacher_args("--recipe", "at", "--train-subset", "1280", "--epochs", "20")
    assert args.milestones == [59, 119, 159]


def test_lr_decay_factor():
    assert lr_at(0, 0.1, [10, 20], 0.2) == pytest.approx(0.1)
    assert lr_at(10, 0.1, [10, 20], 0.2) == pytest.approx(0.02)
    assert lr_at(25, 0.1, [10, 20], 0.2) == pytest.approx(0.004)


def test_reflect_padding_is_opencv_border_reflect():
    """Each crop of the reflect-padded image equals numpy's 'symmetric' pad (OpenCV's
    BORDER_REFLECT, edge pixel repeated), flipped where asked; zero padding unchanged."""
    torch.manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    dy, dx = torch.tensor([0, 8, 4, 0, 8, 2]), torch.tensor([0, 8, 4, 8, 0, 7])
    flip = torch.tensor([False, True, False, True, False, True])
    out = crop_flip(x, dy, dx, flip, 4, "reflect")
    zero = crop_flip(x, dy, dx, flip, 4, "zero")
    for i in range(6):
        for mode, got, fill in (("symmetric", out, {}), ("constant", zero, {"constant_values": 0})):
            padded = np.pad(x[i].numpy(), ((0, 0), (4, 4), (4, 4)), mode=mode, **fill)
            crop = padded[:, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
            np.testing.assert_array_equal(got[i].numpy(), crop[:, :, ::-1] if flip[i] else crop)
    # the two modes differ only where the crop reaches into the border
    assert torch.equal(out[2], zero[2]) and not torch.equal(out[0], zero[0])
    # same random offsets and flips for either mode
    a = random_crop_flip(x, augment_generator(3, 5, torch.device("cpu")), pad_mode="reflect")
    torch.testing.assert_close(a[2:3], crop_flip(x[2:3], *_offsets(3, 5, 6, 2), 4, "reflect"))


def _offsets(seed, iteration, n, i):
    gen = augment_generator(seed, iteration, torch.device("cpu"))
    offsets = torch.randint(0, 9, (2, n), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5
    return offsets[0, i:i + 1], offsets[1, i:i + 1], flips[i:i + 1]


def test_at_normalization_constants(tiny_folder):
    data = load_data("folder", tiny_folder, norm="at", pad_mode="reflect")
    mean, std = NORM_STATS["at"]
    torch.testing.assert_close(data.mean.flatten(), torch.tensor(mean))
    assert mean[0] == pytest.approx(125.3 / 255) and std[2] == pytest.approx(66.7 / 255)
    assert data.to("cpu").pad_mode == "reflect"


def test_at_recipe_through_the_three_scripts(tiny_runs, tmp_path):
    """Teacher, paraphraser and student under --recipe at record the recipe, the
    teacher's lr falls by 0.2 at its milestone, and the data is normalized with AT's
    constants in every stage."""
    common = [*tiny_runs.common, "--recipe", "at", "--eval-every", "2"]
    t, p, s = tmp_path / "t", tmp_path / "p", tmp_path / "s"
    run(train_teacher, [*common, "--arch", "resnet20", "--iters", "4", "--milestones", "2", "--out", str(t)])
    run(train_paraphraser, [*common, "--teacher", str(t), "--iters", "2", "--out", str(p)])
    run(train_student, [*common, "--method", "ft", "--teacher", str(t), "--paraphraser", str(p),
                        "--iters", "4", "--out", str(s)])
    for out in (t, p, s):
        args = json.loads((out / "args.json").read_text())["args"]
        assert (args["recipe"], args["pad_mode"], args["norm"]) == ("at", "reflect", "at"), out
    lrs = [m["lr"] for m in metrics(t)]
    assert lrs[0] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.02)


def test_a_run_made_before_the_recipe_flags_resumes(tmp_path):
    """An args.json without recipe / lr_decay / pad_mode matches today's defaults."""
    old = {"iters": 10, "lr": 0.1, "out": "x"}
    (tmp_path / "r").mkdir()  # a record from before the schema (version 0), as those runs wrote it
    (tmp_path / "r" / "args.json").write_text(json.dumps({"args": old, "run": {}}))
    new = {**old, "recipe": "paper", "lr_decay": 0.1, "pad_mode": "zero", "epochs": None,
           "milestone_epochs": None, "default_iters": 64000}
    RunDir(tmp_path / "r", new)  # no error
    with pytest.raises(UserError, match="different arguments"):
        RunDir(tmp_path / "r", {**new, "recipe": "at"})


def test_reset_momentum_zeroes_the_buffers_at_each_milestone_only(tiny_runs, tmp_path, monkeypatch):
    """--reset-momentum (on under --recipe at): the momentum buffers are zero when the first
    step at each milestone begins and nowhere else, so the run equals one that keeps its
    momentum up to the first milestone and differs after it; a run killed right at a
    milestone resumes to the uninterrupted run's numbers."""
    resets = []
    zero_momentum = utils.train.zero_momentum

    def spy(optimizer):
        zero_momentum(optimizer)
        buffers = [s["momentum_buffer"] for s in optimizer.state.values()]
        assert buffers and all(not b.any() for b in buffers)
        resets.append(optimizer.param_groups[0]["lr"])

    monkeypatch.setattr(utils.train, "zero_momentum", spy)
    common = [*tiny_runs.common, "--arch", "resnet20", "--recipe", "at", "--iters", "6",
              "--milestones", "2", "4", "--eval-every", "1"]
    run(train_teacher, [*common, "--out", tmp_path / "reset"])
    assert resets == pytest.approx([0.02, 0.004])  # at iterations 2 and 4, after the lr drop
    run(train_teacher, [*common, "--no-reset-momentum", "--out", tmp_path / "keep"])
    assert len(resets) == 2
    reset, keep = metrics(tmp_path / "reset"), metrics(tmp_path / "keep")
    assert reset[:2] == keep[:2] and reset[2]["test_loss"] != keep[2]["test_loss"]

    train_batch = utils.data.train_batch
    interrupt_at(monkeypatch, 1)  # killed during iteration 1: the checkpoint is at milestone 2
    with pytest.raises(Interrupted):
        run(train_teacher, [*common, "--out", tmp_path / "resumed"])
    assert checkpoint(tmp_path / "resumed")["iteration"] == 2
    monkeypatch.setattr(utils.data, "train_batch", train_batch)
    run(train_teacher, [*common, "--out", tmp_path / "resumed"])
    assert metrics(tmp_path / "resumed") == reset


def test_recipe_at_initializes_wide_resnets_as_the_attention_transfer_code():
    """--recipe at: BN weights uniform in [0, 1), convs and the linear layer fan-in
    Kaiming-normal (std sqrt(2 / fan_in)); --wrn-init standard keeps BN weights at 1."""
    import torch.nn as nn

    import train_teacher
    from models import build_model
    from utils.cli import set_up_network

    def built(*argv):
        config = train_teacher.resolve(train_teacher.get_args_parser().parse_args(
            ["--arch", "wrn_16_2", "--out", "unused", *argv]))
        torch.manual_seed(0)
        return config, set_up_network(build_model("wrn_16_2", 10), config.wrn_init, config.bn_images)

    args, model = built("--recipe", "at")
    assert args.wrn_init == "at"
    bn = torch.cat([m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn.min() >= 0 and bn.max() < 1 and 0.4 < bn.mean().item() < 0.6
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.numel() >= 2000:
            fan_in = m.weight[0].numel()
            assert m.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.15)
    args, model = built("--recipe", "at", "--wrn-init", "standard")
    assert all((m.weight == 1).all() for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert built()[0].wrn_init == "standard" and built("--wrn-init", "at")[0].wrn_init == "at"
