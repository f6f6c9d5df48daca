"""Attention transfer, AT, and full activation transfer, F-ActT (Zagoruyko & Komodakis,
ICLR 2017): the student's group maps are pulled towards the teacher's, on every group.

Group pairing.  Student and teacher groups are zipped when the two networks have as many
groups, and must then agree in height and width; otherwise (VGG-13's five blocks against
a WRN's three groups) each teacher group is paired with the deepest student group of the
same height and width.  Both networks' maps are the "raw" tap (models/features.py): a wide
ResNet gives each group's raw residual sum, the last one before the network's final BN-ReLU,
as the AT code takes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from models.features import group_shapes, tap_kinds
from utils.distill.base import KD, Distillation, Frozen, shape_str
from utils.errors import UserError, note

FACT_REDUCTIONS = ("positions", "elements")


def attention_map(x: torch.Tensor) -> torch.Tensor:
    """Activation-based attention (Zagoruyko & Komodakis 2017, Eq. 2 with p = 2 and mean):

        Q = vec( mean_c x_c^2 ) / || vec( mean_c x_c^2 ) ||_2       shape (B, H*W)
    """
    return F.normalize(x.pow(2).mean(dim=1).flatten(1), dim=1)


def _check_pairs(feats_s: Sequence[torch.Tensor], feats_t: Sequence[torch.Tensor], what: str,
                 dims: slice) -> None:
    if len(feats_s) != len(feats_t):
        raise ValueError(f"{what}: {len(feats_s)} student maps against {len(feats_t)} teacher maps")
    for i, (f_s, f_t) in enumerate(zip(feats_s, feats_t)):
        if f_s.shape[dims] != f_t.shape[dims]:
            raise ValueError(f"{what}: pair {i} has student map {tuple(f_s.shape[1:])} and teacher "
                             f"map {tuple(f_t.shape[1:])}")


def attention_transfer_loss(feats_s: Sequence[torch.Tensor], feats_t: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention transfer (Zagoruyko & Komodakis 2017, Eq. 2), before the weight beta.

        L_AT = sum_j mean( (Q_s^j - Q_t^j)^2 )

    over the paired group outputs j (same height and width, any channel counts);
    the mean is over batch and the H*W positions.  The objective adds
    `beta * L_AT` with beta = 1000, as the authors' CIFAR code does (`at_loss` =
    `(at(x) - at(y)).pow(2).mean()` per group, `opt.beta * sum(loss_groups)`);
    their paper's printed formula (beta/2, beta divided by map size and batch) is
    not what produced their numbers.
    """
    _check_pairs(feats_s, feats_t, "attention transfer", slice(2, None))
    return sum((attention_map(f_s) - attention_map(f_t)).pow(2).mean()
               for f_s, f_t in zip(feats_s, feats_t))


def activation_transfer_loss(feats_s: Sequence[torch.Tensor], feats_t: Sequence[torch.Tensor],
                             reduction: str = "positions") -> torch.Tensor:
    """Full activation transfer, F-ActT (Zagoruyko & Komodakis 2017, Sec. 4.1), before beta.

    AT's loss with the attention mapping replaced by the identity: each group's
    whole activation map, flattened (C*H*W) per sample and L2-normalized,
    a = x_s/||x_s||_2, b = x_t/||x_t||_2:

        "positions" (default):  L = sum_j mean_{batch, H*W} sum_C (a - b)^2
        "elements":             L = sum_j mean_{batch, C*H*W} (a - b)^2

    The authors' released code has no F-ActT, so its reduction is our choice.
    "positions" divides each sample's ||a - b||^2 by H*W exactly as AT's loss
    divides ||Q_s - Q_t||^2, so at the same beta each group weighs as much as
    in AT; "elements" is C times weaker (16-64x for CIFAR ResNets).  Only for
    pairs of equal shape.
    """
    _check_pairs(feats_s, feats_t, "activation transfer", slice(1, None))
    if reduction not in FACT_REDUCTIONS:
        raise ValueError(f"unknown F-ActT reduction '{reduction}', choose one of {', '.join(FACT_REDUCTIONS)}")
    total = 0
    for f_s, f_t in zip(feats_s, feats_t):
        diff = (F.normalize(f_s.flatten(1), dim=1) - F.normalize(f_t.flatten(1), dim=1)).pow(2).mean()
        total = total + (diff * f_s.shape[1] if reduction == "positions" else diff)
    return total


BETA_DECAYS = ("none", "linear")


def _raw(model) -> str:
    """AT's tap: "raw", which every registered network declares; a network of one's own that
    declares no taps gives its plain forward's maps."""
    return "raw" if "raw" in tap_kinds(model) else "post"


class AttentionTransfer(Distillation):
    """AT: `beta * sum_j mean (Q_s^j - Q_t^j)^2` over the group pairs `pairs` =
    [(student group, teacher group), ...], as the AT authors' CIFAR code weighs it
    (beta = 1000); logged as "at".

    `beta_decay`: "none" keeps beta constant (the default; the AT authors' released code);
    "linear" scales it by 1 - iteration / iterations, from beta at the first step to 0 at
    the end.  The AT authors' README says their AT+KD decayed beta, on a schedule they did
    not release: "linear" is one reading of it, not theirs.  The scale is a buffer the loop
    sets before each step (`set_progress`), so a captured CUDA graph reads the new value."""

    def __init__(self, student, teacher, pairs: Sequence[tuple[int, int]], beta: float = 1000.0,
                 kd: KD | None = None, beta_decay: str = "none"):
        super().__init__(student, teacher, kd, tap_s=_raw(student), tap_t=_raw(teacher))
        if beta_decay not in BETA_DECAYS:
            raise ValueError(f"unknown beta decay '{beta_decay}', choose one of {', '.join(BETA_DECAYS)}")
        self.pairs, self.beta, self.beta_decay = [tuple(p) for p in pairs], beta, beta_decay
        self.register_buffer("beta_scale", torch.ones(()), persistent=False)

    def set_progress(self, iteration: int, iterations: int) -> None:
        """Before the step of `iteration` (0-based) of `iterations`: the decayed beta's scale."""
        if self.beta_decay == "linear":
            self.beta_scale.fill_(1.0 - iteration / iterations)

    def weight(self) -> torch.Tensor | float:
        return self.beta * self.beta_scale if self.beta_decay != "none" else self.beta

    def paired(self, feats_s, feats_t):
        return [feats_s[i] for i, _ in self.pairs], [feats_t[j] for _, j in self.pairs]

    def transfer(self, feats_s, feats_t):
        return {"at": self.weight() * attention_transfer_loss(*self.paired(feats_s, feats_t))}


class ActivationTransfer(AttentionTransfer):
    """F-ActT (Sec. 4.1 of the AT paper): AT's loss on the whole L2-normalized activation
    maps, `beta * activation_transfer_loss(..., reduction)`; pairs must have equal shapes;
    logged as "fact"."""

    def __init__(self, student, teacher, pairs, beta: float = 1000.0, kd: KD | None = None,
                 reduction: str = "positions", beta_decay: str = "none"):
        super().__init__(student, teacher, pairs, beta, kd, beta_decay)
        self.reduction = reduction

    def transfer(self, feats_s, feats_t):
        return {"fact": self.weight() * activation_transfer_loss(*self.paired(feats_s, feats_t), self.reduction)}


# ---------------------------------------------------------------------- building from the flags

def pair_groups(shapes_s: Sequence[Sequence[int]], shapes_t: Sequence[Sequence[int]],
                what: str) -> list[tuple[int, int]]:
    """(student group, teacher group) pairs for AT / F-ActT (see the module docstring)."""
    if len(shapes_s) == len(shapes_t):
        for i, (s, t) in enumerate(zip(shapes_s, shapes_t)):
            if tuple(s[-2:]) != tuple(t[-2:]):
                raise UserError(f"{what} pairs the groups in order, and group {i} of the student "
                                f"({shape_str(s)}) and of the teacher ({shape_str(t)}) differ in height and "
                                f"width; choose networks whose groups downsample alike")
        return [(i, i) for i in range(len(shapes_t))]
    pairs = []
    for j, t in enumerate(shapes_t):
        same = [i for i, s in enumerate(shapes_s) if tuple(s[-2:]) == tuple(t[-2:])]
        if same:
            pairs.append((same[-1], j))
    if not pairs:
        raise UserError(f"{what}: no student group has the height and width of any teacher group "
                        f"(student {', '.join(shape_str(s) for s in shapes_s)}; teacher "
                        f"{', '.join(shape_str(t) for t in shapes_t)})")
    note(f"{what} pairs student and teacher groups (student, teacher) by height and width: {pairs}")
    return pairs


@dataclass(frozen=True)
class ATOptions:
    """AT's and F-ActT's settings (train_student.py --at-beta, --at-beta-decay, --fact-reduction)."""

    beta: float = 1000.0
    beta_decay: str = "none"
    fact_reduction: str = "positions"  # F-ActT only


def build_at(options: ATOptions, student, frozen: Frozen, kd: KD | None):
    pairs = pair_groups(group_shapes(student, frozen.input_size),
                        group_shapes(frozen.teacher, frozen.input_size), "AT")
    task = AttentionTransfer(student, frozen.teacher, pairs, options.beta, kd, options.beta_decay)
    return task, {"pairs": pairs}


def build_fact(options: ATOptions, student, frozen: Frozen, kd: KD | None):
    shapes_s = group_shapes(student, frozen.input_size)
    shapes_t = group_shapes(frozen.teacher, frozen.input_size)
    pairs = pair_groups(shapes_s, shapes_t, "F-ActT")
    unequal = [(i, j) for i, j in pairs if shapes_s[i] != shapes_t[j]]
    if unequal:
        listing = ", ".join(f"student group {i} {shape_str(shapes_s[i])} vs teacher group {j} "
                            f"{shape_str(shapes_t[j])}" for i, j in unequal)
        raise UserError(f"F-ActT (--method fact) needs student and teacher groups of equal width "
                        f"({listing}); use a student as wide as the teacher, or --method at")
    task = ActivationTransfer(student, frozen.teacher, pairs, options.beta, kd,
                              options.fact_reduction, options.beta_decay)
    return task, {"pairs": pairs}
