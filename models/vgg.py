"""VGG-13 (Simonyan & Zisserman, ICLR 2015, configuration B) adapted to CIFAR
with BatchNorm: the Factor Transfer paper's VGG-13 student (Table 1)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.features import check_tap, feature_groups
from models.wide_resnet import init_weights

VGG13_BLOCKS = [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]]


class VGG(nn.Module):
    """Conv blocks of 3x3 conv-BN-ReLU; 2x2 max-pool after every block but the
    last, so a 32x32 input gives block outputs of 32, 16, 8, 4, 2 pixels; then
    global average pooling and one linear layer.

    feats: the post-ReLU output of each block, before its pool (taps "post" and "raw").
    """

    def __init__(self, blocks: list[list[int]], num_classes: int = 10, arch: str = "vgg"):
        super().__init__()
        self.arch = arch
        self.num_classes = num_classes
        # a 2x2 max-pool before every block but the first
        outputs = [f"blocks.{i}" for i in range(len(blocks))]
        self.feature_info = feature_groups([b[-1] for b in blocks], [2 ** i for i in range(len(blocks))],
                                           {"post": outputs, "raw": outputs})
        layers, in_ch = [], 3
        for widths in blocks:
            block = []
            for ch in widths:
                # No conv bias: the BN right after it would cancel it.
                block += [nn.Conv2d(in_ch, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]
                in_ch = ch
            layers.append(nn.Sequential(*block))
        self.blocks = nn.ModuleList(layers)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor, tap: str = "post") -> tuple[torch.Tensor, list[torch.Tensor]]:
        check_tap(self, tap)
        feats = []
        for i, block in enumerate(self.blocks):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            feats.append(x)
        logits = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return logits, feats


def vgg13(num_classes: int = 10) -> VGG:
    return VGG(VGG13_BLOCKS, num_classes, arch="vgg13")
