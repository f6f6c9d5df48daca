"""Our step, as `fit` runs it, for scripts/benchmark.py: the task of each stage, the fast
paths on by default on a device, and the search for (b)'s fastest flags."""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import statistics
import time

import torch

from bench.measure import native_bf16, timed
from bench.reference import BETA, LR, MOMENTUM, WD
from utils import perf
from utils.data import BatchSampler, train_batch
from utils.distill.base import Classification, Task
from utils.distill.ft import FactorTransfer, Link
from utils.distill.paraphrase import ParaphraserTraining
from utils.progress import add_to_window
from utils.train import make_step


def build_task(stage: str, nets: dict) -> Task:
    """The task `fit` would train for this stage, on copies of `nets`."""
    n = {k: copy.deepcopy(v) for k, v in nets.items()}
    if stage == "teacher":
        return Classification(n["teacher"])
    if stage == "ce":
        return Classification(n["student"])
    if stage == "paraphraser":
        return ParaphraserTraining(n["teacher"], n["paraphraser"])
    return FactorTransfer(n["student"], n["teacher"], Link(n["translator"], n["paraphraser"]), beta=BETA)


def default_flags(stage: str, device: torch.device) -> frozenset:
    """The fast paths `fit` turns on by default on this device (utils.perf.fast_paths);
    fold_bn only where the stage has frozen networks."""
    on = perf.fast_paths(argparse.Namespace(channels_last=None, fold_bn=None), device)
    return frozenset(k for k, v in on.items() if v and (k != "fold_bn" or stage in ("paraphraser", "student")))


class Ours:
    """`fit`'s step: train_batch + make_step, and its per-step on-device loss window."""

    def __init__(self, stage, nets, data, device, flags: frozenset, args):
        self.flags = flags
        self.label = "+".join(sorted(flags)) or "fp32 NCHW"
        self.channels_last = "channels_last" in flags
        self.data, self.seed, self.device = data, args.seed, device
        self.task = build_task(stage, nets).to(device)
        params = [p for m in self.task.trainable().values() for p in m.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WD)
        self.sampler = BatchSampler(len(data.train_y), args.batch_size, args.seed, device)
        perf.prepare_task(self.task, device, "fold_bn" in flags, self.channels_last)
        self.step = make_step(self.task, self.optimizer, device, "bf16" if "bf16" in flags else "none",
                              "compile" in flags, graph="cuda_graph" in flags)
        if "cuda_graph" in flags:
            self.step = perf.GraphedStep(self.step, self.task.trainable(), self.optimizer, device)
        self.task.train()
        self.iteration = 0
        self.window = None

    def pids(self) -> list[int]:
        return [os.getpid()]

    def run(self, steps: int) -> int:
        for _ in range(steps):
            x, y = train_batch(self.data, self.sampler, self.iteration, self.seed)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits, losses, total = self.step(x, y)
            self.window = add_to_window(self.window, losses, logits, y, total)
            self.iteration += 1
        return steps * len(y)


def parse_flags(text: str) -> frozenset:
    allowed = {"channels_last", "bf16", "compile", "fold_bn", "cuda_graph"}
    flags = frozenset(f.strip() for f in text.split(",") if f.strip())
    if flags - allowed:
        raise SystemExit(f"benchmark.py: unknown flag(s) {sorted(flags - allowed)}; use {sorted(allowed)}")
    return flags


def candidates(args, stage: str, device: torch.device) -> list[frozenset]:
    """(b)'s first-round candidates: every combination of channels_last, bf16 (where the
    device has native bf16 units), fold_bn (a stage with frozen networks) and cuda_graph
    (on CUDA)."""
    if args.candidates is not None:
        return [parse_flags(c) for c in args.candidates.split(";")]
    names = ["channels_last"] + (["bf16"] if native_bf16(device) else []) \
        + (["fold_bn"] if stage in ("paraphraser", "student") else []) \
        + (["cuda_graph"] if device.type == "cuda" else [])
    return [frozenset(c) for r in range(1, len(names) + 1) for c in itertools.combinations(names, r)]


def race(variants: dict, args, device) -> dict[str, float]:
    """Median images/s of each variant over `args.trials` rounds of one window each, the
    variants taking turns so that a slow spell of a shared machine hits all of them."""
    rates = {k: [] for k in variants}
    for _ in range(args.trials):
        for name, variant in variants.items():
            rates[name].append(timed(variant, args.window_steps, device, args)[0])
    return {k: statistics.median(v) for k, v in rates.items()}


def search_fast(stage, nets, data, device, args, default, log) -> tuple["Ours", dict]:
    """(b)'s flags, fastest on this device: the channels_last / bf16 combinations race the
    default; then (unless --quick) the winner with --compile races the winner without."""
    def warm(flags):
        start = time.perf_counter()
        variant = Ours(stage, nets, data, device, flags, args)
        variant.run(args.warmup)
        log(f"  {variant.label:28s} built and warmed up in {time.perf_counter() - start:.1f} s")
        return variant

    pool = {"default": default, **{",".join(sorted(f)): warm(f) for f in candidates(args, stage, device)
                                   if f != default.flags}}
    trials = race(pool, args, device)
    best = max(trials, key=trials.get)
    if not args.quick and args.candidates is None and not {"compile", "cuda_graph"} & pool[best].flags:
        compiled = pool[best].flags | {"compile"}  # the winner's flags, compiled
        final = {best: pool[best], ",".join(sorted(compiled)): warm(compiled)}
        rematch = race(final, args, device)
        trials.update({f"{k} (rematch)": v for k, v in rematch.items()})
        best = max(rematch, key=rematch.get)
        pool.update(final)
    for name, rate in trials.items():
        log(f"  try {name:40s} {rate:8.1f} img/s")
    return pool[best], trials
