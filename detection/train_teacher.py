"""Detection, stage 1: fine-tune the teacher Faster R-CNN on VOC 2007 trainval (the paper's
Sec. 4.5: ResNet-101, 75.0 mAP on VOC 2007 test), with the detection losses alone.

    python detection/train_teacher.py --arch resnet101 --pretrained weights/resnet101-63fe2227.pth \
        --data-root data --out runs/voc2007/teacher-resnet101-s0

The VGG-16 student alone (69.5 mAP) is detection/train_student.py --method ce.
"""

import repo_path  # noqa: F401  (detection/repo_path.py: the repository's packages, for a file run)

import argparse
import json
from dataclasses import dataclass

from detection.cli import (DETECTION_ITERS, DETECTION_MILESTONES, add_detection_run_args,
                           add_detection_schedule_args, add_detector_args, add_voc_args)
from detection.config import (DetectionRunConfig, DetectionScheduleConfig, FasterRCNNConfig, VOCConfig,
                              resolve_detector_stage)
from detection.train_student import train_alone
from utils.cli import run_main
from utils.config import from_values


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Factor Transfer for detection, stage 1: fine-tune the teacher Faster R-CNN "
                    "(ResNet-101) on PASCAL VOC 2007 with the detection losses.")
    add_detector_args(parser, default_arch="resnet101")
    add_voc_args(parser)
    add_detection_schedule_args(parser, DETECTION_ITERS, DETECTION_MILESTONES, lr=0.001)
    add_detection_run_args(parser, eval_every=10000)
    return parser


@dataclass(kw_only=True)
class DetectionTeacherConfig(FasterRCNNConfig, VOCConfig, DetectionScheduleConfig, DetectionRunConfig):
    """The teacher's settings: the groups' alone."""


def resolve(args: argparse.Namespace) -> DetectionTeacherConfig:
    """The command line's settings: default milestones, the arch's RoI size, --frozen-bn by
    --pretrained, and the checks."""
    v = dict(vars(args))
    resolve_detector_stage(v)
    return from_values(DetectionTeacherConfig, v)


def main(args: argparse.Namespace) -> None:
    config = resolve(args)
    result = train_alone(config, kind="teacher", identity={"stage": "teacher"})
    if result is not None:
        print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    run_main(main, get_args_parser())
