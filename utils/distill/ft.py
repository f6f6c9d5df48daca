"""Factor Transfer (Kim et al. 2018, Sec. 3.2): the student's translator learns to output
the factor that the frozen paraphraser extracts from the frozen teacher.

    L_student = CE + beta * L_FT(F_S, F_T),   F_T = paraphraser.encode(x_t),  F_S = translator(x_s)

x_t and x_s are the teacher's and the student's last-group maps (Sec. 3.1).  That is one
`Link`; FT on every group (`--ft-groups all`, Sec. 4.1) is a list of links whose terms add.
The paraphraser was trained beforehand (stage 2, `utils/distill/paraphrase.py`); the
translator is trained jointly with the student and dropped after training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.features import group_shapes
from translator import Translator
from utils.distill.base import KD, Distillation, Frozen, shape_str, student_group_for
from utils.errors import UserError, note

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


@dataclass(eq=False)
class Link:
    """One transferred group: teacher group `teacher_group` -> paraphraser -> F_T, student
    group `student_group` -> translator -> F_S.  A `None` paraphraser makes the teacher's
    own map the "factor" (Table 4, no paraphraser); a `None` translator matches the
    student's own map (Table 4, no translator)."""

    translator: nn.Module | None
    paraphraser: nn.Module | None
    student_group: int = -1
    teacher_group: int = -1

    def factors(self, feats_s: list[torch.Tensor], feats_t: list[torch.Tensor]):
        """(F_S, F_T) from the two networks' group maps; F_T without gradients."""
        with torch.no_grad():
            factor_t = feats_t[self.teacher_group]
            if self.paraphraser is not None:
                factor_t = self.paraphraser.encode(factor_t)
        factor_s = feats_s[self.student_group]
        if self.translator is not None:
            factor_s = self.translator(factor_s)
        return factor_s, factor_t


class FactorTransfer(Distillation):
    """FT (Sec. 3.2, Eq. 2-3): CE (or KD's loss, ft+kd) + beta * L_FT per link.

    One link is logged as "ft", several as "ft_g<teacher group>".  The translators are
    trained and saved as "translator" (one Translator, or a ModuleList with one per link),
    the paraphrasers frozen as "paraphraser".
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, links: Link | list[Link],
                 beta: float = 500.0, p: int = 1, kd: KD | None = None, reduction: str = "mean"):
        super().__init__(student, teacher, kd)
        self.links = [links] if isinstance(links, Link) else list(links)
        self.beta, self.p, self.reduction = beta, p, reduction
        translators = _one_or_list([link.translator for link in self.links], "translator")
        if translators is not None:
            self.translator = translators
        paraphrasers = _one_or_list([link.paraphraser for link in self.links], "paraphraser")
        if paraphrasers is not None:
            self.add_frozen("paraphraser", paraphrasers)
        self._names = (["ft"] if len(self.links) == 1
                       else [f"ft_g{link.teacher_group}" for link in self.links])

    def transfer(self, feats_s, feats_t):
        return {name: self.beta * factor_transfer_loss(*link.factors(feats_s, feats_t), self.p, self.reduction)
                for name, link in zip(self._names, self.links)}


def _one_or_list(modules: list, what: str) -> nn.Module | None:
    """The links' modules as the task registers them: none, one module, or a ModuleList."""
    if all(m is None for m in modules):
        return None
    if any(m is None for m in modules):
        raise ValueError(f"FactorTransfer: give every link a {what}, or none")
    return modules[0] if len(modules) == 1 else nn.ModuleList(modules)


# ---------------------------------------------------------------------- building from the flags

@dataclass(frozen=True)
class FTOptions:
    """Factor Transfer's settings (train_student.py --beta, --p, --ft-reduction, --ft-groups,
    --no-paraphraser, --no-translator, --translator-bn, --translator-layers); the defaults
    are the paper's.  `translator_bn` None: as the paraphraser (needed without one);
    `translator_layers` None: 3 (Sec. 3.2), or a CAE paraphraser's own depth."""

    beta: float = 500.0
    p: int = 1
    reduction: str = "mean"
    groups: str = "last"          # with no_paraphraser: "last" or "all" teacher groups
    no_paraphraser: bool = False  # Table 4: match the teacher's own map
    no_translator: bool = False   # Table 4: match the student's own map
    translator_bn: bool | None = None
    translator_layers: int | None = None


def build_ft(options: FTOptions, student, frozen: Frozen, kd: KD | None):
    """One link per paraphraser of `frozen` (or per teacher group with `no_paraphraser`),
    each with a translator shaped to produce the teacher factor's shape (checked here)."""
    shapes_s = group_shapes(student, frozen.input_size)
    shapes_t = group_shapes(frozen.teacher, frozen.input_size)
    n_t = len(shapes_t)
    if options.no_paraphraser:
        chosen = [(None, g) for g in (range(n_t) if options.groups == "all" else [-1])]
    else:
        chosen = frozen.paraphrasers
    links, moved = [], []
    for paraphraser, group in chosen:
        g_t = group % n_t
        g_s = student_group_for(shapes_s, group, shapes_t[g_t][-2:])
        if not (-len(shapes_s) <= group < len(shapes_s) and g_s == group % len(shapes_s)):
            moved.append((group, g_s))
        factor_t = shapes_t[g_t] if paraphraser is None else paraphraser.encoder.output_shape(shapes_t[g_t])
        translator = None
        if not options.no_translator:
            if paraphraser is None and options.translator_bn is None:
                raise ValueError("FTOptions.translator_bn: give it when there is no paraphraser to follow")
            config = paraphraser.config if paraphraser is not None else dict(layers=3, kind="conv", bn=None)
            bn = config["bn"] if options.translator_bn is None else options.translator_bn
            # The translator keeps its own depth (Sec. 3.2: three layers) whatever the
            # paraphraser's: Table 4's depth ablation varies the paraphraser only.
            layers = options.translator_layers or (config["layers"] if config["kind"] == "cae" else 3)
            translator = Translator(shapes_s[g_s][0], factor_t[0], bn=bn, layers=layers, kind=config["kind"])
        factor_s = shapes_s[g_s] if translator is None else translator.output_shape(shapes_s[g_s])
        _check_factor_shapes(factor_s, factor_t, shapes_s[g_s], shapes_t[g_t], translator, paraphraser, g_s, g_t)
        links.append(Link(translator, paraphraser, g_s, g_t))
    if moved:
        note("FT uses the deepest student group with the teacher map's height and width: "
             + ", ".join(f"teacher group {g} -> student group {s}" for g, s in moved))
    task = FactorTransfer(student, frozen.teacher, links, beta=options.beta, p=options.p, kd=kd,
                          reduction=options.reduction)
    configs = [link.translator.config if link.translator is not None else None for link in links]
    info = {"translator_config": configs[0] if len(links) == 1 else configs,
            "groups": [[link.student_group, link.teacher_group] for link in links]}
    return task, info


def _check_factor_shapes(factor_s, factor_t, map_s, map_t, translator, paraphraser, g_s, g_t) -> None:
    if tuple(factor_s) == tuple(factor_t):
        return
    target = "the teacher's map" if paraphraser is None else "the teacher factor"
    where = (f"student group {g_s} ({shape_str(map_s)}) against {target} of teacher group {g_t} "
             f"({shape_str(factor_t)})")
    if translator is not None:
        raise UserError(f"the translator cannot map {where}: the student's and the teacher's maps "
                        f"must have the same height and width")
    if tuple(factor_s[1:]) != tuple(factor_t[1:]):
        raise UserError(f"--no-translator matches {where}: height and width differ; the paraphraser "
                        f"must keep them (--kind conv or rae, not cae)")
    c_s, c_t = map_s[0], map_t[0]
    if paraphraser is None:
        raise UserError(f"--no-paraphraser --no-translator matches {where} directly: the channels "
                        f"differ (C_s = {c_s}, C_t = {c_t}); keep the translator or the paraphraser")
    raise UserError(f"--no-translator matches {where}: kC_t = {factor_t[0]} but C_s = {c_s}; "
                    f"train the paraphraser with --k {c_s / c_t:g} (k = C_s / C_t) so that they match")
