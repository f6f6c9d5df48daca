"""The authors' way of running a training step, for `scripts/benchmark.py` to time against.

Two references, each run in a fresh process of its own (as their scripts run), driven
window by window over a pipe (`RemoteVariant`):

  reference  (c): this repository's networks set up in the configuration of the authors'
             release (Kim et al., github.com/Jangho-Kim/Factor-Transfer-pytorch): the
             paraphraser and translator without BatchNorm (their FeatureProjection.py has
             none), the ResNet blocks with their op sequence (out-of-place ReLUs, in-place
             residual add), and their loop: torchvision's CIFAR-10 dataset semantics (a
             uint8 array, a PIL image made per item), RandomCrop(32, padding=4),
             RandomHorizontalFlip, ToTensor, Normalize, a DataLoader with 4 worker processes,
             autograd on through the frozen teacher and paraphraser, fp32 NCHW, the
             translator with its own SGD optimizer, `loss.item()` and the training accuracy
             read back every step, cuDNN deterministic without its autotuner on CUDA.  Their
             paraphraser script feeds the teacher's feature to the paraphraser undetached,
             so its backward runs on through the frozen teacher (gradients nothing uses):
             (c) does that too, and it keeps the previous step's frozen-teacher graph
             alive as their student loop's variables do (`reference_loss`).
  authors    (d, only with `--authors-code DIR`): the authors' own scripts from a checkout
             of their repository (not part of this one): each script is executed as far as
             its setup (data, networks, optimizers; `torch.device("cuda")` read as the
             benchmark's device) and its own `train()` is timed on a window of batches.  The
             data is the benchmark's, written in torchvision's CIFAR-10 format.

The two time the same work; (d) checks that (c) is an honest stand-in (README, Speed).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import multiprocessing
import os
import pickle
import sys
import tempfile
import types
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import build_model  # noqa: E402
from models.resnet_cifar import BasicBlock  # noqa: E402
from paraphraser import Paraphraser  # noqa: E402
from translator import Translator  # noqa: E402
from utils.data import NORM_STATS, ImageData, load_data  # noqa: E402

TEACHER, STUDENT, K = "resnet56", "resnet20", 0.5
LR, MOMENTUM, WD, BETA = 0.1, 0.9, 5e-4, 500.0
# The networks each stage trains; the others are frozen.
TRAINED = {"teacher": ["teacher"], "ce": ["student"], "paraphraser": ["paraphraser"],
           "student": ["student", "translator"]}
# Their scripts' names for a stage (--authors-code), and the call of their train().
AUTHORS_SCRIPTS = {"teacher": "train_teacher.py", "paraphraser": "train_Paraphraser.py",
                   "student": "train_student.py"}
THEIR_MODULES = {"utils", "Models", "logger"}


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


class CifarArrays(torch.utils.data.Dataset):
    """The training set as torchvision's CIFAR10 dataset holds it: one uint8 HWC array, a
    PIL image made from it per item, then the transform."""

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, transform):
        self.data = x_uint8.permute(0, 2, 3, 1).contiguous().numpy()
        self.targets = y.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def reference_transform(mean, std):
    """The authors' CIFAR training transform."""
    import torchvision.transforms as T

    return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(mean, std)])


def write_torchvision_cifar10(data: ImageData, root: Path) -> None:
    """`data`'s training images as torchvision's CIFAR-10 files (root/cifar-10-batches-py),
    for the authors' scripts to load; a small test batch (their scripts build a test loader)."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    x = data.train_x.reshape(len(data.train_x), -1).numpy()
    y = data.train_y.tolist()
    parts = np.array_split(np.arange(len(y)), 5)
    for i, index in enumerate(parts, 1):
        with open(folder / f"data_batch_{i}", "wb") as fh:
            pickle.dump({"data": x[index], "labels": [y[j] for j in index]}, fh)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({"data": x[:100], "labels": y[:100]}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"class{c}" for c in range(10)]}, fh)


# ============================================================================ networks

def build_networks(stage: str, seed: int, bn: bool = True) -> dict[str, nn.Module]:
    """Freshly initialized networks of a stage (the same weights for every variant built
    from them); `bn`: BatchNorm in the paraphraser and translator (ours on CIFAR-10: yes;
    the authors' release: no).  Frozen parts get non-trivial BatchNorm statistics so that
    folding them is not a no-op."""
    torch.manual_seed(seed)
    nets = {}
    if stage in ("teacher", "paraphraser", "student"):
        nets["teacher"] = build_model(TEACHER, 10)
    if stage in ("paraphraser", "student"):
        nets["paraphraser"] = Paraphraser(64, K, bn=bn)
    if stage == "student":
        nets["student"] = build_model(STUDENT, 10)
        nets["translator"] = Translator(64, nets["paraphraser"].factor_channels, bn=bn)
    if stage == "ce":
        nets["student"] = build_model(STUDENT, 10)
    if stage != "teacher":
        for name in ("teacher", "paraphraser"):
            for m in nets.get(name, nn.Module()).modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
    return nets


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


def reference_loss(stage: str, nets: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor,
                   live: dict | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One step's loss written as the authors' scripts compute it (autograd on throughout),
    and the logits whose accuracy they log (None for the paraphraser).

    `live` stands for their loop's variables, which outlive a step: their student script's
    `teacher_outputs` keeps the frozen teacher's autograd graph (which no backward frees:
    the factor is detached) until the next step's teacher forward replaces it, so two
    teachers' activations are alive at that point (their student step's peak memory)."""
    if stage in ("teacher", "ce"):
        logits = nets["teacher" if stage == "teacher" else "student"](x)[0]
        return nn.CrossEntropyLoss()(logits, y), logits
    out_t = nets["teacher"](x)
    if live is not None:
        live["teacher_outputs"] = out_t  # the previous step's graph is released here
    feat_t = out_t[1][-1]
    if stage == "paraphraser":  # the paraphraser's input is not detached (module docstring)
        return nn.L1Loss()(nets["paraphraser"](feat_t), feat_t.detach()), None
    factor_t = nets["paraphraser"].encode(feat_t)
    logits, feats_s = nets["student"](x)
    factor_s = nets["translator"](feats_s[-1])
    b = x.shape[0]
    ft = nn.L1Loss()(F.normalize(factor_s.view(b, -1)), F.normalize(factor_t.view(b, -1).detach()))
    return nn.CrossEntropyLoss()(logits, y) + BETA * ft, logits


# ============================================================================ the two references

def _forked_loader(dataset, batch_size: int, workers: int):
    """Their DataLoader (shuffle, `workers` processes), with workers forked as a script
    started from the shell gets them on Linux (this process is spawned, and would
    otherwise spawn them too, each unpickling the whole dataset)."""
    context = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                       multiprocessing_context=context if workers else None)


class _Epochs:
    """Batches of a DataLoader without end: a new epoch (new workers) when one runs out."""

    def __init__(self, loader):
        self.loader, self.batches = loader, iter(())

    def __next__(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def pids(self) -> list[int]:
        return [w.pid for w in getattr(self.batches, "_workers", []) if w.pid is not None]

    def close(self) -> None:
        self.batches = iter(())  # shuts the workers down


class Reference:
    """(c): the authors' pipeline on this repository's networks (module docstring)."""

    def __init__(self, stage: str, data: ImageData, device: torch.device, args):
        self.stage, self.device = stage, device
        mean, std = (t.flatten().tolist() for t in (data.mean, data.std))
        dataset = CifarArrays(data.train_x, data.train_y, reference_transform(mean, std))
        self.batches = _Epochs(_forked_loader(dataset, args.batch_size, args.num_workers))
        self.nets = n = reference_networks(stage, build_networks(stage, args.seed, bn=False), device)
        self.live = {}  # their loop's variables (reference_loss)
        # One optimizer per trained network: the translator has its own, as in their script.
        self.optimizers = [torch.optim.SGD(n[name].parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
                           for name in TRAINED[stage]]

    def run(self, steps: int) -> int:
        images = 0
        for _ in range(steps):
            x, y = next(self.batches)
            x, y = x.to(self.device), y.to(self.device)
            for opt in self.optimizers:
                opt.zero_grad()
            loss, logits = reference_loss(self.stage, self.nets, x, y, self.live)
            loss.backward()
            for opt in self.optimizers:
                opt.step()
            loss.item()  # their scripts log the running loss every step,
            if logits is not None:  # and the teacher's and student's the training accuracy
                logits.detach().max(1)[1].eq(y).cpu().sum().float().item()
            images += len(y)
        return images


class _Window:
    """What the authors' train() iterates over as `trainloader`: the next `steps` batches."""

    def __init__(self, batches: _Epochs, steps: int):
        self.batches, self.steps, self.images = batches, steps, 0

    def __iter__(self):
        for _ in range(self.steps):
            batch = next(self.batches)
            self.images += len(batch[1])  # their loader keeps an epoch's last, partial batch
            yield batch


class AuthorsCode:
    """(d): the authors' own script for a stage, set up and then timed through its own
    train() (module docstring).  Needs their checkout: Models/, utils.py, logger.py,
    trained/ and the three train_*.py scripts."""

    def __init__(self, stage: str, data: ImageData, device: torch.device, args):
        root = Path(args.authors_code).resolve()
        script = root / AUTHORS_SCRIPTS[stage]
        if not script.exists():
            raise FileNotFoundError(f"--authors-code {root} has no {script.name}")
        self._tmp = tempfile.TemporaryDirectory(prefix="authors-code-")
        work = Path(self._tmp.name)
        write_torchvision_cifar10(data, work / "data")
        (work / "trained").mkdir()
        for name in ("Teacher.pth", "Paraphraser.pth"):  # the weights their scripts load
            if (root / "trained" / name).exists():
                (work / "trained" / name).symlink_to(root / "trained" / name)
            else:  # a checkout without the large file: their loader is non-strict, and the
                torch.save({}, work / "trained" / name)  # time does not depend on the weights
        os.chdir(work)  # their scripts read ./data and trained/ relative to the working folder
        sys.path.insert(0, str(root))
        import torchvision.datasets.cifar

        # The files are ours, not the published ones: skip the checksums (and so the download).
        torchvision.datasets.cifar.check_integrity = lambda *args, **kwargs: True
        source = script.read_text()
        if source.count('torch.device("cuda")') != 1:
            raise RuntimeError(f"{script.name} no longer sets its device the way this harness expects")
        source = source.replace('torch.device("cuda")', f'torch.device("{device.type}")')
        self.scope = {"__name__": "authors_code", "__file__": str(script)}
        plain_load = torch.load
        sys.argv = [script.name, "--cu_num", os.environ.get("CUDA_VISIBLE_DEVICES", "0")]
        # Their top-level modules (utils.py, Models/, logger.py) shadow ours while their script loads.
        ours = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in THEIR_MODULES}
        try:
            with contextlib.redirect_stdout(io.StringIO()), mock.patch.object(torch, "load", _cpu_load(plain_load, device)):
                exec(compile(source, str(script), "exec"), self.scope)
        finally:
            for k in [k for k in sys.modules if k.split(".")[0] in THEIR_MODULES]:
                del sys.modules[k]
            sys.modules.update(ours)
        loader = self.scope["trainloader"]  # theirs: batch 128 unless ours differs
        if loader.batch_size != args.batch_size or loader.num_workers != args.num_workers:
            loader = torch.utils.data.DataLoader(loader.dataset, batch_size=args.batch_size, shuffle=True,
                                                 num_workers=args.num_workers)
        self.batches = _Epochs(loader)
        g = self.scope
        self.call = {"teacher": lambda: g["train"](g["model"], 0),
                     "paraphraser": lambda: g["train"](g["model"], g["Paraphraser_t"], 0),
                     "student": lambda: g["train"](g["Teacher"], g["Paraphraser_t"], g["Student"],
                                                   g["Translator_s"], 0)}[stage]

    def run(self, steps: int) -> int:
        self.scope["trainloader"] = window = _Window(self.batches, steps)
        with contextlib.redirect_stdout(io.StringIO()):  # their per-epoch prints
            self.call()
        return window.images


def _cpu_load(plain_load, device):
    def load(path, *args, **kwargs):  # their checkpoints were saved on a GPU
        kwargs.setdefault("map_location", device)
        kwargs.setdefault("weights_only", False)
        return plain_load(path, *args, **kwargs)
    return load


VARIANTS = {"reference": Reference, "authors": AuthorsCode}


class RemoteVariant:
    """A reference variant in a fresh process of its own (spawned, not forked), driven over
    a pipe.  The child rebuilds the same data and weights from the seed; `run` returns after
    the child's steps are done (on CUDA, synchronized), so the parent's clock times them."""

    def __init__(self, kind: str, stage: str, device: torch.device, args):
        self.label = {"reference": "authors' pipeline", "authors": "authors' code"}[kind]
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_variant_process, args=(child, kind, stage, device.type, vars(args)),
                                   name=f"{kind}-{stage}")  # not a daemon: it starts DataLoader workers
        self.process.start()
        child.close()
        self._pids, self.last_peak = [self.process.pid], 0
        self._reply("ready")

    def _reply(self, expected: str):
        try:
            kind, *rest = self.conn.recv()
        except EOFError:
            raise SystemExit(f"benchmark.py: the {self.label} process died (exit code {self.process.exitcode})")
        if kind == "error":
            raise SystemExit(f"benchmark.py: the {self.label} process failed: {rest[0]}")
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


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _variant_process(conn, kind: str, stage: str, device_type: str, options: dict) -> None:
    """Body of RemoteVariant's process: build the variant, warm it up, run windows on demand."""
    try:
        args = argparse.Namespace(**options)
        warnings.filterwarnings("ignore")  # as their scripts do (DataLoader: 4 workers > 2 cores)
        if args.threads:
            torch.set_num_threads(args.threads)
        device = torch.device(device_type)
        if device.type == "cuda":  # their scripts' settings
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        if "fork" in multiprocessing.get_all_start_methods():
            # A script started from the shell forks its DataLoader workers on Linux; this
            # process was spawned, which made spawn its default (their loader takes the default).
            multiprocessing.set_start_method("fork", force=True)
        variant = VARIANTS[kind](stage, bench_data(args), device, args)
        variant.run(args.warmup)
        synchronize(device)
        conn.send(("ready",))
        while True:
            message = conn.recv()
            if message[0] == "stop":
                variant.batches.close()
                return
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            images = variant.run(message[1])
            synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
            conn.send(("done", images, [os.getpid(), *variant.batches.pids()], peak))
    except Exception as error:  # reported by the parent as one line
        conn.send(("error", f"{type(error).__name__}: {error}"))

