"""Training throughput of each stage: this code against the authors' way of running it.

    python scripts/benchmark.py                  # table; about 10 minutes on a 2-core CPU
    python scripts/benchmark.py --quick --json   # under 2 minutes on a 2-core CPU

One SGD step at batch 128 with augmentation, per stage:
  teacher      ResNet-56, cross-entropy
  paraphraser  frozen ResNet-56 teacher + paraphraser (k = 0.5), reconstruction loss
  student      frozen ResNet-56 teacher + paraphraser, ResNet-20 student + translator (FT)
  ce           ResNet-20 alone (not in the default set; for wall-time estimates)

Ways of running the same networks with the same weights:
  (a) default   what `fit` runs with default flags (on the CPU: channels-last and folded
                frozen BatchNorms, utils.perf.fast_paths): `train_batch` + `make_step` on
                the tasks of utils/distill/, with our CIFAR-10 configuration (BatchNorm in
                the paraphraser and translator)
  (a') default, authors' configuration: the same without BatchNorm in the paraphraser and
                translator, as in the authors' release (paraphraser and student stages)
  (b) fast      (a) with the fastest combination of --channels-last / --amp bf16 /
                --fold-bn / --compile found on this device (searched per stage, or --fast)
  (c) reference the authors' pipeline on our networks in their configuration
                (scripts/reference_pipeline.py), in a fresh process
  (d) authors   with --authors-code DIR: the authors' own scripts from a checkout of their
                repository, timed through their train() (scripts/reference_pipeline.py)

The variants take turns window by window (a, a', b, c, d, a, ...), so a slow spell on a
shared machine hits all of them; each figure is the median images/s over the windows.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.reference_pipeline import (AUTHORS_SCRIPTS, BETA, LR, MOMENTUM, WD, RemoteVariant,  # noqa: E402
                                        bench_data, build_networks, synchronize)
from utils import perf  # noqa: E402
from utils.distill.base import Classification, Task  # noqa: E402
from utils.distill.ft import FactorTransfer, Link  # noqa: E402
from utils.distill.paraphrase import ParaphraserTraining  # noqa: E402
from utils.data import BatchSampler, train_batch  # noqa: E402
from utils.train import add_to_window, make_step, resolve_device  # noqa: E402

STAGES = ("teacher", "paraphraser", "student", "ce")
DEFAULT_STAGES = ("teacher", "paraphraser", "student")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", default=list(DEFAULT_STAGES), choices=STAGES,
                        help=f"stages to time (default: {' '.join(DEFAULT_STAGES)})")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: cuda when available (default: auto)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128)")
    parser.add_argument("--windows", type=int, default=7,
                        help="timed windows per variant; the median is reported (default: 7)")
    parser.add_argument("--window-steps", type=int, default=None,
                        help="steps per window (default: 4 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first (default: 3)")
    parser.add_argument("--fast", default="auto",
                        help="flags of (b): 'auto' searches the candidates on this device, or a "
                             "comma list of channels_last, bf16, fold_bn, compile, cuda_graph ('' for none) "
                             "(default: auto)")
    parser.add_argument("--candidates", default=None,
                        help="flag sets (b)'s search races against the default, ';'-separated comma "
                             "lists (default: the combinations of channels_last, bf16 and fold_bn, then the "
                             "winner with compile unless --quick)")
    parser.add_argument("--search-windows", type=int, default=3,
                        help="windows per candidate in (b)'s search (default: 3; --quick: 1)")
    parser.add_argument("--max-other-load", type=float, default=0.1,
                        help="CPU: re-run a window in which other processes used more than this "
                             "share of the machine's CPU time (default: 0.1; 1 keeps every window)")
    parser.add_argument("--retries", type=int, default=3,
                        help="re-runs of a disturbed window before it is kept anyway (default: 3; "
                             "--quick: 1; 0 neither waits nor re-runs)")
    parser.add_argument("--max-wait", type=float, default=30.0,
                        help="seconds a window waits for the machine to be quiet (default: 30; --quick: 3)")
    parser.add_argument("--num-workers", type=int, default=4,
                        help="DataLoader workers of (c) and (d) (default: 4, their scripts')")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own, one per core)")
    parser.add_argument("--data-root", default=None,
                        help="time on a real image folder / .tar.gz (utils.data 'folder') instead "
                             "of random uint8 images")
    parser.add_argument("--synthetic-size", type=int, default=50_000,
                        help="random images in the synthetic set (default: 50,000, CIFAR's train set)")
    parser.add_argument("--no-keep-freed-memory", dest="keep_freed_memory", action="store_false",
                        help="(a) and (b) without utils.perf.keep_freed_memory (the training scripts' "
                             "default; FT_KEEP_FREED_MEMORY=0 there)")
    parser.add_argument("--quick", action="store_true",
                        help="few short windows, small warm-up, no compile in the search")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and data (default: 0)")
    parser.add_argument("--authors-code", default=None, metavar="DIR",
                        help="also time (d): the authors' own scripts, from a checkout of their "
                             "repository (github.com/Jangho-Kim/Factor-Transfer-pytorch)")
    return parser


# ============================================================================ ours

def build_task(stage: str, nets: dict) -> Task:
    """The task `fit` would train for this stage, on copies of `nets`."""
    n = {k: copy.deepcopy(v) for k, v in nets.items()}
    if stage == "teacher":
        return Classification(n["teacher"])
    if stage == "ce":
        return Classification(n["student"])
    if stage == "paraphraser":
        return ParaphraserTraining(n["teacher"], n["paraphraser"])
    return FactorTransfer(n["student"], n["teacher"], Link(n["translator"], n["paraphraser"]), beta=BETA)


def default_flags(stage: str, device: torch.device) -> frozenset:
    """The fast paths `fit` turns on by default on this device (utils.perf.fast_paths);
    fold_bn only where the stage has frozen networks."""
    on = perf.fast_paths(argparse.Namespace(channels_last=None, fold_bn=None), device)
    return frozenset(k for k, v in on.items() if v and (k != "fold_bn" or stage in ("paraphraser", "student")))


class Ours:
    """`fit`'s step: train_batch + make_step, and its per-step on-device loss window."""

    def __init__(self, stage, nets, data, device, flags: frozenset, args):
        self.flags = flags
        self.label = "+".join(sorted(flags)) or "fp32 NCHW"
        self.channels_last = "channels_last" in flags
        self.data, self.seed, self.device = data, args.seed, device
        self.task = build_task(stage, nets).to(device)
        params = [p for m in self.task.trainable().values() for p in m.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WD)
        self.sampler = BatchSampler(len(data.train_y), args.batch_size, args.seed, device)
        perf.prepare_task(self.task, device, "fold_bn" in flags, self.channels_last)
        self.step = make_step(self.task, self.optimizer, device, "bf16" if "bf16" in flags else "none",
                              "compile" in flags, graph="cuda_graph" in flags)
        if "cuda_graph" in flags:
            self.step = perf.GraphedStep(self.step, self.task.trainable(), self.optimizer, device)
        self.task.train()
        self.iteration = 0
        self.window = None

    def pids(self) -> list[int]:
        return [os.getpid()]

    def run(self, steps: int) -> int:
        for _ in range(steps):
            x, y = train_batch(self.data, self.sampler, self.iteration, self.seed)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits, losses, total = self.step(x, y)
            self.window = add_to_window(self.window, losses, logits, y, total)
            self.iteration += 1
        return steps * len(y)


# ============================================================================ measuring

class PeakMemory:
    """Peak memory while a variant runs: CUDA max allocated, or sampled process RSS on the CPU."""

    def __init__(self, device: torch.device, pid: int | None = None):
        self.device, self.pid = device, pid
        self.peak = 0
        self._stop = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        page = os.sysconf("SC_PAGE_SIZE")
        path = f"/proc/{self.pid or 'self'}/statm"
        while not self._stop.is_set():
            try:
                with open(path) as f:
                    self.peak = max(self.peak, int(f.read().split()[1]) * page)
            except OSError:  # not Linux, or the process is gone
                return
            self._stop.wait(0.005)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            if self.pid is None:
                self.peak = max(self.peak, torch.cuda.max_memory_allocated(self.device))
        else:
            self._stop.set()
            self._thread.join()


class OtherLoad:
    """Share of the machine's CPU time that other processes used during a window (Linux).

    On a shared machine a window in which another process runs is not a measurement of
    this code: with one torch thread per core, a core taken away stalls every parallel
    op at its barrier, and a step can take 10x longer.  Such windows are re-run.
    """

    def __init__(self, pids):
        self.pids = pids  # callable: our processes (this one and the DataLoader workers)

    @staticmethod
    def _machine():
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields[:8]), fields[3] + fields[4]  # all jiffies, idle + iowait

    def _own(self):
        total = 0
        for pid in self.pids():
            stat = proc_stat(pid)
            if stat is not None:  # else a worker that just exited
                total += int(stat[11]) + int(stat[12])  # utime + stime
        return total

    @classmethod
    def wait_for_quiet(cls, threshold: float, max_wait: float, pids) -> None:
        """Sleep (using no CPU) until other processes use at most `threshold` of the machine
        over half a second, or `max_wait` seconds have passed."""
        deadline = time.monotonic() + max_wait
        while time.monotonic() < deadline:
            with cls(pids) as probe:
                time.sleep(0.5)
            if probe.share <= threshold:
                return

    def __enter__(self):
        self.share = 0.0
        try:
            self._start = (*self._machine(), self._own())
        except OSError:  # not Linux
            self._start = None
        return self

    def __exit__(self, *exc):
        if self._start is None:
            return
        (total, idle), own = self._machine(), self._own()
        elapsed = total - self._start[0]
        busy = elapsed - (idle - self._start[1])
        self.share = max(0.0, busy - (own - self._start[2])) / max(elapsed, 1)


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (0: state, 7: minflt, 11 / 12:
    utime / stime); None when unreadable (not Linux, or the process exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):  # unreadable, or emptied as the process exits
        return None


def minor_faults(pid: int) -> int | None:
    """The process's minor page faults so far (Linux; None elsewhere)."""
    stat = proc_stat(pid)
    return None if stat is None else int(stat[7])


def timed(variant, steps: int, device: torch.device, args=None) -> tuple[float, int, float | None]:
    """images/s of one window, the peak memory during it, and the minor page faults of the
    variant's process per step (memory the kernel hands back and faults in again).

    On the CPU, a window in which other processes took more than --max-other-load of the
    machine is run again once they leave it (waiting up to --max-wait s), up to --retries
    times (`DISTURBED` counts both outcomes)."""
    check = args is not None and device.type == "cpu" and args.retries > 0
    for attempt in range(args.retries + 1 if check else 1):
        if attempt:
            OtherLoad.wait_for_quiet(args.max_other_load, args.max_wait, variant.pids)
        synchronize(device)
        remote = isinstance(variant, RemoteVariant)
        pid = variant.pids()[0]
        with PeakMemory(device, pid if remote else None) as mem, OtherLoad(variant.pids) as other:
            faults = minor_faults(pid)
            start = time.perf_counter()
            images = variant.run(steps)
            synchronize(device)
            seconds = time.perf_counter() - start
            after = minor_faults(pid)
        faults = None if faults is None or after is None else (after - faults) / steps
        if remote:
            mem.peak = max(mem.peak, variant.last_peak)
        if not check or other.share <= args.max_other_load:
            break
        DISTURBED["rerun" if attempt < args.retries else "kept"] += 1
    return images / seconds, mem.peak, faults


DISTURBED = {"rerun": 0, "kept": 0}


def parse_flags(text: str) -> frozenset:
    allowed = {"channels_last", "bf16", "compile", "fold_bn", "cuda_graph"}
    flags = frozenset(f.strip() for f in text.split(",") if f.strip())
    if flags - allowed:
        raise SystemExit(f"benchmark.py: unknown flag(s) {sorted(flags - allowed)}; use {sorted(allowed)}")
    return flags


def native_bf16(device: torch.device) -> bool:
    """Has the device bf16 matrix units?  Any GPU this code targets does; a CPU does when
    /proc/cpuinfo lists avx512_bf16 or amx_bf16.  Without them bf16 autocast converts
    every operand and computes in float32 (measured on a 2-core AMD EPYC without them:
    bf16 teacher steps 10-15x slower than float32), so the search leaves it out."""
    if device.type != "cpu":
        return True
    flags = cpuinfo("flags")
    if flags is None:
        return True  # not Linux: let the race decide
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def cpuinfo(field: str) -> str | None:
    """The value of `field` in /proc/cpuinfo's first processor entry (None off Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == field:
                return value.strip()
    except OSError:
        pass
    return None


def candidates(args, stage: str, device: torch.device) -> list[frozenset]:
    """(b)'s first-round candidates: every combination of channels_last, bf16 (where the
    device has native bf16 units), fold_bn (a stage with frozen networks) and cuda_graph
    (on CUDA)."""
    if args.candidates is not None:
        return [parse_flags(c) for c in args.candidates.split(";")]
    names = ["channels_last"] + (["bf16"] if native_bf16(device) else []) \
        + (["fold_bn"] if stage in ("paraphraser", "student") else []) \
        + (["cuda_graph"] if device.type == "cuda" else [])
    return [frozenset(c) for r in range(1, len(names) + 1) for c in itertools.combinations(names, r)]


def race(variants: dict, args, device) -> dict[str, float]:
    """Median images/s of each variant over `args.trials` rounds of one window each, the
    variants taking turns so that a slow spell of a shared machine hits all of them."""
    rates = {k: [] for k in variants}
    for _ in range(args.trials):
        for name, variant in variants.items():
            rates[name].append(timed(variant, args.window_steps, device, args)[0])
    return {k: statistics.median(v) for k, v in rates.items()}


def search_fast(stage, nets, data, device, args, default, log) -> tuple["Ours", dict]:
    """(b)'s flags, fastest on this device: the channels_last / bf16 combinations race the
    default; then (unless --quick) the winner with --compile races the winner without."""
    def warm(flags):
        start = time.perf_counter()
        variant = Ours(stage, nets, data, device, flags, args)
        variant.run(args.warmup)
        log(f"  {variant.label:28s} built and warmed up in {time.perf_counter() - start:.1f} s")
        return variant

    pool = {"default": default, **{",".join(sorted(f)): warm(f) for f in candidates(args, stage, device)
                                   if f != default.flags}}
    trials = race(pool, args, device)
    best = max(trials, key=trials.get)
    if not args.quick and args.candidates is None and not {"compile", "cuda_graph"} & pool[best].flags:
        compiled = pool[best].flags | {"compile"}  # the winner's flags, compiled
        final = {best: pool[best], ",".join(sorted(compiled)): warm(compiled)}
        rematch = race(final, args, device)
        trials.update({f"{k} (rematch)": v for k, v in rematch.items()})
        best = max(rematch, key=rematch.get)
        pool.update(final)
    for name, rate in trials.items():
        log(f"  try {name:40s} {rate:8.1f} img/s")
    return pool[best], trials


def bench_stage(stage, data, device, args, log) -> dict:
    # The references first: their warm-up is not timed, ours neither.
    remote = {"reference": RemoteVariant("reference", stage, device, args)}
    try:
        if args.authors_code and stage in AUTHORS_SCRIPTS:
            remote["authors"] = RemoteVariant("authors", stage, device, args)
        return _bench_stage(stage, data, remote, device, args, log)
    finally:
        for variant in remote.values():
            variant.close()


# Ratios reported per stage: name -> (numerator, denominator).
RATIOS = {"speedup_default": ("default", "reference"), "speedup_default_their_config": ("default_their_config",
                                                                                         "reference"),
          "speedup_fast": ("fast", "reference"), "reference_vs_authors": ("reference", "authors"),
          "speedup_default_vs_authors": ("default", "authors"), "speedup_fast_vs_authors": ("fast", "authors")}


def _bench_stage(stage, data, remote, device, args, log) -> dict:
    nets = build_networks(stage, args.seed)
    flags = default_flags(stage, device)
    a = Ours(stage, nets, data, device, flags, args)
    a.run(args.warmup)
    variants = {"default": a}
    if stage in ("paraphraser", "student"):  # the authors' configuration: no BN in paraphraser / translator
        variants["default_their_config"] = Ours(stage, build_networks(stage, args.seed, bn=False), data,
                                                device, flags, args)
        variants["default_their_config"].run(args.warmup)
    if args.fast == "auto":
        b, trials = search_fast(stage, nets, data, device, args, a, log)
    else:
        fast_flags, trials = parse_flags(args.fast), {}
        b = a if fast_flags == flags else Ours(stage, nets, data, device, fast_flags, args)
        if b is not a:
            b.run(args.warmup)
    fast_flags = b.flags
    if b is not a:  # else (b) is (a): timed once, reported under both names
        variants["fast"] = b
    variants.update(remote)

    rates = {k: [] for k in variants}
    peaks = {k: 0 for k in variants}
    faults = {k: [] for k in variants}
    for _ in range(args.windows):
        for name, variant in variants.items():
            rate, peak, fault = timed(variant, args.window_steps, device, args)
            rates[name].append(rate)
            peaks[name] = max(peaks[name], peak)
            if fault is not None:
                faults[name].append(fault)
    if b is a:
        rates["fast"], peaks["fast"], faults["fast"] = rates["default"], peaks["default"], faults["default"]
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "stage": stage,
        "images_per_s": {k: round(v, 2) for k, v in med.items()},
        "best_window_images_per_s": {k: round(max(v), 2) for k, v in rates.items()},
        "windows": {k: [round(r, 2) for r in v] for k, v in rates.items()},
        # a ratio: the median over rounds of the two variants' windows in the same round (the
        # windows of a round run back to back, so a slow spell of the machine mostly cancels)
        **{name: round(statistics.median(t / u for t, u in zip(rates[top], rates[bottom])), 3)
           for name, (top, bottom) in RATIOS.items() if top in rates and bottom in rates},
        "minor_faults_per_step": {k: round(statistics.median(v)) for k, v in faults.items() if v},
        "fast_flags": sorted(fast_flags),
        "default_flags": sorted(flags),
        "search": {k: round(v, 2) for k, v in trials.items()},
        "peak_memory_mb": {k: round(v / 2 ** 20, 1) for k, v in peaks.items()},
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = cpuinfo("model name") or platform.processor() or "cpu"
    return f"{model}, {torch.get_num_threads()} threads"


# The CPU targets (issue 16), judged on the ratios to (c): (stage, ratio) -> at least this.
CPU_TARGETS = {("student", "speedup_default"): 1.4, ("student", "speedup_fast"): 2.0,
               ("paraphraser", "speedup_fast"): 2.5}
# (c) is an honest stand-in for the authors' own step when c/d is within this of 1.
REFERENCE_TOLERANCE = 0.05


def check_targets(results: list[dict], device_type: str) -> list[dict]:
    """Each CPU target with the measured ratio and whether it is met (empty off the CPU),
    and, where (d) ran, whether (c) is within REFERENCE_TOLERANCE of it."""
    checks = []
    for r in results:
        if "reference_vs_authors" in r:
            ratio = r["reference_vs_authors"]
            checks.append({"stage": r["stage"], "ratio": "reference_vs_authors",
                           "target": f"1 +- {REFERENCE_TOLERANCE}", "measured": ratio,
                           "met": abs(ratio - 1) <= REFERENCE_TOLERANCE})
    if device_type != "cpu":
        return checks
    by_stage = {r["stage"]: r for r in results}
    return [{"stage": stage, "ratio": key, "target": goal, "measured": by_stage[stage][key],
             "met": by_stage[stage][key] >= goal}
            for (stage, key), goal in CPU_TARGETS.items() if stage in by_stage] + checks


COLUMNS = [("default", "(a) default"), ("default_their_config", "(a') default, their config"),
           ("fast", "(b) fast"), ("reference", "(c) reference"), ("authors", "(d) authors' code")]


def table(results: list[dict], device: str, targets: list[dict] = ()) -> str:
    """Markdown: img/s of each variant, the ratios, (b)'s flags and peak memory."""
    memory = "peak MB (CUDA allocated)" if "cuda" in device.lower() else "peak RSS MB"
    shown = [(k, title) for k, title in COLUMNS if any(k in r["images_per_s"] for r in results)]
    ratios = [name for name in RATIOS if any(name in r for r in results)]
    rows = [f"device: {device}",
            "| stage | " + " | ".join(f"{title} img/s" for _, title in shown) + " | "
            + " | ".join(ratios) + f" | (b) flags | {memory} " + " / ".join(k for k, _ in shown) + " |",
            "|---|" + "---:|" * (len(shown) + len(ratios)) + "---|---|"]
    for r in results:
        ips, mem = r["images_per_s"], r["peak_memory_mb"]
        cell = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
        rows.append(f"| {r['stage']} | " + " | ".join(cell(ips.get(k), ".1f") for k, _ in shown) + " | "
                    + " | ".join(cell(r.get(n), ".2f") for n in ratios) + " | "
                    + (", ".join(r["fast_flags"]) or "(none)") + " | "
                    + " / ".join(cell(mem.get(k), ".0f") for k, _ in shown) + " |")
    for t in targets:
        goal = t["target"] if isinstance(t["target"], str) else f">= {t['target']}"
        rows.append(f"target {t['stage']} {t['ratio']} {goal}: {t['measured']:.2f} "
                    f"{'met' if t['met'] else 'NOT met'}")
    return "\n".join(rows)


def main(args) -> dict:
    # ------------------------------------------------------------------ setup
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.window_steps is None:
        args.window_steps = 20 if device.type == "cuda" else 4
    if args.quick:
        args.windows, args.warmup = min(args.windows, 3), min(args.warmup, 1)
        args.window_steps = min(args.window_steps, 2 if device.type == "cpu" else 10)
    args.trials = 1 if args.quick else args.search_windows
    if args.quick:
        args.retries, args.max_wait = min(args.retries, 1), min(args.max_wait, 3.0)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    DISTURBED.update(rerun=0, kept=0)

    # ------------------------------------------------------------------ data
    data = bench_data(args).to(device)
    keeps_memory = perf.keep_freed_memory() if args.keep_freed_memory else False
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    load = os.getloadavg()[0]
    if load > 0.5:
        log(f"warning: load average {load:.1f} before starting: other processes share the CPU, "
            f"figures will be noisy")

    # ------------------------------------------------------------------ stages
    results = []
    t0 = time.perf_counter()
    for stage in args.stages:
        log(f"{stage}:")
        result = bench_stage(stage, data, device, args, log)
        log("  " + "  ".join(f"{k} {v:.1f}" for k, v in result["images_per_s"].items()) + " img/s"
            f"  (fast: {', '.join(result['fast_flags']) or '-'})")
        results.append(result)

    report = {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "data": args.data_root or f"synthetic uint8, {args.synthetic_size} images",
        "protocol": {"windows": args.windows, "window_steps": args.window_steps, "warmup": args.warmup,
                     "num_workers": args.num_workers, "quick": args.quick},
        "authors_code": args.authors_code,
        "native_bf16": native_bf16(device),
        "keep_freed_memory": keeps_memory,
        "reference_process": "fresh (spawned)",
        "stages": {r["stage"]: r for r in results},
        "load_average": {"start": round(load, 2), "end": round(os.getloadavg()[0], 2)},
        "disturbed_windows": dict(DISTURBED),
        "seconds": round(time.perf_counter() - t0, 1),
        "targets": check_targets(results, device.type),
    }
    print(json.dumps(report, indent=2) if args.json else table(results, report["device"], report["targets"]))
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())
