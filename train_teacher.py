"""Stage 1: train the teacher network with cross-entropy (also: any network alone).

    python train_teacher.py --dataset cifar10 --arch resnet56 --out runs/c10/teacher-resnet56-s0
"""

import argparse
import json

import torch

from models import build_model, check_model_name
from utils.cli import add_network_args, resolve_network_args, set_up_network
from utils.cli import PAPER_ITERS, add_data_args, add_run_args, add_schedule_args, check_schedule, run_main
from utils.errors import UserError
from utils.distill.base import Classification
from utils.train import Stage, classification_metrics, fit, load_training_data, open_run, resolve_device


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Factor Transfer, stage 1: train a teacher network with cross-entropy.")
    parser.add_argument("--arch", default="resnet56",
                        help="network from the model registry (models.MODELS, models.VARIANTS) or wrn_D_W (default: resnet56)")
    add_data_args(parser)
    add_schedule_args(parser, iters=PAPER_ITERS)
    add_run_args(parser)
    add_network_args(parser)
    return parser


def main(args: argparse.Namespace) -> None:
    check_schedule(args)
    resolve_network_args(args)
    try:
        check_model_name(args.arch)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    device = resolve_device(args.device)

    # ---------------------------------------------------------------- run folder
    run = open_run(args)
    if run is None:
        return

    # ---------------------------------------------------------------- data
    data = load_training_data(args, device)

    # ---------------------------------------------------------------- network
    torch.manual_seed(args.seed)
    model = set_up_network(build_model(args.arch, data.num_classes), args).to(device)
    task = Classification(model)

    # ---------------------------------------------------------------- train
    stage = Stage(
        kind="teacher", task=task, trainable=task.trainable(), primary="test_error",
        evaluate=lambda: classification_metrics(model, data, args.eval_batch_size, args.amp),
        info={"arch": args.arch, "num_classes": data.num_classes, "dataset": args.dataset},
        identity={"stage": "teacher", "arch": args.arch, "dataset": args.dataset, "recipe": args.recipe,
                  "iters": args.iters, "seed": args.seed},
    )
    result = fit(stage, data, run, args)
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    run_main(main, get_args_parser())
