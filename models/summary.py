"""Parameter and multiply-add counts of the registered networks, the check on
the definitions against the papers' tables (their parameter counts).

    python -m models.summary [--dataset cifar10|cifar100] [--names resnet20 ...]
"""
import argparse

import torch
import torch.nn as nn

from models import build_model, model_names
from models.features import group_channels


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 32, 32)) -> int:
    """Multiply-adds of every Conv2d and Linear in one forward pass.

    Conv: output elements * (in_channels / groups) * kh * kw; transposed conv:
    input elements * (out_channels / groups) * kh * kw; Linear: in * out per
    output row. BN, ReLU, pooling and additions are not counted, the
    convention of the published ResNet figures (40.55M for ResNet-20).
    """
    total = 0

    def conv_hook(m: nn.Conv2d, inputs, out) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() * (m.in_channels // m.groups) * kh * kw

    def transposed_hook(m: nn.ConvTranspose2d, inputs, out) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += inputs[0].numel() * (m.out_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, inputs, out) -> None:
        nonlocal total
        total += (out.numel() // m.out_features) * m.in_features * m.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.ConvTranspose2d):
            handles.append(m.register_forward_hook(transposed_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(input_size))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["cifar10", "cifar100"], default="cifar10")
    parser.add_argument("--names", nargs="+", default=model_names(),
                        help="registered names or wrn_D_W (default: all registered)")
    return parser


def main(args: argparse.Namespace) -> None:
    num_classes = {"cifar10": 10, "cifar100": 100}[args.dataset]
    print(f"{'name':<16}{'params (M)':>12}{'MACs (G)':>12}   group channels  ({args.dataset}, 1x3x32x32)")
    for name in args.names:
        model = build_model(name, num_classes)
        print(f"{name:<16}{count_params(model) / 1e6:>12.4f}{count_macs(model) / 1e9:>12.4f}   {group_channels(model)}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
