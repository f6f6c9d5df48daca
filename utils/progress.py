"""What a run shows of itself as it trains: the on-device window of loss sums read back at
each evaluation (`add_to_window`, `read_window`: no host sync per step, a non-finite loss
named by its iteration), the progress bar named after the run, its postfix, the log line and
the TensorBoard scalars.  The loop (utils/train.py) calls these; nothing here trains."""

from __future__ import annotations

import math

import torch

from utils import distributed
from utils.errors import UserError


class TrainingDiverged(UserError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


def run_label(identity: dict) -> str:
    """A run in a few words, for its progress bar: stage or method, network, seed
    ("FT resnet20 s1", "teacher resnet56 s0", "paraphraser k0.5 of resnet56 s0")."""
    seed = f"s{identity.get('seed', 0)}"
    if identity.get("stage") == "student":
        return f"{identity['method'].upper()} {identity['arch']} {seed}"
    if identity.get("stage") == "paraphraser":
        kind = "" if identity.get("kind") in (None, "conv") else f"{identity['kind'].upper()} "
        return f"paraphraser {kind}k{identity.get('k')} of {(identity.get('teacher') or {}).get('arch')} {seed}"
    return f"{identity.get('stage', 'run')} {identity.get('arch', '')} {seed}"


def progress_bar(args, total: int, initial: int, identity: dict | None = None):
    """The run's progress bar, named after the run; `_show` puts each evaluation's loss
    parts and test error on it."""
    from tqdm import tqdm

    disable = {"auto": None, "on": False, "off": True}[args.progress] if args is not None else True
    return tqdm(total=total, initial=initial, disable=disable, dynamic_ncols=True, leave=False,
                desc=run_label(identity or {}))


def add_to_window(window: dict | None, losses: dict, logits: torch.Tensor | None, y: torch.Tensor,
                  total: torch.Tensor) -> dict:
    """Add one step to the on-device sums of each loss part and the training error since
    the last evaluation (a new window when `window` is None), with no host sync: every
    tensor a step adds is computed on the device from device tensors (a tensor made from a
    Python number would be a blocking host-to-device copy on CUDA).  A NaN stays NaN in
    its sum; `first_bad` keeps the position in the window (1-based) of the first step whose
    total was not finite, -1 while none was (`read_window` turns it into an iteration)."""
    device = total.device
    parts = {k: v.detach().float() for k, v in losses.items()}
    if logits is not None:
        parts["train_error"] = 100.0 * (logits.detach().argmax(1) != y).float().mean()
    if window is None:
        window = {k: torch.zeros((), device=device) for k in (*parts, "steps", "first_bad")}
        window["first_bad"] -= 1
    bad = ~torch.isfinite(total.detach())
    window["first_bad"] = torch.where(bad & (window["first_bad"] < 0), window["steps"] + 1, window["first_bad"])
    for k, v in parts.items():
        window[k] += v
    window["steps"] += 1
    return window


def read_window(window: dict, done: int) -> dict:
    """Host copy of the window's means; raises TrainingDiverged on a non-finite loss."""
    keys = sorted(k for k in window if k != "first_bad")
    stacked = torch.stack([window[k].float() for k in keys])
    first_bad = window["first_bad"].clone()
    if distributed.active():  # means over ranks; the first bad iteration any rank saw
        stacked = distributed.all_reduce_sum(stacked) / distributed.world_size()
        flagged = torch.where(first_bad < 0, torch.full_like(first_bad, float("inf")), first_bad)
        torch.distributed.all_reduce(flagged, op=torch.distributed.ReduceOp.MIN)
        first_bad = torch.where(torch.isinf(flagged), torch.full_like(flagged, -1.0), flagged)
    values = dict(zip(keys, stacked.tolist()))
    first_bad = first_bad.item()
    steps = values.pop("steps")
    if first_bad >= 0 or not all(math.isfinite(v) for v in values.values()):
        parts = sorted(k for k, v in values.items() if not math.isfinite(v))
        # the window's steps are iterations done - steps + 1 .. done (1-based)
        where = (f"iteration {int(done - steps + first_bad)}" if first_bad >= 0
                 else f"the iterations before {done}")
        raise TrainingDiverged(
            f"loss became NaN/inf at {where} (parts: {', '.join(parts) or 'total'}); the last good "
            f"checkpoint is kept; lower --lr (or use BN / --recon-loss l1) and re-run with --force")
    record = {f"loss_{k}" if k != "train_error" else k: v / steps for k, v in values.items()}
    return record


def log_scalars(writer, record: dict, step: int) -> None:
    for key, value in record.items():
        if key in ("iter",) or not isinstance(value, (int, float)):
            continue
        group = "loss" if key.startswith("loss_") else "train" if key in ("lr", "train_error") else \
            "time" if key == "wall_time_s" else "eval"
        writer.add_scalar(f"{group}/{key.removeprefix('loss_')}", value, step)
    writer.flush()


def bar_postfix(record: dict) -> str:
    """The last evaluation's loss parts (means over the steps since the one before) and
    test error, as the bar shows them: "ce 1.675 ft 5.931 | test error 52.23"."""
    losses = [f"{k.removeprefix('loss_')} {v:.4g}" for k, v in record.items() if k.startswith("loss_")]
    tests = [f"{k.replace('_', ' ')} {v:.4g}" for k, v in record.items()
             if k in ("test_error", "recon_test", "test_recon") or (k.startswith("recon") and "test" in k)]
    return "  ".join(losses) + (" | " + "  ".join(tests) if tests else "")


def show(bar, record: dict, iters: int) -> None:
    bar.set_postfix_str(bar_postfix(record), refresh=False)
    bar.write(summary_line(record, iters))


def summary_line(record: dict, iters: int) -> str:
    shown = [f"iter {record['iter']}/{iters}", f"lr {record['lr']:.4g}"]
    for key, value in record.items():
        if key.startswith("loss_") or key.endswith("error") or key.startswith("recon"):
            shown.append(f"{key.removeprefix('loss_')} {value:.4g}")
    return "  ".join(shown)
