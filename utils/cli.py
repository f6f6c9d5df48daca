"""Command-line pieces shared by the three scripts: common arguments and the entry point.
What the arguments resolve to, and the checks, are in utils/config.py."""

from __future__ import annotations

import argparse
import sys

from utils.config import PAPER_ITERS, RECIPES, WRN_INITS, check_positive  # noqa: F401  (used by detection)
from utils.data import DATASETS, NORM_STATS, PAD_MODES
from utils.errors import UserError


def add_teacher_data_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher-data-copy", action="store_true",
                        help="let a teacher (and paraphraser) trained on another copy of this run's "
                             "images teach, e.g. one trained on the CIFAR-10 JPEG folder teaching on "
                             "torchvision's CIFAR-10 (JPEG changes pixels by a few levels); the class "
                             "count must still agree (default: the same --dataset only)")


def add_data_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default="cifar10", choices=(*DATASETS, "imagenet"),
                   help="cifar10 / cifar100 through torchvision; folder: an image-folder tree "
                        "(train/<class>/*, test/<class>/*; a directory or .tar.gz) trained with the "
                        "CIFAR recipe; imagenet: train/ and val/ class folders, the ImageNet recipe "
                        "(default: cifar10)")
    g.add_argument("--data-root", default="./data",
                   help="where the dataset is (or is downloaded to) (default: ./data)")
    g.add_argument("--norm", default=None, choices=(*NORM_STATS, "computed"),
                   help="normalization statistics: the CIFAR-10 / CIFAR-100 constants of the paper's "
                        "appendix, the attention-transfer code's (at), torchvision's ImageNet ones, or "
                        "computed from the training images (default: the dataset's own; folder: cifar10)")
    g.add_argument("--pad-mode", default=None, choices=PAD_MODES,
                   help="padding of the random crop: zero (the paper's recipe) or reflect (the "
                        "attention-transfer code's) (default: zero; --recipe at: reflect)")
    g.add_argument("--recipe", default="paper", choices=tuple(RECIPES),
                   help="paper: the paper's appendix (lr x0.1 at 50%% / 75%% of 64,000 iterations, zero "
                        "padding, the dataset's normalization); at: the attention-transfer authors' CIFAR "
                        "recipe that Table 2 follows (\"the same experimental environment of [31]\"): 200 "
                        "epochs, lr x0.2 with the momentum reset before the epochs their code numbers 60 / "
                        "120 / 160, i.e. after 59 / 119 / 159 (with --iters N: at 29.5%% / 59.5%% / 79.5%% "
                        "of N), reflect padding, --norm at. Flags given explicitly override the recipe's "
                        "values (default: paper)")
    g.add_argument("--train-subset", type=int, default=None, metavar="N",
                   help="train on N class-balanced training images, for quick checks (default: all)")
    g.add_argument("--test-subset", type=int, default=None, metavar="N",
                   help="evaluate on N class-balanced test images, for quick checks (default: all)")
    g.add_argument("--workers", type=int, default=None,
                   help="imagenet only: DataLoader decoding processes per training process "
                        "(default: the cores / processes on the node, at most 16)")


def add_schedule_args(parser: argparse.ArgumentParser, *, iters: int | None,
                      milestone_fractions: tuple[float, ...] = (0.5, 0.75), lr: float = 0.1,
                      wd: float = 5e-4, epochs: bool = True) -> None:
    """SGD schedule flags; `epochs`: also --epochs / --milestone-epochs (the teacher and
    student scripts; the paraphraser script has an --epochs of its own)."""
    g = parser.add_argument_group("optimization (SGD; defaults: the paper's CIFAR schedule)")
    shown_iters = (f"{iters}; with --epochs or --recipe at: the epochs' iterations" if epochs
                   else "--epochs of ((training images - --holdout's) // batch size) iterations")
    g.add_argument("--iters", type=int, default=None, help=f"training iterations (default: {shown_iters})")
    shown = [round(iters * f) for f in milestone_fractions] if iters else "none"
    g.add_argument("--milestones", type=int, nargs="*", default=None,
                   help=f"iterations at which lr is multiplied by --lr-decay (default: {shown}; with "
                        f"--iters N, the same fractions {list(milestone_fractions)} of N"
                        f"{'; --recipe at: after epochs 59 119 159' if epochs else ''})")
    if epochs:
        g.add_argument("--epochs", type=float, default=None,
                       help="train for this many epochs of (training images // batch size) iterations "
                            "instead of --iters (default: --iters; --recipe at: 200)")
        g.add_argument("--milestone-epochs", type=float, nargs="*", default=None,
                       help="milestones in epochs instead of --milestones (default: --milestones; "
                            "--recipe at: 59 119 159)")
        g.add_argument("--reset-momentum", action=argparse.BooleanOptionalAction, default=None,
                       help="zero SGD's momentum buffers at each milestone, as the attention-transfer "
                            "code does by building a new optimizer there (default: off; --recipe at: on)")
    g.add_argument("--lr-decay", type=float, default=None,
                   help="factor applied to lr at each milestone (default: 0.1; --recipe at: 0.2)")
    parser.set_defaults(milestone_fractions=list(milestone_fractions), default_iters=iters)
    g.add_argument("--lr", type=float, default=lr, help=f"initial learning rate (default: {lr})")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    g.add_argument("--wd", type=float, default=wd, help=f"weight decay (default: {wd})")
    g.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128)")


def add_run_folder_args(parser: argparse.ArgumentParser, *, eval_every: int, eval_batch_size: int,
                        eval_batch_help: str = "evaluation batch size"):
    """The run group every training script has (CIFAR, ImageNet, detection); returns it."""
    g = parser.add_argument_group("run")
    g.add_argument("--out", required=True,
                   help="run folder; re-running the same command there resumes it")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: cuda when available (default: auto)")
    g.add_argument("--eval-every", type=int, default=eval_every,
                   help=f"evaluate, log and checkpoint every N iterations (default: {eval_every})")
    g.add_argument("--eval-batch-size", type=int, default=eval_batch_size,
                   help=f"{eval_batch_help} (default: {eval_batch_size})")
    g.add_argument("--force", action="store_true", help="overwrite a run folder holding other arguments")
    g.add_argument("--progress", default="auto", choices=("auto", "on", "off"),
                   help="tqdm progress bar (auto: when stderr is a terminal) (default: auto)")
    return g


def add_run_args(parser: argparse.ArgumentParser, *, eval_every: int = 1000) -> None:
    g = add_run_folder_args(parser, eval_every=eval_every, eval_batch_size=1000)
    g.add_argument("--sync-bn", action="store_true",
                   help="under torchrun: batch-norm statistics over the global batch, not each process's")
    g = parser.add_argument_group(
        "speed", "float32 fast paths change only rounding; auto (the default) turns them on where "
        "scripts/benchmark.py measured them faster: the CPU")
    g.add_argument("--amp", default="none", choices=("none", "bf16"),
                   help="bf16 autocast for forward passes (default: none, fp32)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format for every network and batch (default: auto, "
                        "on for the CPU, off on CUDA)")
    g.add_argument("--compile", action="store_true", help="torch.compile the training step's modules")
    g.add_argument("--cuda-graph", action="store_true",
                   help="capture the whole training step as one CUDA graph and replay it (no kernel-launch "
                        "overhead; off until measured; on the CPU the same protocol runs eagerly)")
    g.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=False,
                   help="CUDA only: TF32 for convolutions and matrix products (Ampere and later GPUs: "
                        "products of 10-bit-mantissa inputs, float32 sums); off: IEEE float32, as the "
                        "paper's GPUs computed.  PyTorch's own default turns it on for cuDNN "
                        "convolutions (default: off)")
    g.add_argument("--deterministic", action="store_true",
                   help="CUDA only: cuDNN's deterministic algorithms instead of its autotuner's "
                        "fastest, so that two runs of one command, and a resumed run, give the same "
                        "numbers (slower) (default: off)")
    g.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="fold the frozen teacher's / paraphraser's BatchNorms into their convolutions "
                        "(same function, float32 rounding differs; default: auto, on for the CPU, "
                        "off on CUDA)")


# ---------------------------------------------------------------- network set-up flags
# Initialization and BatchNorm slicing of the trained networks (teacher and student scripts).


def add_network_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("network set-up")
    g.add_argument("--wrn-init", default=None, choices=WRN_INITS,
                   help="initialization of a wide ResNet: standard (Kaiming-normal fan-out convs, BN "
                        "weight 1) or at (the attention-transfer authors' code: fan-in Kaiming-normal "
                        "convs and linear layer, BN weights uniform in [0, 1)) (default: standard; "
                        "--recipe at: at)")
    g.add_argument("--bn-images", type=int, default=0,
                   help="BatchNorm statistics over slices of this many images of each training batch, "
                        "as per-GPU BN on several GPUs (MMRazor: 16 of 128); 0, or a batch no larger: over "
                        "the whole batch "
                        "(default: 0)")


def set_up_network(model, wrn_init: str = "standard", bn_images: int = 0):
    """Apply --wrn-init (to wide ResNets) and --bn-images to a freshly built network."""
    from models.wide_resnet import WideResNet, init_weights_at
    from utils.slicedbn import slice_batchnorm

    if wrn_init == "at" and isinstance(model, WideResNet):
        init_weights_at(model)
    if bn_images:
        slice_batchnorm(model, bn_images)
    return model


def run_main(main, parser: argparse.ArgumentParser, argv: list[str] | None = None) -> None:
    """Parse, run, and turn a UserError into a one-line message and exit status 2."""
    from utils import distributed
    from utils.train import Interrupted

    def one_line_error(message: str):
        print(f"{parser.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)

    parser.error = one_line_error  # argparse's own errors: one line too, no usage block
    args = parser.parse_args(argv)
    try:
        main(args)
    except UserError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        sys.exit(128 + exc.signum)
    finally:
        distributed.teardown()  # under torchrun: leave the process group before exit
