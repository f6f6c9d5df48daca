"""What a network declares about its feature groups, as timm's `feature_info` does: each
group's channels, spatial reduction (input side / map side) and taps, the module whose
output is the group's map for each kind of map a method may ask for.  The modules built
on a group (the paraphraser, the translator, AT's group pairs) are shaped from this,
without a dummy forward pass; tests/test_models.py checks every registered network's
declaration against its actual modules and forward.

Tap kinds (a method asks for one; a network's `forward(x, tap)` returns that kind's maps):

    post    each group's output as the plain forward returns it: after the group's last
            ReLU in a post-activation network; in a pre-activation WRN the raw residual sum
            for every group but the last, and after the network's final BN-ReLU for the
            last (the map the classifier pools: FT's "last group", Kim et al. 2018 Sec. 3.1)
    raw     the output of the group's own module: a WRN's last group before the final
            BN-ReLU, as the attention-transfer code takes every group (Zagoruyko &
            Komodakis 2017, cifar.py: `return o, [g0, g1, g2]`); the same maps as "post"
            in post-activation networks
    pre_bn  the last convolution of the group's last block, before its BN (and before the
            residual add and ReLU): the maps MMRazor's FT config records (docs/mmrazor.md)

Every network declares "post" and "raw"; "pre_bn" where a network implements it.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import torch
from torch import nn

TAPS = ("post", "raw", "pre_bn")


class TapError(ValueError):
    """A tap the network does not declare."""


class Group(NamedTuple):
    channels: int
    reduction: int  # input height / the group map's height (and the same for width)
    taps: Mapping[str, str]  # tap kind -> name of the module whose output is the group's map


def feature_groups(channels: Sequence[int], reductions: Sequence[int],
                   taps: Mapping[str, Sequence[str]]) -> list[Group]:
    """One Group per group; `taps` maps each tap kind ("post" at least) to the module names,
    one per group."""
    if "post" not in taps:
        raise ValueError("every network declares the 'post' tap, its plain forward's maps")
    for kind, names in taps.items():
        if kind not in TAPS or len(names) != len(channels):
            raise ValueError(f"tap {kind!r}: expected one of {TAPS} with {len(channels)} modules")
    return [Group(c, r, {kind: names[i] for kind, names in taps.items()})
            for i, (c, r) in enumerate(zip(channels, reductions, strict=True))]


def group_channels(model: nn.Module) -> list[int]:
    return [g.channels for g in model.feature_info]


def group_shapes(model: nn.Module, size: Sequence[int]) -> list[tuple[int, int, int]]:
    """(C, H, W) of each group's map for an input of height x width `size`, for every tap
    kind the network declares.  The networks downsample with stride-2 convolutions
    (padding 1), which round up; VGG's pooling rounds down, the same for the sizes it
    takes (multiples of 16)."""
    h, w = size
    return [(g.channels, -(-h // g.reduction), -(-w // g.reduction)) for g in model.feature_info]


def tap_kinds(model: nn.Module) -> list[str]:
    """The tap kinds every group of `model` declares ("post" for a network without taps)."""
    groups = getattr(model, "feature_info", None)
    if not groups or not all(hasattr(g, "taps") for g in groups):
        return ["post"]
    return [kind for kind in TAPS if all(kind in g.taps for g in groups)]


def check_tap(model: nn.Module, tap: str) -> None:
    """Raise TapError unless `model` declares `tap` for every group."""
    if tap == "post":  # every network's plain forward (feature_groups requires it)
        return
    kinds = tap_kinds(model)
    if tap not in kinds:
        raise TapError(f"{getattr(model, 'arch', type(model).__name__)} has no {tap!r} feature tap; "
                       f"it declares {', '.join(kinds)}")


def default_tap(model: nn.Module) -> str:
    """The tap that methods transferring "the group's map" (FT and its paraphraser, KTAN)
    take from `model`: "post", unless the registry built it under a name that says
    otherwise (MMRazor's networks: "pre_bn", models/__init__.py)."""
    return getattr(model, "transfer_tap", "post")


def forward_tap(model: nn.Module, x: torch.Tensor, tap: str = "post") -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(logits, each group's map of kind `tap`), leaving the model as it is.  "post" is the
    plain forward, so any (logits, feats) network works for it; other kinds are a forward
    argument of the network (constant per call: torch.compile and a captured CUDA graph
    see one fixed path)."""
    return model(x) if tap == "post" else model(x, tap=tap)
