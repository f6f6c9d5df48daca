"""ResNet-18 / ResNet-50 (He et al., CVPR 2016, ImageNet layouts) adapted to
32x32 inputs: a 3x3 stride-1 stem without max-pool and four stages of widths
64-128-256-512 with strides 1, 2, 2, 2 (last stage 4x4 on CIFAR).

Two constructor options, off by default, make the network the one MMRazor's
Factor Transfer config distils with (docs/mmrazor.md); `models.build_model`
builds them as `resnet18_cifar_mmcls` / `resnet50_cifar_mmcls`:

- `last_feature="pre_bn"`: feats[-1] is the last block's final convolution output
  *before* its BatchNorm (ResNet-18: layer4.1.conv2, ResNet-50: layer4.2.conv3 in
  mmcls's names), the tensor MMRazor's recorders hand to the translator and the
  paraphraser.  The logits are unchanged; feats[:-1] stay the stage outputs.  Such
  a feats[-1] is not the map the classifier pools.
- `init="mmcls"`: mmcls's ResNet initialization: Kaiming-normal convolutions
  (fan_out, ReLU), BN weight 1 / bias 0, the last BN of every residual branch
  zeroed (mmcls's `zero_init_residual=True` default), and the classifier's weight
  drawn from N(0, 0.01) with zero bias (mmcls's LinearClsHead).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.features import feature_groups
from models.wide_resnet import init_weights


def _projection(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))


class _Block(nn.Module):
    """What both block kinds share: the output from the residual branch's last conv
    (`_last_conv`, before its BN `last_bn`), and that pre-BN map for MMRazor's taps."""

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



LAST_FEATURES = ("stage", "pre_bn")
INITS = ("default", "mmcls")


class CifarResNetLarge(nn.Module):
    """feats: the four post-ReLU stage outputs; the last is the last group.

    last_feature: "stage" (default) or "pre_bn" (feats[-1] = the last block's last
    convolution before its BN; see the module docstring).  init: "default"
    (models.wide_resnet.init_weights) or "mmcls".
    """

    def __init__(self, block: type, num_blocks: list[int], num_classes: int = 10, arch: str = "resnet",
                 last_feature: str = "stage", init: str = "default"):
        super().__init__()
        if last_feature not in LAST_FEATURES:
            raise ValueError(f"last_feature must be one of {LAST_FEATURES}, got {last_feature!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.arch = arch
        self.last_feature = last_feature
        self.num_classes = num_classes
        self.feature_info = feature_groups([c * block.expansion for c in (64, 128, 256, 512)], [1, 2, 4, 8])
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
        init_weights(self)
        if init == "mmcls":
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn.weight)
            nn.init.normal_(self.fc.weight, std=0.01)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.stem(x)
        feats = []
        last = len(self.groups) - 1
        for i, stage in enumerate(self.groups):
            if i == last and self.last_feature == "pre_bn":
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


# MMRazor's FT networks (mmcls's ResNet_CIFAR): feats[-1] before the last BN, mmcls's init.
# Each has a name of its own so that a checkpoint (which stores the name) rebuilds it.
MMCLS = dict(last_feature="pre_bn", init="mmcls")


def resnet18_cifar_mmcls(num_classes: int = 10) -> CifarResNetLarge:
    return CifarResNetLarge(BasicBlock, [2, 2, 2, 2], num_classes, arch="resnet18_cifar_mmcls", **MMCLS)


def resnet50_cifar_mmcls(num_classes: int = 10) -> CifarResNetLarge:
    return CifarResNetLarge(Bottleneck, [3, 4, 6, 3], num_classes, arch="resnet50_cifar_mmcls", **MMCLS)
