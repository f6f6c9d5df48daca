"""Faster R-CNN (Ren et al. 2015) from torchvision's detection components, with the two
networks of the paper's Sec. 4.5: a VGG-16 student and a ResNet-101 teacher.

    vgg16      shared convs conv1_1..conv5_3 (stride 16, 512 channels; VGG's last pooling
               dropped), box head VGG's fc6 / fc7 (4096) with their dropout, as in the
               original Faster R-CNN
    resnet101  shared convs conv1..conv4_x, "C4" (stride 16, 1024 channels), box head
               conv5_x (`layer4`, stride 2 on the pooled RoI) + average pooling (2048), as in
               the ResNet paper's Faster R-CNN (He et al. 2016, Appendix A); BatchNorm frozen
               (torchvision's FrozenBatchNorm2d: ImageNet statistics, no updates) when it starts
               from ImageNet weights; trained (batch statistics) from a random start, where
               fixed identity normalisations let 33 residual blocks' activations overflow

The backbone's output is what Factor Transfer acts on (Sec. 4.5: "the last layer of the
shared convolutions"): the map that feeds the RPN and the RoI head.  The RPN
(`RPNHead`: 3x3 conv of the backbone's width, then objectness and box deltas per anchor),
anchors, RoI pooling, RoI heads and image resizing are torchvision's `FasterRCNN`; the
settings the paper leaves open follow py-faster-rcnn's VOC 2007 setting
(`DetectorConfig`, docs/detection.md).

`vgg16_tiny` / `resnet_tiny` are the same layouts, narrow (and, for the ResNet, one block
per stage), for the CPU tests; a registry entry's layout is the same at any width, so the
real networks are checked for shape and parameter count without training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.resnet import Bottleneck
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign, roi_pool

from utils.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet weights expect these
IMAGENET_STD = (0.229, 0.224, 0.225)
ROI_OPS = ("pool", "align")


@dataclass
class DetectorConfig:
    """What rebuilds a detector (stored in its checkpoint).  Defaults: py-faster-rcnn's VOC
    2007 setting (Ren et al. 2015, Sec. 3.3 and their released configuration)."""

    arch: str = "vgg16"
    num_classes: int = 21                     # 20 VOC classes + background
    min_size: int = 600                       # shorter side rescaled to 600 ...
    max_size: int = 1000                      # ... unless the longer one would pass 1000
    anchor_sizes: list = field(default_factory=lambda: [128, 256, 512])
    aspect_ratios: list = field(default_factory=lambda: [0.5, 1.0, 2.0])
    roi_op: str = "pool"                      # RoIPool (the original) or RoIAlign
    roi_size: int = 7                         # pooled RoI side
    rpn_pre_nms_train: int = 12000
    rpn_post_nms_train: int = 2000
    rpn_pre_nms_test: int = 6000
    rpn_post_nms_test: int = 300
    rpn_batch: int = 256                      # anchors sampled per image for the RPN loss
    roi_batch: int = 128                      # RoIs sampled per image for the head's loss
    box_nms: float = 0.3                      # test-time NMS per class
    box_score_thresh: float = 0.05
    detections_per_img: int = 100
    frozen_stages: int = 2                    # conv1 and conv2 (VGG) / conv1 and conv2_x (ResNet)
    frozen_bn: bool = True                    # ResNet: BatchNorm fixed (ImageNet statistics) or trained

    def to_dict(self) -> dict:
        return asdict(self)


def init_like_torchvision(module: nn.Module) -> None:
    """Random initialisation as torchvision's VGG and ResNet: convolutions He-normal (fan
    out), linear layers N(0, 0.01) with zero bias.  (PyTorch's layer defaults shrink the
    activations through VGG's thirteen ReLU convolutions to nearly zero.)"""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------- VGG-16

VGG16_CONVS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


class VGGBackbone(nn.Module):
    """conv1_1 .. conv5_3 with ReLUs; `features` indexed as torchvision's vgg16.features
    (its last pooling, index 30, dropped), so ImageNet weights load by name."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        layers, c_in = [], 3
        for v in VGG16_CONVS:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                c_out = max(1, int(v * width))
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True)]
                c_in = c_out
        self.features = nn.Sequential(*layers)
        self.out_channels = c_in
        self.stages = [self.features[0:5], self.features[5:10]]  # conv1, conv2 (+ their pooling)
        init_like_torchvision(self)

    def forward(self, x):
        return self.features(x)


class VGGBoxHead(nn.Module):
    """fc6, fc7 on a pooled RoI; `classifier` indexed as torchvision's vgg16.classifier."""

    def __init__(self, in_channels: int, roi_size: int, hidden: int = 4096):
        super().__init__()
        self.classifier = nn.Sequential(
            nn.Linear(in_channels * roi_size * roi_size, hidden), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout())
        self.out_channels = hidden
        init_like_torchvision(self)

    def forward(self, x):
        return self.classifier(x.flatten(1))


# ---------------------------------------------------------------------- ResNet-101 C4

def _resnet_stage(inplanes: int, planes: int, blocks: int, stride: int, norm) -> nn.Sequential:
    downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), norm(planes * 4))
    layers = [Bottleneck(inplanes, planes, stride, downsample, norm_layer=norm)]
    layers += [Bottleneck(planes * 4, planes, norm_layer=norm) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNetC4Backbone(nn.Module):
    """conv1 .. conv4_x (`conv1`, `bn1`, `layer1`..`layer3`, named as torchvision's ResNet)."""

    def __init__(self, blocks=(3, 4, 23), width: int = 64, frozen_bn: bool = True):
        super().__init__()
        norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _resnet_stage(width, width, blocks[0], 1, norm)
        self.layer2 = _resnet_stage(width * 4, width * 2, blocks[1], 2, norm)
        self.layer3 = _resnet_stage(width * 8, width * 4, blocks[2], 2, norm)
        self.out_channels = width * 16
        self.stages = [nn.ModuleList([self.conv1, self.bn1]), self.layer1]  # conv1, conv2_x
        init_like_torchvision(self)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


class ResNetC5Head(nn.Module):
    """conv5_x (`layer4`, its first block strided) and global average pooling on a pooled RoI."""

    def __init__(self, blocks: int = 3, width: int = 64, frozen_bn: bool = True):
        super().__init__()
        norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        self.layer4 = _resnet_stage(width * 16, width * 8, blocks, 2, norm)
        self.out_channels = width * 32
        init_like_torchvision(self)

    def forward(self, x):
        return self.layer4(x).mean(dim=(2, 3))


# ---------------------------------------------------------------------- RoI pooling

class RoIPool(nn.Module):
    """RoIPool (Girshick 2015) on the single stride-16 map, called as torchvision's RoI heads
    call their pooler: (features by name, proposals per image, image sizes)."""

    def __init__(self, size: int, stride: int = 16):
        super().__init__()
        self.size, self.scale = size, 1.0 / stride

    def forward(self, features, proposals, image_shapes):
        return roi_pool(features["0"], proposals, (self.size, self.size), self.scale)


# ---------------------------------------------------------------------- registry

@dataclass(frozen=True)
class Layout:
    """A registry entry: how to build the backbone and the box head, the default RoI size,
    the key prefixes of torchvision's ImageNet state dict that each part takes, and the
    file name of those weights."""

    backbone: callable                   # (frozen_bn) -> backbone
    head: callable                       # (backbone channels, roi size, frozen_bn) -> head
    roi_size: int
    weights: str = ""
    backbone_keys: tuple = ()
    head_keys: dict = field(default_factory=dict)  # torchvision prefix -> our head's prefix


DETECTORS: dict[str, Layout] = {
    "vgg16": Layout(lambda bn: VGGBackbone(), lambda c, r, bn: VGGBoxHead(c, r), 7, "vgg16-397923af.pth",
                    ("features.",), {"classifier.0.": "classifier.0.", "classifier.3.": "classifier.3."}),
    "resnet101": Layout(lambda bn: ResNetC4Backbone(frozen_bn=bn), lambda c, r, bn: ResNetC5Head(frozen_bn=bn), 14,
                        "resnet101-63fe2227.pth",
                        ("conv1.", "bn1.", "layer1.", "layer2.", "layer3."), {"layer4.": "layer4."}),
    # Narrow versions of the same layouts, for the CPU tests.
    "vgg16_tiny": Layout(lambda bn: VGGBackbone(width=1 / 8), lambda c, r, bn: VGGBoxHead(c, r, hidden=256), 7),
    "resnet_tiny": Layout(lambda bn: ResNetC4Backbone(blocks=(1, 1, 1), width=8, frozen_bn=bn),
                          lambda c, r, bn: ResNetC5Head(blocks=1, width=8, frozen_bn=bn), 14),
}


def build_detector(config: DetectorConfig) -> FasterRCNN:
    """A Faster R-CNN for `config`, randomly initialised (`load_imagenet_weights` next), with
    the backbone's first `config.frozen_stages` stages frozen."""
    if config.arch not in DETECTORS:
        raise UserError(f"unknown detector --arch {config.arch}; choose one of {', '.join(DETECTORS)}")
    if config.roi_op not in ROI_OPS:
        raise UserError(f"--roi-op must be one of {', '.join(ROI_OPS)}, got {config.roi_op}")
    layout = DETECTORS[config.arch]
    backbone = layout.backbone(config.frozen_bn)
    head = layout.head(backbone.out_channels, config.roi_size, config.frozen_bn)
    anchors = AnchorGenerator(sizes=(tuple(config.anchor_sizes),), aspect_ratios=(tuple(config.aspect_ratios),))
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    model = FasterRCNN(
        backbone, min_size=config.min_size, max_size=config.max_size,
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=config.rpn_pre_nms_train, rpn_post_nms_top_n_train=config.rpn_post_nms_train,
        rpn_pre_nms_top_n_test=config.rpn_pre_nms_test, rpn_post_nms_top_n_test=config.rpn_post_nms_test,
        rpn_batch_size_per_image=config.rpn_batch,
        box_roi_pool=MultiScaleRoIAlign(["0"], config.roi_size, sampling_ratio=2), box_head=head,
        box_predictor=FastRCNNPredictor(head.out_channels, config.num_classes),
        box_score_thresh=config.box_score_thresh, box_nms_thresh=config.box_nms,
        box_detections_per_img=config.detections_per_img, box_batch_size_per_image=config.roi_batch)
    if config.roi_op == "pool":  # FasterRCNN's constructor accepts only its RoIAlign
        model.roi_heads.box_roi_pool = RoIPool(config.roi_size)
    for stage in backbone.stages[:config.frozen_stages]:
        stage.requires_grad_(False)
    return model


def check_pretrained_file(arch: str, path: str | Path) -> Path:
    layout = DETECTORS[arch]
    if not layout.weights:
        raise UserError(f"--pretrained: there are no ImageNet weights for --arch {arch}; drop --pretrained")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--pretrained {path}: no such file; put torchvision's ImageNet {arch} weights "
                        f"({layout.weights}, as torchvision.models downloads them to "
                        f"$TORCH_HOME/hub/checkpoints/) there, or drop --pretrained for random initialisation")
    return path


def load_imagenet_weights(model: FasterRCNN, arch: str, path: str | Path | None) -> None:
    """Copy torchvision's ImageNet weights of `arch` (a state-dict file at `path`) into the
    backbone and box head; the RPN and the predictor stay randomly initialised."""
    layout = DETECTORS[arch]
    path = check_pretrained_file(arch, path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise UserError(f"--pretrained {path} is not a readable torch state dict; use "
                        f"torchvision's {layout.weights}") from None
    assign_imagenet_weights(model, arch, state, str(path))


def assign_imagenet_weights(model: FasterRCNN, arch: str, state: dict, source: str = "the weights") -> None:
    layout = DETECTORS[arch]
    backbone = {k: v for k, v in state.items() if k.startswith(layout.backbone_keys)}
    head = {layout.head_keys[p] + k[len(p):]: v for k, v in state.items()
            for p in layout.head_keys if k.startswith(p)}
    try:
        model.backbone.load_state_dict(backbone)
        missing = model.roi_heads.box_head.load_state_dict(head, strict=False).missing_keys
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise UserError(f"--pretrained {source} does not fit --arch {arch} ({first}); use torchvision's "
                        f"{layout.weights}") from None
    if missing:
        raise UserError(f"--pretrained {source} lacks the box head's {', '.join(missing[:3])}; use "
                        f"torchvision's {layout.weights}")


def backbone_features(model: FasterRCNN, images, targets=None):
    """(the backbone's map, the resized and normalised batch, the resized targets): the
    first half of torchvision's GeneralizedRCNN.forward, kept apart so that the map can be
    transferred (Sec. 4.5) and the teacher run on the very same batch."""
    batch, targets = model.transform(images, targets)
    return model.backbone(batch.tensors), batch, targets


def detection_losses(model: FasterRCNN, feature: torch.Tensor, batch, targets) -> dict:
    """The RPN's and the RoI head's training losses on a backbone map (the second half of
    GeneralizedRCNN.forward), named for the log."""
    features = {"0": feature}
    proposals, rpn = model.rpn(batch, features, targets)
    _, head = model.roi_heads(features, proposals, batch.image_sizes, targets)
    return {"rpn_cls": rpn["loss_objectness"], "rpn_box": rpn["loss_rpn_box_reg"],
            "rcnn_cls": head["loss_classifier"], "rcnn_box": head["loss_box_reg"]}
