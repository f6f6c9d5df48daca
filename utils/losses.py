"""Loss functions, each a pure function with its paper's equation.

`_s` / `_t`: student / teacher.  Every function returns the loss *before* its
weight (beta, alpha, ...); the tasks in `utils.methods` apply the weights, so a
loss part logged by the loop is exactly the term added to the objective.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


# --------------------------------------------------------------------- Factor Transfer

FT_REDUCTIONS = ("mean", "norm")


def factor_transfer_loss(factor_s: torch.Tensor, factor_t: torch.Tensor, p: int = 1,
                         reduction: str = "mean") -> torch.Tensor:
    """Factor Transfer loss (Kim et al. 2018, Eq. 3), before the weight beta.

    Each factor is flattened per sample (C*H*W) and L2-normalized, q = F / ||F||_2; then

        "mean" (default):  mean over batch and elements of |q_t - q_s|^p, as the authors'
                           code does for p = 1 (`nn.L1Loss()` on `F.normalize(x.view(B, -1))`);
                           beta = 500 is defined against this reduction.
        "norm":            Eq. (3) as printed, the p-norm ||q_t - q_s||_p of each sample (not
                           raised to p, not divided by C*H*W), averaged over the batch.

    For p = 1 the two differ by the constant C*H*W ("norm" = C*H*W * "mean"; beta / (C*H*W)
    gives the same objective).  For p = 2 they are different functions: "mean" is
    ||q_t - q_s||^2 / (C*H*W) <= 4 / (C*H*W), whose gradient vanishes as the factors meet;
    "norm" is ||q_t - q_s||_2 <= 2, whose gradient has norm 1 wherever they differ.
    """
    if factor_s.shape != factor_t.shape:
        raise ValueError(f"student factor {tuple(factor_s.shape)} and teacher factor "
                         f"{tuple(factor_t.shape)} differ in shape")
    q_s = F.normalize(factor_s.flatten(1), dim=1)
    q_t = F.normalize(factor_t.flatten(1), dim=1)
    if reduction == "mean":
        return (q_s - q_t).abs().pow(p).mean()
    if reduction == "norm":
        return torch.linalg.vector_norm(q_s - q_t, ord=p, dim=1).mean()
    raise ValueError(f"unknown FT reduction '{reduction}', choose one of {', '.join(FT_REDUCTIONS)}")


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


# --------------------------------------------------------------------- Hinton et al. KD

KD_FORMS = ("at2017", "hinton")


def kd_loss(logits_s: torch.Tensor, logits_t: torch.Tensor, T: float = 4.0,
            form: str = "hinton") -> torch.Tensor:
    """Knowledge distillation (Hinton et al. 2015, Sec. 2), before the weight alpha.

    form "hinton":  T^2 * KL(p_t^T || p_s^T),  p^T = softmax(logits / T), the KL
        summed over classes and averaged over the batch.  The full objective is
        `(1 - alpha) * CE + alpha * L_KD`; the T^2 keeps the gradient's scale
        independent of T.
    form "at2017":  2 T^2 * mean_{batch, classes} p_t^T (log p_t^T - log p_s^T),
        the attention-transfer authors' `distillation()` (Zagoruyko & Komodakis
        2017, utils.py of their release until mid-2018: `F.kl_div` with its default
        mean over every element, times `T*T*2*alpha`), which the FT paper follows
        for its baselines.  It is the "hinton" value times 2 / C (C classes:
        5x smaller on CIFAR-10, 50x on CIFAR-100).

    The objective adds `alpha * kd_loss(...)` in both forms.
    """
    log_p_s = F.log_softmax(logits_s / T, dim=1)
    log_p_t = F.log_softmax(logits_t / T, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    if form == "hinton":
        return T * T * kl
    if form == "at2017":
        return 2 * T * T * kl / logits_s.shape[1]
    raise ValueError(f"unknown KD form '{form}', choose one of {', '.join(KD_FORMS)}")


# --------------------------------------------------------------------- Zagoruyko & Komodakis

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


FACT_REDUCTIONS = ("positions", "elements")


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


# --------------------------------------------------------------------- KTAN (Liu et al. 2018)

def feature_matching_loss(map_s: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KTAN's feature-map term (Liu et al. 2018, Sec. 3): mean (F_s - T2S(F_t))^2.

    The student's map regressed onto the teacher's map after the Teacher-to-Student
    layer; squared error averaged over all elements (our reading, see docs/ktan.md).
    """
    if map_s.shape != target.shape:
        raise ValueError(f"student map {tuple(map_s.shape)} and adapted teacher map "
                         f"{tuple(target.shape)} differ in shape")
    return F.mse_loss(map_s, target)


def adversarial_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """KTAN's adversarial term for the student (the generator), non-saturating GAN form
    (Goodfellow et al. 2014, Sec. 3):  -mean log D(F_s) = BCE(D(F_s), "teacher")."""
    return F.binary_cross_entropy_with_logits(logits_fake, torch.ones_like(logits_fake))


def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """KTAN's discriminator objective (Goodfellow et al. 2014, Eq. 1):

        -1/2 [ mean log D(T2S(F_t)) + mean log(1 - D(F_s)) ]

    teacher maps are "real" (label 1), student maps "fake" (label 0).
    """
    real = F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
    fake = F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
    return 0.5 * (real + fake)
