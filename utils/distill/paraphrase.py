"""Stage 2 of Factor Transfer (Kim et al. 2018, Sec. 3.1): the paraphraser, an autoencoder
on the frozen teacher's feature map, is trained to reconstruct it (Eq. 1); its encoder's
output is the teacher factor that stage 3 transfers (`utils/distill/ft.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.features import default_tap, forward_tap
from paraphraser import Paraphraser
from utils.distill.base import Task

RECON_LOSSES = ("l1", "l2", "unit-l2")


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Paraphraser loss (Eq. 1): mean |x - P(x)| (authors' code, default) or mean (x - P(x))^2.

    "unit-l2": MMRazor's `L2Loss` with its defaults, which its FT config pre-trains the
    paraphraser with: each sample's map and reconstruction flattened and scaled to unit
    L2 norm, the squared difference summed over the map and averaged over the batch,
    mean_n || x_n/||x_n|| - P(x)_n/||P(x)_n|| ||^2 (docs/mmrazor.md).
    """
    if reconstruction.shape != target.shape:
        raise ValueError(f"reconstruction {tuple(reconstruction.shape)} and target "
                         f"{tuple(target.shape)} differ in shape")
    if kind == "l1":
        return F.l1_loss(reconstruction, target)
    if kind == "l2":
        return F.mse_loss(reconstruction, target)
    if kind == "unit-l2":
        diff = F.normalize(reconstruction.flatten(1), dim=1) - F.normalize(target.flatten(1), dim=1)
        return diff.pow(2).sum(dim=1).mean()
    raise ValueError(f"unknown reconstruction loss '{kind}', choose one of {', '.join(RECON_LOSSES)}")


def factor_l1_penalty(factor: torch.Tensor) -> torch.Tensor:
    """RAE paraphraser (Kim et al. 2018, Table 1's "RAE" column), before lambda: mean |F_T|.

    A sparsity penalty on the factor while the paraphraser is trained.
    """
    return factor.abs().mean()


class ParaphraserTraining(Task):
    """Paraphraser stage (Sec. 3.1): reconstruct the frozen teacher's feature map (group
    `group` of the teacher's `default_tap`, the map FT will take from it)."""

    def __init__(self, teacher: nn.Module, paraphraser: Paraphraser, recon_loss: str = "l1",
                 group: int = -1, factor_l1: float = 0.0):
        super().__init__()
        self.add_frozen("teacher", teacher)
        self.paraphraser = paraphraser
        self.recon_loss, self.group, self.factor_l1 = recon_loss, group, factor_l1
        self.tap_t = default_tap(teacher)

    def teacher_features(self, x):
        with torch.no_grad():
            return forward_tap(self.teacher, x, self.tap_t)[1][self.group]

    def forward(self, x, y):
        feat = self.teacher_features(x)
        factor = self.paraphraser.encode(feat)
        losses = {"recon": reconstruction_loss(self.paraphraser.decode(factor), feat, self.recon_loss)}
        if self.factor_l1 > 0:
            # RAE column (Table 1): sparsity penalty lambda * mean |F_T| on the factor.
            losses["factor_l1"] = self.factor_l1 * factor_l1_penalty(factor)
        return None, losses
