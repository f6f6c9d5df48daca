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
             (c) does that too, and it runs their train() loops statement by statement
             (`their_train`), so that their variables live as long as in their scripts.
  authors    (d, only with `--authors-code DIR`): the authors' own scripts from a checkout
             of their repository (not part of this one): each script is executed as far as
             its setup (data, networks, optimizers; `torch.device("cuda")` read as the
             benchmark's device) and its own `train()` is timed on a window of batches.  The
             data is the benchmark's, written in torchvision's CIFAR-10 format.

The two time the same work; (d) checks that (c) is an honest stand-in (docs/speed.md).
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

from models import build_model
from models.resnet_cifar import BasicBlock
from paraphraser import Paraphraser
from translator import Translator
from utils.data import NORM_STATS, ImageData, load_data

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


def their_train(stage: str, nets: dict[str, nn.Module], optimizers: list, trainloader,
                device: torch.device) -> float:
    """The loop of the authors' train() for `stage` over `trainloader`: train_teacher.py's
    (the teacher, and the student alone), train_Paraphraser.py's, train_student.py's,
    statement by statement on our networks (their outputs[3] is our logits, outputs[2] our
    last group; their Paraphraser modes 0 / 1 are our forward / encode).  Returns the
    summed loss, their train_loss.

    Written as their loop, not as a function per step, because their local variables
    outlive a step: each lives until the next step reassigns it.  Their frozen teacher's
    weights still require grad and their student step detaches the factor, so no backward
    frees the teacher's autograd graph, which stays alive into the next step's teacher
    forward.  That lifetime decides how much memory glibc hands back to the kernel and
    faults in again every step (on the CPU tens of thousands of page faults a student step,
    as their own script makes, against a few thousand for a step that frees everything at
    its end; `minor_faults_per_step` in the benchmark's JSON), which is part of their
    step's cost."""
    criterion_CE, criterion = nn.CrossEntropyLoss(), nn.L1Loss()
    train_loss, correct, total = 0, 0, 0
    if stage in ("teacher", "ce"):  # train_teacher.py
        model = nets["teacher" if stage == "teacher" else "student"]
        optimizer, = optimizers
        for batch_idx, (inputs, targets) in enumerate(trainloader):
            inputs, targets = inputs.to(device), targets.to(device)
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = criterion_CE(outputs[0], targets)
            loss.backward()
            optimizer.step()
            train_loss += loss.item()
            _, predicted = torch.max(outputs[0].data, 1)
            total += targets.size(0)
            correct += predicted.eq(targets.data).cpu().sum().float().item()
    elif stage == "paraphraser":  # train_Paraphraser.py: the teacher's feature is not detached
        model, module = nets["teacher"], nets["paraphraser"]
        optimizer, = optimizers
        for batch_idx, (inputs, targets) in enumerate(trainloader):
            inputs, targets = inputs.to(device), targets.to(device)
            optimizer.zero_grad()
            outputs = model(inputs)
            output_p = module(outputs[1][-1])
            loss = criterion(output_p, outputs[1][-1].detach())
            loss.backward()
            optimizer.step()
            train_loss += loss.item()
    else:  # train_student.py
        teacher, module_t, student, module_s = (nets[k] for k in ("teacher", "paraphraser", "student", "translator"))
        optimizer, optimizer_module = optimizers
        for batch_idx, (inputs, targets) in enumerate(trainloader):
            inputs, targets = inputs.to(device), targets.to(device)
            optimizer.zero_grad()
            optimizer_module.zero_grad()
            teacher_outputs = teacher(inputs)
            student_outputs = student(inputs)
            factor_t = module_t.encode(teacher_outputs[1][-1])
            factor_s = module_s(student_outputs[1][-1])
            loss = BETA * (criterion(_ft(factor_s), _ft(factor_t.detach()))) + criterion_CE(student_outputs[0], targets)
            loss.backward()
            optimizer.step()
            optimizer_module.step()
            train_loss += loss.item()
            _, predicted = torch.max(student_outputs[0].data, 1)
            total += targets.size(0)
            correct += predicted.eq(targets.data).cpu().sum().float().item()
    return train_loss


def _ft(x: torch.Tensor) -> torch.Tensor:
    """Their utils.FT: the factor flattened and L2-normalized per sample."""
    return F.normalize(x.view(x.size(0), -1))


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
        # One optimizer per trained network: the translator has its own, as in their script.
        self.optimizers = [torch.optim.SGD(n[name].parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
                           for name in TRAINED[stage]]

    def run(self, steps: int) -> int:
        window = _Window(self.batches, steps)  # one call of their train() per window, as (d)
        their_train(self.stage, self.nets, self.optimizers, window, self.device)
        return window.images


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
        sys.path.insert(0, str(root))  # their checkout, for their own `from utils import *` (this child process only)
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

