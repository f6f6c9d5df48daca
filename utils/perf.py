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

`configure_backends(device, tf32, deterministic)`: on CUDA, cuDNN's autotuner picks the
fastest convolution algorithm for each shape (the shapes of a CIFAR run never change)
unless --deterministic; convolutions and matrix products run in IEEE float32 unless
--tf32 (PyTorch's own default is TF32 for cuDNN convolutions: a decision, recorded in
final.json's "backends").
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import inspect
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


def configure_backends(device: torch.device, tf32: bool = False, deterministic: bool = False) -> dict:
    """Process-wide settings for training on `device` (see the module docstring); returns
    what they are, for final.json.  On CUDA: TF32 for convolutions and matrix products only
    with `tf32` (PyTorch's default allows it for convolutions), cuDNN's autotuner unless
    `deterministic`, which takes cuDNN's deterministic algorithms instead."""
    keep_freed_memory()
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
    return {"tf32": cuda and tf32, "cudnn_benchmark": cuda and not deterministic,
            "cudnn_deterministic": cuda and deterministic}


def fold_batchnorm(model: nn.Module, tap: str = "post") -> nn.Module:
    """Fold, in place, each BatchNorm of a frozen (eval-mode) network into the convolution
    that feeds it.  BNs that follow something else (pre-activation WRN blocks) stay.  The
    pairs are read off the torch.fx graph of the forward that returns the `tap` maps
    (models/features.py), so a convolution whose output that tap returns keeps its BN;
    any traceable model works; a model that is not traceable is left as it is (still
    correct, just not faster)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if isinstance(model, nn.ModuleList):  # one paraphraser per link (multi-group FT)
        for module in model:
            fold_batchnorm(module)
        return model
    model.eval()
    try:
        takes_tap = "tap" in inspect.signature(model.forward).parameters
        graph = torch.fx.symbolic_trace(model, concrete_args={"tap": tap} if takes_tap else None).graph
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
    """`fold_batchnorm` on each frozen network of a task (utils.distill.base.Task), in place, so
    that every reference the task holds to them sees the folded network."""
    for name in getattr(task, "_frozen_names", []):
        # the teacher's maps are the task's teacher tap (utils.distill.base.Distillation)
        fold_batchnorm(getattr(task, name), getattr(task, "tap_t", "post") if name == "teacher" else "post")


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


class GraphedStep:
    """--cuda-graph: the whole training step (frozen teacher and paraphraser forward,
    student and translator forward and backward, SGD update) captured once as one CUDA
    graph and replayed each iteration, so a step costs one launch instead of hundreds.

    The batch is copied into static input tensors first.  Capturing needs a few warm-up
    steps (cuDNN's choices, the optimizer's momentum buffers, the autograd state); they
    run on the first batch and are then undone (weights, BatchNorm statistics and momentum
    buffers copied back in place; a buffer that did not exist yet is zeroed, which is the
    same first update), so the run's numbers follow the eager run's.  The learning rate is
    part of the captured update, so a new graph is captured whenever it changes (at each
    milestone).  Without CUDA (the test suite) the same protocol runs with the step
    executed eagerly instead of replayed.
    """

    WARMUP = 3

    def __init__(self, step, trainable: dict[str, nn.Module], optimizer: torch.optim.Optimizer,
                 device: torch.device):
        self.step, self.trainable, self.optimizer, self.device = step, trainable, optimizer, device
        self.cuda = device.type == "cuda"
        self.graph, self.lr, self.static_x, self.outputs = None, None, None, None
        self.captures = 0  # graphs captured: the first, then one per learning-rate change

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        if self.static_x is None:
            self.static_x, self.static_y = x.clone(), y.clone()  # clone keeps x's memory format
            self._warm_up()
        else:
            self.static_x.copy_(x)
            self.static_y.copy_(y)
        lr = [group["lr"] for group in self.optimizer.param_groups]
        if lr != self.lr:  # self.lr is None until the first capture
            self._capture()
            self.lr = lr
        if self.cuda:
            self.graph.replay()
            return self.outputs
        return self.step(self.static_x, self.static_y)

    def _warm_up(self) -> None:
        with torch.no_grad():
            saved = {name: {k: v.clone() for k, v in module.state_dict().items()}
                     for name, module in self.trainable.items()}
            momentum = {p: s["momentum_buffer"].clone() for p, s in self.optimizer.state.items()
                        if s.get("momentum_buffer") is not None}
        stream = torch.cuda.Stream(self.device) if self.cuda else None
        if stream is not None:
            stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            for _ in range(self.WARMUP):
                self.step(self.static_x, self.static_y)
        if stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(stream)
        with torch.no_grad():
            for name, module in self.trainable.items():
                for k, v in module.state_dict().items():
                    v.copy_(saved[name][k])
            for p, state in self.optimizer.state.items():
                buffer = state.get("momentum_buffer")
                if buffer is None:
                    continue
                if p in momentum:
                    buffer.copy_(momentum[p])
                else:
                    buffer.zero_()

    def _capture(self) -> None:
        self.captures += 1
        if not self.cuda:
            return  # the step runs eagerly
        self.graph = self.outputs = None  # the previous graph's memory goes back to the pool
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.outputs = self.step(self.static_x, self.static_y)
        self.graph = graph

