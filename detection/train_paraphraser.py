"""Detection, stage 2: train the paraphraser on the frozen teacher detector's backbone map,
the last shared conv layer (Sec. 4.5; Sec. 3.1's autoencoder and reconstruction loss).

    python detection/train_paraphraser.py --teacher runs/voc2007/teacher-resnet101-s0 \
        --data-root data --out runs/voc2007/para-resnet101-k0.5-s0

Defaults as the paper's ImageNet rule, which it states for ImageNet and VOC 2007 alike: no
BatchNorm (the appendix: BN for CIFAR-10 only), k = 0.5 (the paper gives no k for VOC), one
epoch at lr 0.1.
"""

import repo_path  # noqa: F401  (detection/repo_path.py: the repository's packages, for a file run)

import argparse
import json
from dataclasses import dataclass
from typing import Callable

import torch

from detection.cli import (DATASET, add_detection_run_args, add_detection_schedule_args, add_voc_args,
                           detector_identity, load_detector)
from detection.config import DetectionRunConfig, DetectionScheduleConfig, VOCConfig, check_subsets, resolve_schedule
from detection.data import count_train_images
from detection.tasks import BackboneTap
from detection.train_student import load_data, prepare_device
from paraphraser import Paraphraser, bn_default
from utils.checkpoint import check_same_data
from utils.cli import run_main
from utils.config import check_positive, from_values, print_config
from utils.distill.paraphrase import RECON_LOSSES, ParaphraserTraining, reconstruction_loss
from utils.train import Stage, fit, open_run


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Factor Transfer for detection, stage 2: train a paraphraser on the frozen teacher "
                    "detector's backbone map; its encoder output is the teacher factor.")
    parser.add_argument("--teacher", required=True, help="teacher run folder of detection/train_teacher.py")
    parser.add_argument("--k", type=float, default=0.5,
                        help="paraphrase rate k: factor channels = round(k * C_teacher) (default: 0.5)")
    parser.add_argument("--bn", action=argparse.BooleanOptionalAction, default=bn_default(DATASET),
                        help="BatchNorm after every layer (default: off, the paper's rule for ImageNet "
                             "and VOC)")
    parser.add_argument("--recon-loss", default="l1", choices=RECON_LOSSES,
                        help="reconstruction loss: l1 = mean |x-P(x)| (the authors' code) (default: l1)")
    parser.add_argument("--epochs", type=float, default=1.0,
                        help="epochs of the training images, used when --iters is not given (the paper's "
                             "ImageNet paraphraser: 1) (default: 1)")
    parser.add_argument("--eval-images", type=int, default=200,
                        help="test images whose reconstruction loss is reported at each evaluation "
                             "(default: 200)")
    add_voc_args(parser)
    add_detection_schedule_args(parser, None, None, lr=0.1)
    add_detection_run_args(parser, eval_every=1000)
    return parser


@dataclass(kw_only=True)
class DetectionParaphraserConfig(VOCConfig, DetectionScheduleConfig, DetectionRunConfig):
    teacher: str
    k: float
    bn: bool
    recon_loss: str
    epochs: float  # --iters, when not given: this many epochs of the training images
    eval_images: int


def resolve(args: argparse.Namespace, train_images: Callable[[], int] | None = None) -> DetectionParaphraserConfig:
    """The command line's settings: --iters from --epochs when not given, the checks.
    `train_images`: the training images (those with a non-difficult object), asked only
    when --iters is not given (default: counted from the VOC annotations)."""
    v = dict(vars(args))
    check_positive(v, "k", "eval_images", "epochs")
    check_subsets(v)  # before an epoch of the --train-subset images is counted
    if v["iters"] is None:
        check_positive(v, "batch_size")
    count = train_images or (lambda: count_train_images(v["data_root"], v["train_split"], v["download"],
                                                        v["train_subset"]))
    resolve_schedule(v, lambda: round(v["epochs"] * (count() // v["batch_size"])))
    return from_values(DetectionParaphraserConfig, v)


def main(args: argparse.Namespace) -> None:
    config = resolve(args)
    teacher, teacher_ckpt = load_detector(config.teacher)
    check_same_data(teacher_ckpt, "teacher", DATASET)
    teacher_id = detector_identity(teacher, teacher_ckpt)
    device = prepare_device(config.device)

    # ---------------------------------------------------------------- run folder
    run = open_run(config)
    if run is None:
        return

    # ---------------------------------------------------------------- data
    data = load_data(config, device, test_subset=min(config.eval_images, config.test_subset or config.eval_images))

    # ---------------------------------------------------------------- networks
    torch.manual_seed(config.seed)
    tap = BackboneTap(teacher).to(device)
    channels = teacher.backbone.out_channels
    paraphraser = Paraphraser(channels, k=config.k, bn=config.bn).to(device)
    task = ParaphraserTraining(tap, paraphraser, config.recon_loss)

    @torch.inference_mode()
    def evaluate() -> dict:
        """Mean reconstruction loss over the first --eval-images test images."""
        paraphraser.eval()
        total, n = 0.0, 0
        for images, _ in data.test_batches(config.eval_batch_size):
            feat = task.teacher_features(images)
            total += reconstruction_loss(paraphraser(feat), feat, config.recon_loss).item() * len(images)
            n += len(images)
        return {"recon_test": total / n}

    stage = Stage(
        kind="paraphraser", task=task, trainable=task.trainable(), evaluate=evaluate, primary="recon_test",
        info={"paraphraser_config": paraphraser.config, "paraphraser_kind": "conv", "group": -1,
              "dataset": DATASET, "num_classes": data.num_classes,
              "teacher": {"arch": teacher_id["arch"], "fingerprint": teacher_id["fingerprint"],
                          "group_channels": [channels]}},
        identity={"task": "detection", "stage": "paraphraser", "dataset": DATASET, "iters": config.iters,
                  "seed": config.seed, "kind": "conv", "k": config.k, "layers": 3, "bn": config.bn, "group": -1,
                  "teacher": teacher_id},
    )
    print_config(config)
    result = fit(stage, data, run, config)
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    run_main(main, get_args_parser())
