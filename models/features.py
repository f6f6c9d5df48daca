"""What a network declares about its feature groups, as timm's `feature_info` does: each
group's channels and spatial reduction (input side / map side).  The modules built on a
group (the paraphraser, the translator, AT's group pairs) are shaped from this, without a
dummy forward pass; tests/test_models.py checks every registered network against its
actual forward."""
from __future__ import annotations

from typing import NamedTuple, Sequence

from torch import nn


class Group(NamedTuple):
    channels: int
    reduction: int  # input height / the group map's height (and the same for width)


def feature_groups(channels: Sequence[int], reductions: Sequence[int]) -> list[Group]:
    return [Group(c, r) for c, r in zip(channels, reductions, strict=True)]


def group_channels(model: nn.Module) -> list[int]:
    return [g.channels for g in model.feature_info]


def group_shapes(model: nn.Module, size: Sequence[int]) -> list[tuple[int, int, int]]:
    """(C, H, W) of each group's map for an input of height x width `size`.  The networks
    downsample with stride-2 convolutions (padding 1), which round up; VGG's pooling rounds
    down, the same for the sizes it takes (multiples of 16)."""
    h, w = size
    return [(g.channels, -(-h // g.reduction), -(-w // g.reduction)) for g in model.feature_info]
