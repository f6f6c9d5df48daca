"""Each stage's settings as typed objects, resolved once from the command line.

A script's `resolve(args)` turns its argparse namespace into its config (`TeacherConfig`
in train_teacher.py, `ParaphraserConfig` in train_paraphraser.py, `StudentConfig` in
train_student.py), built from the groups below: it applies --recipe, the dataset's rules
(epochs -> iterations, milestones) and the checks, raising a one-line UserError for a bad
combination, and does no I/O of its own (the training-set size comes from a callable,
asked only for a schedule given in epochs).  Everything downstream reads the config.

A config is flat, one field per flag under the flag's name, so that `vars(config)` is
what args.json records (the same keys and values as before configs existed, so that old
run folders resume) and the training loop reads `config.iters` as it read `args.iters`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import Callable

from utils.errors import UserError

PAPER_ITERS = 64000  # the paper's CIFAR schedule (appendix): 64,000 iterations of 128 images

# What each --recipe sets, unless the flag is given: the paper's appendix, and the
# attention-transfer authors' CIFAR recipe (Zagoruyko & Komodakis 2017, their cifar.py:
# --epochs 200, --epoch_step [60,120,160], --lr_decay_ratio 0.2, BORDER_REFLECT
# padding, mean/std (125.3, 123.0, 113.9) / (63.0, 62.1, 66.7)), which the paper's
# Table 2 follows.  Batch 128, lr 0.1, momentum 0.9 and weight decay 5e-4 are the same
# in both.  Our epoch is (training images // batch size) steps: 390 on CIFAR, where
# their loader also ran a last partial batch (391 steps).  Their lr drop runs in
# torchnet's on_start_epoch hook of the epochs they number 60, 120, 160 (counted from
# 1), i.e. after 59, 119 and 159 finished epochs, and builds a new SGD optimizer there,
# so the momentum buffers restart from zero (--reset-momentum).
RECIPES = {
    "paper": {"lr_decay": 0.1, "pad_mode": "zero", "reset_momentum": False},
    "at": {"lr_decay": 0.2, "pad_mode": "reflect", "norm": "at", "epochs": 200.0, "reset_momentum": True,
           "milestone_fractions": [59 / 200, 119 / 200, 159 / 200]},
}
WRN_INITS = ("standard", "at")


# ---------------------------------------------------------------------- the groups

@dataclass(kw_only=True)
class DataConfig:
    dataset: str
    data_root: str
    norm: str | None  # None: the dataset's own statistics
    pad_mode: str
    recipe: str
    train_subset: int | None
    test_subset: int | None
    workers: int | None  # imagenet only; None: the node's cores / processes


@dataclass(kw_only=True)
class ScheduleConfig:
    iters: int
    milestones: list[int]
    lr_decay: float
    lr: float
    momentum: float
    wd: float
    batch_size: int
    milestone_fractions: list[float]
    default_iters: int | None  # the script's default --iters (None: the paraphraser's epochs); not a flag


@dataclass(kw_only=True)
class EpochsConfig:
    """The teacher's and student's schedule in epochs (the paraphraser's --epochs is its own)."""
    epochs: float | None
    milestone_epochs: list[float] | None
    reset_momentum: bool


@dataclass(kw_only=True)
class RunConfig:
    out: str
    seed: int
    device: str
    eval_every: int
    eval_batch_size: int
    force: bool
    progress: str
    sync_bn: bool
    amp: str
    channels_last: bool | None  # None: auto (utils.perf.fast_paths)
    compile: bool
    cuda_graph: bool
    tf32: bool
    deterministic: bool
    fold_bn: bool | None  # None: auto (utils.perf.fast_paths)


@dataclass(kw_only=True)
class NetworkConfig:
    """Set-up of the trained networks (`set_up_network`)."""
    wrn_init: str
    bn_images: int


def from_values(cls, values: dict):
    """`cls` from a namespace's resolved values; every flag must have its field."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field for {', '.join(unknown)}")
    return cls(**values)


def show(config) -> str:
    """The resolved settings, a line per group (the class that declares the fields)."""
    lines, seen = [f"{type(config).__name__}:"], set()
    for cls in type(config).__mro__:  # the stage's own fields first, then its groups
        own = [name for name in cls.__dict__.get("__annotations__", {}) if name not in seen]
        if own:
            seen.update(own)
            group = cls.__name__.removesuffix("Config").lower() or "settings"
            lines.append(f"  {group:<13} " + " ".join(f"{n}={getattr(config, n)!r}" for n in own))
    return "\n".join(lines)


def print_config(config) -> None:
    """Print the resolved settings once at the start of a run (the main process's), on
    stdout with the run's evaluation lines."""
    from utils import distributed

    if distributed.is_main():
        print(show(config), flush=True)


# ---------------------------------------------------------------------- resolution steps
# Each works on a dict of the namespace's values, which the script's resolve() turns
# into its config; `vars(args)` itself is never changed.

def check_positive(args, *names: str) -> None:
    """`args`: a namespace, a config or a dict of values."""
    get = args.get if isinstance(args, dict) else lambda n: getattr(args, n)
    for name in names:
        value = get(name)
        if value is not None and not value > 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")


def apply_recipe(v: dict, *, schedule: bool) -> None:
    """Fill the flags the user left unset (None) from --recipe.  `schedule`: the schedule
    entries too (teacher, student); the paraphraser takes the recipe's data handling
    (padding, normalization) and keeps its own schedule."""
    for name, value in RECIPES[v["recipe"]].items():
        if name == "milestone_fractions":
            if schedule:
                v["milestone_fractions"] = list(value)  # with --iters N: the same fractions of N
        elif name == "epochs":
            if schedule and v["iters"] is None and v["epochs"] is None:
                v["epochs"] = value  # --iters given: the recipe's epochs do not apply
        elif name in v and v[name] is None:
            v[name] = value


def resolve_epochs(v: dict, train_images: Callable[[], int]) -> None:
    """--epochs / --milestone-epochs -> --iters / --milestones, with an epoch of
    (training images // batch size) steps (the last partial batch is dropped)."""
    if v["iters"] is None and v["epochs"] is None:
        v["iters"] = v["default_iters"]
    if v["epochs"] is None and v["milestone_epochs"] is None:
        return
    if v["iters"] is not None and v["epochs"] is not None:
        raise UserError("give --iters or --epochs, not both")
    if v["dataset"] == "imagenet":
        raise UserError("--epochs / --milestone-epochs / --recipe at are for the CIFAR tensor pipeline; "
                        "give --iters and --milestones for ImageNet")
    check_positive(v, "batch_size", "epochs")
    steps = train_images() // v["batch_size"]
    if steps < 1:
        raise UserError(f"--batch-size {v['batch_size']} is larger than the training set")
    if v["epochs"] is not None:
        v["iters"] = max(1, round(v["epochs"] * steps))
    if v["milestone_epochs"] is not None:
        if v["milestones"] is not None:
            raise UserError("give --milestones or --milestone-epochs, not both")
        v["milestones"] = [round(e * steps) for e in v["milestone_epochs"]]


def check_schedule(v: dict) -> None:
    """The checks of a schedule whose --iters is known, and its milestones by default:
    the fractions `milestone_fractions` of --iters."""
    check_positive(v, "iters", "lr", "batch_size", "eval_every", "eval_batch_size", "lr_decay")
    if v["wd"] < 0 or v["momentum"] < 0:
        raise UserError("--wd and --momentum must not be negative")
    for name in ("train_subset", "test_subset"):
        if v[name] is not None and v[name] <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {v[name]}")
    if v["milestones"] is None:
        derived = {round(v["iters"] * f) for f in v["milestone_fractions"]}
        v["milestones"] = sorted(m for m in derived if 0 < m < v["iters"])
    ms = v["milestones"]
    if ms != sorted(set(ms)):
        raise UserError(f"--milestones must be strictly increasing, got {ms}")
    if ms and (ms[0] <= 0 or ms[-1] >= v["iters"]):
        raise UserError(f"--milestones must lie between 1 and --iters - 1 ({v['iters'] - 1}), got {ms}")


def resolve_network(v: dict) -> None:
    if v["wrn_init"] is None:
        v["wrn_init"] = "at" if v["recipe"] == "at" else "standard"
    bn_images, batch = v["bn_images"], v["batch_size"]
    if bn_images < 0 or (0 < bn_images < batch and batch % bn_images):
        raise UserError(f"--bn-images {bn_images} must be 0 or divide --batch-size {batch}")
    if bn_images and v.get("sync_bn", False):
        raise UserError("--bn-images and --sync-bn contradict each other: choose slices or the global batch")


def check_arch(name: str) -> None:
    from models import check_model_name

    try:
        check_model_name(name)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def train_size_of(args: argparse.Namespace) -> Callable[[], int]:
    """The training-set size a schedule in epochs needs, read when asked: CIFAR's is known,
    a folder's and ImageNet's are counted on disk."""
    def count() -> int:
        if args.dataset == "imagenet" and args.train_subset is None:
            from utils.imagenet import load_imagenet

            return len(load_imagenet(args.data_root).train_samples)
        from utils.data import train_size

        return train_size(args.dataset, args.data_root, args.train_subset)
    return count


def resolve_classifier_stage(v: dict, train_images: Callable[[], int]) -> None:
    """What the teacher and student scripts share: recipe, epochs, schedule checks, network set-up."""
    apply_recipe(v, schedule=True)
    resolve_epochs(v, train_images)
    check_schedule(v)
    resolve_network(v)
