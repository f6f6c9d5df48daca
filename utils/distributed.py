"""Multi-process training under `torchrun` (DistributedDataParallel).

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; `setup` joins the process group
(NCCL on CUDA, gloo on the CPU, which is how the tests run two processes here).
Every rank draws the same global batch (a function of seed and iteration) and
keeps its own contiguous share, so the global batch, and with it the learning
rate, stays the paper's whatever the number of processes.  Rank 0 alone writes
the run folder.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.distributed as dist
from torch import nn

from utils.errors import UserError


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun; return this rank's device."""
    if env_world_size() <= 1 or dist.is_initialized():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                            device_id=device if device.type == "cuda" else None)
    return device


def teardown() -> None:
    """Leave the process group, if this process joined one: NCCL warns, and can hang at
    exit, when a process group is left for the interpreter to destroy."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def shard(n: int) -> slice:
    """This rank's contiguous share of n items (the whole range in one process)."""
    r, w = rank(), world_size()
    return slice(n * r // w, n * (r + 1) // w)


def local_batch(x: torch.Tensor, y: torch.Tensor):
    """This rank's share of a global batch; the global size must divide evenly."""
    w = world_size()
    if w == 1:
        return x, y
    if len(y) % w:
        raise UserError(f"--batch-size {len(y)} does not split evenly over {w} processes; "
                        f"use a multiple of {w}")
    part = shard(len(y))
    return x[part], y[part]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if active():
        dist.all_reduce(t)
    return t


def barrier() -> None:
    if active():
        dist.barrier()


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """Batch norm with statistics over the global batch, for CPU (gloo) processes.

    torch's SyncBatchNorm runs on GPUs only; this does the same with two
    autograd-aware all-reduces (sum and sum of squares), so CPU runs of several
    processes match one process with the same global batch.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce  # autograd-aware

        c = x.shape[1]
        count = torch.full((1,), x.numel() / c, device=x.device, dtype=x.dtype)
        with warnings.catch_warnings():  # deprecated in favour of a private API; still correct
            warnings.simplefilter("ignore", FutureWarning)
            stats = all_reduce(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * var * n / (n - 1))
        shape = (1, c, 1, 1)
        x_hat = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return x_hat * self.weight.view(shape) + self.bias.view(shape)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm2d -> global-batch statistics (torch's SyncBatchNorm on CUDA)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and type(child) is nn.BatchNorm2d:
            sync = GlooSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            if child.affine:
                sync.weight, sync.bias = child.weight, child.bias
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child, device)
    return module
