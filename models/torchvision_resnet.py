"""torchvision's ImageNet ResNet-18 / ResNet-34 (Table 6), with the (logits, feats) contract.

The wrapper adopts the torchvision network's modules as its own children (conv1,
bn1, layer1..layer4, fc, ...), so its state_dict has torchvision's keys and
torchvision's published weights load into it unchanged.  `feats` are the outputs
of layer1..layer4 (post-ReLU, as torchvision's BasicBlock ends with a ReLU); the
last group, layer4, is the input to the final pooling: 512 x 7 x 7 at 224 x 224.

`--teacher torchvision:resnet34` names torchvision's ImageNet weights instead of a
teacher run folder (`load_teacher_spec`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from models.features import check_tap, feature_groups

TEACHER_SPEC_PREFIX = "torchvision:"


class PretrainedWeightsError(RuntimeError):
    """Weights that cannot be had: an unknown name, an offline machine, a damaged file.  The
    message is one line that says what to do; utils.checkpoint.load_classifier passes it on
    to the user as a UserError."""


# torchvision's weight enums; IMAGENET1K_V1 is the recipe of He et al. (the paper's era).
PRETRAINED = {"resnet18": "ResNet18_Weights.IMAGENET1K_V1", "resnet34": "ResNet34_Weights.IMAGENET1K_V1"}


class TorchvisionResNet(nn.Module):
    """A torchvision ResNet whose forward also returns the four stage outputs."""

    # BasicBlock widths (expansion 1); the stem's stride-2 conv and max-pool reduce by 4
    # (taps "post" and "raw": the stage modules' outputs)
    feature_info = feature_groups([64, 128, 256, 512], [4, 8, 16, 32],
                                  {"post": [f"layer{i}" for i in range(1, 5)], "raw": [f"layer{i}" for i in range(1, 5)]})

    def __init__(self, arch: str, num_classes: int = 1000):
        super().__init__()
        import torchvision  # here, not at the top: importing it costs every script ~2 s

        net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        for name, child in net.named_children():
            self.add_module(name, child)
        self.arch, self.num_classes = arch, num_classes

    def forward(self, x: torch.Tensor, tap: str = "post") -> tuple[torch.Tensor, list[torch.Tensor]]:
        check_tap(self, tap)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        logits = self.fc(torch.flatten(self.avgpool(x), 1))
        return logits, feats


def resnet18(num_classes: int = 1000) -> TorchvisionResNet:
    return TorchvisionResNet("resnet18", num_classes)


def resnet34(num_classes: int = 1000) -> TorchvisionResNet:
    return TorchvisionResNet("resnet34", num_classes)


def load_torchvision_pretrained(name: str) -> TorchvisionResNet:
    """torchvision's ImageNet weights (IMAGENET1K_V1) in the wrapper, 1000 classes.

    The file comes from torch hub's cache ($TORCH_HOME/hub/checkpoints), downloaded
    there when missing; an offline machine without the file gets a PretrainedWeightsError that
    says which file to put where.
    """
    if name not in PRETRAINED:
        raise PretrainedWeightsError(f"no torchvision ImageNet weights for '{name}'; choose one of "
                                     f"{', '.join(TEACHER_SPEC_PREFIX + n for n in PRETRAINED)}")
    import torchvision

    weights = torchvision.models.get_weight(PRETRAINED[name])
    file_name = weights.url.rsplit("/", 1)[-1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    model = TorchvisionResNet(name, num_classes=1000)
    try:
        model.load_state_dict(weights.get_state_dict(progress=False, check_hash=True))
    except Exception as exc:  # offline (URLError), proxy, hash mismatch, unreadable file
        if cached.exists():  # hub downloads to a temporary file: this one was put there
            raise PretrainedWeightsError(f"{cached} is not a readable {name} checkpoint "
                                         f"({type(exc).__name__}); delete it and download "
                                         f"{weights.url} again") from None
        raise PretrainedWeightsError(f"torchvision's ImageNet weights for {name} are not in the torch "
                                     f"hub cache and could not be downloaded ({type(exc).__name__}); "
                                     f"on an offline machine put {file_name} (from {weights.url}) "
                                     f"at {cached}") from None
    return model


def is_teacher_spec(teacher: str) -> bool:
    """True for `--teacher torchvision:NAME` (pretrained weights, no run folder)."""
    return str(teacher).startswith(TEACHER_SPEC_PREFIX)


def load_teacher_spec(spec: str) -> tuple[TorchvisionResNet, dict]:
    """`torchvision:NAME` -> (frozen pretrained network, checkpoint-like dict).

    The dict carries what later stages read from a teacher checkpoint: arch,
    num_classes, dataset (and kind "teacher", the source spec and weights tag).
    """
    if not is_teacher_spec(spec):
        raise PretrainedWeightsError(f"--teacher {spec}: expected {TEACHER_SPEC_PREFIX}NAME, NAME one "
                                     f"of {', '.join(PRETRAINED)}")
    name = spec[len(TEACHER_SPEC_PREFIX):]
    model = load_torchvision_pretrained(name)
    model.requires_grad_(False).eval()  # a teacher is frozen (utils.checkpoint.freeze)
    info = {"kind": "teacher", "arch": name, "num_classes": 1000, "dataset": "imagenet",
            "source": spec, "weights": PRETRAINED[name]}
    return model, info
