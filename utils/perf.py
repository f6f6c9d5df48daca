"""Speed settings: the process-level ones leave every number unchanged; the float32 fast
paths change rounding only.

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

`fold_frozen_batchnorm(task)`: in eval mode a BatchNorm is a fixed affine map, so a
frozen network's conv -> BN pair is one convolution with rescaled weights and a bias, one
pass over the activations fewer per layer.  The teacher's forward is most of a
paraphraser step.

`fast_paths(args, device)`: --channels-last and --fold-bn change float32 rounding only
(tests/test_fastpaths.py bounds the difference); left at auto they are on for the CPU,
where `scripts/benchmark.py` measures both faster, and off on CUDA until measured there.

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


def fast_paths(args, device: torch.device) -> dict[str, bool]:
    """The float32 fast paths a run uses: --channels-last / --fold-bn as given, or at auto
    (None) on for the CPU and off on CUDA (module docstring)."""
    auto = device.type == "cpu"
    chosen = {name: getattr(args, name, None) for name in ("channels_last", "fold_bn")}
    return {name: auto if value is None else bool(value) for name, value in chosen.items()}


def prepare_task(task: nn.Module, device: torch.device, fold_bn: bool = False,
                 channels_last: bool = False) -> None:
    """A task's modules as `fit` trains them: frozen BNs folded, the whole task channels-last."""
    if fold_bn:
        fold_frozen_batchnorm(task)
    if channels_last:
        task.to(memory_format=torch.channels_last)


def is_channels_last(model: nn.Module) -> bool:
    """Are the model's convolution weights in channels-last format (prepare_task)?  Its
    inputs are then best given in that format too."""
    weight = next((p for p in model.parameters() if p.dim() == 4), None)
    return (weight is not None and weight.is_contiguous(memory_format=torch.channels_last)
            and not weight.is_contiguous())
