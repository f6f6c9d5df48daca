"""The one training loop, evaluation and checkpointing that all three stages share.

A stage hands the loop a *task*: an nn.Module whose `forward(x, y)` returns
`(logits_or_None, {loss_name: scalar})`; the loop sums the losses.  Frozen parts
(teacher, paraphraser) live inside the task, in eval mode and without gradients.
The loop does no host synchronisation per step: loss sums and non-finite checks
stay on the device and are read back only every `eval_every` iterations.

Everything random in a step is a function of (seed, iteration) (`utils.data`), so
a run resumed from any checkpoint ends bit-for-bit where an uninterrupted run ends
(on the CPU).
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from utils import distributed, perf
from utils.data import ImageData
from utils.errors import UserError
from utils.progress import add_to_window, log_scalars, progress_bar, read_window, show
from utils.run import RunDir


class Interrupted(Exception):
    """SIGTERM/SIGINT arrived; a checkpoint was saved."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def resolve_device(name: str) -> torch.device:
    """The training device; under torchrun also joins the process group (this rank's GPU)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return distributed.setup(torch.device(name))


def zero_momentum(optimizer: torch.optim.Optimizer) -> None:
    """Restart SGD's momentum from zero in place (the same next update as a new optimizer:
    a buffer of zeros becomes the gradient; in place, so a captured CUDA graph sees it)."""
    for state in optimizer.state.values():
        buffer = state.get("momentum_buffer")
        if buffer is not None:
            buffer.zero_()


def lr_at(iteration: int, base_lr: float, milestones: list[int], gamma: float = 0.1) -> float:
    """Step schedule: base_lr * gamma ** (number of milestones already passed)."""
    return base_lr * gamma ** sum(iteration >= m for m in milestones)


def autocast(device: torch.device, amp: str, cache: bool = True):
    """bf16 autocast for --amp bf16; `cache=False` under CUDA graph capture (its cast cache
    would hold tensors from outside the graph)."""
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()


@torch.inference_mode()
def classification_metrics(model: nn.Module, data, batch_size: int, amp: str = "none") -> dict:
    """Top-1 / top-5 test error (%) and test cross-entropy of a `(logits, feats)` model on
    `data.val_batches` (CIFAR's test set, ImageNet's val/).

    Under torchrun each rank evaluates its shard and the sums are added across ranks:
    every rank gets the whole set's figures.
    """
    was_training = model.training
    model.eval()
    channels_last = perf.is_channels_last(model)
    sums = torch.zeros(4, device=data.device, dtype=torch.float64)  # wrong top-1, wrong top-5, loss, images
    for x, y in data.val_batches(batch_size):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(data.device, amp):
            logits = model(x)[0]
        sums[:3] += topk_wrong_and_loss(logits.float(), y)
        sums[3] += len(y)
    model.train(was_training)
    wrong1, wrong5, loss, n = distributed.all_reduce_sum(sums).tolist()
    return {"test_error": 100.0 * wrong1 / n, "test_error_top5": 100.0 * wrong5 / n, "test_loss": loss / n}


def topk_wrong_and_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(number wrong at top-1, number wrong at top-5, summed cross-entropy) of a batch."""
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
    return torch.stack([(top[:, 0] != y).sum().double(), (~(top == y[:, None]).any(dim=1)).sum().double(),
                        nn.functional.cross_entropy(logits, y, reduction="sum").double()])


@dataclass
class Stage:
    """What a script hands to `fit`."""

    kind: str                       # "teacher" | "paraphraser" | "student"
    task: nn.Module                 # forward(x, y) -> (logits | None, losses)
    trainable: dict[str, nn.Module]  # saved in the checkpoint, optimized
    evaluate: Callable[[], dict]    # metrics at the current weights
    primary: str                    # metric whose last/best go into final.json (lower is better ...
    info: dict = field(default_factory=dict)  # rebuild information stored in the checkpoint
    identity: dict = field(default_factory=dict)  # what the run is: args.json and final.json "run"
    maximize: bool = False          # ... unless set: higher is better (detection's mAP)


def make_step(task: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
              amp: str = "none", compile: bool = False, graph: bool = False):
    """One SGD step of `task` on a batch: returns (logits, losses, total loss).

    A task may define `auxiliary_step()`, run after the main update with its own
    optimizer (KTAN's discriminator); the losses it returns are logged with the
    others, and `auxiliary_state_dict()` / `load_auxiliary_state_dict()` carry its
    state through checkpoints.
    """
    forward = torch.compile(task) if compile else task
    auxiliary = getattr(task, "auxiliary_step", None)

    def step(x: torch.Tensor, y: torch.Tensor):
        with autocast(device, amp, cache=not graph):
            logits, losses = forward(x, y)
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if auxiliary is not None:
            with autocast(device, amp):
                losses = {**losses, **auxiliary()}
        return logits, losses, total

    return step


def dist_backend_is_nccl() -> bool:
    return torch.distributed.get_backend() == "nccl"


class _Stop:
    """Turns SIGTERM / SIGINT into a flag the loop checks between steps."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def poll(self, iteration: int, at_eval: bool = False) -> bool:
        """Has a stop been asked for?  Under torchrun all ranks agree (checked every
        20 iterations and at evaluations, so no rank stops at a different step)."""
        if not distributed.active():
            return self.signum is not None
        if iteration % 20 and not at_eval:
            return False
        flag = torch.tensor([0.0 if self.signum is None else float(self.signum)])
        if dist_backend_is_nccl():
            flag = flag.cuda()
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() > 0 and self.signum is None:
            self.signum = int(flag.item())
        return flag.item() > 0

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def fit(stage: Stage, data, run: RunDir, args) -> dict:
    """Train `stage` on `data` with the SGD schedule in `args`; return final.json's dict.

    Under torchrun every rank trains; rank 0 alone writes the run folder.
    """
    if distributed.is_main():
        run.start(stage.identity)
    try:
        return _fit(stage, data, run, args)
    finally:
        run.close()


def _fit(stage: Stage, data, run: RunDir, args) -> dict:
    """The loop, in the named steps of `_Training`: set up and resume, then per iteration
    one step, and at each evaluation point the evaluation, the log and the checkpoint."""
    training = _Training(stage, data, run, args)
    try:
        with _Stop() as stop:
            for it in range(training.start, args.iters):
                training.step(it)
                done = it + 1
                if done % args.eval_every == 0 or done == args.iters:
                    training.evaluate_and_save(done)
                if stop.poll(done, at_eval=done % args.eval_every == 0) and done < args.iters:
                    training.interrupt(done, stop.signum)
    finally:
        training.close()
    return training.finish()


class _Training:
    """The state of one `fit`: what is trained, how a step runs, where the run stands.
    Exact resume rests on the order of these steps (the checkpoint holds the weights, the
    optimizer, the loss window and the CPU random state; batches are a function of seed
    and iteration), so each does its part in the order the uninterrupted run does."""

    def __init__(self, stage: Stage, data, run: RunDir, args):
        self.stage, self.run, self.args = stage, run, args
        device = self.device = data.device
        self.backends = perf.configure_backends(device, getattr(args, "tf32", False),
                                                getattr(args, "deterministic", False))
        self.main = distributed.is_main()
        if distributed.active() and getattr(args, "sync_bn", False):
            for module in stage.trainable.values():
                distributed.convert_sync_batchnorm(module, device)
        params = [p for m in stage.trainable.values() for p in m.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.wd)
        self.next_batch = data.batches(args.batch_size, args.seed)
        self.fast = perf.fast_paths(args, device)
        perf.prepare_task(stage.task, device, self.fast["fold_bn"], self.fast["channels_last"])
        self.train_step = self._make_step()
        # a task whose loss follows the schedule (AT's decayed beta) is told each step's progress
        self.set_progress = getattr(stage.task, "set_progress", None)
        self._resume()

        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run.path), purge_step=self.start) if self.main else None
        self.reset_momentum = bool(getattr(args, "reset_momentum", False))
        self.t0 = time.perf_counter()
        if self.start >= args.iters:  # killed after the last checkpoint, before final.json
            self.record = run.last_metrics()
            self.metrics = {stage.primary: self.record[stage.primary]}
        stage.task.train()
        self.bar = progress_bar(args if self.main else None, args.iters, self.start, stage.identity)

    # ------------------------------------------------------------------ set-up
    def _make_step(self):
        stage, args, device = self.stage, self.args, self.device
        forward = stage.task
        if distributed.active():
            if hasattr(stage.task, "auxiliary_step"):
                raise UserError("this method's second optimizer (KTAN's discriminator) is not supported "
                                "under torchrun; run it in one process")
            from torch.nn.parallel import DistributedDataParallel

            forward = DistributedDataParallel(stage.task, device_ids=[device] if device.type == "cuda" else None)
        graphed = getattr(args, "cuda_graph", False)
        step = make_step(forward, self.optimizer, device, args.amp, args.compile, graph=graphed)
        if graphed:
            if hasattr(stage.task, "auxiliary_step") or distributed.active():
                raise UserError("--cuda-graph captures one optimizer's step in one process; drop it for "
                                "KTAN or under torchrun")
            if device.type != "cuda" and self.main:
                print("--cuda-graph: no CUDA device; the step runs eagerly through the same static "
                      "buffers", file=sys.stderr)
            step = perf.GraphedStep(step, stage.trainable, self.optimizer, device)
        return step

    def _resume(self) -> None:
        """Where the run starts: iteration 0, or the checkpoint's state."""
        stage, run = self.stage, self.run
        self.start, self.best_iter, self.wall_before = 0, None, 0.0
        self.best = -math.inf if stage.maximize else math.inf  # the best primary metric so far
        self.window = None  # on-device sums of each loss part since the last evaluation
        state = run.load_checkpoint()
        if state is not None:
            if state.get("kind") != stage.kind:
                raise UserError(f"{run.path} holds a {state.get('kind')} checkpoint, not a {stage.kind}; "
                                f"use another --out")
            for name, module in stage.trainable.items():
                module.load_state_dict(state["modules"][name])
            self.optimizer.load_state_dict(state["optimizer"])
            self.start, self.best, self.best_iter = state["iteration"], state["best"], state["best_iter"]
            self.wall_before = state["wall_time_s"]
            self.window = ({k: v.to(self.device) for k, v in state["window"].items()} if state["window"]
                           else None)
            torch.set_rng_state(state["rng_cpu"])
            if state.get("auxiliary") is not None:
                stage.task.load_auxiliary_state_dict(state["auxiliary"])
            if self.main:
                print(f"resuming {run.path} from iteration {self.start}", file=sys.stderr)
        if self.main:
            run.truncate_metrics(self.start)  # lines logged after the checkpoint are redone

    # ------------------------------------------------------------------ the step
    def step(self, it: int) -> None:
        args, optimizer = self.args, self.optimizer
        self.lr = lr_at(it, args.lr, args.milestones, args.lr_decay)
        for group in optimizer.param_groups:
            group["lr"] = self.lr
        if self.reset_momentum and it in args.milestones:
            zero_momentum(optimizer)
        if self.set_progress is not None:
            self.set_progress(it, args.iters)
        x, y = self.next_batch(it)
        if self.fast["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        logits, losses, total = self.train_step(x, y)
        self.window = add_to_window(self.window, losses, logits, y, total)
        self.bar.update(1)

    # ------------------------------------------------------------------ evaluation and checkpoint
    def wall_time(self) -> float:
        return self.wall_before + time.perf_counter() - self.t0

    def evaluate_and_save(self, done: int) -> None:
        stage = self.stage
        record = read_window(self.window, done)
        metrics = stage.evaluate()
        stage.task.train()
        record.update(metrics, iter=done, lr=self.lr, wall_time_s=round(self.wall_time(), 3))
        value = metrics[stage.primary]
        if (value > self.best) if stage.maximize else (value < self.best):
            self.best, self.best_iter = value, done
        if self.main:
            log_scalars(self.writer, record, done)
            self.run.append_metrics(record)
        self.record, self.metrics, self.window = record, metrics, None
        self.save(done)
        if self.main:
            show(self.bar, record, self.args.iters)

    def save(self, iteration: int) -> None:
        if not self.main:
            return
        stage, window = self.stage, self.window
        self.run.save_checkpoint({
            "kind": stage.kind, "iteration": iteration, "args": vars(self.args), **stage.info,
            "fast_paths": self.fast, "modules": {n: m.state_dict() for n, m in stage.trainable.items()},
            "optimizer": self.optimizer.state_dict(), "best": self.best, "best_iter": self.best_iter,
            "wall_time_s": self.wall_time(),
            "window": {k: v.detach().cpu() for k, v in window.items()} if window else None,
            "rng_cpu": torch.get_rng_state(),
            "auxiliary": stage.task.auxiliary_state_dict() if hasattr(stage.task, "auxiliary_step") else None,
        })

    def interrupt(self, done: int, signum: int) -> None:
        """SIGTERM / SIGINT: checkpoint where the run stands and stop."""
        if self.window is not None:
            read_window(self.window, done)  # never checkpoint a diverged state
        self.save(done)
        raise Interrupted(f"stopped by signal {signum} at iteration {done}; "
                          f"checkpoint saved, re-run the same command to resume", signum)

    # ------------------------------------------------------------------ the end
    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def finish(self) -> dict:
        """final.json: the last and best primary metric, the run's record and settings."""
        stage, record = self.stage, self.record
        final_metrics = {k: v for k, v in record.items() if not k.startswith("loss")}
        result = {
            f"{stage.primary}_last": self.metrics[stage.primary], f"{stage.primary}_best": self.best,
            "best_iter": self.best_iter, "iters": self.args.iters, "wall_time_s": record["wall_time_s"],
            "kind": stage.kind, "last": final_metrics, "fast_paths": self.fast, "backends": self.backends,
            "run": stage.identity,
        }
        if self.main:
            self.run.write_final(result)
        distributed.barrier()
        return result


def open_run(args) -> RunDir | None:
    """Check the run folder (nothing is written until `fit` starts); on a finished run
    print its result and return None."""
    import json

    run = RunDir(args.out, vars(args), args.force)
    if run.finished:
        print(f"{run.path} is finished; its result:", file=sys.stderr)
        print(json.dumps(run.read_final(), indent=2, sort_keys=True))
        return None
    return run


def load_training_data(args, device: torch.device) -> ImageData:
    if args.dataset == "imagenet":
        from utils.imagenet import load_imagenet

        return load_imagenet(args.data_root, args.train_subset, args.test_subset,
                             workers=args.workers, device=device)
    from utils.data import load_data

    return load_data(args.dataset, args.data_root, args.norm, args.train_subset,
                     args.test_subset, pad_mode=args.pad_mode).to(device)
