"""The detection scripts' settings as typed objects, resolved once from the command line,
as utils/config.py does for the CIFAR scripts.

Each of detection/train_teacher.py, train_paraphraser.py and train_student.py has a pure
`resolve(args)` that turns its argparse namespace into its config (DetectionTeacherConfig,
DetectionParaphraserConfig, DetectionStudentConfig), built from the groups below: it fills
what the flags leave to be derived (the default milestones, --iters from the paraphraser's
--epochs, the arch's RoI size, --frozen-bn from --pretrained) and runs the checks, raising a
one-line UserError for a bad combination.  It does no I/O of its own beyond asking the
paraphraser's training-set size (a callable) when --iters is not given, and checking that a
--pretrained file exists, before any run folder or network.  Everything downstream reads
the config, never the namespace.

A config is flat, one field per flag under the flag's name, so that `vars(config)` is what
args.json records: the same keys and values as before configs existed, so that old run
folders resume.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

from detection.models import DETECTORS, DetectorConfig, check_pretrained_file
from utils.config import check_positive
from utils.errors import UserError


# ---------------------------------------------------------------------- the groups

@dataclass(kw_only=True)
class FasterRCNNConfig:
    """The detector flags (teacher and student): DetectorConfig's fields but num_classes
    (the data's), and --pretrained."""
    arch: str
    pretrained: str | None  # torchvision's ImageNet weights of --arch; None: random initialisation
    min_size: int
    max_size: int
    anchor_sizes: list[int]
    aspect_ratios: list[float]
    roi_op: str
    roi_size: int           # resolved: the arch's unless given
    rpn_pre_nms_train: int
    rpn_post_nms_train: int
    rpn_pre_nms_test: int
    rpn_post_nms_test: int
    rpn_batch: int
    roi_batch: int
    box_nms: float
    box_score_thresh: float
    detections_per_img: int
    frozen_bn: bool         # resolved: on with --pretrained unless given
    frozen_stages: int

    def detector(self, num_classes: int) -> DetectorConfig:
        """What builds (and, stored in a checkpoint, rebuilds) the detector."""
        return DetectorConfig(**{f.name: getattr(self, f.name) for f in fields(DetectorConfig)
                                 if f.name != "num_classes"}, num_classes=num_classes)


@dataclass(kw_only=True)
class VOCConfig:
    data_root: str
    download: bool
    train_split: str
    test_split: str
    train_subset: int | None  # None: the whole split
    test_subset: int | None
    flip: bool


@dataclass(kw_only=True)
class DetectionScheduleConfig:
    iters: int                        # resolved: the paraphraser's from --epochs unless given
    milestones: list[int]             # resolved: milestone_fractions of --iters unless given
    milestone_fractions: list[float]  # the script's default milestones / default --iters; not a flag
    lr_decay: float
    lr: float
    momentum: float
    wd: float
    batch_size: int
    reset_momentum: bool              # fixed: off (utils.train.fit reads it); not a flag


@dataclass(kw_only=True)
class DetectionRunConfig:
    out: str
    seed: int
    device: str
    eval_every: int
    eval_batch_size: int
    force: bool
    progress: str
    # What utils.train.fit reads that the detection scripts leave fixed (detection.cli's
    # FIXED_RUN_SETTINGS); not flags.
    amp: str
    compile: bool
    cuda_graph: bool
    channels_last: bool
    fold_bn: bool
    sync_bn: bool


# ---------------------------------------------------------------------- resolution steps
# Each works on a dict of the namespace's values, which the script's resolve() turns into
# its config; `vars(args)` itself is never changed.

def resolve_schedule(v: dict, epoch_steps: Callable[[], int] | None = None) -> None:
    """--iters (when not given: `epoch_steps()`, the paraphraser's --epochs of the training
    images, at least 1), the default milestones (the fractions `milestone_fractions` of
    --iters), and the schedule's checks."""
    if v["iters"] is None:
        v["iters"] = max(1, epoch_steps() if epoch_steps else 1)
    if v["milestones"] is None:
        v["milestones"] = sorted({m for m in (round(v["iters"] * f) for f in v["milestone_fractions"])
                                  if 0 < m < v["iters"]})
    check_positive(v, "iters", "lr", "batch_size", "eval_every", "eval_batch_size", "lr_decay")
    if v["wd"] < 0 or v["momentum"] < 0:
        raise UserError("--wd and --momentum must not be negative")
    ms = v["milestones"]
    if ms != sorted(set(ms)) or (ms and (ms[0] <= 0 or ms[-1] >= v["iters"])):
        raise UserError(f"--milestones must be strictly increasing, between 1 and --iters - 1 "
                        f"({v['iters'] - 1}), got {ms}")


def resolve_detector(v: dict) -> None:
    """--roi-size (the arch's: 7 for vgg16 as fc6 takes, 14 for resnet101), --frozen-bn (on
    with --pretrained), the checks, and that a --pretrained file is there (before any run
    folder or network)."""
    if v["roi_size"] is None:
        v["roi_size"] = DETECTORS[v["arch"]].roi_size
    if v["frozen_bn"] is None:
        v["frozen_bn"] = bool(v["pretrained"])
    check_positive(v, "min_size", "max_size", "roi_batch", "rpn_batch", "roi_size")
    if v["pretrained"]:
        check_pretrained_file(v["arch"], v["pretrained"])


def resolve_detector_stage(v: dict) -> None:
    """What the teacher and student scripts share: the schedule, the detector, the subsets."""
    resolve_schedule(v)
    resolve_detector(v)
    check_subsets(v)


def check_subsets(v: dict) -> None:
    for name in ("train_subset", "test_subset"):
        if v[name] is not None and v[name] <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {v[name]}")

