"""Loss functions, each a pure function with its paper's equation.

`_s` / `_t`: student / teacher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def factor_transfer_loss(factor_s: torch.Tensor, factor_t: torch.Tensor, p: int = 1) -> torch.Tensor:
    """Factor Transfer loss (Kim et al. 2018, Eq. 3), before the weight beta.

        L_FT = mean | F_T / ||F_T||_2  -  F_S / ||F_S||_2 |^p

    Each factor is flattened per sample (C*H*W) and L2-normalized; the p-th power
    of the difference is averaged over batch and elements, as the authors' code
    does (`nn.L1Loss()` on `F.normalize(x.view(B, -1))`).  beta is defined against
    this mean reduction.
    """
    if factor_s.shape != factor_t.shape:
        raise ValueError(f"student factor {tuple(factor_s.shape)} and teacher factor "
                         f"{tuple(factor_t.shape)} differ in shape")
    q_s = F.normalize(factor_s.flatten(1), dim=1)
    q_t = F.normalize(factor_t.flatten(1), dim=1)
    return (q_s - q_t).abs().pow(p).mean()


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Paraphraser loss (Eq. 1): mean |x - P(x)| (authors' code, default) or mean (x - P(x))^2."""
    if kind == "l1":
        return F.l1_loss(reconstruction, target)
    if kind == "l2":
        return F.mse_loss(reconstruction, target)
    raise ValueError(f"unknown reconstruction loss '{kind}', choose l1 or l2")
