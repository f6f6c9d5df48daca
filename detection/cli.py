"""What the three detection scripts share: their flags (the Faster R-CNN settings, the VOC
data, the SGD schedule, the run), building a detector from the resolved flags, and loading a
trained detector from its run folder.  What the flags resolve to, and the checks, are in
detection/config.py.

Defaults are py-faster-rcnn's VOC 2007 setting for VGG-16 (Ren et al. 2015; its
faster_rcnn_end2end configuration): one image a step, shorter side 600 (longer at most
1000), lr 0.001 for 70,000 iterations with x0.1 after 50,000, momentum 0.9, weight decay
5e-4, horizontal flips; docs/detection.md lists every choice.
"""

from __future__ import annotations

import argparse

from detection.config import FasterRCNNConfig
from detection.models import DETECTORS, ROI_OPS, DetectorConfig, build_detector, load_imagenet_weights
from utils.checkpoint import fingerprint, freeze, read_checkpoint
from utils.cli import add_run_folder_args
from utils.errors import UserError

DATASET = "voc2007"
DETECTION_ITERS, DETECTION_MILESTONES = 70000, [50000]

# What utils.train.fit reads that the detection scripts leave fixed: the float32 fast
# paths and CUDA graphs are for fixed-shape classification batches; one process.
FIXED_RUN_SETTINGS = dict(amp="none", compile=False, cuda_graph=False, channels_last=False, fold_bn=False,
                          sync_bn=False, reset_momentum=False)


def add_detector_args(parser: argparse.ArgumentParser, default_arch: str) -> None:
    d = DetectorConfig()
    g = parser.add_argument_group("detector (Faster R-CNN; defaults: py-faster-rcnn's VOC 2007 setting)")
    g.add_argument("--arch", default=default_arch, choices=tuple(DETECTORS),
                   help=f"vgg16: conv5_3 backbone, fc6/fc7 box head; resnet101: C4 backbone, conv5_x box "
                        f"head; *_tiny: narrow versions for CPU checks (default: {default_arch})")
    g.add_argument("--pretrained", metavar="PATH",
                   help="torchvision's ImageNet weights of --arch, a local file (vgg16-397923af.pth, "
                        "resnet101-63fe2227.pth) (default: none, random initialisation)")
    g.add_argument("--min-size", type=int, default=d.min_size,
                   help=f"shorter image side after resizing (default: {d.min_size})")
    g.add_argument("--max-size", type=int, default=d.max_size,
                   help=f"longest image side after resizing (default: {d.max_size})")
    g.add_argument("--anchor-sizes", type=int, nargs="+", default=d.anchor_sizes,
                   help=f"anchor sides in pixels (default: {' '.join(map(str, d.anchor_sizes))})")
    g.add_argument("--aspect-ratios", type=float, nargs="+", default=d.aspect_ratios,
                   help=f"anchor aspect ratios h/w (default: {' '.join(map(str, d.aspect_ratios))})")
    g.add_argument("--roi-op", default=d.roi_op, choices=ROI_OPS,
                   help=f"RoI feature extraction: pool (RoIPool, the original) or align (default: {d.roi_op})")
    g.add_argument("--roi-size", type=int, default=None,
                   help="pooled RoI side (default: the arch's, 7 for vgg16 as fc6 takes, 14 for resnet101, "
                        "halved by conv5_x's stride)")
    g.add_argument("--rpn-pre-nms-train", type=int, default=d.rpn_pre_nms_train,
                   help=f"RPN proposals kept before NMS in training (default: {d.rpn_pre_nms_train})")
    g.add_argument("--rpn-post-nms-train", type=int, default=d.rpn_post_nms_train,
                   help=f"... and after NMS (default: {d.rpn_post_nms_train})")
    g.add_argument("--rpn-pre-nms-test", type=int, default=d.rpn_pre_nms_test,
                   help=f"RPN proposals kept before NMS at test time (default: {d.rpn_pre_nms_test})")
    g.add_argument("--rpn-post-nms-test", type=int, default=d.rpn_post_nms_test,
                   help=f"... and after NMS (default: {d.rpn_post_nms_test})")
    g.add_argument("--rpn-batch", type=int, default=d.rpn_batch,
                   help=f"anchors sampled per image for the RPN loss (default: {d.rpn_batch})")
    g.add_argument("--roi-batch", type=int, default=d.roi_batch,
                   help=f"RoIs sampled per image for the head's loss, 1/4 foreground (default: {d.roi_batch})")
    g.add_argument("--box-nms", type=float, default=d.box_nms,
                   help=f"test-time NMS IoU per class (default: {d.box_nms})")
    g.add_argument("--box-score-thresh", type=float, default=d.box_score_thresh,
                   help=f"test-time score threshold (default: {d.box_score_thresh})")
    g.add_argument("--detections-per-img", type=int, default=d.detections_per_img,
                   help=f"test-time detections kept per image (default: {d.detections_per_img})")
    g.add_argument("--frozen-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="ResNet: BatchNorm fixed at its ImageNet statistics (torchvision's FrozenBatchNorm2d) "
                        "or trained (default: fixed with --pretrained, trained without: fixed identity "
                        "normalisations overflow in a randomly initialised ResNet-101)")
    g.add_argument("--frozen-stages", type=int, default=d.frozen_stages, choices=(0, 1, 2),
                   help="backbone stages not trained: 2 = conv1 and conv2 (the layers before conv3, as "
                        "the paper's Sec. 4.5 and py-faster-rcnn), 0 = none (default: 2)")


def add_voc_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data (PASCAL VOC 2007 through torchvision.datasets.VOCDetection)")
    g.add_argument("--data-root", default="./data",
                   help="folder holding VOCdevkit/VOC2007 (default: ./data)")
    g.add_argument("--download", action="store_true",
                   help="download VOC 2007 trainval and test into --data-root first (needs internet)")
    g.add_argument("--train-split", default="trainval", choices=("trainval", "train", "val", "test"),
                   help="training images (default: trainval, the paper's)")
    g.add_argument("--test-split", default="test", choices=("trainval", "train", "val", "test"),
                   help="evaluation images (default: test, the paper's)")
    g.add_argument("--train-subset", type=int, default=None, metavar="N",
                   help="train on the split's first N images, for quick checks (default: all)")
    g.add_argument("--test-subset", type=int, default=None, metavar="N",
                   help="evaluate on the split's first N images, for quick checks (default: all)")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                   help="random horizontal flips in training (default: on)")


def add_detection_schedule_args(parser: argparse.ArgumentParser, iters: int | None,
                                milestones: list[int] | None, lr: float) -> None:
    g = parser.add_argument_group("optimization (SGD)")
    g.add_argument("--iters", type=int, default=iters,
                   help=f"training iterations (default: {iters or 'one epoch of the training images'})")
    g.add_argument("--milestones", type=int, nargs="*", default=None,
                   help=f"iterations after which lr is multiplied by --lr-decay (default: "
                        f"{' '.join(map(str, milestones)) if milestones else 'none'}"
                        f"{'; with --iters N, the same fractions of N' if milestones else ''})")
    parser.set_defaults(milestone_fractions=[m / iters for m in milestones] if milestones else [])
    g.add_argument("--lr-decay", type=float, default=0.1, help="lr factor at each milestone (default: 0.1)")
    g.add_argument("--lr", type=float, default=lr, help=f"initial learning rate (default: {lr})")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    g.add_argument("--wd", type=float, default=5e-4, help="weight decay (default: 5e-4)")
    g.add_argument("--batch-size", type=int, default=1, help="images per step (default: 1)")


def add_detection_run_args(parser: argparse.ArgumentParser, eval_every: int) -> None:
    add_run_folder_args(parser, eval_every=eval_every, eval_batch_size=1,
                        eval_batch_help="test images per forward pass")
    parser.set_defaults(**FIXED_RUN_SETTINGS)


def new_detector(config: FasterRCNNConfig, num_classes: int):
    """A detector for the resolved flags, with --pretrained's ImageNet weights when given;
    and its DetectorConfig."""
    detector = config.detector(num_classes)
    model = build_detector(detector)
    if config.pretrained:
        load_imagenet_weights(model, config.arch, config.pretrained)
    return model, detector


def load_detector(path: str, what: str = "teacher"):
    """A trained detector (a detection/train_teacher.py or train_student.py run), frozen, and
    its checkpoint."""
    ckpt = read_checkpoint(path, what, ("teacher", "student"))
    if "detector" not in ckpt:
        raise UserError(f"--{what} {path} is a classification run; give a run folder of "
                        f"detection/train_teacher.py")
    try:
        model = build_detector(DetectorConfig(**ckpt["detector"]))
        model.load_state_dict(ckpt["modules"]["model"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise UserError(f"--{what} {path}: its weights do not fit its recorded detector "
                        f"({type(exc).__name__}); the checkpoint is damaged, re-train it") from None
    return freeze(model), ckpt


def detector_identity(model, ckpt: dict) -> dict:
    args = ckpt.get("args") or {}
    return {"arch": ckpt["detector"]["arch"], "iters": args.get("iters"), "seed": args.get("seed"),
            "pretrained": bool(args.get("pretrained")), "fingerprint": fingerprint(model),
            "dataset": ckpt.get("dataset"), "args": args}
