"""Measuring a variant's window for scripts/benchmark.py: its images/s, peak memory and
page faults, re-run when other processes disturbed it; what the device is."""

from __future__ import annotations

import os
import platform
import threading
import time
from pathlib import Path

import torch

from bench.reference import RemoteVariant, synchronize


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


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = cpuinfo("model name") or platform.processor() or "cpu"
    return f"{model}, {torch.get_num_threads()} threads"
