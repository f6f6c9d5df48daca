"""Wide ResNet of Zagoruyko & Komodakis, "Wide Residual Networks" (BMVC 2016):
pre-activation blocks, depth 6n+4, group widths 16W-32W-64W.

feats (tap "post"): the first two entries are the raw outputs of groups 1 and 2 (a
pre-activation block's output has no BN-ReLU of its own); the LAST entry is
taken after the network's final BN-ReLU, i.e. the input to the final pooling.
That is the "last group" Factor Transfer paraphrases (the paper, Sec. 3.1: the
output of the last group of residual blocks).  Tap "raw" gives the last group's
raw residual sum instead, what AT and F-ActT take, as the attention-transfer code
does (models/features.py).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.features import check_tap, feature_groups, group_channels


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs (fan_out, ReLU), BN weight 1 bias 0, zero linear bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)



def init_weights_at(model: nn.Module) -> None:
    """The attention-transfer authors' initialization of their functional WRN (their
    utils.py: conv_params, linear_params, bn_params): convolutions and the linear layer
    Kaiming-normal with fan-in (gain sqrt 2), BN weights uniform in [0, 1), biases 0."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.0, 1.0)
            nn.init.zeros_(m.bias)

class PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-(dropout)-conv, plus shortcut.

    When the width or stride changes, the shortcut is a 1x1 conv applied to the
    BN-ReLU'd input, as in the WRN reference code (this fixes the parameter
    counts of the WRN paper).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.dropout = dropout
        self.shortcut = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = F.relu(self.bn2(self.conv1(o)))
        y = F.dropout(y, self.dropout, self.training)
        y = self.conv2(y)
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """WRN-depth-width for 32x32 inputs; see the module docstring for feats."""

    def __init__(self, depth: int, width: int, num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4 with n>=1 (10, 16, 22, 28, 40, ...), got {depth}")
        if width < 1:
            raise ValueError(f"WRN width must be a positive integer, got {width}")
        n = (depth - 4) // 6
        self.arch = f"wrn_{depth}_{width}"
        self.num_classes = num_classes
        raw = [f"groups.{i}" for i in range(3)]
        self.feature_info = feature_groups([16 * width, 32 * width, 64 * width], [1, 2, 4],
                                           {"post": [*raw[:2], "relu"], "raw": raw})
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        groups, in_ch = [], 16
        for i, ch in enumerate(group_channels(self)):
            blocks = [PreActBlock(in_ch if j == 0 else ch, ch, 2 if (i > 0 and j == 0) else 1, dropout)
                      for j in range(n)]
            groups.append(nn.Sequential(*blocks))
            in_ch = ch
        self.groups = nn.ModuleList(groups)
        self.bn = nn.BatchNorm2d(in_ch)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor, tap: str = "post") -> tuple[torch.Tensor, list[torch.Tensor]]:
        check_tap(self, tap)
        x = self.conv1(x)
        feats = []
        for group in self.groups:
            x = group(x)
            feats.append(x)
        # The last group's pre-activation sum is not what the classifier sees;
        # the final BN-ReLU output is, so that is the "last group" feature.
        x = self.relu(self.bn(x))
        if tap == "post":
            feats[-1] = x
        logits = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return logits, feats


def wrn(depth: int, width: int, num_classes: int = 10, **kw) -> WideResNet:
    return WideResNet(depth, width, num_classes, **kw)
