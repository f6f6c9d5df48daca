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
                --fold-bn / --compile found on this device (searched per stage, or given by --fast)
  (c) reference the authors' pipeline: a DataLoader with worker processes over PIL images
                (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize),
                teacher and paraphraser run with autograd on, fp32 NCHW, the ResNet blocks
                with their op sequence (out-of-place ReLUs, in-place add), the translator with
                its own SGD optimizer, 4 DataLoader workers, `loss.item()` and the training
                accuracy read back every step, on CUDA cuDNN in deterministic mode without its
                autotuner (all as their three scripts do).  Their paraphraser script feeds the
                teacher's feature to the paraphraser undetached, so its backward runs on
                through the frozen teacher (gradients nothing uses): (c) does that too.  It runs
                in a fresh process of its own (as their script does), so that nothing (a)
                and (b) do to this process (utils.perf's allocator setting, the heap they
                leave) speeds it up or slows it down.

The variants take turns window by window (a, b, c, a, b, c, ...), so a slow spell on a
shared machine hits all of them; each figure is the median images/s over the windows.
`--try-*` flags monkeypatch proposed changes to utils/methods.py / utils/train.py into
(a) and (b) to measure them before they are made (README, Speed).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import multiprocessing
import os
import platform
import statistics
import sys
import threading
import time
import types
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import build_model  # noqa: E402
from models.resnet_cifar import BasicBlock  # noqa: E402
from paraphraser import Paraphraser  # noqa: E402
from translator import Translator  # noqa: E402
from utils import methods, perf  # noqa: E402
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
                             "comma list of channels_last, bf16, fold_bn, compile ('' for none) (default: auto)")
    parser.add_argument("--candidates", default=None,
                        help="flag sets (b)'s search races against the default, ';'-separated comma "
                             "lists (default: the combinations of channels_last, bf16 and fold_bn, then the "
                             "winner with compile unless --quick)")
    parser.add_argument("--search-windows", type=int, default=3,
                        help="windows per candidate in (b)'s search (default: 3; --quick: 1)")
    parser.add_argument("--max-other-load", type=float, default=0.1,
                        help="CPU: re-run a window in which other processes used more than this "
                             "share of the machine's CPU time (default: 0.1; 1 keeps every window)")
    parser.add_argument("--retries", type=int, default=3,
                        help="re-runs of a disturbed window before it is kept anyway (default: 3; "
                             "--quick: 1; 0 neither waits nor re-runs)")
    parser.add_argument("--max-wait", type=float, default=30.0,
                        help="seconds a window waits for the machine to be quiet (default: 30; --quick: 3)")
    parser.add_argument("--num-workers", type=int, default=4,
                        help="DataLoader workers of the reference pipeline (default: 4, their scripts')")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own, one per core)")
    parser.add_argument("--data-root", default=None,
                        help="time on a real image folder / .tar.gz (utils.data 'folder') instead "
                             "of random uint8 images")
    parser.add_argument("--synthetic-size", type=int, default=50_000,
                        help="random images in the synthetic set (default: 50,000, CIFAR's train set)")
    parser.add_argument("--no-keep-freed-memory", dest="keep_freed_memory", action="store_false",
                        help="(a) and (b) without utils.perf.keep_freed_memory (the training scripts' "
                             "default; FT_KEEP_FREED_MEMORY=0 there)")
    parser.add_argument("--quick", action="store_true",
                        help="few short windows, small warm-up, no compile in the search")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and data (default: 0)")
    g = parser.add_argument_group("proposed changes, monkeypatched into (a) and (b) only")
    g.add_argument("--try-inference-mode", action="store_true",
                   help="frozen teacher / paraphraser forward under torch.inference_mode()")
    g.add_argument("--try-channels-last-default", action="store_true",
                   help="(a) uses channels-last on the CPU, as a default of --channels-last auto would")
    g.add_argument("--try-compile-split", action="store_true",
                   help="--compile compiles frozen networks apart, as inference graphs with freezing")
    return parser


# ============================================================================ data

def bench_data(args) -> ImageData:
    """The images every variant trains on (on the CPU): a real folder, or random uint8."""
    if args.data_root:
        return load_data("folder", args.data_root)
    return synthetic_data(args.synthetic_size, args.seed)


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

class InferenceMode(nn.Module):
    """A frozen network run under torch.inference_mode() (proposal --try-inference-mode)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        with torch.inference_mode():
            return self.module(x)


@contextlib.contextmanager
def proposed_changes(inference_mode: bool = False):
    """Monkeypatch a proposed utils/methods.py change while the block runs (measured, not
    adopted: no gain on the CPU); the reference pipeline does not use these classes."""
    if not inference_mode:
        yield
        return

    def add_frozen(self, name, module):
        add_frozen_plain(self, name, module)
        if name == "teacher":
            setattr(self, name, InferenceMode(getattr(self, name)))

    def teacher_features(self, x):
        # An inference tensor cannot be saved for backward: the paraphraser's first conv
        # and the reconstruction loss save it, so they get a normal copy (128x64x8x8).
        return self.teacher(x)[1][self.group].clone()

    add_frozen_plain, features_plain = methods.Task.add_frozen, methods.ParaphraserTraining.teacher_features
    methods.Task.add_frozen = add_frozen
    methods.ParaphraserTraining.teacher_features = teacher_features
    try:
        yield
    finally:
        methods.Task.add_frozen = add_frozen_plain
        methods.ParaphraserTraining.teacher_features = features_plain


def compile_split(task: methods.Task) -> None:
    """--compile as proposed (--try-compile-split): each frozen network compiled on its own
    as an inference graph with Inductor's freezing (weights become constants: BatchNorm
    folded, oneDNN weights prepacked, conv + add + ReLU fused), each trainable network
    compiled as before, the task's few loss ops left eager.  Compiling the whole task
    instead traces the frozen teacher into the training graph, where freezing cannot apply."""
    frozen = set(task._frozen_names)
    for name, module in list(task.named_children()):
        options = {"freezing": True} if name in frozen else None
        setattr(task, name, torch.compile(module, options=options))


# ============================================================================ variants

class Ours:
    """`fit`'s step: train_batch + make_step, and its per-step on-device bookkeeping."""

    def __init__(self, stage, nets, data, device, flags: frozenset, args):
        self.flags = flags
        self.label = "+".join(sorted(flags)) or "fp32 NCHW"
        self.channels_last = "channels_last" in flags
        self.data, self.seed, self.device = data, args.seed, device
        self.task = build_task(stage, nets).to(device)
        params = [p for m in self.task.trainable().values() for p in m.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WD)
        self.sampler = BatchSampler(len(data.train_y), args.batch_size, args.seed, device)
        perf.prepare_task(self.task, device, "fold_bn" in flags, self.channels_last, "compile" in flags)
        compile_whole = "compile" in flags
        if compile_whole and args.try_compile_split:
            compile_split(self.task)
            compile_whole = False
        self.step = make_step(self.task, self.optimizer, device, "bf16" if "bf16" in flags else "none",
                              compile_whole)
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

    def __init__(self, stage, nets, pil_images: PILImages, device, args):
        self.stage, self.device = stage, device
        self.nets = n = reference_networks(stage, nets, device)
        # Workers forked, as a script started from the shell gets them on Linux (this process
        # is spawned, and would otherwise spawn them too, each unpickling the whole dataset).
        context = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
        self.loader = torch.utils.data.DataLoader(pil_images, batch_size=args.batch_size, shuffle=True,
                                                  num_workers=args.num_workers,
                                                  multiprocessing_context=context if args.num_workers else None)
        self.batches = iter(())
        # One optimizer per trained network: the translator has its own, as in their script.
        self.optimizers = [torch.optim.SGD(n[name].parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
                           for name in TRAINED[stage]]

    def pids(self) -> list[int]:
        workers = getattr(self.batches, "_workers", [])
        return [os.getpid(), *(w.pid for w in workers if w.pid is not None)]

    def next_batch(self):
        try:
            return next(self.batches)
        except StopIteration:  # a new epoch: the DataLoader starts its workers again
            self.batches = iter(self.loader)
            return next(self.batches)

    def run(self, steps: int) -> int:
        images = 0
        for _ in range(steps):
            x, y = self.next_batch()
            x, y = x.to(self.device), y.to(self.device)
            for opt in self.optimizers:
                opt.zero_grad()
            loss, logits = reference_loss(self.stage, self.nets, x, y)
            loss.backward()
            for opt in self.optimizers:
                opt.step()
            loss.item()  # their scripts log the running loss every step,
            if logits is not None:  # and the teacher's and student's the training accuracy
                logits.detach().max(1)[1].eq(y).cpu().sum().float().item()
            images += len(y)
        return images


class RemoteReference:
    """(c) in a fresh process of its own (spawned, not forked), driven over a pipe.

    The child rebuilds the same data and weights from the seed; `run` returns after the
    child's steps are done (on CUDA, synchronized), so the parent's clock times them.
    """

    label = Reference.label

    def __init__(self, stage: str, device: torch.device, args):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_reference_process, args=(child, stage, device.type, vars(args)),
                                   name=f"reference-{stage}")  # not a daemon: it starts DataLoader workers
        self.process.start()
        child.close()
        self._pids, self.last_peak = [self.process.pid], 0
        self._reply("ready")

    def _reply(self, expected: str):
        try:
            kind, *rest = self.conn.recv()
        except EOFError:
            raise SystemExit(f"benchmark.py: the reference process died (exit code {self.process.exitcode})")
        if kind == "error":
            raise SystemExit(f"benchmark.py: the reference process failed: {rest[0]}")
        assert kind == expected, kind
        return rest

    def pids(self) -> list[int]:
        return self._pids

    def run(self, steps: int) -> int:
        self.conn.send(("run", steps))
        images, self._pids, self.last_peak = self._reply("done")
        return images

    def close(self) -> None:
        if self.process.is_alive():
            self.conn.send(("stop",))
            self.process.join(timeout=60)
        if self.process.is_alive():
            self.process.kill()
        self.conn.close()


def _reference_process(conn, stage: str, device_type: str, options: dict) -> None:
    """Body of RemoteReference's process: build (c), warm it up, run windows on demand."""
    try:
        args = argparse.Namespace(**options)
        warnings.filterwarnings("ignore")  # as their scripts do (DataLoader: 4 workers > 2 cores)
        if args.threads:
            torch.set_num_threads(args.threads)
        device = torch.device(device_type)
        if device.type == "cuda":  # their scripts' settings
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        data = bench_data(args)
        mean, std = (t.flatten().tolist() for t in (data.mean, data.std))
        pil_images = PILImages(data.train_x, data.train_y, reference_transform(mean, std))
        reference = Reference(stage, build_networks(stage, args.seed), pil_images, device, args)
        reference.run(args.warmup)
        synchronize(device)
        conn.send(("ready",))
        while True:
            message = conn.recv()
            if message[0] == "stop":
                reference.batches = iter(())  # shut the DataLoader's workers down before leaving
                return
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            images = reference.run(message[1])
            synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
            conn.send(("done", images, reference.pids(), peak))
    except Exception as error:  # reported by the parent as one line
        conn.send(("error", f"{type(error).__name__}: {error}"))


TRAINED = {"teacher": ["teacher"], "ce": ["student"], "paraphraser": ["paraphraser"],
           "student": ["student", "translator"]}


def reference_networks(stage: str, nets: dict[str, nn.Module], device: torch.device) -> dict[str, nn.Module]:
    """Copies of `nets` set up as the authors' scripts set them up: the trained ones in train
    mode, the frozen ones in eval mode but with weights that still require grad."""
    n = {k: copy.deepcopy(v).to(device).train(k in TRAINED[stage]) for k, v in nets.items()}
    for module in n.values():
        module.requires_grad_(True)
        for m in module.modules():
            if isinstance(m, BasicBlock):
                m.forward = types.MethodType(_authors_block_forward, m)
            elif isinstance(m, nn.ReLU):
                m.inplace = False
    return n


def _authors_block_forward(block, x):
    """A CIFAR ResNet block as the authors' ResNet runs it: the same layers, but each ReLU
    writes a new tensor (ours work in place); the residual add is in place in both."""
    out = F.relu(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    out += block.shortcut(x)
    return F.relu(out)


def reference_loss(stage: str, nets: dict[str, nn.Module], x: torch.Tensor,
                   y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One step's loss written as the authors' scripts compute it (autograd on throughout),
    and the logits whose accuracy they log (None for the paraphraser)."""
    if stage in ("teacher", "ce"):
        logits = nets["teacher" if stage == "teacher" else "student"](x)[0]
        return nn.CrossEntropyLoss()(logits, y), logits
    feat_t = nets["teacher"](x)[1][-1]
    if stage == "paraphraser":  # the paraphraser's input is not detached (module docstring)
        return nn.L1Loss()(nets["paraphraser"](feat_t), feat_t.detach()), None
    factor_t = nets["paraphraser"].encode(feat_t)
    logits, feats_s = nets["student"](x)
    factor_s = nets["translator"](feats_s[-1])
    b = x.shape[0]
    ft = nn.L1Loss()(F.normalize(factor_s.view(b, -1)), F.normalize(factor_t.view(b, -1).detach()))
    return nn.CrossEntropyLoss()(logits, y) + BETA * ft, logits


# ============================================================================ measuring

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory while a variant runs: CUDA max allocated, or sampled process RSS on the CPU."""

    def __init__(self, device: torch.device, pid: int | None = None):
        self.device, self.pid = device, pid
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
        path = f"/proc/{self.pid or 'self'}/statm"
        while not self._stop.is_set():
            try:
                with open(path) as f:
                    self.peak = max(self.peak, int(f.read().split()[1]) * page)
            except OSError:  # not Linux, or the process is gone
                return
            self._stop.wait(0.005)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            if self.pid is None:
                self.peak = max(self.peak, torch.cuda.max_memory_allocated(self.device))
        else:
            self._stop.set()
            self._thread.join()


class OtherLoad:
    """Share of the machine's CPU time that other processes used during a window (Linux).

    On a shared machine a window in which another process runs is not a measurement of
    this code: with one torch thread per core, a core taken away stalls every parallel
    op at its barrier, and a step can take 10x longer.  Such windows are re-run.
    """

    def __init__(self, pids):
        self.pids = pids  # callable: our processes (this one and the DataLoader workers)

    @staticmethod
    def _machine():
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields[:8]), fields[3] + fields[4]  # all jiffies, idle + iowait

    def _own(self):
        total = 0
        for pid in self.pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(stat[11]) + int(stat[12])  # utime + stime
            except (OSError, IndexError, ValueError):
                pass  # a worker that just exited
        return total

    @classmethod
    def wait_for_quiet(cls, threshold: float, max_wait: float, pids) -> None:
        """Sleep (using no CPU) until other processes use at most `threshold` of the machine
        over half a second, or `max_wait` seconds have passed."""
        deadline = time.monotonic() + max_wait
        while time.monotonic() < deadline:
            with cls(pids) as probe:
                time.sleep(0.5)
            if probe.share <= threshold:
                return

    def __enter__(self):
        self.share = 0.0
        try:
            self._start = (*self._machine(), self._own())
        except OSError:  # not Linux
            self._start = None
        return self

    def __exit__(self, *exc):
        if self._start is None:
            return
        (total, idle), own = self._machine(), self._own()
        elapsed = total - self._start[0]
        busy = elapsed - (idle - self._start[1])
        self.share = max(0.0, busy - (own - self._start[2])) / max(elapsed, 1)


def timed(variant, steps: int, device: torch.device, args=None) -> tuple[float, int]:
    """images/s of one window and the peak memory during it.

    On the CPU, a window in which other processes took more than --max-other-load of the
    machine is run again once they leave it (waiting up to --max-wait s), up to --retries
    times (`DISTURBED` counts both outcomes)."""
    check = args is not None and device.type == "cpu" and args.retries > 0
    for attempt in range(args.retries + 1 if check else 1):
        if attempt:
            OtherLoad.wait_for_quiet(args.max_other_load, args.max_wait, variant.pids)
        synchronize(device)
        remote = isinstance(variant, RemoteReference)
        with PeakMemory(device, variant.pids()[0] if remote else None) as mem, OtherLoad(variant.pids) as other:
            start = time.perf_counter()
            images = variant.run(steps)
            synchronize(device)
            seconds = time.perf_counter() - start
        if remote:
            mem.peak = max(mem.peak, variant.last_peak)
        if not check or other.share <= args.max_other_load:
            break
        DISTURBED["rerun" if attempt < args.retries else "kept"] += 1
    return images / seconds, mem.peak


DISTURBED = {"rerun": 0, "kept": 0}


def parse_flags(text: str) -> frozenset:
    allowed = {"channels_last", "bf16", "compile", "fold_bn"}
    flags = frozenset(f.strip() for f in text.split(",") if f.strip())
    if flags - allowed:
        raise SystemExit(f"benchmark.py: unknown flag(s) {sorted(flags - allowed)}; use {sorted(allowed)}")
    return flags


def candidates(args, stage: str) -> list[frozenset]:
    """(b)'s first-round candidates: every combination of channels_last, bf16 and (for a
    stage with frozen networks) fold_bn."""
    if args.candidates is not None:
        return [parse_flags(c) for c in args.candidates.split(";")]
    names = ["channels_last", "bf16"] + (["fold_bn"] if stage in ("paraphraser", "student") else [])
    return [frozenset(c) for r in range(1, len(names) + 1) for c in itertools.combinations(names, r)]


def race(variants: dict, args, device) -> dict[str, float]:
    """Median images/s of each variant over `args.trials` rounds of one window each, the
    variants taking turns so that a slow spell of a shared machine hits all of them."""
    rates = {k: [] for k in variants}
    for _ in range(args.trials):
        for name, variant in variants.items():
            rates[name].append(timed(variant, args.window_steps, device, args)[0])
    return {k: statistics.median(v) for k, v in rates.items()}


def search_fast(stage, nets, data, device, args, default, log) -> tuple[frozenset, dict]:
    """(b)'s flags, fastest on this device: the channels_last / bf16 combinations race the
    default; then (unless --quick) the winner with --compile races the winner without."""
    def warm(flags):
        start = time.perf_counter()
        variant = Ours(stage, nets, data, device, flags, args)
        variant.run(args.warmup)
        log(f"  {variant.label:28s} built and warmed up in {time.perf_counter() - start:.1f} s")
        return variant

    pool = {"": default, **{",".join(sorted(f)): warm(f) for f in candidates(args, stage) if f != default.flags}}
    trials = race(pool, args, device)
    best = max(trials, key=trials.get)
    if not args.quick and args.candidates is None and "compile" not in best:
        compiled = ",".join(sorted(best.split(",") + ["compile"])).strip(",")
        final = {best: pool[best], compiled: warm(parse_flags(compiled))}
        rematch = race(final, args, device)
        trials[compiled] = rematch[compiled]
        trials[best + " (rematch)"] = rematch[best]
        best = max(rematch, key=rematch.get)
    for name, rate in trials.items():
        log(f"  try {name or 'default':32s} {rate:8.1f} img/s")
    return parse_flags(best), {(k or "default"): v for k, v in trials.items()}


def bench_stage(stage, data, device, args, log) -> dict:
    c = RemoteReference(stage, device, args)  # first: its warm-up is not timed, ours neither
    try:
        return _bench_stage(stage, data, c, device, args, log)
    finally:
        c.close()


def _bench_stage(stage, data, c, device, args, log) -> dict:
    nets = build_networks(stage, args.seed)
    default_flags = frozenset(["channels_last"]) if (args.try_channels_last_default and device.type == "cpu") \
        else frozenset()
    a = Ours(stage, nets, data, device, default_flags, args)
    a.run(args.warmup)
    if args.fast == "auto":
        fast_flags, trials = search_fast(stage, nets, data, device, args, a, log)
    else:
        fast_flags, trials = parse_flags(args.fast), {}
    b = a if fast_flags == default_flags else Ours(stage, nets, data, device, fast_flags, args)
    if b is not a:
        b.run(args.warmup)

    variants = {"default": a, "fast": b, "reference": c}
    rates = {k: [] for k in variants}
    peaks = {k: 0 for k in variants}
    for _ in range(args.windows):
        for name, variant in variants.items():
            rate, peak = timed(variant, args.window_steps, device, args)
            rates[name].append(rate)
            peaks[name] = max(peaks[name], peak)
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "stage": stage,
        "images_per_s": {k: round(v, 2) for k, v in med.items()},
        "best_window_images_per_s": {k: round(max(v), 2) for k, v in rates.items()},
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


# Issue 5's targets on the project's 2-core CPU: (stage, ratio) -> at least this.
CPU_TARGETS = {("student", "speedup_default"): 1.4, ("student", "speedup_fast"): 2.0,
               ("paraphraser", "speedup_fast"): 2.5}


def check_targets(results: list[dict], device_type: str) -> list[dict]:
    """Each CPU target with the measured ratio and whether it is met (empty off the CPU)."""
    if device_type != "cpu":
        return []
    by_stage = {r["stage"]: r for r in results}
    return [{"stage": stage, "ratio": key, "target": goal, "measured": by_stage[stage][key],
             "met": by_stage[stage][key] >= goal}
            for (stage, key), goal in CPU_TARGETS.items() if stage in by_stage]


def table(results: list[dict], device: str, targets: list[dict] = ()) -> str:
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
    for t in targets:
        rows.append(f"target {t['stage']} {t['ratio']} >= {t['target']}: {t['measured']:.2f} "
                    f"{'met' if t['met'] else 'NOT met'}")
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
    args.trials = 1 if args.quick else args.search_windows
    if args.quick:
        args.retries, args.max_wait = min(args.retries, 1), min(args.max_wait, 3.0)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    DISTURBED.update(rerun=0, kept=0)

    # ------------------------------------------------------------------ data
    data = bench_data(args).to(device)
    keeps_memory = perf.keep_freed_memory() if args.keep_freed_memory else False
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    load = os.getloadavg()[0]
    if load > 0.5:
        log(f"warning: load average {load:.1f} before starting: other processes share the CPU, "
            f"figures will be noisy")

    # ------------------------------------------------------------------ stages
    results = []
    t0 = time.perf_counter()
    for stage in args.stages:
        log(f"{stage}:")
        with proposed_changes(args.try_inference_mode):
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
        "proposals": {"inference_mode": args.try_inference_mode,
                      "compile_split": args.try_compile_split,
                      "channels_last_default": args.try_channels_last_default},
        "keep_freed_memory": keeps_memory,
        "reference_process": "fresh (spawned)",
        "stages": {r["stage"]: r for r in results},
        "load_average": {"start": round(load, 2), "end": round(os.getloadavg()[0], 2)},
        "disturbed_windows": dict(DISTURBED),
        "seconds": round(time.perf_counter() - t0, 1),
        "targets": check_targets(results, device.type),
    }
    print(json.dumps(report, indent=2) if args.json else table(results, report["device"], report["targets"]))
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())
