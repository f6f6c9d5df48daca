"""Training throughput of each stage: this code against the authors' way of running it.

    python scripts/benchmark.py                  # table; about 10 minutes on a 2-core CPU
    python scripts/benchmark.py --quick --json   # under 2 minutes on a 2-core CPU

One SGD step at batch 128 with augmentation, per stage:
  teacher      ResNet-56, cross-entropy
  paraphraser  frozen ResNet-56 teacher + paraphraser (k = 0.5), reconstruction loss
  student      frozen ResNet-56 teacher + paraphraser, ResNet-20 student + translator (FT)
  ce           ResNet-20 alone (not in the default set; for wall-time estimates)

Three ways of running the same networks with the same weights:
  (a) default   what `fit` runs with default flags: `train_batch` + `make_step` on the
                tasks of utils/methods.py
  (b) fast      the same with the fastest combination of --channels-last / --amp bf16 /
                --compile found on this device (searched per stage, or given by --fast)
  (c) reference the authors' pipeline: a DataLoader with worker processes over PIL images
                (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize),
                teacher and paraphraser run with autograd on (outputs detached), fp32 NCHW,
                the translator with its own SGD optimizer, `loss.item()` every step.

The variants take turns window by window (a, b, c, a, b, c, ...), so a slow spell on a
shared machine hits all of them; each figure is the median images/s over the windows.
`--try-*` flags monkeypatch proposed changes to utils/methods.py / utils/train.py into
(a) and (b) to measure them before they are made (docs/performance.md).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import build_model  # noqa: E402
from paraphraser import Paraphraser  # noqa: E402
from translator import Translator  # noqa: E402
from utils import methods  # noqa: E402
from utils.data import NORM_STATS, BatchSampler, ImageData, load_data, train_batch  # noqa: E402
from utils.train import make_step, resolve_device  # noqa: E402

STAGES = ("teacher", "paraphraser", "student", "ce")
DEFAULT_STAGES = ("teacher", "paraphraser", "student")
TEACHER, STUDENT, K = "resnet56", "resnet20", 0.5
LR, MOMENTUM, WD, BETA = 0.1, 0.9, 5e-4, 500.0


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", default=list(DEFAULT_STAGES), choices=STAGES,
                        help=f"stages to time (default: {' '.join(DEFAULT_STAGES)})")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: cuda when available (default: auto)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128)")
    parser.add_argument("--windows", type=int, default=7,
                        help="timed windows per variant; the median is reported (default: 7)")
    parser.add_argument("--window-steps", type=int, default=None,
                        help="steps per window (default: 4 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first (default: 3)")
    parser.add_argument("--fast", default="auto",
                        help="flags of (b): 'auto' searches the candidates on this device, or a "
                             "comma list of channels_last, bf16, compile ('' for none) (default: auto)")
    parser.add_argument("--candidates", default=None,
                        help="flag sets (b) searches, ';'-separated comma lists (default: every "
                             "combination of channels_last, bf16, compile; --quick: without compile)")
    parser.add_argument("--num-workers", type=int, default=2,
                        help="DataLoader workers of the reference pipeline (default: 2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own, one per core)")
    parser.add_argument("--data-root", default=None,
                        help="time on a real image folder / .tar.gz (utils.data 'folder') instead "
                             "of random uint8 images")
    parser.add_argument("--synthetic-size", type=int, default=50_000,
                        help="random images in the synthetic set (default: 50,000, CIFAR's train set)")
    parser.add_argument("--quick", action="store_true",
                        help="few short windows, small warm-up, no compile in the search")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and data (default: 0)")
    g = parser.add_argument_group("proposed changes, monkeypatched into (a) and (b) only")
    g.add_argument("--try-inference-mode", action="store_true",
                   help="frozen teacher / paraphraser forward under torch.inference_mode()")
    g.add_argument("--try-channels-last-default", action="store_true",
                   help="(a) uses channels-last on the CPU, as a default of --channels-last auto would")
    g.add_argument("--try-freeze", action="store_true",
                   help="frozen teacher / paraphraser traced and frozen for inference on the CPU "
                        "(BatchNorm folded, weights prepacked: torch.jit.freeze)")
    return parser


# ============================================================================ data

def synthetic_data(n: int, seed: int) -> ImageData:
    """Random uint8 images and labels with CIFAR-10's shape and normalization."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=gen)
    mean, std = NORM_STATS["cifar10"]
    return ImageData("synthetic", x, y, x[:0], y[:0], 10,
                     torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1))


class PILImages(torch.utils.data.Dataset):
    """The training set as PIL images in memory, as torchvision's CIFAR10 dataset holds it."""

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, transform):
        from PIL import Image

        pixels = x_uint8.permute(0, 2, 3, 1).contiguous().numpy()
        self.images = [Image.fromarray(p) for p in pixels]
        self.labels = y.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def reference_transform(mean, std):
    """The authors' CIFAR training transform."""
    import torchvision.transforms as T

    return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(mean, std)])


# ============================================================================ networks

def build_networks(stage: str, seed: int) -> dict[str, nn.Module]:
    """Freshly initialized networks of a stage (the same weights for every variant).

    Frozen parts get non-trivial BatchNorm statistics so that folding them is not a no-op.
    """
    torch.manual_seed(seed)
    nets = {}
    if stage in ("teacher", "paraphraser", "student"):
        nets["teacher"] = build_model(TEACHER, 10)
    if stage in ("paraphraser", "student"):
        nets["paraphraser"] = Paraphraser(64, K)
    if stage == "student":
        nets["student"] = build_model(STUDENT, 10)
        nets["translator"] = Translator(64, nets["paraphraser"].factor_channels)
    if stage == "ce":
        nets["student"] = build_model(STUDENT, 10)
    if stage != "teacher":
        for name in ("teacher", "paraphraser"):
            for m in nets.get(name, nn.Module()).modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
    return nets


def build_task(stage: str, nets: dict[str, nn.Module]) -> methods.Task:
    """The task `fit` would train for this stage, on copies of `nets`."""
    n = {k: copy.deepcopy(v) for k, v in nets.items()}
    if stage == "teacher":
        return methods.Classification(n["teacher"])
    if stage == "ce":
        return methods.Classification(n["student"])
    if stage == "paraphraser":
        return methods.ParaphraserTraining(n["teacher"], n["paraphraser"])
    return methods.FactorTransfer(n["student"], n["translator"], n["teacher"], n["paraphraser"], beta=BETA)


# ============================================================================ proposals

def apply_proposals(inference_mode: bool) -> None:
    """Monkeypatch the proposed utils/methods.py change (docs/performance.md) for this process;
    the reference pipeline does not use these classes."""
    if not inference_mode:
        return

    def teacher_features(self, x):
        # An inference tensor cannot be saved for backward: the paraphraser's first conv
        # saves its input, so it gets a normal tensor (one copy of 128x64x8x8).
        with torch.inference_mode():
            feat = self.teacher(x)[1][self.group]
        return feat.clone()

    def ft_forward(self, x, y):
        logits, feats = self.student(x)
        with torch.inference_mode():
            factor_t = self.paraphraser.encode(self.teacher(x)[1][self.group])
        factor_s = self.translator(feats[self.group])
        return logits, {"ce": F.cross_entropy(logits, y),
                        "ft": self.beta * methods.factor_transfer_loss(factor_s, factor_t.clone(), self.p)}

    methods.ParaphraserTraining.teacher_features = teacher_features
    methods.FactorTransfer.forward = ft_forward


def freeze_for_inference(module: nn.Module, example: torch.Tensor, channels_last: bool) -> nn.Module:
    """A frozen copy of an eval-mode network for CPU inference: BatchNorm folded into the
    convolutions, weights prepacked for oneDNN (torch.jit.freeze + optimize_for_inference)."""
    import warnings

    module = copy.deepcopy(module).eval()
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
        example = example.contiguous(memory_format=torch.channels_last)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, strict=False, check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


class FrozenEncoder(nn.Module):
    """Teacher + paraphraser encoder as one frozen inference module (the FT target)."""

    def __init__(self, teacher: nn.Module, paraphraser: nn.Module, group: int):
        super().__init__()
        self.teacher, self.paraphraser, self.group = teacher, paraphraser, group

    def forward(self, x):
        return self.paraphraser.encode(self.teacher(x)[1][self.group])


class TeacherFeatures(nn.Module):
    def __init__(self, teacher: nn.Module, group: int):
        super().__init__()
        self.teacher, self.group = teacher, group

    def forward(self, x):
        return self.teacher(x)[1][self.group]


def apply_freeze(task: nn.Module, stage: str, batch: int, device: torch.device, channels_last: bool):
    """Replace the frozen parts' forward by a frozen TorchScript module (proposal --try-freeze)."""
    example = torch.randn(batch, 3, 32, 32, device=device)
    if stage == "paraphraser":
        frozen = freeze_for_inference(TeacherFeatures(task.teacher, task.group), example, channels_last)

        def teacher_features(x):
            with torch.no_grad():
                return frozen(x)

        task.teacher_features = teacher_features
    elif stage == "student":
        frozen = freeze_for_inference(FrozenEncoder(task.teacher, task.paraphraser, task.group),
                                      example, channels_last)

        def forward(x, y):
            logits, feats = task.student(x)
            with torch.no_grad():
                factor_t = frozen(x)
            factor_s = task.translator(feats[task.group])
            return logits, {"ce": F.cross_entropy(logits, y),
                            "ft": task.beta * methods.factor_transfer_loss(factor_s, factor_t, task.p)}

        task.forward = forward


# ============================================================================ variants

class Ours:
    """`fit`'s step: train_batch + make_step, and its per-step on-device bookkeeping."""

    def __init__(self, stage, nets, data, device, flags: frozenset, args):
        self.label = "+".join(sorted(flags)) or "fp32 NCHW"
        self.channels_last = "channels_last" in flags
        self.data, self.seed, self.device = data, args.seed, device
        self.task = build_task(stage, nets).to(device)
        if args.try_freeze and device.type == "cpu" and stage in ("paraphraser", "student"):
            apply_freeze(self.task, stage, args.batch_size, device, self.channels_last)
        params = [p for m in self.task.trainable().values() for p in m.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WD)
        self.sampler = BatchSampler(len(data.train_y), args.batch_size, args.seed, device)
        if self.channels_last:
            self.task.to(memory_format=torch.channels_last)
        self.step = make_step(self.task, self.optimizer, device, "bf16" if "bf16" in flags else "none",
                              "compile" in flags)
        self.task.train()
        self.iteration = 0
        self.window = None

    def run(self, steps: int) -> int:
        for _ in range(steps):
            x, y = train_batch(self.data, self.sampler, self.iteration, self.seed)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits, losses, total = self.step(x, y)
            parts = {k: v.detach().float() for k, v in losses.items()}
            if logits is not None:
                parts["train_error"] = 100.0 * (logits.detach().argmax(1) != y).float().mean()
            parts["bad"] = (~torch.isfinite(total.detach())).float()
            self.window = parts if self.window is None else {k: self.window[k] + v for k, v in parts.items()}
            self.iteration += 1
        return steps * len(y)


class Reference:
    """The authors' pipeline on the same networks (see the module docstring)."""

    label = "authors' pipeline"

    def __init__(self, stage, nets, data, device, args):
        self.stage, self.device = stage, device
        n = {k: copy.deepcopy(v).to(device) for k, v in nets.items()}
        for name in {"paraphraser": ["teacher"], "student": ["teacher", "paraphraser"]}.get(stage, []):
            n[name].eval()  # frozen: eval mode, but its weights still require grad, as in their scripts
        self.nets = n
        mean, std = (t.flatten().tolist() for t in (data.mean, data.std))
        dataset = PILImages(data.train_x.cpu(), data.train_y.cpu(), reference_transform(mean, std))
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                                  num_workers=args.num_workers)
        self.batches = iter(())
        opt = lambda m: torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)  # noqa: E731
        trained = {"teacher": ["teacher"], "ce": ["student"], "paraphraser": ["paraphraser"],
                   "student": ["student", "translator"]}[stage]
        self.optimizers = [opt(n[name]) for name in trained]  # the translator: its own optimizer
        for name in trained:
            n[name].train()

    def next_batch(self):
        try:
            return next(self.batches)
        except StopIteration:  # a new epoch: the DataLoader starts its workers again
            self.batches = iter(self.loader)
            return next(self.batches)

    def loss(self, x, y):
        return reference_loss(self.stage, self.nets, x, y)

    def run(self, steps: int) -> int:
        images = 0
        for _ in range(steps):
            x, y = self.next_batch()
            x, y = x.to(self.device), y.to(self.device)
            for opt in self.optimizers:
                opt.zero_grad()
            loss = self.loss(x, y)
            loss.backward()
            for opt in self.optimizers:
                opt.step()
            loss.item()  # their scripts log the running loss every step
            images += len(y)
        return images


def reference_loss(stage: str, nets: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One step's loss written as the authors' scripts compute it (autograd on throughout)."""
    if stage in ("teacher", "ce"):
        net = nets["teacher" if stage == "teacher" else "student"]
        return nn.CrossEntropyLoss()(net(x)[0], y)
    feat_t = nets["teacher"](x)[1][-1]
    if stage == "paraphraser":
        return nn.L1Loss()(nets["paraphraser"](feat_t.detach()), feat_t.detach())
    factor_t = nets["paraphraser"].encode(feat_t)
    logits, feats_s = nets["student"](x)
    factor_s = nets["translator"](feats_s[-1])
    b = x.shape[0]
    ft = nn.L1Loss()(F.normalize(factor_s.view(b, -1)), F.normalize(factor_t.view(b, -1).detach()))
    return nn.CrossEntropyLoss()(logits, y) + BETA * ft


# ============================================================================ measuring

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory while a variant runs: CUDA max allocated, or sampled process RSS on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0
        self._stop = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            with open("/proc/self/statm") as f:
                self.peak = max(self.peak, int(f.read().split()[1]) * page)
            self._stop.wait(0.005)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = max(self.peak, torch.cuda.max_memory_allocated(self.device))
        else:
            self._stop.set()
            self._thread.join()


def timed(variant, steps: int, device: torch.device) -> tuple[float, int]:
    """images/s of one window, and the peak memory during it."""
    synchronize(device)
    with PeakMemory(device) as mem:
        start = time.perf_counter()
        images = variant.run(steps)
        synchronize(device)
        seconds = time.perf_counter() - start
    return images / seconds, mem.peak


def parse_flags(text: str) -> frozenset:
    allowed = {"channels_last", "bf16", "compile"}
    flags = frozenset(f.strip() for f in text.split(",") if f.strip())
    if flags - allowed:
        raise SystemExit(f"benchmark.py: unknown flag(s) {sorted(flags - allowed)}; use {sorted(allowed)}")
    return flags


def candidates(args) -> list[frozenset]:
    if args.candidates is not None:
        return [parse_flags(c) for c in args.candidates.split(";")]
    names = ["channels_last", "bf16"] + ([] if args.quick else ["compile"])
    return [frozenset(c) for r in range(1, len(names) + 1) for c in itertools.combinations(names, r)]


def search_fast(stage, nets, data, device, args, default_rate: float, log) -> tuple[frozenset, dict]:
    """(b)'s flags: each candidate warmed up and timed briefly; the fastest wins
    (the default is a candidate too, with the rate it had in its warm-up windows)."""
    trials = {"": default_rate}
    best, best_rate = frozenset(), default_rate
    for flags in candidates(args):
        variant = Ours(stage, nets, data, device, flags, args)
        start = time.perf_counter()
        variant.run(args.warmup)
        rate = statistics.median(timed(variant, args.window_steps, device)[0] for _ in range(args.trials))
        trials[",".join(sorted(flags))] = rate
        log(f"  try {variant.label:28s} {rate:8.1f} img/s  (warm-up {time.perf_counter() - start:.1f} s)")
        if rate > best_rate:
            best, best_rate = flags, rate
        del variant
    return best, trials


def bench_stage(stage, data, device, args, log) -> dict:
    nets = build_networks(stage, args.seed)
    default_flags = frozenset(["channels_last"]) if (args.try_channels_last_default and device.type == "cpu") \
        else frozenset()
    a = Ours(stage, nets, data, device, default_flags, args)
    c = Reference(stage, nets, data, device, args)
    a.run(args.warmup)
    default_rate = statistics.median(timed(a, args.window_steps, device)[0] for _ in range(args.trials))
    if args.fast == "auto":
        fast_flags, trials = search_fast(stage, nets, data, device, args, default_rate, log)
    else:
        fast_flags, trials = parse_flags(args.fast), {}
    b = a if fast_flags == default_flags else Ours(stage, nets, data, device, fast_flags, args)
    if b is not a:
        b.run(args.warmup)
    c.run(args.warmup)

    variants = {"default": a, "fast": b, "reference": c}
    rates = {k: [] for k in variants}
    peaks = {k: 0 for k in variants}
    for _ in range(args.windows):
        for name, variant in variants.items():
            rate, peak = timed(variant, args.window_steps, device)
            rates[name].append(rate)
            peaks[name] = max(peaks[name], peak)
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "stage": stage,
        "images_per_s": {k: round(v, 2) for k, v in med.items()},
        "windows": {k: [round(r, 2) for r in v] for k, v in rates.items()},
        "speedup_default": round(med["default"] / med["reference"], 3),
        "speedup_fast": round(med["fast"] / med["reference"], 3),
        "fast_flags": sorted(fast_flags),
        "default_flags": sorted(default_flags),
        "search": {k: round(v, 2) for k, v in trials.items()},
        "peak_memory_mb": {k: round(v / 2 ** 20, 1) for k, v in peaks.items()},
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def table(results: list[dict], device: str) -> str:
    memory = "peak MB (CUDA allocated)" if "cuda" in device.lower() else "peak RSS MB"
    rows = [f"device: {device}",
            f"| stage | (a) default img/s | (b) fast img/s | (c) reference img/s | a/c | b/c | (b) flags | "
            f"{memory} a / b / c |",
            "|---|---:|---:|---:|---:|---:|---|---|"]
    for r in results:
        ips, mem = r["images_per_s"], r["peak_memory_mb"]
        flags = ", ".join(r["fast_flags"]) or "(default)"
        rows.append(f"| {r['stage']} | {ips['default']:.1f} | {ips['fast']:.1f} | {ips['reference']:.1f} | "
                    f"{r['speedup_default']:.2f} | {r['speedup_fast']:.2f} | {flags} | "
                    f"{mem['default']:.0f} / {mem['fast']:.0f} / {mem['reference']:.0f} |")
    return "\n".join(rows)


def main(args) -> dict:
    # ------------------------------------------------------------------ setup
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.window_steps is None:
        args.window_steps = 20 if device.type == "cuda" else 4
    if args.quick:
        args.windows, args.warmup = min(args.windows, 3), min(args.warmup, 1)
        args.window_steps = min(args.window_steps, 2 if device.type == "cpu" else 10)
    args.trials = 1 if args.quick else 2
    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    apply_proposals(args.try_inference_mode)

    # ------------------------------------------------------------------ data
    if args.data_root:
        data = load_data("folder", args.data_root)
    else:
        data = synthetic_data(args.synthetic_size, args.seed)
    data = data.to(device)

    # ------------------------------------------------------------------ stages
    results = []
    t0 = time.perf_counter()
    for stage in args.stages:
        log(f"{stage}:")
        result = bench_stage(stage, data, device, args, log)
        ips = result["images_per_s"]
        log(f"  default {ips['default']:.1f}  fast {ips['fast']:.1f} ({', '.join(result['fast_flags']) or '-'})"
            f"  reference {ips['reference']:.1f} img/s")
        results.append(result)

    report = {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "data": args.data_root or f"synthetic uint8, {args.synthetic_size} images",
        "protocol": {"windows": args.windows, "window_steps": args.window_steps, "warmup": args.warmup,
                     "num_workers": args.num_workers, "quick": args.quick},
        "proposals": {"inference_mode": args.try_inference_mode, "freeze": args.try_freeze,
                      "channels_last_default": args.try_channels_last_default},
        "stages": {r["stage"]: r for r in results},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(report, indent=2) if args.json else table(results, report["device"]))
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())
