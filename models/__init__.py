"""Model registry: every network returns (logits, feats) and declares
`feature_info` (models/features.py), `num_classes` and `arch` (its registry name), so a
checkpoint can rebuild it with `build_model(arch, num_classes)`.

Every network's plain forward returns as feats[-1] the map its classifier pools; the
other maps a method may ask for are declared taps (models/features.py).  VARIANTS are
built by name the same way but are not the papers' networks: MMRazor's Factor Transfer
networks, resnet{18,50}_cifar with mmcls's initialization whose maps for FT are the
"pre_bn" tap (models/resnet_cifar_large.py, docs/mmrazor.md)."""
import re
from functools import partial
from typing import Callable

import torch.nn as nn

from models.resnet_cifar import resnet20, resnet32, resnet44, resnet56, resnet110
from models.resnet_cifar_large import resnet18_cifar, resnet18_cifar_mmcls, resnet50_cifar, resnet50_cifar_mmcls
from models.torchvision_resnet import resnet18, resnet34
from models.vgg import vgg13
from models.wide_resnet import wrn

MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "wrn_16_1": partial(wrn, 16, 1),
    "wrn_16_2": partial(wrn, 16, 2),
    "wrn_40_1": partial(wrn, 40, 1),
    "wrn_40_2": partial(wrn, 40, 2),
    "wrn_46_4": partial(wrn, 46, 4),
    "vgg13": vgg13,
    "resnet18_cifar": resnet18_cifar,
    "resnet50_cifar": resnet50_cifar,
    "resnet18": resnet18,  # torchvision's ImageNet ResNets (Table 6)
    "resnet34": resnet34,
}

# Built by name like MODELS, listed apart (see the module docstring); the names are in
# MMRazor's run folders and checkpoints.
VARIANTS: dict[str, Callable[..., nn.Module]] = {
    "resnet18_cifar_mmcls": resnet18_cifar_mmcls,  # MMRazor's FT student
    "resnet50_cifar_mmcls": resnet50_cifar_mmcls,  # MMRazor's FT teacher
}

_WRN_PATTERN = re.compile(r"wrn_(\d+)_(\d+)")


def model_names() -> list[str]:
    """Registered names, for argparse `choices` (any wrn_D_W is also accepted
    by `build_model`)."""
    return list(MODELS)


def check_model_name(name: str) -> None:
    """Raise ValueError for a name `build_model` would reject, without building it."""
    if name in MODELS or name in VARIANTS:
        return
    match = _WRN_PATTERN.fullmatch(name)
    if not match:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join([*MODELS, *VARIANTS])}, "
                         f"or wrn_D_W with D = 6n+4")
    depth, width = int(match.group(1)), int(match.group(2))
    if depth < 10 or (depth - 4) % 6 or width < 1:
        raise ValueError(f"WRN depth must be 6n+4 with n>=1 (10, 16, 22, 28, 40, ...) and width >= 1, "
                         f"got {name}")


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build a registered network, or any Wide ResNet named wrn_D_W.

    kwargs go to the constructor (e.g. shortcut="pad" for the CIFAR ResNets,
    dropout=0.3 for WRNs).
    """
    if name in MODELS:
        return MODELS[name](num_classes=num_classes, **kwargs)
    if name in VARIANTS:
        return VARIANTS[name](num_classes=num_classes, **kwargs)
    match = _WRN_PATTERN.fullmatch(name)
    if match:
        return wrn(int(match.group(1)), int(match.group(2)), num_classes=num_classes, **kwargs)
    raise ValueError(f"unknown model {name!r}; valid: {', '.join([*MODELS, *VARIANTS])}, "
                     f"or wrn_D_W with D = 6n+4")
