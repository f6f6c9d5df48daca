"""Stage 3: train a student, alone or with knowledge transfer from a frozen teacher.

    python train_student.py --method ft --arch resnet20 --teacher runs/c10/teacher-resnet56-s0 \
        --paraphraser runs/c10/para-resnet56-k0.5-s0 --beta 500 --out runs/c10/ft-resnet20-s0
    python train_student.py --method ce --arch resnet20 --out runs/c10/ce-resnet20-s0
    python train_student.py --method at+kd --arch resnet20 --teacher runs/c10/teacher-resnet56-s0 \
        --out runs/c10/atkd-resnet20-s0

Methods (`utils.distill.METHODS`): ce, kd, at, fact (F-ActT), ft, at+kd, ft+kd, ktan.
Table 4's ablations are --no-paraphraser / --no-translator and paraphrasers trained
with --layers 1|2; multi-group FT is --ft-groups all with one paraphraser per group.
"""

import argparse
import json
from dataclasses import dataclass
from typing import Callable

import torch

from models import build_model
from paraphraser import bn_default
from utils.checkpoint import (check_same_data, load_classifier, load_paraphraser,
                              paraphraser_identity, teacher_identity)
from utils.cli import (PAPER_ITERS, add_data_args, add_network_args, add_run_args, add_schedule_args,
                       add_teacher_data_arg, run_main, set_up_network)
from utils.config import (DataConfig, EpochsConfig, NetworkConfig, RunConfig, ScheduleConfig, check_arch,
                          check_positive, from_values, print_config, resolve_classifier_stage, train_size_of)
from utils.distill import KD, METHODS, Frozen
from utils.distill.at import BETA_DECAYS, FACT_REDUCTIONS, ATOptions
from utils.distill.base import KD_FORMS
from utils.distill.ft import FT_REDUCTIONS, FTOptions
from utils.distill.ktan import KTANOptions
from utils.errors import UserError
from utils.train import Stage, classification_metrics, fit, load_training_data, open_run, resolve_device

FT_METHODS = tuple(name for name, m in METHODS.items() if m.paraphraser)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Factor Transfer, stage 3: train a student network, alone or with knowledge "
                    "transfer from a frozen teacher (and, for FT, its paraphraser).")
    parser.add_argument("--method", default="ft", choices=tuple(METHODS),
                        help="; ".join(f"{name}: {m.help}" for name, m in METHODS.items()) + " (default: ft)")
    parser.add_argument("--arch", default="resnet20",
                        help="student network (models.MODELS, models.VARIANTS or wrn_D_W) (default: resnet20)")
    parser.add_argument("--teacher", help="teacher run folder or checkpoint (every method but ce)")
    add_teacher_data_arg(parser)
    parser.add_argument("--paraphraser", nargs="+", metavar="RUN",
                        help="paraphraser run folder(s) or checkpoint(s) of train_paraphraser.py for "
                             "this teacher (ft, ft+kd): one for --ft-groups last, one per teacher group "
                             "for --ft-groups all")

    g = parser.add_argument_group("Factor Transfer (ft, ft+kd)")
    g.add_argument("--beta", type=float, default=500.0,
                   help="beta, weight of L_FT (paper, CIFAR: 500; ImageNet: 1000) (default: 500)")
    g.add_argument("--p", type=int, default=1, choices=(1, 2),
                   help="p of L_FT (Eq. 3; Table 7 compares 1 and 2): mean over batch and C*H*W "
                        "factor elements of |F_T/||F_T|| - F_S/||F_S|| |^p; at the same beta, p = 2 is a "
                        "far weaker term than p = 1 (measured: docs/choices.md) (default: 1)")
    g.add_argument("--ft-reduction", default="mean", choices=FT_REDUCTIONS,
                   help="how L_FT reduces |F_T/||F_T|| - F_S/||F_S|| |: mean: of the p-th powers over "
                        "batch and elements, the authors' code (beta = 500 is set against it); norm: "
                        "Eq. (3) as printed, the p-norm of each image's difference, batch-averaged "
                        "(p = 1: C*H*W times mean; docs/choices.md) (default: mean)")
    g.add_argument("--ft-groups", default="last", choices=("last", "all"),
                   help="transfer the teacher's last group (the paper's FT) or every group, with a "
                        "paraphraser (trained with train_paraphraser.py --group G) and a translator "
                        "per group, the FT losses summed (default: last)")
    g.add_argument("--no-paraphraser", action="store_true",
                   help="Table 4 ablation: the translator's output is matched to the teacher's own "
                        "feature map (translator output channels C_t); no --paraphraser needed")
    g.add_argument("--no-translator", action="store_true",
                   help="Table 4 ablation: the student's own group output is matched to the factor "
                        "(needs kC_t = C_s, i.e. a paraphraser trained with k = C_s / C_t)")
    g.add_argument("--translator-layers", type=int, default=None, choices=(1, 2, 3),
                   help="translator convolutions (Sec. 3.2: three, like the paraphraser's encoder). "
                        "Table 4's depth ablation varies the paraphraser's layers only (train_paraphraser.py "
                        "--layers); this flag varies the translator's (default: 3; for a CAE paraphraser "
                        "its own number of stride-2 layers, which the translator must match)")
    g.add_argument("--translator-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="BatchNorm in the translator (default: as the paraphraser; with "
                        "--no-paraphraser the paper's rule, on for CIFAR-10)")

    g = parser.add_argument_group("knowledge distillation (kd, at+kd, ft+kd, ktan)")
    g.add_argument("--kd-T", type=float, default=4.0, help="temperature T (default: 4)")
    g.add_argument("--kd-alpha", type=float, default=0.9,
                   help="alpha in (1-alpha) CE + alpha L_KD (default: 0.9)")
    g.add_argument("--kd-form", default=None, choices=KD_FORMS,
                   help="L_KD: at2017 = 2 T^2 KL averaged over batch and classes, the attention-transfer "
                        "authors' code that the paper follows for its baselines (2/C of hinton's value); "
                        "hinton = T^2 KL averaged over the batch (Hinton et al. 2015) (default: at2017; "
                        "hinton for ktan)")

    g = parser.add_argument_group("attention transfer (at, at+kd, fact)")
    g.add_argument("--at-beta", type=float, default=1000.0,
                   help="beta of AT / F-ActT; the term is beta * sum over groups of the mean squared "
                        "difference of the normalized maps, as the AT authors' CIFAR code adds it "
                        "(default: 1000)")
    g.add_argument("--at-beta-decay", default="none", choices=BETA_DECAYS,
                   help="none: beta constant, as the AT authors' released code; linear: beta x (1 - "
                        "iteration / iterations). Their README says their AT+KD decayed beta, on a "
                        "schedule never released; linear is one reading, not theirs (default: none)")
    g.add_argument("--fact-reduction", default=None, choices=FACT_REDUCTIONS,
                   help="F-ActT's mean per group: positions = sum over channels, mean over batch and H*W "
                        "(each group weighs as in AT at the same beta); elements = mean over batch and "
                        "C*H*W (C times weaker) (default: positions)")

    g = parser.add_argument_group("KTAN (ktan; see docs/ktan.md)")
    g.add_argument("--ktan-fm", type=float, default=1.0,
                   help="weight of the feature-matching term mean (x_s - T2S(x_t))^2 (default: 1)")
    g.add_argument("--ktan-adv", type=float, default=0.1,
                   help="weight of the adversarial term -mean log D(x_s) (default: 0.1)")
    g.add_argument("--ktan-lr-d", type=float, default=2e-4,
                   help="the discriminator's Adam learning rate, betas 0.5/0.999 (default: 2e-4)")
    g.add_argument("--ktan-d-width", type=int, default=64,
                   help="the discriminator's first conv width w (then 2w) (default: 64)")

    add_data_args(parser)
    add_schedule_args(parser, iters=PAPER_ITERS)
    add_run_args(parser)
    add_network_args(parser)
    return parser


@dataclass(kw_only=True)
class StudentConfig(DataConfig, ScheduleConfig, EpochsConfig, RunConfig, NetworkConfig):
    method: str
    arch: str
    teacher: str | None
    teacher_data_copy: bool
    paraphraser: list[str] | None
    # Factor Transfer (FTOptions)
    beta: float
    p: int
    ft_reduction: str
    ft_groups: str
    no_paraphraser: bool
    no_translator: bool
    translator_layers: int | None  # None: 3, or a CAE paraphraser's own depth
    translator_bn: bool | None     # None: as the paraphraser (without one: the paper's rule)
    # KD (utils.distill.KD)
    kd_T: float
    kd_alpha: float
    kd_form: str | None            # resolved for the methods with KD, None for the others
    # AT / F-ActT (ATOptions)
    at_beta: float
    at_beta_decay: str
    fact_reduction: str | None     # resolved for fact, None for the others
    # KTAN (KTANOptions)
    ktan_fm: float
    ktan_adv: float
    ktan_lr_d: float
    ktan_d_width: int

    def kd(self) -> KD | None:
        """The KD loss's settings, for the methods whose label loss is KD's."""
        return KD(T=self.kd_T, alpha=self.kd_alpha, form=self.kd_form) if METHODS[self.method].kd else None

    def method_options(self):
        """The options object the --method's builder takes (None for ce and kd)."""
        kind = METHODS[self.method].options
        if kind is FTOptions:
            translator_bn = self.translator_bn
            if translator_bn is None and self.no_paraphraser:
                translator_bn = bn_default(self.dataset)  # the paper's rule, as a paraphraser's
            return FTOptions(beta=self.beta, p=self.p, reduction=self.ft_reduction, groups=self.ft_groups,
                             no_paraphraser=self.no_paraphraser, no_translator=self.no_translator,
                             translator_bn=translator_bn, translator_layers=self.translator_layers)
        if kind is ATOptions:
            return ATOptions(beta=self.at_beta, beta_decay=self.at_beta_decay,
                             fact_reduction=self.fact_reduction or "positions")
        if kind is KTANOptions:
            return KTANOptions(fm=self.ktan_fm, adv=self.ktan_adv, lr_d=self.ktan_lr_d, d_width=self.ktan_d_width)
        return None


def resolve(args: argparse.Namespace, train_images: Callable[[], int] | None = None) -> StudentConfig:
    """The command line's settings: --recipe, epochs -> iterations, default milestones,
    --kd-form / --fact-reduction by --method, and the checks of every combination.
    `train_images`: the training-set size, asked for a schedule in epochs."""
    v = dict(vars(args))
    resolve_classifier_stage(v, train_images or train_size_of(args))
    check_positive(v, "beta", "at_beta", "kd_T", "ktan_lr_d", "ktan_d_width")
    method = METHODS[v["method"]]
    if v["kd_form"] is None and method.kd:
        v["kd_form"] = "hinton" if v["method"] == "ktan" else "at2017"
    if v["fact_reduction"] is None and v["method"] == "fact":
        v["fact_reduction"] = "positions"
    if not 0 <= v["kd_alpha"] <= 1:
        raise UserError(f"--kd-alpha must lie in [0, 1], got {v['kd_alpha']}")
    for name in ("ktan_fm", "ktan_adv"):
        if v[name] < 0:
            raise UserError(f"--{name.replace('_', '-')} must not be negative, got {v[name]}")
    check_arch(v["arch"])
    if method.teacher and not v["teacher"]:
        raise UserError(f"--method {v['method']} needs --teacher RUN_DIR (train_teacher.py)")
    if not method.paraphraser:
        used = [flag for flag, on in (("--paraphraser", v["paraphraser"]), ("--no-paraphraser", v["no_paraphraser"]),
                                      ("--no-translator", v["no_translator"]),
                                      ("--ft-groups all", v["ft_groups"] == "all"),
                                      ("--ft-reduction norm", v["ft_reduction"] != "mean")) if on]
        if used:
            raise UserError(f"{used[0]} applies to Factor Transfer only (--method {' or '.join(FT_METHODS)}), "
                            f"not --method {v['method']}")
    elif v["no_paraphraser"] and v["paraphraser"]:
        raise UserError("--no-paraphraser matches the teacher's own feature map; drop --paraphraser")
    elif not v["no_paraphraser"] and not v["paraphraser"]:
        raise UserError(f"--method {v['method']} needs --paraphraser RUN_DIR (train_paraphraser.py), "
                        f"or --no-paraphraser")
    return from_values(StudentConfig, v)


def load_paraphrasers(args: StudentConfig, teacher, teacher_fingerprint: str) -> list:
    """The paraphrasers of --paraphraser as (module, group, identity), checked to belong to this
    teacher (by the fingerprint of its weights) and data, and to cover the groups --ft-groups
    asks for, sorted by group."""
    n_t = len(teacher.feature_info)
    loaded = []
    for path in args.paraphraser:
        paraphraser, ckpt = load_paraphraser(path)
        check_same_data(ckpt, "paraphraser", args.dataset, args.teacher_data_copy)
        if ckpt["teacher"]["fingerprint"] != teacher_fingerprint:
            raise UserError(f"--paraphraser {path} was trained on another teacher "
                            f"({ckpt['teacher']['arch']}, weights differ from --teacher "
                            f"{args.teacher}); train a paraphraser for this teacher")
        if not -n_t <= ckpt["group"] < n_t:
            raise UserError(f"--paraphraser {path} paraphrases group {ckpt['group']}, which this "
                            f"teacher ({n_t} groups) does not have")
        loaded.append((path, paraphraser, ckpt["group"], paraphraser_identity(paraphraser, ckpt)))
    groups = [group % n_t for _, _, group, _ in loaded]
    if args.ft_groups == "last":
        if len(loaded) != 1:
            raise UserError(f"--ft-groups last takes one --paraphraser (the last group's), got "
                            f"{len(loaded)}; pass --ft-groups all for one per group")
        if groups[0] != n_t - 1:
            raise UserError(f"--paraphraser {loaded[0][0]} paraphrases teacher group {loaded[0][2]}, "
                            f"not the last; train one with --group -1, or pass --ft-groups all")
    elif sorted(groups) != list(range(n_t)):
        raise UserError(f"--ft-groups all needs one --paraphraser per teacher group 0..{n_t - 1}; "
                        f"the ones given paraphrase groups {sorted(groups)} (train the others with "
                        f"train_paraphraser.py --group G)")
    return [(paraphraser, group, identity)
            for _, paraphraser, group, identity in sorted(loaded, key=lambda e: e[2] % n_t)]


def main(args: argparse.Namespace) -> None:
    config = resolve(args)
    method = METHODS[config.method]
    teacher, teacher_id, paraphrasers = None, None, []
    if method.teacher:
        teacher, teacher_ckpt = load_classifier(config.teacher)
        check_same_data(teacher_ckpt, "teacher", config.dataset, config.teacher_data_copy)
        teacher_id = teacher_identity(teacher, teacher_ckpt)
    if method.paraphraser and not config.no_paraphraser:
        paraphrasers = load_paraphrasers(config, teacher, teacher_id["fingerprint"])
    device = resolve_device(config.device)

    # ---------------------------------------------------------------- run folder
    run = open_run(config)
    if run is None:
        return

    # ---------------------------------------------------------------- data
    data = load_training_data(config, device)
    if teacher is not None and teacher.num_classes != data.num_classes:
        raise UserError(f"--teacher has {teacher.num_classes} classes, the data {data.num_classes}; "
                        f"pass a teacher trained on this dataset")

    # ---------------------------------------------------------------- networks and loss
    torch.manual_seed(config.seed)
    student = set_up_network(build_model(config.arch, data.num_classes), config.wrn_init, config.bn_images)
    frozen = Frozen(teacher, [(p, group) for p, group, _ in paraphrasers], data.image_size)
    task, method_info = method.build(config.method_options(), student, frozen, config.kd())
    for module in task.trainable().values():  # the translators too: every trained BatchNorm
        set_up_network(module, bn_images=config.bn_images)
    task.to(device)
    info = {"arch": config.arch, "num_classes": data.num_classes, "dataset": config.dataset,
            "method": config.method, **method_info}
    if teacher is not None:
        info["teacher"] = {"arch": teacher_id["arch"], "fingerprint": teacher_id["fingerprint"]}

    # ---------------------------------------------------------------- train
    stage = Stage(
        kind="student", task=task, trainable=task.trainable(), primary="test_error", info=info,
        evaluate=lambda: classification_metrics(student, data, config.eval_batch_size, config.amp),
        identity={"stage": "student", "method": config.method, "arch": config.arch, "dataset": config.dataset,
                  "recipe": config.recipe, "iters": config.iters, "seed": config.seed,
                  "teacher": teacher_id,
                  "paraphrasers": [identity for _, _, identity in paraphrasers]},
    )
    print_config(config)
    result = fit(stage, data, run, config)
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    run_main(main, get_args_parser())
