"""ResNet-18 / ResNet-50 (He et al., CVPR 2016, ImageNet layouts) adapted to
32x32 inputs: a 3x3 stride-1 stem without max-pool and four stages of widths
64-128-256-512 with strides 1, 2, 2, 2 (last stage 4x4 on CIFAR)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.wide_resnet import init_weights


def _projection(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.shortcut = _projection(in_ch, ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class CifarResNetLarge(nn.Module):
    """feats: the four post-ReLU stage outputs; the last is the last group."""

    def __init__(self, block: type, num_blocks: list[int], num_classes: int = 10, arch: str = "resnet"):
        super().__init__()
        self.arch = arch
        self.num_classes = num_classes
        self.group_channels = [c * block.expansion for c in (64, 128, 256, 512)]
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

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.stem(x)
        feats = []
        for stage in self.groups:
            x = stage(x)
            feats.append(x)
        logits = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return logits, feats


def resnet18_cifar(num_classes: int = 10) -> CifarResNetLarge:
    return CifarResNetLarge(BasicBlock, [2, 2, 2, 2], num_classes, arch="resnet18_cifar")


def resnet50_cifar(num_classes: int = 10) -> CifarResNetLarge:
    return CifarResNetLarge(Bottleneck, [3, 4, 6, 3], num_classes, arch="resnet50_cifar")
