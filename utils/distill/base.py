"""What every training task shares: the Task base, plain classification, and the student
trained beside a frozen teacher with Hinton et al.'s KD as its optional label loss.

A task is an nn.Module whose `forward(x, y)` returns `(student_logits, losses)`, `losses` a
dict of already-weighted scalars that the loop sums and logs one curve per key.  A task
owns its trainable parts (`trainable()`) and its frozen ones; the frozen ones stay in eval
mode when `.train()` is called and run without gradients.  `_s` / `_t`: student / teacher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.features import TapError, check_tap, default_tap, forward_tap
from paraphraser import Paraphraser
from utils.errors import UserError


class Task(nn.Module):
    """Base: trainable modules are attributes; frozen ones are registered with `add_frozen`,
    modules with an optimizer of their own (KTAN's discriminator) with `add_auxiliary`."""

    def __init__(self):
        super().__init__()
        self._frozen_names: list[str] = []
        self._auxiliary_names: list[str] = []

    def add_frozen(self, name: str, module: nn.Module) -> None:
        module.requires_grad_(False)
        setattr(self, name, module)
        self._frozen_names.append(name)

    def add_auxiliary(self, name: str, module: nn.Module) -> None:
        setattr(self, name, module)
        self._auxiliary_names.append(name)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self._frozen_names:
            getattr(self, name).eval()
        return self

    def trainable(self) -> dict[str, nn.Module]:
        """The modules the main optimizer updates and the checkpoint saves, by name.

        The student is saved as "model", the name a teacher's network has, so that
        any classifier checkpoint loads with `utils.checkpoint.load_classifier`.
        """
        skip = set(self._frozen_names) | set(self._auxiliary_names)
        return {("model" if name == "student" else name): m
                for name, m in self.named_children() if name not in skip}


class Classification(Task):
    """Cross-entropy training of one network: the teacher stage, and the student alone."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, y):
        logits, _ = self.model(x)
        return logits, {"ce": F.cross_entropy(logits, y)}


# ---------------------------------------------------------------------- KD (Hinton et al. 2015)

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


@dataclass(frozen=True)
class KD:
    """Hinton et al.'s soft targets: temperature T, weight alpha of the KD term, and the
    form of the term (`kd_loss`: "at2017" or "hinton")."""

    T: float = 4.0
    alpha: float = 0.9
    form: str = "hinton"


class Distillation(Task):
    """A student trained with a frozen teacher; on its own, Hinton et al.'s KD.

    With `kd`, the label loss is `(1-a) CE + a L_KD` (`kd_loss` in the form `kd.form`;
    logged as "ce" and "kd", each weighted); without, plain CE.  Subclasses add their
    transfer terms in `transfer(feats_s, feats_t)`, on the group maps of the tap kinds
    `tap_s` / `tap_t` (models/features.py; by default each network's `default_tap`).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, kd: KD | None = None,
                 tap_s: str | None = None, tap_t: str | None = None):
        super().__init__()
        self.student = student
        self.add_frozen("teacher", teacher)
        self.kd = kd
        self.tap_s = default_tap(student) if tap_s is None else tap_s
        self.tap_t = default_tap(teacher) if tap_t is None else tap_t
        for model, tap in ((student, self.tap_s), (teacher, self.tap_t)):
            try:
                check_tap(model, tap)
            except TapError as exc:  # a method asked for maps the network does not offer
                raise UserError(f"{type(self).__name__}: {exc}") from None

    def forward(self, x, y):
        logits_s, feats_s = forward_tap(self.student, x, self.tap_s)
        with torch.no_grad():
            logits_t, feats_t = forward_tap(self.teacher, x, self.tap_t)
        ce = F.cross_entropy(logits_s, y)
        if self.kd is None:
            losses = {"ce": ce}
        else:
            losses = {"ce": (1 - self.kd.alpha) * ce,
                      "kd": self.kd.alpha * kd_loss(logits_s, logits_t, self.kd.T, self.kd.form)}
        return logits_s, {**losses, **self.transfer(feats_s, feats_t)}

    def transfer(self, feats_s: list[torch.Tensor], feats_t: list[torch.Tensor]) -> dict:
        return {}


# ---------------------------------------------------------------------- building a task

@dataclass
class Frozen:
    """What a method is built from besides the student: the frozen teacher, the frozen
    paraphrasers with the teacher group each paraphrases (as trained, e.g. -1), and the
    input's height and width (the group shapes follow from the networks' feature_info)."""

    teacher: nn.Module | None
    paraphrasers: list[tuple[Paraphraser, int]]
    input_size: tuple[int, int]


def shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def student_group_for(shapes_s: Sequence[Sequence[int]], chosen: int, size_t: Sequence[int]) -> int:
    """The student group to pair with a teacher map of height x width `size_t`.

    `chosen` (e.g. -1, the last group) when its height and width are the teacher's;
    otherwise the deepest student group that has them (VGG-13's last block is 2x2,
    a WRN's last group 8x8: VGG-13's block 3).  `shapes_s` are (C, H, W) per group.
    """
    n = len(shapes_s)
    size_t = tuple(size_t)
    if -n <= chosen < n and tuple(shapes_s[chosen][-2:]) == size_t:
        return chosen % n
    same = [i for i, s in enumerate(shapes_s) if tuple(s[-2:]) == size_t]
    if not same:
        sizes = ", ".join(shape_str(s[-2:]) for s in shapes_s)
        raise UserError(f"no student group has the teacher map's height and width "
                        f"{shape_str(size_t)} (student groups: {sizes}); choose a student "
                        f"whose groups reach that size")
    return same[-1]
