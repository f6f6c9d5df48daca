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

import torch

from detection.cli import (DATASET, add_detection_run_args, add_detection_schedule_args,
                           add_voc_args, check_detection_args, detector_identity, load_detector)
from detection.data import load_voc
from detection.tasks import BackboneTap
from detection.train_student import prepare_device
from paraphraser import Paraphraser, bn_default
from utils.checkpoint import check_same_data
from utils.cli import check_positive, run_main
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


def main(args: argparse.Namespace) -> None:
    check_positive(args, "k", "eval_images", "epochs")
    teacher, teacher_ckpt = load_detector(args.teacher)
    check_same_data(teacher_ckpt, "teacher", DATASET)
    teacher_id = detector_identity(teacher, teacher_ckpt)
    device = prepare_device(args)

    # ---------------------------------------------------------------- data
    data = load_voc(args.data_root, args.train_split, args.test_split, device, args.download,
                    args.train_subset, min(args.eval_images, args.test_subset or args.eval_images), args.flip)
    check_detection_args(args, round(args.epochs * data.steps_per_epoch(args.batch_size)))

    # ---------------------------------------------------------------- run folder
    run = open_run(args)
    if run is None:
        return

    # ---------------------------------------------------------------- networks
    torch.manual_seed(args.seed)
    tap = BackboneTap(teacher).to(device)
    channels = teacher.backbone.out_channels
    paraphraser = Paraphraser(channels, k=args.k, bn=args.bn).to(device)
    task = ParaphraserTraining(tap, paraphraser, args.recon_loss)

    @torch.inference_mode()
    def evaluate() -> dict:
        """Mean reconstruction loss over the first --eval-images test images."""
        paraphraser.eval()
        total, n = 0.0, 0
        for images, _ in data.test_batches(args.eval_batch_size):
            feat = task.teacher_features(images)
            total += reconstruction_loss(paraphraser(feat), feat, args.recon_loss).item() * len(images)
            n += len(images)
        return {"recon_test": total / n}

    stage = Stage(
        kind="paraphraser", task=task, trainable=task.trainable(), evaluate=evaluate, primary="recon_test",
        info={"paraphraser_config": paraphraser.config, "paraphraser_kind": "conv", "group": -1,
              "dataset": DATASET, "num_classes": data.num_classes,
              "teacher": {"arch": teacher_id["arch"], "fingerprint": teacher_id["fingerprint"],
                          "group_channels": [channels]}},
        identity={"task": "detection", "stage": "paraphraser", "dataset": DATASET, "iters": args.iters,
                  "seed": args.seed, "kind": "conv", "k": args.k, "layers": 3, "bn": args.bn, "group": -1,
                  "teacher": teacher_id},
    )
    result = fit(stage, data, run, args)
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    run_main(main, get_args_parser())
