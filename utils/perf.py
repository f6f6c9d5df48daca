"""Process-level speed settings that leave the numbers unchanged.

`keep_freed_memory()`: glibc's malloc hands large freed blocks back to the kernel
(blocks above its mmap threshold are unmapped; free space at the top of the heap is
trimmed), so the next step's activations of the same size are page-faulted in again,
page by page.  A CIFAR FT student step on the CPU frees and re-faults about 250 MB this
way (60,000-100,000 minor faults and 0.15-0.25 s of kernel time per step on 2 cores).
Raising both thresholds keeps freed memory in the process for reuse: the same
arithmetic on the same addresses' worth of memory, no page faults, ~15% faster on the
CPU (`scripts/benchmark.py`).  Resident memory stays at the run's peak instead of
breathing, and free space up to the 1 GiB trim threshold stays mapped (the benchmark's
CPU student step: 2.27 GB resident against 2.0 GB for the reference pipeline).  Set FT_KEEP_FREED_MEMORY=0 to leave malloc as it is.

`fold_frozen_batchnorm(task)` (`--fold-bn`, off by default: it changes float32
rounding): in eval mode a BatchNorm is a fixed affine map, so a frozen network's
conv -> BN pair is one convolution with rescaled weights and a bias, one pass over
the activations fewer per layer.  The teacher's forward is most of a paraphraser step.

`exact_channels_last_stem(task)` (on by default for frozen networks on the CPU;
FT_EXACT_LAYOUT=0 turns it off): a frozen network's stem and first group (16 channels at
32x32 for the CIFAR ResNets) run in channels-last memory format, the rest in NCHW.
Where oneDNN computes a 16-channel convolution with the same kernel in both layouts (a
16-channel block is a channels-last row: AVX-512 machines), the features are the same
bits and the first group is ~15% of a ResNet-56 forward faster.  It is never assumed:
the first forward of each input shape runs both ways, compares every output bit for
bit and times both; a shape takes the channels-last path only if its outputs were
identical and it was faster.

`prepare_task(task, device, ...)` applies these to a task before training: what `fit`
does, and what the benchmark times as `fit`'s step.

`configure_backends(device)`: on CUDA, cuDNN's autotuner picks the fastest convolution
algorithm for each shape (the shapes of a CIFAR run never change).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import time

import torch
from torch import nn

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_THRESHOLD = 1 << 30  # 1 GiB: any activation or weight tensor of these networks is smaller
_done = False


def keep_freed_memory() -> bool:
    """Stop glibc from returning freed blocks to the kernel; True when the setting took."""
    global _done
    if _done:
        return True
    if os.environ.get("FT_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))
    return _done


def configure_backends(device: torch.device) -> None:
    """Process-wide settings for training on `device` (see the module docstring)."""
    keep_freed_memory()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold, in place, each BatchNorm of a frozen (eval-mode) network into the convolution
    that feeds it.  BNs that follow something else (pre-activation WRN blocks) stay.  The
    pairs are read off the torch.fx graph, so any traceable model works; a model that is
    not traceable is left as it is (still correct, just not faster)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if isinstance(model, nn.ModuleList):  # one paraphraser per link (multi-group FT)
        for module in model:
            fold_batchnorm(module)
        return model
    model.eval()
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:
        return model
    modules = dict(model.named_modules())

    def put(name, new):
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)

    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0]
        if (isinstance(source, torch.fx.Node) and source.op == "call_module"
                and isinstance(modules[source.target], (nn.Conv2d, nn.ConvTranspose2d))
                and len(source.users) == 1):
            conv = modules[source.target]
            put(source.target, fuse_conv_bn_eval(conv, modules[node.target],
                                                 transpose=isinstance(conv, nn.ConvTranspose2d)))
            put(node.target, nn.Identity())
    return model.requires_grad_(False)


def fold_frozen_batchnorm(task: nn.Module) -> None:
    """`fold_batchnorm` on each frozen network of a task (utils.methods.Task), in place, so
    that every reference the task holds to them sees the folded network."""
    for name in getattr(task, "_frozen_names", []):
        fold_batchnorm(getattr(task, name))


class _ExactChannelsLastStem:
    """Hooks of `exact_channels_last_stem` on one frozen network (see the module docstring)."""

    def __init__(self, model: nn.Module):
        self.verdicts: dict[tuple, bool] = {}
        self._probing = False
        model.register_forward_pre_hook(self._enter)
        model.groups[0].register_forward_hook(self._leave)

    def _enter(self, model, args):
        x = args[0] if args else None
        if (self._probing or torch.is_grad_enabled() or model.training or not isinstance(x, torch.Tensor)
                or x.dim() != 4 or x.device.type != "cpu" or not x.is_contiguous()):
            return None
        key = (tuple(x.shape), x.dtype, *_cpu_autocast())
        if key not in self.verdicts:
            self.verdicts[key] = self._probe(model, args)
        if self.verdicts[key]:
            return (x.contiguous(memory_format=torch.channels_last), *args[1:])
        return None

    def _probe(self, model, args) -> bool:
        x_cl = args[0].contiguous(memory_format=torch.channels_last)
        self._probing = True
        try:
            if not _identical(model(*args), model(x_cl, *args[1:])):
                return False
            plain, fast = [], []
            for _ in range(2):
                plain.append(_seconds(lambda: model(*args)))
                fast.append(_seconds(lambda: model(x_cl, *args[1:])))
            return min(fast) < min(plain)
        finally:
            self._probing = False

    @staticmethod
    def _leave(group, args, out):
        if isinstance(out, torch.Tensor) and not out.is_contiguous():
            return out.contiguous()  # back to NCHW for the rest of the network
        return None


def _cpu_autocast() -> tuple:
    try:
        return torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
    except (TypeError, AttributeError):  # torch < 2.4's spelling
        return torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _identical(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return (isinstance(b, (list, tuple)) and len(a) == len(b)
                and all(_identical(u, v) for u, v in zip(a, b)))
    return a == b


def exact_channels_last_stem(task: nn.Module) -> list[str]:
    """Put the probe-guarded channels-last stem (module docstring) on each frozen network of
    `task` that has `groups` (the CIFAR ResNets and WRNs); returns their names.  Not for
    --channels-last (the whole task is channels-last then) or --compile runs."""
    if os.environ.get("FT_EXACT_LAYOUT", "1") == "0":
        return []
    done = []
    for name in getattr(task, "_frozen_names", []):
        model = getattr(task, name)
        groups = getattr(model, "groups", None)
        if isinstance(groups, nn.ModuleList) and len(groups) > 0 and not hasattr(model, "_exact_stem"):
            model._exact_stem = _ExactChannelsLastStem(model)
            done.append(name)
    return done


def prepare_task(task: nn.Module, device: torch.device, fold_bn: bool = False,
                 channels_last: bool = False, compile: bool = False) -> None:
    """A task's modules as `fit` trains them: frozen BNs folded (--fold-bn), the whole task
    channels-last (--channels-last), else, on the CPU and not compiled, the probe-guarded
    channels-last stem of its frozen networks."""
    if fold_bn:
        fold_frozen_batchnorm(task)
    if channels_last:
        task.to(memory_format=torch.channels_last)
    elif device.type == "cpu" and not compile:
        exact_channels_last_stem(task)
