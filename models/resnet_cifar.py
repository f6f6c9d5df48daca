"""CIFAR ResNet of He et al., "Deep Residual Learning for Image Recognition"
(CVPR 2016), Section 4.2: depth 6n+2, three groups of n post-activation
BasicBlocks with widths 16-32-64, the teacher/student family of Factor Transfer.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.features import check_tap, feature_groups, group_channels
from models.wide_resnet import init_weights


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, added to the shortcut, then ReLU (post-activation).

    When the shape changes the shortcut is either a 1x1 strided conv + BN
    ("conv", what the Factor Transfer authors' code does) or He et al.'s
    option A ("pad"): subsample by 2 and zero-pad the new channels, no params.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, shortcut: str = "conv"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            if shortcut == "conv":
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
            elif shortcut == "pad":
                self.shortcut = _SubsamplePad(stride, out_ch - in_ch)
            else:
                raise ValueError(f"shortcut must be 'conv' or 'pad', got {shortcut!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place where autograd allows it (BN and add do not keep their outputs for
        # backward): the same numbers with less memory traffic.
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out, inplace=True)


class _SubsamplePad(nn.Module):
    """He et al.'s option A shortcut: identity with stride, new channels zero."""

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride = stride
        self.extra = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        # F.pad pads the last dims first: (W, W, H, H, C_front, C_back).
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs; feats are the three post-ReLU group
    outputs (16x32x32, 32x16x16, 64x8x8); the last is FT's "last group".  Taps "post"
    and "raw" are both the group modules' outputs (models/features.py)."""

    def __init__(self, depth: int, num_classes: int = 10, shortcut: str = "conv"):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n>=1, got {depth}")
        n = (depth - 2) // 6
        self.arch = f"resnet{depth}"
        self.num_classes = num_classes
        outputs = [f"groups.{i}" for i in range(3)]
        self.feature_info = feature_groups([16, 32, 64], [1, 2, 4], {"post": outputs, "raw": outputs})
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        groups, in_ch = [], 16
        for i, ch in enumerate(group_channels(self)):
            blocks = [BasicBlock(in_ch if j == 0 else ch, ch, 2 if (i > 0 and j == 0) else 1, shortcut)
                      for j in range(n)]
            groups.append(nn.Sequential(*blocks))
            in_ch = ch
        self.groups = nn.ModuleList(groups)
        self.fc = nn.Linear(64, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor, tap: str = "post") -> tuple[torch.Tensor, list[torch.Tensor]]:
        check_tap(self, tap)
        x = self.stem(x)
        feats = []
        for group in self.groups:
            x = group(x)
            feats.append(x)
        logits = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return logits, feats


def resnet20(num_classes: int = 10, **kw) -> CifarResNet:
    return CifarResNet(20, num_classes, **kw)


def resnet32(num_classes: int = 10, **kw) -> CifarResNet:
    return CifarResNet(32, num_classes, **kw)


def resnet44(num_classes: int = 10, **kw) -> CifarResNet:
    return CifarResNet(44, num_classes, **kw)


def resnet56(num_classes: int = 10, **kw) -> CifarResNet:
    return CifarResNet(56, num_classes, **kw)


def resnet110(num_classes: int = 10, **kw) -> CifarResNet:
    return CifarResNet(110, num_classes, **kw)
