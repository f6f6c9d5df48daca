"""The training tasks, one module per family, and `METHODS`, the registry of
`train_student.py --method`: what each method needs (a teacher, paraphrasers) and how
its task is built.

    base.py        Task, Classification (teacher stage, student alone), Distillation + KD
    paraphrase.py  stage 2: the paraphraser's reconstruction (Kim et al. 2018, Sec. 3.1)
    ft.py          stage 3: Factor Transfer (Kim et al. 2018, Sec. 3.2)
    at.py          AT and F-ActT (Zagoruyko & Komodakis 2017)
    ktan.py        KTAN (Liu et al. 2018)

    method  | objective (weights are flags of train_student.py)
    ce      | CE
    kd      | (1-a) CE + a L_KD; L_KD = 2 T^2 mean_{batch,classes} KL terms (--kd-form at2017,
            | the AT authors' code) or T^2 KL(p_t^T || p_s^T) (hinton)   Hinton et al. 2015
    at      | CE + at_beta * sum_j mean (Q_s^j - Q_t^j)^2          Zagoruyko & Komodakis 2017
    fact    | CE + at_beta * sum_j mean_{HW} sum_C (x_s^j/|x_s^j| - x_t^j/|x_t^j|)^2   (F-ActT)
    ft      | CE + beta * L_FT(translator(x_s), paraphraser.encode(x_t))       Kim et al. 2018
    at+kd   | KD's objective + the AT term
    ft+kd   | KD's objective + the FT term
    ktan    | KD's objective + fm * mean (x_s - T2S(x_t))^2 + adv * GAN term; a discriminator
            | trained alternately (Liu et al. 2018, docs/ktan.md)

FT and KTAN use the teacher's last group (FT: or every group); the student side is the
same group index unless its height and width differ from the teacher's, in which case the
deepest student group of the teacher's size is used (`base.student_group_for`; VGG-13
under WRN-46-4: block 3, 256x8x8).  AT and F-ActT use every group (`at.pair_groups`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from utils.distill.at import ATOptions, build_at, build_fact
from utils.distill.base import KD, Classification, Distillation, Frozen
from utils.distill.ft import FTOptions, build_ft
from utils.distill.ktan import KTANOptions, build_ktan


@dataclass(frozen=True)
class Method:
    """A `--method` of train_student.py: what it needs and how its task is built.

    `build(options, student, frozen, kd) -> (task, checkpoint info)`; `options` is an
    instance of `options` (FTOptions, ATOptions, KTANOptions; None for ce and kd), `kd` the
    KD configuration from --kd-T / --kd-alpha / --kd-form when `kd` is set, else None.
    """

    help: str
    build: Callable
    teacher: bool = True
    paraphraser: bool = False  # Factor Transfer's frozen paraphrasers (--paraphraser)
    kd: bool = False            # the KD loss replaces cross-entropy
    options: type | None = None  # the options class `build` takes


def build_ce(options: None, student, frozen: Frozen, kd: KD | None):
    return Classification(student), {}


def build_kd(options: None, student, frozen: Frozen, kd: KD | None):
    return Distillation(student, frozen.teacher, kd), {}


METHODS: dict[str, Method] = {
    "ce": Method("the student alone (cross-entropy)", build_ce, teacher=False),
    "kd": Method("knowledge distillation, Hinton et al. (--kd-T, --kd-alpha)", build_kd, kd=True),
    "at": Method("attention transfer on every group, Zagoruyko & Komodakis (--at-beta)", build_at,
                 options=ATOptions),
    "fact": Method("full activation transfer F-ActT on every group (equal widths) (--at-beta)", build_fact,
                   options=ATOptions),
    "ft": Method("Factor Transfer (--beta, --p, --paraphraser)", build_ft, paraphraser=True, options=FTOptions),
    "at+kd": Method("KD's loss in place of cross-entropy, plus attention transfer", build_at, kd=True,
                    options=ATOptions),
    "ft+kd": Method("KD's loss in place of cross-entropy, plus Factor Transfer", build_ft,
                    paraphraser=True, kd=True, options=FTOptions),
    "ktan": Method("KTAN, Liu et al.: KD + feature matching + adversarial (--ktan-*)", build_ktan, kd=True,
                   options=KTANOptions),
}
