"""BatchNorm over slices of the batch: one device reproducing several GPUs' per-GPU BN.

MMRazor trains its CIFAR-10 ResNet-50 -> ResNet-18 Factor Transfer on 8 GPUs x 16 images
with plain (not synchronized) BatchNorm, so each BN normalizes over 16 images. With
`--bn-images 16`, a batch of 128 on one device is normalized as 8 separate batches of 16
(docs/mmrazor.md). The running statistics follow the first slice, as DistributedDataParallel
broadcasts rank 0's buffers to every rank before each forward.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class SlicedBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose training-mode statistics are those of each `images`-image slice."""

    images: int = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if not self.training or self.images <= 0 or n <= self.images:
            return super().forward(x)
        if n % self.images:
            raise ValueError(f"a batch of {n} does not split into slices of {self.images} images")
        slices = x.reshape(n // self.images, self.images, *x.shape[1:])
        mean = slices.mean(dim=(1, 3, 4), keepdim=True)
        var = slices.var(dim=(1, 3, 4), unbiased=False, keepdim=True)
        y = (slices - mean) * torch.rsqrt(var + self.eps)
        y = y.reshape(x.shape) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                count = self.images * x.shape[2] * x.shape[3]
                momentum = 0.1 if self.momentum is None else self.momentum
                self.num_batches_tracked.add_(1)
                self.running_mean.lerp_(mean[0].flatten(), momentum)
                self.running_var.lerp_(var[0].flatten() * count / (count - 1), momentum)
        return y


def slice_batchnorm(module: nn.Module, images: int) -> nn.Module:
    """Turn every nn.BatchNorm2d under `module` into a SlicedBatchNorm2d of `images` images
    (parameters and buffers kept); returns the module."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            sliced = SlicedBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats, device=child.weight.device)
            sliced.load_state_dict(child.state_dict())
            sliced.images = images
            setattr(module, name, sliced)
        else:
            slice_batchnorm(child, images)
    return module
