"""Training tasks: what one step computes, for each stage and transfer method.

Each task is an nn.Module whose `forward(x, y)` returns `(student_logits, losses)`
with `losses` a dict of already-weighted scalars that the loop sums.  A task owns
the trainable parts (`trainable()`) and the frozen ones; the frozen ones stay in
eval mode when `.train()` is called and run without gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from paraphraser import Paraphraser
from translator import Translator
from utils.losses import factor_transfer_loss, reconstruction_loss


class Task(nn.Module):
    """Base: trainable modules are attributes; frozen ones are registered with `_frozen`."""

    def __init__(self):
        super().__init__()
        self._frozen_names: list[str] = []

    def add_frozen(self, name: str, module: nn.Module) -> None:
        module.requires_grad_(False)
        setattr(self, name, module)
        self._frozen_names.append(name)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self._frozen_names:
            getattr(self, name).eval()
        return self

    def trainable(self) -> dict[str, nn.Module]:
        return {name: m for name, m in self.named_children() if name not in self._frozen_names}


class Classification(Task):
    """Cross-entropy training of one network: the teacher stage, and the student alone."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, y):
        logits, _ = self.model(x)
        return logits, {"ce": F.cross_entropy(logits, y)}


class ParaphraserTraining(Task):
    """Paraphraser stage (Sec. 3.1): reconstruct the frozen teacher's feature map."""

    def __init__(self, teacher: nn.Module, paraphraser: Paraphraser, recon_loss: str = "l1",
                 group: int = -1, factor_l1: float = 0.0):
        super().__init__()
        self.add_frozen("teacher", teacher)
        self.paraphraser = paraphraser
        self.recon_loss, self.group, self.factor_l1 = recon_loss, group, factor_l1

    def teacher_features(self, x):
        with torch.no_grad():
            return self.teacher(x)[1][self.group]

    def forward(self, x, y):
        feat = self.teacher_features(x)
        factor = self.paraphraser.encode(feat)
        losses = {"recon": reconstruction_loss(self.paraphraser.decode(factor), feat, self.recon_loss)}
        if self.factor_l1 > 0:
            # RAE column (Table 1): sparsity penalty lambda * mean |F_T| on the factor.
            losses["factor_l1"] = self.factor_l1 * factor.abs().mean()
        return None, losses


class FactorTransfer(Task):
    """FT (Sec. 3.2, Eq. 2-3): L = CE(student) + beta * L_FT(translator(student), paraphraser(teacher))."""

    def __init__(self, student: nn.Module, translator: Translator, teacher: nn.Module,
                 paraphraser: Paraphraser, beta: float = 500.0, p: int = 1, group: int = -1):
        super().__init__()
        self.student, self.translator = student, translator
        self.add_frozen("teacher", teacher)
        self.add_frozen("paraphraser", paraphraser)
        self.beta, self.p, self.group = beta, p, group

    def forward(self, x, y):
        logits, feats = self.student(x)
        with torch.no_grad():
            factor_t = self.paraphraser.encode(self.teacher(x)[1][self.group])
        factor_s = self.translator(feats[self.group])
        return logits, {"ce": F.cross_entropy(logits, y),
                        "ft": self.beta * factor_transfer_loss(factor_s, factor_t, self.p)}
