"""Training tasks: what one step computes, for each stage and transfer method.

Each task is an nn.Module whose `forward(x, y)` returns `(student_logits, losses)`
with `losses` a dict of already-weighted scalars that the loop sums (and logs,
one curve per key).  A task owns the trainable parts (`trainable()`) and the
frozen ones; the frozen ones stay in eval mode when `.train()` is called and run
without gradients.

`METHODS` (bottom) is the registry of `train_student.py --method`: what each
method needs (a teacher, paraphrasers) and how its task is built.

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
            | trained alternately (Liu et al. 2018, see `KTAN` and docs/ktan.md)

Group pairing.  AT and F-ActT use every group (of a wide ResNet: each group's raw
residual sum, the last one before the network's final BN-ReLU, as the AT code takes them): student and teacher groups are
zipped when the two networks have as many groups, and must then agree in height
and width; otherwise (VGG-13's five blocks against a WRN's three groups) each
teacher group is paired with the deepest student group of the same height and
width.  FT and KTAN use the teacher's last group (FT: or every group); the
student side is the same group index unless its height and width differ from
the teacher's, in which case the deepest student group of the teacher's size is
used (`student_group_for`; VGG-13 under WRN-46-4: block 3, 256x8x8).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from paraphraser import Paraphraser, bn_default
from translator import Translator
from utils.errors import UserError
from models.wide_resnet import use_raw_group_outputs
from utils.losses import (activation_transfer_loss, adversarial_loss, attention_transfer_loss,
                          discriminator_loss, factor_l1_penalty, factor_transfer_loss,
                          feature_matching_loss, kd_loss, reconstruction_loss)


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
            losses["factor_l1"] = self.factor_l1 * factor_l1_penalty(factor)
        return None, losses


# ============================================================================ students

@dataclass(frozen=True)
class KD:
    """Hinton et al.'s soft targets: temperature T, weight alpha of the KD term, and the
    form of the term (`utils.losses.kd_loss`: "at2017" or "hinton")."""

    T: float = 4.0
    alpha: float = 0.9
    form: str = "hinton"


class Distillation(Task):
    """A student trained with a frozen teacher; on its own, Hinton et al.'s KD.

    With `kd`, the label loss is `(1-a) CE + a L_KD` (`kd_loss` in the form `kd.form`;
    logged as "ce" and "kd", each weighted); without, plain CE.  Subclasses add their
    transfer terms in `transfer(feats_s, feats_t)`.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, kd: KD | None = None):
        super().__init__()
        self.student = student
        self.add_frozen("teacher", teacher)
        self.kd = kd

    def forward(self, x, y):
        logits_s, feats_s = self.student(x)
        with torch.no_grad():
            logits_t, feats_t = self.teacher(x)
        ce = F.cross_entropy(logits_s, y)
        if self.kd is None:
            losses = {"ce": ce}
        else:
            losses = {"ce": (1 - self.kd.alpha) * ce,
                      "kd": self.kd.alpha * kd_loss(logits_s, logits_t, self.kd.T, self.kd.form)}
        return logits_s, {**losses, **self.transfer(feats_s, feats_t)}

    def transfer(self, feats_s: list[torch.Tensor], feats_t: list[torch.Tensor]) -> dict:
        return {}


class AttentionTransfer(Distillation):
    """AT (Zagoruyko & Komodakis 2017): `beta * sum_j mean (Q_s^j - Q_t^j)^2` over the
    group pairs `pairs` = [(student group, teacher group), ...], as the AT authors'
    CIFAR code weighs it (beta = 1000); logged as "at"."""

    def __init__(self, student, teacher, pairs: Sequence[tuple[int, int]], beta: float = 1000.0,
                 kd: KD | None = None):
        super().__init__(student, teacher, kd)
        self.pairs, self.beta = [tuple(p) for p in pairs], beta

    def transfer(self, feats_s, feats_t):
        f_s = [feats_s[i] for i, _ in self.pairs]
        f_t = [feats_t[j] for _, j in self.pairs]
        return {"at": self.beta * attention_transfer_loss(f_s, f_t)}


class ActivationTransfer(AttentionTransfer):
    """F-ActT (Zagoruyko & Komodakis 2017, Sec. 4.1): AT's loss on the whole
    L2-normalized activation maps, `beta * activation_transfer_loss(..., reduction)`;
    pairs must have equal shapes; logged as "fact"."""

    def __init__(self, student, teacher, pairs, beta: float = 1000.0, kd: KD | None = None,
                 reduction: str = "positions"):
        super().__init__(student, teacher, pairs, beta, kd)
        self.reduction = reduction

    def transfer(self, feats_s, feats_t):
        f_s = [feats_s[i] for i, _ in self.pairs]
        f_t = [feats_t[j] for _, j in self.pairs]
        return {"fact": self.beta * activation_transfer_loss(f_s, f_t, self.reduction)}


def _as_list(value, n: int | None = None) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * (n or 1)


class FactorTransfer(Distillation):
    """FT (Sec. 3.2, Eq. 2-3): L = CE(student) + beta * L_FT(translator(student), paraphraser(teacher)).

    One link per transferred group; for the paper's FT one link on the last group.
    `translator`, `paraphraser`, `group`, `student_group` are a single value or one
    per link.  A `None` paraphraser makes the teacher's own map the "factor"
    (Table 4, no paraphraser); a `None` translator matches the student's own map
    (Table 4, no translator).  One link is logged as "ft", several as "ft_g<teacher group>".
    The translator(s) are saved as "translator" (a Translator, or a ModuleList of
    them, one per link).
    """

    def __init__(self, student: nn.Module, translator, teacher: nn.Module, paraphraser,
                 beta: float = 500.0, p: int = 1, group=-1, *, student_group=None, kd: KD | None = None,
                 reduction: str = "mean"):
        super().__init__(student, teacher, kd)
        groups = _as_list(group)
        n = len(groups)
        translators, paraphrasers = _as_list(translator, n), _as_list(paraphraser, n)
        student_groups = groups if student_group is None else _as_list(student_group, n)
        if not len(translators) == len(paraphrasers) == len(student_groups) == n:
            raise ValueError("FactorTransfer: give one translator, paraphraser and group per link")
        present = [t for t in translators if t is not None]
        if present:
            self.translator = present[0] if n == 1 else nn.ModuleList(
                [t if t is not None else nn.Identity() for t in translators])
        present = [q for q in paraphrasers if q is not None]
        if present:
            self.add_frozen("paraphraser", present[0] if n == 1 else nn.ModuleList(
                [q if q is not None else nn.Identity() for q in paraphrasers]))
        self._translators, self._paraphrasers = translators, paraphrasers
        self.groups, self.student_groups = groups, student_groups
        self.beta, self.p, self.reduction = beta, p, reduction
        self._names = ["ft"] if n == 1 else [f"ft_g{g}" for g in groups]

    def transfer(self, feats_s, feats_t):
        losses = {}
        for name, translator, paraphraser, g_s, g_t in zip(
                self._names, self._translators, self._paraphrasers, self.student_groups, self.groups):
            with torch.no_grad():
                factor_t = feats_t[g_t] if paraphraser is None else paraphraser.encode(feats_t[g_t])
            factor_s = feats_s[g_s] if translator is None else translator(feats_s[g_s])
            losses[name] = self.beta * factor_transfer_loss(factor_s, factor_t, self.p, self.reduction)
        return losses


# ---------------------------------------------------------------------------- KTAN

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


# ============================================================================ building

@torch.no_grad()
def probe_features(model: nn.Module, sample: torch.Tensor) -> list[torch.Tensor]:
    """The group outputs of `model` on `sample` (eval mode, restored after)."""
    was_training = model.training
    model.eval()
    feats = model(sample)[1]
    model.train(was_training)
    return feats


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(d) for d in t.shape[1:])


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
        sizes = ", ".join("x".join(map(str, s[-2:])) for s in shapes_s)
        raise UserError(f"no student group has the teacher map's height and width "
                        f"{'x'.join(map(str, size_t))} (student groups: {sizes}); choose a student "
                        f"whose groups reach that size")
    return same[-1]


def pair_groups(shapes_s: Sequence[Sequence[int]], shapes_t: Sequence[Sequence[int]],
                what: str) -> list[tuple[int, int]]:
    """(student group, teacher group) pairs for AT / F-ActT (see the module docstring)."""
    def size(s):
        return "x".join(map(str, s))

    if len(shapes_s) == len(shapes_t):
        for i, (s, t) in enumerate(zip(shapes_s, shapes_t)):
            if tuple(s[-2:]) != tuple(t[-2:]):
                raise UserError(f"{what} pairs the groups in order, and group {i} of the student "
                                f"({size(s)}) and of the teacher ({size(t)}) differ in height and "
                                f"width; choose networks whose groups downsample alike")
        return [(i, i) for i in range(len(shapes_t))]
    pairs = []
    for j, t in enumerate(shapes_t):
        same = [i for i, s in enumerate(shapes_s) if tuple(s[-2:]) == tuple(t[-2:])]
        if same:
            pairs.append((same[-1], j))
    if not pairs:
        raise UserError(f"{what}: no student group has the height and width of any teacher group "
                        f"(student {', '.join(size(s) for s in shapes_s)}; teacher "
                        f"{', '.join(size(t) for t in shapes_t)})")
    print(f"note: {what} pairs student and teacher groups (student, teacher) by height and "
          f"width: {pairs}", file=sys.stderr)
    return pairs


@dataclass
class Frozen:
    """What a method is built from besides the student: the frozen teacher, the
    frozen paraphrasers with the teacher group each paraphrases (as trained, e.g. -1),
    and a normalized image batch to read shapes off."""

    teacher: nn.Module | None
    paraphrasers: list[tuple[Paraphraser, int]]
    sample: torch.Tensor


def build_ce(args, student, frozen: Frozen, kd: KD | None):
    return Classification(student), {}


def build_kd(args, student, frozen: Frozen, kd: KD | None):
    return Distillation(student, frozen.teacher, kd), {}


def build_at(args, student, frozen: Frozen, kd: KD | None):
    use_raw_group_outputs(student, frozen.teacher)
    feats_s = probe_features(student, frozen.sample)
    feats_t = probe_features(frozen.teacher, frozen.sample)
    pairs = pair_groups([f.shape[1:] for f in feats_s], [f.shape[1:] for f in feats_t], "AT")
    return AttentionTransfer(student, frozen.teacher, pairs, args.at_beta, kd), {"pairs": pairs}


def build_fact(args, student, frozen: Frozen, kd: KD | None):
    use_raw_group_outputs(student, frozen.teacher)
    feats_s = probe_features(student, frozen.sample)
    feats_t = probe_features(frozen.teacher, frozen.sample)
    pairs = pair_groups([f.shape[1:] for f in feats_s], [f.shape[1:] for f in feats_t], "F-ActT")
    unequal = [(i, j) for i, j in pairs if feats_s[i].shape != feats_t[j].shape]
    if unequal:
        listing = ", ".join(f"student group {i} {_shape(feats_s[i])} vs teacher group {j} "
                            f"{_shape(feats_t[j])}" for i, j in unequal)
        raise UserError(f"F-ActT (--method fact) needs student and teacher groups of equal width "
                        f"({listing}); use a student as wide as the teacher, or --method at")
    task = ActivationTransfer(student, frozen.teacher, pairs, args.at_beta, kd,
                              args.fact_reduction or "positions")
    return task, {"pairs": pairs}


def build_ft(args, student, frozen: Frozen, kd: KD | None):
    """Translators for the paraphrasers' groups (or the teacher's own maps with
    --no-paraphraser), each checked to produce the teacher factor's shape."""
    feats_s = probe_features(student, frozen.sample)
    feats_t = probe_features(frozen.teacher, frozen.sample)
    shapes_s = [f.shape[1:] for f in feats_s]
    n_t = len(feats_t)
    if args.no_paraphraser:
        links = [(None, g) for g in (range(n_t) if args.ft_groups == "all" else [-1])]
    else:
        links = frozen.paraphrasers
    translators, student_groups, teacher_groups, moved = [], [], [], []
    for paraphraser, group in links:
        g_t = group % n_t
        feat_t = feats_t[g_t]
        g_s = student_group_for(shapes_s, group, feat_t.shape[-2:])
        if not (-len(shapes_s) <= group < len(shapes_s) and g_s == group % len(shapes_s)):
            moved.append((group, g_s))
        feat_s = feats_s[g_s]
        with torch.no_grad():
            factor_t = feat_t if paraphraser is None else paraphraser.encode(feat_t)
        translator = None
        if not args.no_translator:
            config = paraphraser.config if paraphraser is not None else dict(layers=3, kind="conv",
                                                                               bn=bn_default(args.dataset))
            bn = config["bn"] if args.translator_bn is None else args.translator_bn
            # The translator keeps its own depth (Sec. 3.2: three layers) whatever the
            # paraphraser's: Table 4's depth ablation varies the paraphraser only.
            layers = args.translator_layers or (config["layers"] if config["kind"] == "cae" else 3)
            translator = Translator(feat_s.shape[1], factor_t.shape[1], bn=bn, layers=layers,
                                    kind=config["kind"])
        _check_factor_shapes(translator, feat_s, factor_t, feat_t, paraphraser, g_s, g_t)
        translators.append(translator)
        student_groups.append(g_s)
        teacher_groups.append(g_t)
    if moved:
        print("note: FT uses the deepest student group with the teacher map's height and width: "
              + ", ".join(f"teacher group {g} -> student group {s}" for g, s in moved), file=sys.stderr)
    paraphrasers = [p for p, _ in links]
    single = len(links) == 1
    task = FactorTransfer(student, translators[0] if single else translators, frozen.teacher,
                          paraphrasers[0] if single else paraphrasers, beta=args.beta, p=args.p,
                          group=teacher_groups[0] if single else teacher_groups,
                          student_group=student_groups[0] if single else student_groups, kd=kd,
                          reduction=args.ft_reduction)
    configs = [t.config if t is not None else None for t in translators]
    info = {"translator_config": configs[0] if single else configs,
            "groups": [[s, t] for s, t in zip(student_groups, teacher_groups)]}
    return task, info


@torch.no_grad()
def _check_factor_shapes(translator, feat_s, factor_t, feat_t, paraphraser, g_s, g_t) -> None:
    if translator is None:
        factor_s = feat_s
    else:
        translator.eval()  # a 1-image probe; BN in training mode needs a batch
        factor_s = translator(feat_s)
        translator.train()
    if factor_s.shape == factor_t.shape:
        return
    c_s, c_t = feat_s.shape[1], feat_t.shape[1]
    target = "the teacher's map" if paraphraser is None else "the teacher factor"
    where = (f"student group {g_s} ({_shape(feat_s)}) against {target} of teacher group {g_t} "
             f"({_shape(factor_t)})")
    if translator is not None:
        raise UserError(f"the translator cannot map {where}: the student's and the teacher's maps "
                        f"must have the same height and width")
    if factor_s.shape[2:] != factor_t.shape[2:]:
        raise UserError(f"--no-translator matches {where}: height and width differ; the paraphraser "
                        f"must keep them (--kind conv or rae, not cae)")
    if paraphraser is None:
        raise UserError(f"--no-paraphraser --no-translator matches {where} directly: the channels "
                        f"differ (C_s = {c_s}, C_t = {c_t}); keep the translator or the paraphraser")
    raise UserError(f"--no-translator matches {where}: kC_t = {factor_t.shape[1]} but C_s = {c_s}; "
                    f"train the paraphraser with --k {c_s / c_t:g} (k = C_s / C_t) so that they match")


def build_ktan(args, student, frozen: Frozen, kd: KD | None):
    feats_s = probe_features(student, frozen.sample)
    feat_t = probe_features(frozen.teacher, frozen.sample)[-1]
    g_s = student_group_for([f.shape[1:] for f in feats_s], -1, feat_t.shape[-2:])
    if g_s != len(feats_s) - 1:
        print(f"note: KTAN uses student group {g_s}, the deepest with the teacher map's height and "
              f"width", file=sys.stderr)
    c_s, c_t = feats_s[g_s].shape[1], feat_t.shape[1]
    t2s = TeacherToStudent(c_t, c_s)
    discriminator = FeatureDiscriminator(c_s, args.ktan_d_width)
    task = KTAN(student, frozen.teacher, t2s, discriminator, student_group=g_s, group=-1, kd=kd,
                fm=args.ktan_fm, adv=args.ktan_adv, lr_d=args.ktan_lr_d)
    return task, {"t2s_config": t2s.config, "groups": [[g_s, len(feats_s) - 1]]}


@dataclass(frozen=True)
class Method:
    """A `--method` of train_student.py: what it needs and how its task is built.

    `build(args, student, frozen, kd) -> (task, checkpoint info)`; `kd` is the KD
    configuration from --kd-T / --kd-alpha / --kd-form when `kd` is set, else None.
    """

    help: str
    build: Callable
    teacher: bool = True
    paraphraser: bool = False  # Factor Transfer's frozen paraphrasers (--paraphraser)
    kd: bool = False            # the KD loss replaces cross-entropy


METHODS: dict[str, Method] = {
    "ce": Method("the student alone (cross-entropy)", build_ce, teacher=False),
    "kd": Method("knowledge distillation, Hinton et al. (--kd-T, --kd-alpha)", build_kd, kd=True),
    "at": Method("attention transfer on every group, Zagoruyko & Komodakis (--at-beta)", build_at),
    "fact": Method("full activation transfer F-ActT on every group (equal widths) (--at-beta)", build_fact),
    "ft": Method("Factor Transfer (--beta, --p, --paraphraser)", build_ft, paraphraser=True),
    "at+kd": Method("KD's loss in place of cross-entropy, plus attention transfer", build_at, kd=True),
    "ft+kd": Method("KD's loss in place of cross-entropy, plus Factor Transfer", build_ft,
                    paraphraser=True, kd=True),
    "ktan": Method("KTAN, Liu et al.: KD + feature matching + adversarial (--ktan-*)", build_ktan, kd=True),
}
