"""The paraphraser: an autoencoder on the teacher's last-group feature map (paper Sec. 3.1).

It keeps H and W and changes only channels; its encoder output is the *teacher
factor* F_T that the student's translator learns to reproduce.  Layout (Sec. 3.1 and the appendix):

    encoder: conv C->C, conv C->kC, conv kC->kC
    decoder: deconv kC->kC, deconv kC->C, deconv C->C

every layer 3x3, stride 1, padding 1, with bias, then BatchNorm (optional) and
LeakyReLU(0.1), the decoder's last layer included.  `k` is the paraphrase rate.

Variants used by the paper's comparisons (Tables 1, 3, 4):
- `layers` = 1, 2 or 3 encoder layers (decoder mirrored), Table 4's depth ablation;
- `kind="cae"`: a convolutional autoencoder whose layers are stride-2 (each encoder
  conv halves H, W and doubles channels), the "CAE" column.
The RAE column is the conv paraphraser with k = 2 plus an L1 penalty on the factor
while it is trained (`utils.distill.paraphrase.factor_l1_penalty`).

Parameter counts (Table 4 lists 0.07M / 0.22M / 0.26M for 1 / 2 / 3 layers on
WRN-40-2, C = 128, k = 0.5): those are the *encoder's* counts (73,792 / 221,376 /
258,304 without BN); the whole autoencoder is about twice that (0.15M / 0.44M /
0.52M), so the paper counts the half that produces the factor
(tests/test_methods.py::test_table4_parameter_counts).
"""

from __future__ import annotations

import torch
from torch import nn

NEGATIVE_SLOPE = 0.1
KINDS = ("conv", "cae", "rae")


def bn_default(dataset: str) -> bool:
    """The paper's appendix: BN in paraphraser and translator for CIFAR-10 only (the
    image-folder source is meant for the CIFAR-10 copy)."""
    return dataset in ("cifar10", "folder")


def factor_channels(in_channels: int, k: float) -> int:
    """Channels of the factor for paraphrase rate k: int(round(C * k))."""
    return int(round(in_channels * k))


def encoder_widths(in_channels: int, k: float, layers: int = 3, kind: str = "conv") -> list[int]:
    """Channel widths along the encoder, input first.

    conv, 3 layers: C, C, kC, kC; 2 layers: C, C, kC; 1 layer: C, kC (Table 4).
    cae: C, 2C, 4C, 8C (each stride-2 layer doubles channels).
    """
    if kind == "cae":
        return [in_channels * 2 ** i for i in range(layers + 1)]
    out = factor_channels(in_channels, k)
    if out < 1:
        raise ValueError(f"paraphrase rate k={k} gives {out} factor channels for C={in_channels}")
    return {1: [in_channels, out], 2: [in_channels, in_channels, out],
            3: [in_channels, in_channels, out, out]}[layers]


def _layer(cin: int, cout: int, bn: bool, stride: int, transposed: bool) -> nn.Sequential:
    if transposed:
        # stride 2 with output_padding 1 exactly doubles H, W (the CAE decoder).
        conv = nn.ConvTranspose2d(cin, cout, 3, stride=stride, padding=1,
                                  output_padding=stride - 1, bias=True)
    else:
        conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=True)
    parts = [conv] + ([nn.BatchNorm2d(cout)] if bn else []) + [nn.LeakyReLU(NEGATIVE_SLOPE)]
    return nn.Sequential(*parts)


class ConvEncoder(nn.Sequential):
    """A stack of 3x3 conv -> [BN] -> LeakyReLU(0.1) layers through the given widths.

    The paraphraser's encoder and the student's translator are both this shape.
    """

    def __init__(self, widths: list[int], bn: bool, stride: int = 1):
        super().__init__(*[_layer(a, b, bn, stride, transposed=False) for a, b in zip(widths, widths[1:])])
        self.out_channels, self.reduction = widths[-1], stride ** (len(widths) - 1)

    def output_shape(self, shape) -> tuple[int, int, int]:
        """(C, H, W) of the output for an input map of shape (C_in, H, W); a stride-2 layer
        (padding 1) rounds up."""
        _, h, w = shape
        return self.out_channels, -(-h // self.reduction), -(-w // self.reduction)


class Paraphraser(nn.Module):
    """Autoencoder on the teacher's feature map; `encode(x)` is the teacher factor.

    Args:
        in_channels: C, the teacher's last-group channels.
        k: paraphrase rate (factor channels = round(C * k)); ignored by `cae`.
        bn: BatchNorm after every layer (paper: CIFAR-10 yes, CIFAR-100/ImageNet no).
        layers: encoder depth, 1-3 (decoder mirrored).
        kind: "conv" (the paper's, also used for RAE) or "cae" (stride-2 autoencoder).
    """

    def __init__(self, in_channels: int, k: float = 0.5, bn: bool = True, layers: int = 3,
                 kind: str = "conv"):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown paraphraser kind '{kind}', choose one of {KINDS}")
        if layers not in (1, 2, 3):
            raise ValueError(f"paraphraser layers must be 1, 2 or 3, got {layers}")
        self.config = dict(in_channels=in_channels, k=k, bn=bn, layers=layers, kind=kind)
        stride = 2 if kind == "cae" else 1
        widths = encoder_widths(in_channels, k, layers, kind)
        self.factor_channels = widths[-1]
        self.encoder = ConvEncoder(widths, bn, stride)
        back = widths[::-1]
        self.decoder = nn.Sequential(*[_layer(a, b, bn, stride, transposed=True)
                                       for a, b in zip(back, back[1:])])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher factor F_T."""
        return self.encoder(x)

    def decode(self, factor: torch.Tensor) -> torch.Tensor:
        return self.decoder(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction P(x) = decode(encode(x))."""
        return self.decode(self.encode(x))


def load_official_paraphraser(path: str) -> Paraphraser:
    """Load the authors' released paraphraser (CIFAR-10 ResNet-56, k=0.5, no BN).

    Their state dict names layers conv0..2 and deconv0..2; ours nests them as
    encoder.i.0 and decoder.i.0.  Channels and k are read off the weights.
    """
    blob = torch.load(path, map_location="cpu", weights_only=True)
    state = blob.get("state_dict", blob)
    in_channels = state["conv0.weight"].shape[1]
    k = state["conv2.weight"].shape[0] / in_channels
    model = Paraphraser(in_channels, k=k, bn=False, layers=3, kind="conv")
    renamed = {}
    for key, value in state.items():
        layer, param = key.split(".")
        part = "encoder" if layer.startswith("conv") else "decoder"
        renamed[f"{part}.{layer[-1]}.0.{param}"] = value
    model.load_state_dict(renamed)
    return model.eval()
