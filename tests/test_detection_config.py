"""The detection scripts' settings resolved once (detection/config.py, each script's
`resolve`): py-faster-rcnn's defaults, the milestones scaled with --iters, the arch's RoI
size and --frozen-bn by --pretrained, one-line errors for bad values, the namespace left
untouched, --help naming the defaults, and `vars(config)` holding exactly the keys (and
values) args.json held before configs existed, so that old run folders resume."""

from __future__ import annotations

import copy
import re
from dataclasses import fields

import pytest
import torch

import utils.train
from detection import train_paraphraser, train_student, train_teacher
from detection.config import FasterRCNNConfig
from detection.data import load_voc
from detection.models import DetectorConfig
from detection.synthetic import make_synthetic_voc
from helpers import run_cli
from utils.config import from_values, show
from utils.errors import UserError

# args.json's "args" keys as the scripts wrote them before configs existed (pinned: a run
# folder resumes only with the same keys).
RUN_KEYS = {"amp", "batch_size", "channels_last", "compile", "cuda_graph", "data_root", "device", "download",
            "eval_batch_size", "eval_every", "flip", "fold_bn", "force", "iters", "lr", "lr_decay",
            "milestone_fractions", "milestones", "momentum", "out", "progress", "reset_momentum", "seed",
            "sync_bn", "test_split", "test_subset", "train_split", "train_subset", "wd"}
DETECTOR_KEYS = {"anchor_sizes", "arch", "aspect_ratios", "box_nms", "box_score_thresh", "detections_per_img",
                 "frozen_bn", "frozen_stages", "max_size", "min_size", "pretrained", "roi_batch", "roi_op",
                 "roi_size", "rpn_batch", "rpn_post_nms_test", "rpn_post_nms_train", "rpn_pre_nms_test",
                 "rpn_pre_nms_train"}
TEACHER_KEYS = RUN_KEYS | DETECTOR_KEYS
STUDENT_KEYS = TEACHER_KEYS | {"method", "teacher", "paraphraser", "beta", "p", "ft_reduction", "translator_bn"}
PARAPHRASER_KEYS = RUN_KEYS | {"teacher", "k", "bn", "recon_loss", "epochs", "eval_images"}

# The teacher's args.json for `--out o` alone, as recorded before configs existed.
TEACHER_DEFAULTS = {
    "amp": "none", "anchor_sizes": [128, 256, 512], "arch": "resnet101", "aspect_ratios": [0.5, 1.0, 2.0],
    "batch_size": 1, "box_nms": 0.3, "box_score_thresh": 0.05, "channels_last": False, "compile": False,
    "cuda_graph": False, "data_root": "./data", "detections_per_img": 100, "device": "auto", "download": False,
    "eval_batch_size": 1, "eval_every": 10000, "flip": True, "fold_bn": False, "force": False, "frozen_bn": False,
    "frozen_stages": 2, "iters": 70000, "lr": 0.001, "lr_decay": 0.1, "max_size": 1000,
    "milestone_fractions": [50000 / 70000], "milestones": [50000], "min_size": 600, "momentum": 0.9, "out": "o",
    "pretrained": None, "progress": "auto", "reset_momentum": False, "roi_batch": 128, "roi_op": "pool",
    "roi_size": 14, "rpn_batch": 256, "rpn_post_nms_test": 300, "rpn_post_nms_train": 2000,
    "rpn_pre_nms_test": 6000, "rpn_pre_nms_train": 12000, "seed": 0, "sync_bn": False, "test_split": "test",
    "test_subset": None, "train_split": "trainval", "train_subset": None, "wd": 0.0005}

FT = ("--teacher", "T", "--paraphraser", "P")


def parse(script, *argv):
    return script.get_args_parser().parse_args(["--out", "o", *map(str, argv)])


def resolved(script, *argv, **kwargs):
    return script.resolve(parse(script, *argv), **kwargs)


def never():
    raise AssertionError("the training images were counted for a schedule in iterations")


def weights(tmp_path, arch="resnet101"):
    """A --pretrained file (resolve checks only that it is there)."""
    path = tmp_path / {"resnet101": "resnet101-63fe2227.pth", "vgg16": "vgg16-397923af.pth"}[arch]
    path.touch()
    return path


# ---------------------------------------------------------------- defaults

def test_py_faster_rcnn_defaults():
    """lr 0.001 for 70,000 iterations, x0.1 after 50,000, momentum 0.9, weight decay 5e-4,
    one image a step; the teacher a ResNet-101 (RoI 14), the student a VGG-16 (RoI 7)."""
    t = resolved(train_teacher)
    assert type(t).__name__ == "DetectionTeacherConfig"
    assert vars(t) == TEACHER_DEFAULTS
    assert (t.iters, t.milestones, t.lr, t.lr_decay, t.momentum, t.wd, t.batch_size) == \
        (70000, [50000], 0.001, 0.1, 0.9, 5e-4, 1)
    assert t.detector(21) == DetectorConfig(arch="resnet101", roi_size=14, frozen_bn=False)
    s = resolved(train_student, *FT)
    assert type(s).__name__ == "DetectionStudentConfig"
    assert (s.method, s.arch, s.roi_size, s.frozen_bn, s.iters, s.milestones, s.lr, s.batch_size) == \
        ("ft", "vgg16", 7, False, 70000, [50000], 0.001, 1)
    assert (s.beta, s.p, s.ft_reduction, s.translator_bn) == (1000.0, 1, "mean", None)
    assert s.detector(21) == DetectorConfig(arch="vgg16", roi_size=7, frozen_bn=False)
    # the paraphraser: k = 0.5 without BN, one epoch (64 images, one a step) at lr 0.1, no milestones
    p = resolved(train_paraphraser, "--teacher", "T", train_images=lambda: 64)
    assert type(p).__name__ == "DetectionParaphraserConfig"
    assert (p.k, p.bn, p.recon_loss, p.epochs, p.eval_images) == (0.5, False, "l1", 1.0, 200)
    assert (p.iters, p.milestones, p.lr, p.lr_decay, p.batch_size, p.eval_every) == (64, [], 0.1, 0.1, 1, 1000)


def test_paraphraser_epochs_count_the_training_images(tmp_path):
    """--iters from --epochs: an epoch is (training images // batch size) steps, the images
    counted from the annotations as load_voc's training set (those with a non-difficult
    object); with --iters given, nothing is counted."""
    voc = make_synthetic_voc(tmp_path / "voc", train=16, test=2, size=64)
    data = load_voc(voc, "trainval", "test", torch.device("cpu"))
    p = resolved(train_paraphraser, "--teacher", "T", "--data-root", voc, "--batch-size", 2, "--epochs", 3)
    assert p.iters == 3 * data.steps_per_epoch(2)
    p = resolved(train_paraphraser, "--teacher", "T", "--epochs", 2, "--batch-size", 4, train_images=lambda: 10)
    assert p.iters == 2 * (10 // 4)
    assert resolved(train_paraphraser, "--teacher", "T", "--epochs", 0.01, train_images=lambda: 10).iters == 1
    assert resolved(train_paraphraser, "--teacher", "T", "--iters", 7, train_images=never).iters == 7


# ---------------------------------------------------------------- the schedule

@pytest.mark.parametrize("script", [train_teacher, train_student])
def test_iters_scales_the_milestones(script):
    """--iters N: the lr drop after the same fraction (5/7) of N."""
    extra = FT if script is train_student else ()
    assert [resolved(script, *extra, "--iters", n).milestones for n in (7000, 700, 14, 3, 1)] == \
        [[5000], [500], [10], [2], []]


def test_explicit_milestones_are_kept():
    assert resolved(train_teacher, "--iters", 100, "--milestones", 30, 60).milestones == [30, 60]
    assert resolved(train_teacher, "--milestones").milestones == []
    p = resolved(train_paraphraser, "--teacher", "T", "--iters", 10, "--milestones", 5, train_images=never)
    assert (p.iters, p.milestones) == (10, [5])


BAD = [
    (train_teacher, ("--milestones", 0),
     "--milestones must be strictly increasing, between 1 and --iters - 1 (69999), got [0]"),
    (train_teacher, ("--milestones", 60000, 50000),
     "--milestones must be strictly increasing, between 1 and --iters - 1 (69999), got [60000, 50000]"),
    (train_teacher, ("--iters", 10, "--milestones", 10),
     "--milestones must be strictly increasing, between 1 and --iters - 1 (9), got [10]"),
    (train_teacher, ("--iters", 0), "--iters must be positive, got 0"),
    (train_teacher, ("--lr", -1), "--lr must be positive, got -1.0"),
    (train_teacher, ("--lr-decay", 0), "--lr-decay must be positive, got 0.0"),
    (train_teacher, ("--batch-size", 0), "--batch-size must be positive, got 0"),
    (train_teacher, ("--roi-size", 0), "--roi-size must be positive, got 0"),
    (train_teacher, ("--min-size", 0), "--min-size must be positive, got 0"),
    (train_teacher, ("--wd", -1), "--wd and --momentum must not be negative"),
    (train_teacher, ("--momentum", -0.1), "--wd and --momentum must not be negative"),
    (train_teacher, ("--train-subset", 0), "--train-subset must be positive, got 0"),
    (train_teacher, ("--test-subset", -2), "--test-subset must be positive, got -2"),
    (train_teacher, ("--arch", "resnet_tiny", "--pretrained", "w.pth"),
     "--pretrained: there are no ImageNet weights for --arch resnet_tiny; drop --pretrained"),
    (train_student, ("--method", "ce", "--eval-batch-size", 0), "--eval-batch-size must be positive, got 0"),
    (train_student, ("--method", "ce", "--teacher", "T"),
     "--method ce trains the student alone; drop --teacher / --paraphraser"),
    (train_student, ("--method", "ft", "--teacher", "T"),
     "--method ft needs --teacher (detection/train_teacher.py) and --paraphraser "
     "(detection/train_paraphraser.py) run folders"),
    (train_paraphraser, ("--teacher", "T", "--k", 0), "--k must be positive, got 0.0"),
    (train_paraphraser, ("--teacher", "T", "--eval-images", 0), "--eval-images must be positive, got 0"),
    (train_paraphraser, ("--teacher", "T", "--epochs", -1), "--epochs must be positive, got -1.0"),
    (train_paraphraser, ("--teacher", "T", "--batch-size", 0), "--batch-size must be positive, got 0"),
    (train_paraphraser, ("--teacher", "T", "--iters", 4, "--eval-every", 0), "--eval-every must be positive, got 0"),
    (train_paraphraser, ("--teacher", "T", "--iters", 5, "--milestones", 5),
     "--milestones must be strictly increasing, between 1 and --iters - 1 (4), got [5]"),
]


@pytest.mark.parametrize("script, argv, message", BAD, ids=[f"{s.__name__.split('.')[-1]}{a}" for s, a, _ in BAD])
def test_bad_values_are_one_line_errors(script, argv, message):
    with pytest.raises(UserError, match=f"^{re.escape(message)}$"):
        resolved(script, *argv, **({"train_images": never} if script is train_paraphraser else {}))


def test_bad_values_from_the_command_line(tmp_path, capsys):
    """Refused before any data, network or run folder."""
    code, err = run_cli(train_teacher, ["--out", tmp_path / "t", "--iters", 10, "--milestones", 10], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--milestones must be" in err
    code, err = run_cli(train_student, ["--out", tmp_path / "s", "--pretrained", tmp_path / "nope.pth"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "vgg16-397923af.pth" in err
    assert not (tmp_path / "t").exists() and not (tmp_path / "s").exists()


# ---------------------------------------------------------------- the detector

def test_roi_size_and_frozen_bn_resolved_from_arch_and_pretrained(tmp_path):
    def roi(arch, *extra):
        return resolved(train_teacher, "--arch", arch, *extra).roi_size
    assert [roi(a) for a in ("vgg16", "resnet101", "vgg16_tiny", "resnet_tiny")] == [7, 14, 7, 14]
    assert roi("resnet101", "--roi-size", 5) == 5

    def frozen(*extra):
        return resolved(train_teacher, "--arch", "resnet101", *extra).frozen_bn
    w = weights(tmp_path)
    assert (frozen(), frozen("--pretrained", w)) == (False, True)  # BN fixed at the ImageNet statistics
    assert (frozen("--pretrained", w, "--no-frozen-bn"), frozen("--frozen-bn")) == (False, True)
    s = resolved(train_student, "--method", "ce", "--pretrained", weights(tmp_path, "vgg16"))
    assert (s.pretrained, s.frozen_bn, s.detector(21).frozen_bn) == (str(tmp_path / "vgg16-397923af.pth"), True, True)


def test_the_detector_group_is_detector_configs_fields():
    """The detector flags are DetectorConfig's fields (num_classes is the data's) and --pretrained."""
    ours = {f.name for f in fields(FasterRCNNConfig)}
    assert ours == {f.name for f in fields(DetectorConfig)} - {"num_classes"} | {"pretrained"} == DETECTOR_KEYS


# ---------------------------------------------------------------- args.json

def test_config_holds_exactly_the_args_json_keys():
    assert set(vars(resolved(train_teacher))) == TEACHER_KEYS
    assert set(vars(resolved(train_student, "--method", "ce"))) == STUDENT_KEYS
    assert set(vars(resolved(train_paraphraser, "--teacher", "T", train_images=lambda: 8))) == PARAPHRASER_KEYS


class Recorded(Exception):
    pass


@pytest.mark.parametrize("script, argv", [(train_teacher, ("--arch", "vgg16_tiny", "--iters", 70)),
                                          (train_student, ("--method", "ce", "--no-frozen-bn", "--roi-size", 5))])
def test_the_run_records_vars_of_the_config(script, argv, tmp_path, monkeypatch):
    """What main hands the run folder (args.json's "args") is `vars(config)` of resolve."""
    class RunDir:
        def __init__(self, out, args, force=False):
            raise Recorded(args)
    monkeypatch.setattr(utils.train, "RunDir", RunDir)
    args = script.get_args_parser().parse_args(["--out", str(tmp_path / "run"), *map(str, argv)])
    with pytest.raises(Recorded) as recorded:
        script.main(args)
    assert recorded.value.args[0] == vars(script.resolve(args))


@pytest.mark.parametrize("script, argv, kwargs", [
    (train_teacher, ("--iters", 100), {}),
    (train_student, ("--method", "ce", "--arch", "resnet_tiny"), {}),
    (train_paraphraser, ("--teacher", "T"), {"train_images": lambda: 8}),
])
def test_resolve_leaves_the_namespace_alone(script, argv, kwargs):
    args = parse(script, *argv)
    before = copy.deepcopy(vars(args))
    config = script.resolve(args, **kwargs)
    assert vars(args) == before
    assert config.milestones is not None and args.milestones is None


def test_from_values_refuses_a_value_without_a_field():
    values = dict(vars(resolved(train_teacher)), extra=1)
    with pytest.raises(TypeError, match="has no field for extra"):
        from_values(train_teacher.DetectionTeacherConfig, values)


def test_show_names_each_group():
    text = show(resolved(train_student, *FT))
    assert text.splitlines()[0] == "DetectionStudentConfig:"
    groups = [line.split()[0] for line in text.splitlines()[1:]]
    assert groups == ["detectionstudent", "fasterrcnn", "voc", "detectionschedule", "detectionrun"]
    assert "iters=70000" in text and "roi_size=7" in text


# ---------------------------------------------------------------- --help

@pytest.mark.parametrize("script, shown", [
    (train_teacher, ["--arch", "(default: resnet101)", "(default: 70000)",
                     "(default: 50000; with --iters N, the same fractions of N)", "(default: 0.001)",
                     "images per step (default: 1)", "(default: 10000)", "(default: 600)", "(default: 1000)",
                     "(default: 128 256 512)", "(default: pool)", "7 for vgg16", "(default: 0.1)",
                     "(default: 0.9)", "(default: 5e-4)", "fixed with --pretrained"]),
    (train_student, ["(default: vgg16)", "(default: ft)", "(default: 1000)", "(default: 70000)",
                     "(default: 50000; with --iters N, the same fractions of N)", "(default: 0.001)",
                     "images per step (default: 1)"]),
    (train_paraphraser, ["(default: 0.5)", "(default: one epoch of the training images)", "(default: none)",
                         "(default: 0.1)", "(default: 1000)", "(default: 200)", "(default: l1)",
                         "images per step (default: 1)"]),
])
def test_help_shows_the_defaults(script, shown):
    text = " ".join(script.get_args_parser().format_help().split())
    for words in shown:
        assert words in text, words
