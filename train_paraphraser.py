"""Stage 2: train the paraphraser on the frozen teacher's feature map (paper Sec. 3.1).

    python train_paraphraser.py --teacher runs/c10/teacher-resnet56-s0 --k 0.5 \
        --out runs/c10/para-resnet56-k0.5-s0
"""

import argparse
import json
from dataclasses import dataclass
from typing import Callable

import torch

from models.features import group_channels, group_shapes
from paraphraser import KINDS, Paraphraser, bn_default
from utils import distributed
from utils.checkpoint import check_same_data, load_classifier, teacher_identity
from utils.cli import add_data_args, add_run_args, add_schedule_args, add_teacher_data_arg, run_main
from utils.config import (DataConfig, RunConfig, ScheduleConfig, apply_recipe, check_positive, check_schedule,
                          from_values, print_config, train_size_of)
from utils.data import balanced_subset
from utils.distill.paraphrase import RECON_LOSSES, ParaphraserTraining, reconstruction_loss
from utils.errors import UserError
from utils.train import Stage, fit, load_training_data, open_run, resolve_device


DEFAULT_K = 0.5
RAE_K = 2.0
# --rae-lambda by --bn (scripts/rae_lambda.py, docs/choices.md).
RAE_LAMBDA = {True: 0.1, False: 0.03}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Factor Transfer, stage 2: train a paraphraser (autoencoder) on the frozen "
                    "teacher's last-group feature map; its encoder output is the teacher factor.")
    parser.add_argument("--teacher", required=True, help="teacher run folder or checkpoint file")
    add_teacher_data_arg(parser)
    parser.add_argument("--k", type=float, default=None,
                        help="paraphrase rate k: factor channels = round(k * C_teacher) (default: 0.5; "
                             "2 with --kind rae, which accepts no other k)")
    parser.add_argument("--kind", default="conv", choices=KINDS,
                        help="conv: the paper's paraphraser; cae: stride-2 convolutional autoencoder; "
                             "rae: conv with k=2 and an L1 penalty on the factor (default: conv)")
    parser.add_argument("--layers", type=int, default=3, choices=(1, 2, 3),
                        help="encoder layers (Table 4's ablation) (default: 3)")
    parser.add_argument("--group", type=int, default=-1,
                        help="teacher group whose output is paraphrased; -1 = last (default: -1)")
    parser.add_argument("--bn", action=argparse.BooleanOptionalAction, default=None,
                        help="BatchNorm after every layer (default: the paper's rule, on for CIFAR-10 "
                             "and the folder dataset, off for CIFAR-100; the authors' released "
                             "CIFAR-10 paraphraser has none: --no-bn)")
    parser.add_argument("--recon-loss", default="l1", choices=RECON_LOSSES,
                        help="reconstruction loss: l1 = mean |x-P(x)| (authors' code); l2 = mean (x-P(x))^2; "
                             "unit-l2 = per sample ||x/||x|| - P(x)/||P(x)|| ||^2, batch mean (MMRazor's "
                             "L2Loss) (default: l1)")
    parser.add_argument("--rae-lambda", type=float, default=None,
                        help="RAE only: weight lambda of the penalty lambda * mean|F_T| (the paper gives "
                             "none) (default: 0.1 with BN, 0.03 without; measurements: docs/choices.md)")
    parser.add_argument("--epochs", type=float, default=30,
                        help="training epochs, used when --iters is not given (paper: at most 30; the "
                             "authors' script: 6 passes, range(0, 5+1)) (default: 30)")
    parser.add_argument("--holdout", type=float, default=0.1,
                        help="fraction of training images held out of paraphraser training to report "
                             "its reconstruction loss on unseen images (default: 0.1)")
    add_data_args(parser)
    add_schedule_args(parser, iters=None, milestone_fractions=(), epochs=False)
    add_run_args(parser, eval_every=500)
    return parser


@dataclass(kw_only=True)
class ParaphraserConfig(DataConfig, ScheduleConfig, RunConfig):
    teacher: str
    teacher_data_copy: bool
    k: float
    kind: str
    layers: int
    group: int
    bn: bool
    recon_loss: str
    rae_lambda: float | None  # --kind rae only; None for the others
    epochs: float
    holdout: float


def resolve(args: argparse.Namespace, train_images: Callable[[], int] | None = None) -> ParaphraserConfig:
    """The command line's settings: k and the RAE's lambda by --kind, BN by the dataset
    (the paper's rule), the recipe's padding and normalization, --iters from --epochs
    (of the training images left after --holdout), and the checks.  `train_images`: the
    training-set size, asked when --iters is not given."""
    v = dict(vars(args))
    if v["kind"] == "rae":  # the RAE is the paraphraser with k = 2 (Table 1)
        if v["k"] is not None and v["k"] != RAE_K:
            raise UserError(f"--kind rae is the paraphraser with k = 2 (Table 1's RAE); got --k {v['k']:g}: "
                            f"drop --k or use --kind conv --k {v['k']:g}")
        v["k"] = RAE_K
    elif v["k"] is None:
        v["k"] = DEFAULT_K
    check_positive(v, "k", "epochs")
    if not 0 <= v["holdout"] < 1:
        raise UserError(f"--holdout must be in [0, 1), got {v['holdout']}")
    if v["bn"] is None:
        v["bn"] = bn_default(v["dataset"])
    if v["kind"] != "rae":  # no penalty: none recorded (older records' placeholder: utils/record.py)
        v["rae_lambda"] = None
    elif v["rae_lambda"] is None:
        v["rae_lambda"] = RAE_LAMBDA[v["bn"]]
    if v["kind"] == "rae" and v["rae_lambda"] <= 0:
        raise UserError("--rae-lambda must be positive for --kind rae")
    apply_recipe(v, schedule=False)
    if v["dataset"] == "imagenet" and v["holdout"]:
        raise UserError("--holdout is for the CIFAR tensor pipeline; with --dataset imagenet pass "
                        "--holdout 0 (the reconstruction loss is reported on val/)")
    if v["iters"] is None:
        check_positive(v, "batch_size")
        n = (train_images or train_size_of(args))()
        held = max(1, int(n * v["holdout"])) if v["holdout"] > 0 else 0  # split_holdout's share
        v["iters"] = max(1, round(v["epochs"] * ((n - held) // v["batch_size"])))
    check_schedule(v)
    return from_values(ParaphraserConfig, v)


def main(args: argparse.Namespace) -> None:
    config = resolve(args)
    teacher, teacher_ckpt = load_classifier(config.teacher)
    check_same_data(teacher_ckpt, "teacher", config.dataset, config.teacher_data_copy)
    teacher_id = teacher_identity(teacher, teacher_ckpt)
    n_groups = len(teacher.feature_info)
    if not -n_groups <= config.group < n_groups:
        raise UserError(f"--group {config.group}: the teacher ({teacher_ckpt['arch']}) has groups "
                        f"0..{n_groups - 1} (or -1 for the last)")
    device = resolve_device(config.device)

    # ---------------------------------------------------------------- data
    data = load_training_data(config, device)
    holdout_x = None if config.dataset == "imagenet" else split_holdout(data, config.holdout)
    if config.kind == "cae":
        size = group_shapes(teacher, data.image_size)[config.group][-2:]
        if any(d % 2 ** config.layers for d in size):
            raise UserError(f"--kind cae halves height and width {config.layers} time(s), so the "
                            f"teacher's group-{config.group} map ({size[0]}x{size[1]}) must be divisible "
                            f"by {2 ** config.layers}; use fewer --layers or --kind conv")

    # ---------------------------------------------------------------- run folder
    run = open_run(config)
    if run is None:
        return

    # ---------------------------------------------------------------- networks
    torch.manual_seed(config.seed)
    channels = group_channels(teacher)[config.group]
    paraphraser = Paraphraser(channels, k=config.k, bn=config.bn, layers=config.layers,
                              kind="cae" if config.kind == "cae" else "conv").to(device)
    task = ParaphraserTraining(teacher.to(device), paraphraser, config.recon_loss, config.group,
                               factor_l1=config.rae_lambda if config.kind == "rae" else 0.0)

    @torch.inference_mode()
    def evaluate() -> dict:
        """Mean reconstruction loss on held-out training images and on the test set."""
        paraphraser.eval()
        metrics = {}
        held = [data.normalize(holdout_x[i:i + config.eval_batch_size])
                for i in range(0, len(holdout_x), config.eval_batch_size)] if holdout_x is not None else []
        test = (x for x, _ in data.val_batches(config.eval_batch_size))
        for name, batches in (("holdout", held), ("test", test)):
            sums = torch.zeros(2, dtype=torch.float64, device=device)
            for x in batches:
                feat = task.teacher_features(x)
                sums[0] += reconstruction_loss(paraphraser(feat), feat, config.recon_loss).double() * len(feat)
                sums[1] += len(feat)
            if name == "test":
                distributed.all_reduce_sum(sums)
            if sums[1]:
                metrics[f"recon_{name}"] = (sums[0] / sums[1]).item()
        return metrics

    stage = Stage(
        kind="paraphraser", task=task, trainable=task.trainable(), evaluate=evaluate,
        primary="recon_holdout" if holdout_x is not None and len(holdout_x) else "recon_test",
        info={"paraphraser_config": paraphraser.config, "paraphraser_kind": config.kind,
              "group": config.group, "dataset": config.dataset, "num_classes": data.num_classes,
              "teacher": {"arch": teacher_id["arch"], "fingerprint": teacher_id["fingerprint"],
                          "group_channels": group_channels(teacher)}},
        identity={"stage": "paraphraser", "dataset": config.dataset, "recipe": config.recipe,
                  "iters": config.iters, "seed": config.seed,
                  **{k: paraphraser.config[k] for k in ("kind", "k", "layers", "bn")},
                  "group": config.group, "teacher": teacher_id},
    )
    print_config(config)
    result = fit(stage, data, run, config)
    print(json.dumps(result, indent=2, sort_keys=True))


def split_holdout(data, fraction: float):
    """Hold a class-balanced `fraction` of the training images out of paraphraser training
    (max(1, int(n * fraction)) of them, as `resolve` counts); return them (uint8)."""
    device = data.train_x.device
    n = len(data.train_y)
    held = balanced_subset(data.train_y.cpu(), max(1, int(n * fraction)), data.num_classes, seed=1) \
        if fraction > 0 else torch.zeros(0, dtype=torch.long)
    keep = torch.ones(n, dtype=torch.bool)
    keep[held] = False
    holdout_x = data.train_x[held.to(device)]
    data.train_x, data.train_y = data.train_x[keep.to(device)], data.train_y[keep.to(device)]
    return holdout_x


if __name__ == "__main__":
    run_main(main, get_args_parser())
