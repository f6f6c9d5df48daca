"""How strongly the RAE's L1 penalty shapes the factor, per lambda (train_paraphraser.py --rae-lambda).

    python scripts/rae_lambda.py --teacher runs/c10/teacher-resnet56-s0 \
        --dataset folder --data-root ../shared/data/cifar10-jpeg.tar.gz

trains one k = 2 paraphraser per lambda with train_paraphraser.py's objective
(`ParaphraserTraining`: mean |x - P(x)| + lambda * mean |F_T|) and optimizer (SGD, lr 0.1,
momentum 0.9, weight decay 5e-4, batch 128, constant lr, BN by the dataset's rule), every
lambda from the same initialization on the same batches.  To fit a CPU, the teacher's
last-group maps of `--train-subset` unaugmented training images are computed once and
reused (the teacher forward is about half of a paraphraser step); 10% of them are held
out, as train_paraphraser.py's `--holdout`.  Then it encodes the held-out maps and prints
a markdown table, one row per lambda:

    recon      holdout reconstruction loss, mean |x - P(x)|
    mean|F|    mean |F_T| over images, channels and positions (what lambda multiplies)
    pen/recon  lambda * mean|F| / recon on the holdout: the penalty's share of the loss
    F<1e-3     fraction of factor entries with |F| < 1e-3 (absolute: it also grows when the
               factor is only scaled down)
    F<1%rms    fraction with |F| below 1% of its image's RMS sqrt(mean F^2) (scale-free)
    neg        fraction of entries below 0, i.e. on LeakyReLU's 0.1-slope side
    hoyer      Hoyer's sparsity (sqrt(n) - L1/L2) / (sqrt(n) - 1) per image, averaged: 0 for
               entries of equal magnitude, 1 for a single nonzero entry; scale-free
    cos0       mean cosine between each image's factor and its factor at the first
               --lambdas value (0 by default; FT L2-normalizes factors per image: it sees
               the direction, not the scale)

A factor after BN and LeakyReLU(0.1) is never exactly 0, so sparsity is read from the
scale-free columns (hoyer, neg); mean|F| and F<1e-3 also move when the factor only
shrinks, which the decoder's BN undoes at no cost to the reconstruction.
About 100 s per lambda on one CPU thread at the defaults (200 steps, 4,950 + 550 images;
OMP_NUM_THREADS=1), 8-9 minutes for the default five lambdas; pass fewer --lambdas for less.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import repo_path  # noqa: F401  (the repository's packages, for a script run as a file)
from models.features import default_tap, forward_tap
from paraphraser import Paraphraser, bn_default
from train_paraphraser import RAE_K, split_holdout
from utils.checkpoint import load_classifier
from utils.data import load_data
from utils.distill.paraphrase import ParaphraserTraining, reconstruction_loss

DEFAULT_LAMBDAS = (0.0, 1e-4, 0.03, 0.1, 1.0)  # 0.1, 0.03: the defaults with / without BN


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="teacher run folder or checkpoint file")
    p.add_argument("--dataset", default="cifar10", help="as train_paraphraser.py (default: cifar10)")
    p.add_argument("--data-root", default="./data", help="as train_paraphraser.py (default: ./data)")
    p.add_argument("--lambdas", type=float, nargs="+", default=list(DEFAULT_LAMBDAS),
                   help="lambda values; 0 = the plain k = 2 paraphraser "
                        f"(default: {' '.join(f'{v:g}' for v in DEFAULT_LAMBDAS)})")
    p.add_argument("--iters", type=int, default=200, help="SGD steps per lambda (default: 200)")
    p.add_argument("--train-subset", type=int, default=5500,
                   help="class-balanced training images; 10%% of them are held out (default: 5500)")
    p.add_argument("--bn", action=argparse.BooleanOptionalAction, default=None,
                   help="BatchNorm in the paraphraser (default: train_paraphraser.py's rule)")
    p.add_argument("--seed", type=int, default=0, help="initialization and batch order (default: 0)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of markdown")
    return p


class _Cached(nn.Module):
    """Stands in for the teacher: its input already is the last-group map."""

    def forward(self, x):
        return None, [x]


@torch.no_grad()
def teacher_maps(teacher: nn.Module, data, x_uint8: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """The teacher's last-group map as the paraphraser stage takes it (its default tap)."""
    tap = default_tap(teacher)
    return torch.cat([forward_tap(teacher, data.normalize(x_uint8[i:i + batch]), tap)[1][-1]
                      for i in range(0, len(x_uint8), batch)])


def train(feats: torch.Tensor, lam: float, bn: bool, iters: int, seed: int) -> Paraphraser:
    """train_paraphraser.py's step on cached maps: same loss, optimizer, batch size, lr."""
    torch.manual_seed(seed)
    paraphraser = Paraphraser(feats.shape[1], k=RAE_K, bn=bn)
    task = ParaphraserTraining(_Cached(), paraphraser, "l1", -1, factor_l1=lam)
    optimizer = torch.optim.SGD(paraphraser.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    order = torch.Generator().manual_seed(seed)
    perm, pos, batch = torch.randperm(len(feats), generator=order), 0, 128
    paraphraser.train()
    for _ in range(iters):
        if pos + batch > len(perm):
            perm, pos = torch.randperm(len(feats), generator=order), 0
        _, losses = task(feats[perm[pos:pos + batch]], None)
        pos += batch
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
    return paraphraser.eval()


@torch.no_grad()
def factor_stats(factor: torch.Tensor) -> dict:
    flat = factor.flatten(1).double()
    n = flat.shape[1]
    rms = flat.pow(2).mean(1, keepdim=True).sqrt()
    l1, l2 = flat.abs().sum(1), flat.norm(dim=1)
    hoyer = (math.sqrt(n) - l1 / l2.clamp_min(1e-30)) / (math.sqrt(n) - 1)
    return {"mean_abs": flat.abs().mean().item(),
            "frac_abs_1e-3": (flat.abs() < 1e-3).double().mean().item(),
            "frac_rel_1pct": (flat.abs() < 0.01 * rms).double().mean().item(),
            "frac_negative": (flat < 0).double().mean().item(),
            "hoyer": hoyer.mean().item()}


def measure(args) -> list[dict]:
    teacher, _ = load_classifier(args.teacher)
    data = load_data(args.dataset, args.data_root, None, args.train_subset, 10)
    holdout_x = split_holdout(data, 0.1)  # train_paraphraser.py's holdout rule
    train_feats, holdout_feats = teacher_maps(teacher, data, data.train_x), teacher_maps(teacher, data, holdout_x)
    bn = bn_default(args.dataset) if args.bn is None else args.bn
    rows, base = [], None
    for lam in args.lambdas:
        start = time.time()
        paraphraser = train(train_feats, lam, bn, args.iters, args.seed)
        with torch.no_grad():
            factor = paraphraser.encode(holdout_feats)
            recon = reconstruction_loss(paraphraser.decode(factor), holdout_feats).item()
        base = factor if base is None else base
        stats = factor_stats(factor)
        rows.append({"lambda": lam, "recon_holdout": recon, **stats,
                     "penalty_over_recon": lam * stats["mean_abs"] / recon,
                     "cos_to_first": F.cosine_similarity(factor.flatten(1), base.flatten(1), dim=1).mean().item(),
                     "wall_s": round(time.time() - start, 1)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| lambda | recon (holdout) | mean\\|F\\| | pen/recon | F<1e-3 | F<1%rms | neg | hoyer | cos0 |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['lambda']:g} | {r['recon_holdout']:.4f} | {r['mean_abs']:.4f} | "
                     f"{r['penalty_over_recon']:.2%} | {r['frac_abs_1e-3']:.1%} | {r['frac_rel_1pct']:.1%} | "
                     f"{r['frac_negative']:.1%} | {r['hoyer']:.3f} | {r['cos_to_first']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = measure(args)
    print(json.dumps(rows, indent=2) if args.json else markdown(rows))


if __name__ == "__main__":
    main()
