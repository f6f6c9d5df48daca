"""KTAN (Liu et al. 2018, arXiv 1810.08126): KD plus the student's last-group map trained
towards the teacher's, adapted by a Teacher-to-Student layer, with an adversarial term
from a discriminator trained alternately (our reading of the paper: docs/ktan.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.features import group_shapes
from utils.distill.base import KD, Distillation, Frozen, student_group_for
from utils.errors import note


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


class TeacherToStudent(nn.Sequential):
    """KTAN's Teacher-to-Student layer: the teacher's map, C_t channels, to the
    student's C_s (paper: a 1x1 convolution with BN, so any student shape works).

    Our reading (docs/ktan.md): conv 1x1 (no bias) -> BN without affine -> ReLU.
    BN without a learnable scale keeps each adapted channel at unit variance over
    the batch, so the jointly trained layer cannot shrink the target towards a
    constant that a student would match trivially; the ReLU puts it in the range
    of the student's post-ReLU maps.
    """

    def __init__(self, teacher_channels: int, student_channels: int):
        super().__init__(nn.Conv2d(teacher_channels, student_channels, 1, bias=False),
                         nn.BatchNorm2d(student_channels, affine=False), nn.ReLU())
        self.config = dict(teacher_channels=teacher_channels, student_channels=student_channels)


class FeatureDiscriminator(nn.Sequential):
    """KTAN's discriminator: a feature map (C x H x W) -> one logit, "from the teacher".

    Our choice of shape (the paper's is not given for CIFAR): conv 3x3 C->w,
    LeakyReLU(0.2), conv 3x3 stride 2 w->2w, LeakyReLU(0.2), global average pool,
    linear 2w->1.  No BatchNorm: it sees student-only batches in the student's
    step, and batch statistics would tell it which kind of batch it is looking at.
    """

    def __init__(self, channels: int, width: int = 64):
        super().__init__(nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2),
                         nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 1))


class KTAN(Distillation):
    """KTAN (Liu et al. 2018, arXiv 1810.08126): KD plus the student's last-group map
    trained towards the teacher's, adapted by the Teacher-to-Student layer:

        L_student = (1-a) CE + a L_KD + fm * mean (x_s - T2S(x_t))^2 + adv * BCE(D(x_s), 1)
        L_D       = 1/2 [ BCE(D(T2S(x_t)), 1) + BCE(D(x_s), 0) ]

    Logged as "ce", "kd", "fm", "adv" and (not part of the student's objective) "disc".
    The T2S layer is trained with the student (main optimizer, saved as "t2s") by
    the feature-matching term.  The discriminator has its own optimizer, Adam(lr_d,
    betas 0.5/0.999), and is updated once after every student step on that step's
    (detached) maps: `auxiliary_step()`, called by `utils.train.make_step`, with its
    state carried through checkpoints by `auxiliary_state_dict()`.  Its weights get
    no gradient from the student's loss (they are switched off outside its own step).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, t2s: TeacherToStudent,
                 discriminator: FeatureDiscriminator, student_group: int = -1, group: int = -1,
                 kd: KD | None = KD(), fm: float = 1.0, adv: float = 0.1, lr_d: float = 2e-4):
        super().__init__(student, teacher, kd)
        self.t2s = t2s
        self.add_auxiliary("discriminator", discriminator)
        discriminator.requires_grad_(False)
        self.d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr_d, betas=(0.5, 0.999))
        self.student_group, self.group, self.fm, self.adv = student_group, group, fm, adv
        self._maps = None  # (teacher's adapted map, student's map) of the last training step

    def transfer(self, feats_s, feats_t):
        map_s = feats_s[self.student_group]
        target = self.t2s(feats_t[self.group])
        if self.training:
            self._maps = (target.detach(), map_s.detach())
        return {"fm": self.fm * feature_matching_loss(map_s, target),
                "adv": self.adv * adversarial_loss(self.discriminator(map_s))}

    def auxiliary_step(self) -> dict:
        """One discriminator update on the maps of the student step just taken."""
        if self._maps is None:
            return {}
        real, fake = self._maps
        self._maps = None
        self.discriminator.requires_grad_(True)
        loss = discriminator_loss(self.discriminator(real), self.discriminator(fake))
        self.d_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.d_optimizer.step()
        self.discriminator.requires_grad_(False)
        return {"disc": loss.detach()}

    def auxiliary_state_dict(self) -> dict:
        return {"discriminator": self.discriminator.state_dict(),
                "optimizer": self.d_optimizer.state_dict()}

    def load_auxiliary_state_dict(self, state: dict) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.d_optimizer.load_state_dict(state["optimizer"])


# ---------------------------------------------------------------------- building from the flags

@dataclass(frozen=True)
class KTANOptions:
    """KTAN's settings (train_student.py --ktan-fm, --ktan-adv, --ktan-lr-d, --ktan-d-width)."""

    fm: float = 1.0
    adv: float = 0.1
    lr_d: float = 2e-4
    d_width: int = 64


def build_ktan(options: KTANOptions, student, frozen: Frozen, kd: KD | None):
    shapes_s = group_shapes(student, frozen.input_size)
    shape_t = group_shapes(frozen.teacher, frozen.input_size)[-1]
    g_s = student_group_for(shapes_s, -1, shape_t[-2:])
    if g_s != len(shapes_s) - 1:
        note(f"KTAN uses student group {g_s}, the deepest with the teacher map's height and width")
    t2s = TeacherToStudent(shape_t[0], shapes_s[g_s][0])
    discriminator = FeatureDiscriminator(shapes_s[g_s][0], options.d_width)
    task = KTAN(student, frozen.teacher, t2s, discriminator, student_group=g_s, group=-1, kd=kd,
                fm=options.fm, adv=options.adv, lr_d=options.lr_d)
    return task, {"t2s_config": t2s.config, "groups": [[g_s, len(shapes_s) - 1]]}
