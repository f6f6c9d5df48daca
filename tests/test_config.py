"""Each script's settings resolved once (utils/config.py): the documented values of a few
command lines, a one-line error for a bad combination, --help naming the defaults, and
Factor Transfer built from its options object, without argparse, as the script builds it."""

import argparse
import json

import pytest
import torch

from helpers import run_cli, tiny_runs, train_paraphraser, train_student, train_teacher  # noqa: F401
from models import build_model
from utils.checkpoint import load_classifier, load_paraphraser
from utils.config import show
from utils.distill import Frozen
from utils.distill.ft import FTOptions, build_ft
from utils.errors import UserError


def resolved(script, *argv, train_images=None):
    args = script.get_args_parser().parse_args(["--out", "o", *map(str, argv)])
    return script.resolve(args, train_images)


def never():
    raise AssertionError("the training-set size was asked for a schedule in iterations")


def test_paper_defaults():
    """The paper's appendix: 64,000 iterations, lr x0.1 at 32,000 and 48,000, zero padding."""
    t = resolved(train_teacher, train_images=never)
    assert type(t).__name__ == "TeacherConfig"
    assert (t.arch, t.iters, t.milestones, t.lr, t.lr_decay, t.momentum, t.wd, t.batch_size) == \
        ("resnet56", 64000, [32000, 48000], 0.1, 0.1, 0.9, 5e-4, 128)
    assert (t.pad_mode, t.norm, t.reset_momentum, t.wrn_init, t.bn_images) == ("zero", None, False, "standard", 0)
    s = resolved(train_student, "--paraphraser", "P", "--teacher", "T", train_images=never)
    assert (s.method, s.arch, s.iters, s.milestones, s.kd_form) == ("ft", "resnet20", 64000, [32000, 48000], None)
    assert s.method_options() == FTOptions() == FTOptions(beta=500.0, p=1, reduction="mean", groups="last")
    assert s.kd() is None
    # the paraphraser: k = 0.5, BN on CIFAR-10, 30 epochs of the 45,000 images left after
    # the 10 % holdout: 45,000 // 128 = 351 steps an epoch
    p = resolved(train_paraphraser, "--teacher", "T", train_images=lambda: 50_000)
    assert (p.k, p.bn, p.kind, p.layers, p.rae_lambda, p.epochs, p.holdout) == (0.5, True, "conv", 3, None, 30, 0.1)
    assert (p.iters, p.milestones, p.lr_decay) == (30 * 351, [], 0.1)


def test_recipe_at():
    """--recipe at: 200 epochs of 390 steps, lr x0.2 after epochs 59 / 119 / 159 with the
    momentum reset, reflect padding, AT's normalization and WRN initialization."""
    s = resolved(train_student, "--method", "at+kd", "--teacher", "T", "--recipe", "at",
                 train_images=lambda: 50_000)
    assert (s.iters, s.milestones, s.lr_decay, s.reset_momentum) == (200 * 390, [59 * 390, 119 * 390, 159 * 390],
                                                                      0.2, True)
    assert (s.pad_mode, s.norm, s.wrn_init, s.epochs, s.kd_form) == ("reflect", "at", "at", 200.0, "at2017")
    opts = s.method_options()
    assert (opts.beta, opts.beta_decay) == (1000.0, "none")
    assert (s.kd().T, s.kd().alpha, s.kd().form) == (4.0, 0.9, "at2017")
    # the paraphraser takes the recipe's data handling, not its schedule
    p = resolved(train_paraphraser, "--teacher", "T", "--recipe", "at", "--iters", "100", train_images=never)
    assert (p.pad_mode, p.norm, p.lr_decay, p.iters, p.milestones) == ("reflect", "at", 0.2, 100, [])


def test_dataset_rules():
    """CIFAR-100: the paraphraser without BN (the paper's rule) and the RAE's lambda for
    no BN; k = 2 for the RAE.  ImageNet: no epochs (the CIFAR tensor pipeline's), no holdout."""
    p = resolved(train_paraphraser, "--teacher", "T", "--dataset", "cifar100", "--iters", "10")
    assert (p.bn, p.k, p.rae_lambda) == (False, 0.5, None)  # no RAE: no lambda
    rae = resolved(train_paraphraser, "--teacher", "T", "--dataset", "cifar100", "--kind", "rae", "--iters", "10")
    assert (rae.bn, rae.k, rae.rae_lambda) == (False, 2.0, 0.03)
    no_para = resolved(train_student, "--no-paraphraser", "--teacher", "T", "--dataset", "cifar100")
    assert no_para.method_options().translator_bn is False  # the paraphraser's rule, for the translator
    with pytest.raises(UserError, match="give --iters and --milestones for ImageNet"):
        resolved(train_teacher, "--dataset", "imagenet", "--recipe", "at")
    with pytest.raises(UserError, match="--holdout 0"):
        resolved(train_paraphraser, "--teacher", "T", "--dataset", "imagenet", "--iters", "10")
    imagenet = resolved(train_paraphraser, "--teacher", "T", "--dataset", "imagenet", "--holdout", "0",
                        "--epochs", "2", "--batch-size", "256", train_images=lambda: 1_281_167)
    assert imagenet.iters == 2 * (1_281_167 // 256)


def test_the_config_is_what_args_json_records():
    """Every flag has its field, vars(config) is JSON (args.json), the namespace is left as
    parsed, and the printed block shows the resolved values by group."""
    for script, extra in ((train_teacher, []), (train_student, ["--method", "ce"]),
                          (train_paraphraser, ["--teacher", "T", "--iters", "5"])):
        args = script.get_args_parser().parse_args(["--out", "o", *extra])
        before = dict(vars(args))
        config = script.resolve(args, never)
        assert set(vars(config)) == set(before) and vars(args) == before
        json.dumps(vars(config))
    text = show(resolved(train_teacher))
    assert text.splitlines()[0] == "TeacherConfig:"
    assert "iters=64000 milestones=[32000, 48000]" in text and "arch='resnet56'" in text


def test_a_bad_combination_is_one_line_and_writes_nothing(capsys, tmp_path):
    out = tmp_path / "out"
    code, err = run_cli(train_student, ["--method", "ce", "--no-translator", "--out", out], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "--no-translator applies to Factor Transfer only" in err
    assert not out.exists()


def test_help_names_each_default():
    """--help gives each flag's default, and for the ones that depend on another flag
    what they resolve to (e.g. --iters: 64000, or the epochs' iterations)."""
    paths = {"--out", "--teacher", "--paraphraser"}  # where the run and its inputs are: no default
    for script in (train_teacher, train_student, train_paraphraser):
        parser = script.get_args_parser()
        for action in parser._actions:
            flag = action.option_strings[0] if action.option_strings else None
            if isinstance(action, argparse._HelpAction) or flag in paths or action.default is False:
                continue
            assert "default" in action.help, (script.__name__, flag)
    help_text = " ".join(train_teacher.get_args_parser().format_help().split())
    assert "training iterations (default: 64000; with --epochs or --recipe at: the epochs' iterations)" in help_text


def test_ft_from_its_options_is_the_scripts_task(tiny_runs, monkeypatch):
    """FT built in a user's Python from FTOptions (no namespace) is the task
    train_student.py --method ft trains: the same modules, weights and losses."""
    teacher_run, para_run = tiny_runs.teacher, tiny_runs.paraphraser()
    built = {}
    monkeypatch.setattr(train_student, "fit", lambda stage, data, run, config: built.update(task=stage.task) or {})
    argv = [*tiny_runs.args(tiny_runs.root / "unused-student"), "--method", "ft", "--arch", "resnet20",
            "--teacher", teacher_run, "--paraphraser", para_run, "--beta", "250"]
    train_student.main(train_student.get_args_parser().parse_args(list(map(str, argv))))
    script_task = built["task"]

    teacher, _ = load_classifier(teacher_run)
    paraphraser, _ = load_paraphraser(para_run)
    torch.manual_seed(0)  # the script's --seed
    student = build_model("resnet20", num_classes=10)
    task, info = build_ft(FTOptions(beta=250), student, Frozen(teacher, [(paraphraser, -1)], (32, 32)), kd=None)

    assert info["groups"] == [[2, 2]] and task.beta == script_task.beta == 250
    ours, theirs = task.state_dict(), script_task.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    _, losses = task.eval()(x, y)
    _, script_losses = script_task.eval()(x, y)
    assert losses.keys() == {"ce", "ft"} and all(torch.equal(losses[k], script_losses[k]) for k in losses)
