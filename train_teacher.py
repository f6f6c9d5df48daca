"""Stage 1: train the teacher network with cross-entropy (also: any network alone).

    python train_teacher.py --dataset cifar10 --arch resnet56 --out runs/c10/teacher-resnet56-s0
"""

import argparse
import json
from dataclasses import dataclass
from typing import Callable

import torch

from models import build_model
from utils.cli import PAPER_ITERS, add_data_args, add_network_args, add_run_args, add_schedule_args, run_main
from utils.cli import set_up_network
from utils.config import (DataConfig, EpochsConfig, NetworkConfig, RunConfig, ScheduleConfig, check_arch,
                          from_values, print_config, resolve_classifier_stage, train_size_of)
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


@dataclass(kw_only=True)
class TeacherConfig(DataConfig, ScheduleConfig, EpochsConfig, RunConfig, NetworkConfig):
    arch: str


def resolve(args: argparse.Namespace, train_images: Callable[[], int] | None = None) -> TeacherConfig:
    """The command line's settings: --recipe, epochs -> iterations, default milestones,
    checks.  `train_images`: the training-set size, asked for a schedule in epochs."""
    values = dict(vars(args))
    resolve_classifier_stage(values, train_images or train_size_of(args))
    check_arch(values["arch"])
    return from_values(TeacherConfig, values)


def main(args: argparse.Namespace) -> None:
    config = resolve(args)
    device = resolve_device(config.device)

    # ---------------------------------------------------------------- run folder
    run = open_run(config)
    if run is None:
        return

    # ---------------------------------------------------------------- data
    data = load_training_data(config, device)

    # ---------------------------------------------------------------- network
    torch.manual_seed(config.seed)
    model = set_up_network(build_model(config.arch, data.num_classes), config.wrn_init, config.bn_images).to(device)
    task = Classification(model)

    # ---------------------------------------------------------------- train
    stage = Stage(
        kind="teacher", task=task, trainable=task.trainable(), primary="test_error",
        evaluate=lambda: classification_metrics(model, data, config.eval_batch_size, config.amp),
        info={"arch": config.arch, "num_classes": data.num_classes, "dataset": config.dataset},
        identity={"stage": "teacher", "arch": config.arch, "dataset": config.dataset, "recipe": config.recipe,
                  "iters": config.iters, "seed": config.seed},
    )
    print_config(config)
    result = fit(stage, data, run, config)
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    run_main(main, get_args_parser())
