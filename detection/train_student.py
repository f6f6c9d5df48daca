"""Detection, stage 3: train the student Faster R-CNN (VGG-16) on VOC 2007 trainval, alone
(--method ce, the paper's 69.5 mAP) or with Factor Transfer from a frozen teacher (--method
ft, 70.3 mAP): the detection losses + beta * L_FT between the translator's output on the
student's backbone map and the paraphraser's factor of the teacher's (Sec. 4.5; beta = 1000).

    python detection/train_student.py --method ft --arch vgg16 --pretrained weights/vgg16-397923af.pth \
        --teacher runs/voc2007/teacher-resnet101-s0 --paraphraser runs/voc2007/para-resnet101-k0.5-s0 \
        --data-root data --out runs/voc2007/ft-vgg16-from-resnet101-s0
    python detection/train_student.py --method ce --arch vgg16 --pretrained weights/vgg16-397923af.pth \
        --data-root data --out runs/voc2007/ce-vgg16-s0
"""

import repo_path  # noqa: F401  (detection/repo_path.py: the repository's packages, for a file run)

import argparse
import json
from dataclasses import dataclass

import torch

from detection.cli import (DATASET, DETECTION_ITERS, DETECTION_MILESTONES, add_detection_run_args,
                           add_detection_schedule_args, add_detector_args, add_voc_args, detector_identity,
                           load_detector, new_detector)
from detection.config import (DetectionRunConfig, DetectionScheduleConfig, FasterRCNNConfig, VOCConfig,
                              resolve_detector_stage)
from detection.data import VOC_CLASSES, load_voc
from detection.tasks import DetectionFT, DetectorTraining, voc_evaluate
from translator import Translator
from utils import distributed
from utils.checkpoint import check_same_data, load_paraphraser, paraphraser_identity
from utils.cli import run_main
from utils.config import from_values, print_config
from utils.distill.ft import FT_REDUCTIONS
from utils.errors import UserError
from utils.train import Stage, fit, open_run, resolve_device

METHODS = {"ce": "the student alone (detection losses)",
           "ft": "Factor Transfer on the backbone map (--teacher, --paraphraser, --beta)"}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Factor Transfer for detection, stage 3: train the student Faster R-CNN (VGG-16) "
                    "on PASCAL VOC 2007, alone or with Factor Transfer from a frozen teacher.")
    parser.add_argument("--method", default="ft", choices=tuple(METHODS),
                        help="; ".join(f"{k}: {v}" for k, v in METHODS.items()) + " (default: ft)")
    parser.add_argument("--teacher", help="teacher run folder of detection/train_teacher.py (ft)")
    parser.add_argument("--paraphraser", help="paraphraser run folder of detection/train_paraphraser.py "
                                              "for that teacher (ft)")
    g = parser.add_argument_group("Factor Transfer (ft)")
    g.add_argument("--beta", type=float, default=1000.0,
                   help="beta, weight of L_FT (paper, ImageNet and VOC 2007: 1000) (default: 1000)")
    g.add_argument("--p", type=int, default=1, choices=(1, 2), help="p of L_FT (Eq. 3) (default: 1)")
    g.add_argument("--ft-reduction", default="mean", choices=FT_REDUCTIONS,
                   help="mean: of |q_t - q_s|^p over batch and factor elements, the authors' code "
                        "(beta is set against it); norm: Eq. (3) as printed (default: mean)")
    g.add_argument("--translator-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="BatchNorm in the translator (default: as the paraphraser)")
    add_detector_args(parser, default_arch="vgg16")
    add_voc_args(parser)
    add_detection_schedule_args(parser, DETECTION_ITERS, DETECTION_MILESTONES, lr=0.001)
    add_detection_run_args(parser, eval_every=10000)
    return parser


@dataclass(kw_only=True)
class DetectionStudentConfig(FasterRCNNConfig, VOCConfig, DetectionScheduleConfig, DetectionRunConfig):
    method: str
    teacher: str | None      # ft only
    paraphraser: str | None  # ft only
    # Factor Transfer (ft)
    beta: float
    p: int
    ft_reduction: str
    translator_bn: bool | None  # None: as the paraphraser


def resolve(args: argparse.Namespace) -> DetectionStudentConfig:
    """The command line's settings: default milestones, the arch's RoI size, --frozen-bn by
    --pretrained, and the checks, --method's run folders among them."""
    v = dict(vars(args))
    resolve_detector_stage(v)
    if v["method"] == "ce":
        if v["teacher"] or v["paraphraser"]:
            raise UserError("--method ce trains the student alone; drop --teacher / --paraphraser")
    elif not v["teacher"] or not v["paraphraser"]:
        raise UserError("--method ft needs --teacher (detection/train_teacher.py) and --paraphraser "
                        "(detection/train_paraphraser.py) run folders")
    return from_values(DetectionStudentConfig, v)


def load_data(voc: VOCConfig, device: torch.device, test_subset: int | None = None):
    """The run's VOC data; `test_subset`: instead of --test-subset."""
    return load_voc(voc.data_root, voc.train_split, voc.test_split, device, voc.download,
                    voc.train_subset, voc.test_subset if test_subset is None else test_subset, voc.flip)


def prepare_device(device: str) -> torch.device:
    """--device, in one process."""
    resolved = resolve_device(device)
    if distributed.active():
        raise UserError("the detection scripts run in one process; start them without torchrun")
    return resolved


def detector_stage(config, kind: str, task, model, detector, data, identity: dict, info: dict) -> Stage:
    """The Stage of a detector's training (`config`: the run's DetectionTeacherConfig or
    DetectionStudentConfig, `detector`: the model's DetectorConfig): evaluated by VOC 2007 mAP
    (higher is better)."""
    return Stage(
        kind=kind, task=task, trainable=task.trainable(), primary="map", maximize=True,
        evaluate=lambda: voc_evaluate(model, data, config.eval_batch_size, VOC_CLASSES),
        info={"arch": config.arch, "detector": detector.to_dict(), "dataset": DATASET,
              "num_classes": data.num_classes, **info},
        identity={"task": "detection", **identity, "arch": config.arch, "dataset": DATASET,
                  "pretrained": bool(config.pretrained), "iters": config.iters, "seed": config.seed})


def train_alone(config, kind: str, identity: dict) -> dict | None:
    """A detector trained with the detection losses only (the teacher; the student alone);
    `config`: the DetectionTeacherConfig or DetectionStudentConfig."""
    device = prepare_device(config.device)
    run = open_run(config)
    if run is None:
        return None
    data = load_data(config, device)
    torch.manual_seed(config.seed)
    model, detector = new_detector(config, data.num_classes)
    task = DetectorTraining(model.to(device))
    stage = detector_stage(config, kind, task, model, detector, data, identity, {})
    print_config(config)
    return fit(stage, data, run, config)


def main(args: argparse.Namespace) -> None:
    config = resolve(args)
    if config.method == "ce":
        result = train_alone(config, kind="student", identity={"stage": "student", "method": "ce"})
    else:
        result = train_ft(config)
    if result is not None:
        print(json.dumps(result, indent=2, sort_keys=True))


def train_ft(config: DetectionStudentConfig) -> dict | None:
    teacher, teacher_ckpt = load_detector(config.teacher)
    check_same_data(teacher_ckpt, "teacher", DATASET)
    teacher_id = detector_identity(teacher, teacher_ckpt)
    paraphraser, para_ckpt = load_paraphraser(config.paraphraser)
    check_same_data(para_ckpt, "paraphraser", DATASET)
    if para_ckpt["teacher"]["fingerprint"] != teacher_id["fingerprint"]:
        raise UserError(f"--paraphraser {config.paraphraser} was trained on another teacher (weights "
                        f"differ from --teacher {config.teacher}); train a paraphraser for this teacher")
    device = prepare_device(config.device)

    # ---------------------------------------------------------------- run folder
    run = open_run(config)
    if run is None:
        return None

    # ---------------------------------------------------------------- data
    data = load_data(config, device)

    # ---------------------------------------------------------------- networks and loss
    torch.manual_seed(config.seed)
    student, detector = new_detector(config, data.num_classes)
    if teacher_ckpt["detector"]["num_classes"] != detector.num_classes:
        raise UserError(f"--teacher has {teacher_ckpt['detector']['num_classes']} classes, this run "
                        f"{detector.num_classes}")
    bn = paraphraser.config["bn"] if config.translator_bn is None else config.translator_bn
    translator = Translator(student.backbone.out_channels, paraphraser.factor_channels, bn=bn)
    task = DetectionFT(student, teacher, paraphraser, translator, config.beta, config.p,
                       config.ft_reduction).to(device)

    # ---------------------------------------------------------------- train
    stage = detector_stage(
        config, "student", task, student, detector, data,
        identity={"stage": "student", "method": "ft", "teacher": teacher_id,
                  "paraphrasers": [paraphraser_identity(paraphraser, para_ckpt)]},
        info={"method": "ft", "translator_config": translator.config,
              "teacher": {"arch": teacher_id["arch"], "fingerprint": teacher_id["fingerprint"]}})
    print_config(config)
    return fit(stage, data, run, config)


if __name__ == "__main__":
    run_main(main, get_args_parser())
