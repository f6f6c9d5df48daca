"""ResNet-18 / ResNet-50 (He et al., CVPR 2016, ImageNet layouts) adapted to
32x32 inputs: a 3x3 stride-1 stem without max-pool and four stages of widths
64-128-256-512 with strides 1, 2, 2, 2 (last stage 4x4 on CIFAR).

Taps (models/features.py): "post" and "raw" are the stage outputs; "pre_bn" is each
stage's last block's final convolution output *before* its BatchNorm (the last stage:
ResNet-18's layer4.1.conv2, ResNet-50's layer4.2.conv3 in mmcls's names), the tensor
MMRazor's Factor Transfer config records for the translator and the paraphraser
(docs/mmrazor.md).

`init="mmcls"` (off by default) is mmcls's ResNet initialization: Kaiming-normal
convolutions (fan_out, ReLU), BN weight 1 / bias 0, the last BN of every residual
branch zeroed (mmcls's `zero_init_residual=True` default), and the classifier's weight
drawn from N(0, 0.01) with zero bias (mmcls's LinearClsHead).  `models.build_model`
builds MMRazor's networks, this initialization with the "pre_bn" tap for FT, as
`resnet18_cifar_mmcls` / `resnet50_cifar_mmcls`.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.features import check_tap, feature_groups
from models.wide_resnet import init_weights


def _projection(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))


class _Block(nn.Module):
    """What both block kinds share: the output from the residual branch's last conv
    (`_last_conv`, before its BN `last_bn`), and that pre-BN map for the "pre_bn" tap."""

    def _finish(self, pre_bn: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.last_bn(pre_bn) + self.shortcut(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(self._last_conv(x), x)

    def forward_pre_bn(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(block output, last conv output before its BN)."""
        pre_bn = self._last_conv(x)
        return self._finish(pre_bn, x), pre_bn


class BasicBlock(_Block):
    expansion = 1

    def __init__(self, in_ch: int, ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.shortcut = _projection(in_ch, ch, stride)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The BN after the residual branch's last convolution."""
        return self.bn2

    def _last_conv(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch up to its last convolution, before that conv's BN."""
        return self.conv2(F.relu(self.bn1(self.conv1(x))))



class Bottleneck(_Block):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand by 4."""
    expansion = 4

    def __init__(self, in_ch: int, ch: int, stride: int):
        super().__init__()
        out_ch = ch * self.expansion
        self.conv1 = nn.Conv2d(in_ch, ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.conv3 = nn.Conv2d(ch, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.shortcut = _projection(in_ch, out_ch, stride)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The BN after the residual branch's last convolution."""
        return self.bn3

    def _last_conv(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch up to its last convolution, before that conv's BN."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return self.conv3(out)



INITS = ("default", "mmcls")


class CifarResNetLarge(nn.Module):
    """feats: the four post-ReLU stage outputs; the last is the last group.  Tap
    "pre_bn": each stage's last block's last convolution before its BN (see the module
    docstring).  init: "default" (models.wide_resnet.init_weights) or "mmcls".
    transfer_tap: the tap FT, its paraphraser and KTAN take (`models.features.default_tap`).
    """

    def __init__(self, block: type, num_blocks: list[int], num_classes: int = 10, arch: str = "resnet",
                 init: str = "default", transfer_tap: str = "post"):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.arch = arch
        self.num_classes = num_classes
        outputs = [f"groups.{i}" for i in range(4)]
        last_conv = "conv3" if block is Bottleneck else "conv2"
        self.feature_info = feature_groups(
            [c * block.expansion for c in (64, 128, 256, 512)], [1, 2, 4, 8],
            {"post": outputs, "raw": outputs,
             "pre_bn": [f"groups.{i}.{n - 1}.{last_conv}" for i, n in enumerate(num_blocks)]})
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        stages, in_ch = [], 64
        for i, (ch, n) in enumerate(zip((64, 128, 256, 512), num_blocks)):
            blocks = []
            for j in range(n):
                blocks.append(block(in_ch, ch, 2 if (i > 0 and j == 0) else 1))
                in_ch = ch * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.groups = nn.ModuleList(stages)
        self.fc = nn.Linear(in_ch, num_classes)
        check_tap(self, transfer_tap)
        self.transfer_tap = transfer_tap
        init_weights(self)
        if init == "mmcls":
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn.weight)
            nn.init.normal_(self.fc.weight, std=0.01)

    def forward(self, x: torch.Tensor, tap: str = "post") -> tuple[torch.Tensor, list[torch.Tensor]]:
        check_tap(self, tap)
        x = self.stem(x)
        feats = []
        for stage in self.groups:
            if tap == "pre_bn":
                for j in range(len(stage) - 1):
                    x = stage[j](x)
                x, pre_bn = stage[len(stage) - 1].forward_pre_bn(x)
                feats.append(pre_bn)
            else:
                x = stage(x)
                feats.append(x)
        logits = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return logits, feats


def resnet18_cifar(num_classes: int = 10) -> CifarResNetLarge:
    return CifarResNetLarge(BasicBlock, [2, 2, 2, 2], num_classes, arch="resnet18_cifar")


def resnet50_cifar(num_classes: int = 10) -> CifarResNetLarge:
    return CifarResNetLarge(Bottleneck, [3, 4, 6, 3], num_classes, arch="resnet50_cifar")


# MMRazor's FT networks (mmcls's ResNet_CIFAR): mmcls's initialization, and FT taps each
# group before its last BN, as MMRazor's recorders do.  Each has a name of its own so that
# a checkpoint (which stores the name) rebuilds it.
MMCLS = dict(init="mmcls", transfer_tap="pre_bn")


def resnet18_cifar_mmcls(num_classes: int = 10) -> CifarResNetLarge:
    return CifarResNetLarge(BasicBlock, [2, 2, 2, 2], num_classes, arch="resnet18_cifar_mmcls", **MMCLS)


def resnet50_cifar_mmcls(num_classes: int = 10) -> CifarResNetLarge:
    return CifarResNetLarge(Bottleneck, [3, 4, 6, 3], num_classes, arch="resnet50_cifar_mmcls", **MMCLS)
