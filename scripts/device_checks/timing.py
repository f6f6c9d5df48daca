"""Checks 5-7: two processes, the benchmark, the timed FT stretches."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from utils.record import read_json, read_metrics

from .analysis import analyse_run, extrapolate, graph_follows_eager, steady_seconds_per_iter
from .common import Proc, STUDENT_ARCH, free_port, is_number, run_command, shown, tail_text, write_json_atomic


class TimingChecks:
    """Methods of device_check's Check (driver.py), which holds the state they use."""

    # ---------------------------------------------------------------- 5. two processes
    def check_distributed(self) -> None:
        name = "distributed"
        count = self.environment.get("device_count") or 0
        use_gloo = self.args.device == "cpu" and self.args.distributed_on_cpu
        if self.args.device == "cuda" and self.env_ok and count < 2:
            self.record(name, "skipped", reason=f"skipped: {count} GPU" + ("" if count == 1 else "s")
                        + " (NCCL two-process training needs 2)", device_count=count)
            return
        if self.args.device == "cpu" and not use_gloo:
            self.record(name, "skipped", reason="skipped: CPU mode, no GPU (NCCL needs 2 GPUs; "
                        "--distributed-on-cpu runs the two processes with gloo)", device_count=count)
            return
        if self.blocked(name, ["default/teacher", "default/paraphraser"]):
            return
        box = self.time_box(name, self.profile["dist_cap_s"])
        if self.not_run(name, box, needed=10):
            return
        p = self.profile
        out = self.runs_dir / "distributed"
        batch = p["batch_size"] - p["batch_size"] % 2
        argv = self.student_argv("ft", p["iters"], p["eval_every"], out,
                                 [] if batch == p["batch_size"] else ["--batch-size", str(batch)])
        cmd = [self.python, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(free_port()), "train_student.py", *self.inject(name, argv)]
        env = dict(self.child_env)
        env.setdefault("OMP_NUM_THREADS", "1")
        r = run_command(cmd, name, env, box)
        fields = {"command": shown(cmd), "seconds": r["seconds"], "backend": "gloo" if use_gloo else "nccl",
                  "processes": 2}
        if r["rc"] != 0:
            return self.failed(name, f"exit {r['rc']}" + (" (time box exceeded)" if r["timed_out"] else ""),
                               error_tail=r["tail"], **fields)
        self.keep_run(name, out)
        info, problems = analyse_run(out, batch, p["require_fall"])
        fields.update(info)
        if problems:
            self.failed(name, "; ".join(problems), error_tail=r["tail"], **fields)
        else:
            self.record(name, "ok", **fields)

    # ---------------------------------------------------------------- 6. benchmark
    def check_benchmark(self) -> None:
        name = "benchmark"
        if self.blocked(name, []):
            return
        box = self.time_box(name, self.profile["bench_cap_s"])
        if self.not_run(name, box, needed=20):
            return
        cmd = [self.python, "scripts/benchmark.py", "--device", self.args.device, "--json",
               *self.profile["bench_args"]]
        cmd = self.inject(name, cmd)
        r = run_command(cmd, name, self.child_env, box, keep_stdout=True)
        fields = {"command": shown(cmd), "seconds": r["seconds"]}
        if r["rc"] != 0:
            return self.failed(name, f"exit {r['rc']}" + (" (time box exceeded)" if r["timed_out"] else ""),
                               error_tail=r["tail"], **fields)
        try:
            report = json.loads(r["stdout"])
        except ValueError:
            return self.failed(name, "its stdout is not one JSON object", error_tail=tail_text(r["stdout"]), **fields)
        write_json_atomic(self.out / "benchmark.json", report)
        stages = {}
        problems = []
        for stage, res in report.get("stages", {}).items():
            ips = res.get("images_per_s", {})
            stages[stage] = {"img_per_s": ips, "a_over_c": res.get("speedup_default"),
                             "b_over_c": res.get("speedup_fast"), "fast_flags": res.get("fast_flags")}
            if not ips or not all(is_number(v) and math.isfinite(v) and v > 0 for v in ips.values()):
                problems.append(f"{stage}: images/s not all positive and finite: {ips}")
        if not stages:
            problems.append("no stages in its JSON")
        fields.update(benchmark_device=report.get("device"), stages=stages, saved="benchmark.json")
        if problems:
            self.failed(name, "; ".join(problems), **fields)
        else:
            self.record(name, "ok", **fields)

    # ---------------------------------------------------------------- 7. timed FT student
    def timed_run(self, cmd: list[str], label: str, out: Path, box: float) -> dict:
        """Run `cmd` for at most `box` seconds, noting when each evaluation line appears
        (seconds since the process started); a run cut by the box keeps what it logged."""
        proc = Proc(cmd, label, self.child_env)
        seen: list[float] = []
        end = proc.start + box
        timed_out = False
        while proc.poll() is None:
            n = len(read_metrics(out / "metrics.jsonl"))
            while len(seen) < n:
                seen.append(round(time.monotonic() - proc.start, 2))
            if time.monotonic() > end:
                timed_out = True
                proc.kill()
                break
            time.sleep(0.05)
        rc, _ = proc.wait(30)
        n = len(read_metrics(out / "metrics.jsonl"))
        while len(seen) < n:  # lines written in the last poll interval
            seen.append(proc.seconds)
        return {"rc": rc, "timed_out": timed_out, "seconds": proc.seconds, "tail": proc.output_tail(),
                "line_seen_s": seen}

    def check_ft_timing(self, variant: str) -> None:
        """A timed FT student stretch and the full schedule's time: measured when the budget
        holds the full run, otherwise extrapolated as the time the stretch took to its last
        evaluation (start-up, data, warm-up included) plus the remaining iterations at the
        steady rate between its first and last evaluation.  A stretch cut short by its time
        box still gives the estimate when it logged two evaluations."""
        name = {"default": "ft-timing", "fast": "ft-timing-fast", "graph": "ft-timing-graph"}[variant]
        if self.blocked(name, ["default/teacher", "default/paraphraser"]):
            return
        p = self.profile
        box = self.time_box(name, math.inf)
        if self.not_run(name, box, needed=15):
            return
        iters, every = p["stretch_iters"], p["stretch_eval_every"]
        flags = {"default": [], "fast": self.fast_flags, "graph": [*self.fast_flags, "--cuda-graph"]}[variant]
        out = self.runs_dir / name / "stretch"
        argv = self.inject(name, self.student_argv("ft", iters, every, out, flags))
        cmd = [self.python, "train_student.py", *argv]
        r = self.timed_run(cmd, f"{name}/stretch", out, box)
        fields = {"command": shown(cmd), "seconds": r["seconds"], "flags": " ".join(flags) or "default",
                  "teacher_arch": p["teacher_arch"], "student_arch": STUDENT_ARCH, "batch_size": p["batch_size"],
                  "data": self.data.get("source")}
        lines = read_metrics(out / "metrics.jsonl")
        if r["timed_out"] and len(lines) < 2:
            return self.record(name, "skipped", reason=f"budget: its {box:.0f} s ran out before two evaluations",
                               **fields)
        if r["rc"] != 0 and not r["timed_out"]:
            return self.failed(name, f"exit {r['rc']}", error_tail=r["tail"], **fields)
        self.keep_run(f"{name}/stretch", out)
        spi = steady_seconds_per_iter(lines)
        bad = sorted({k for line in lines for k, v in line.items() if is_number(v) and not math.isfinite(v)})
        done = lines[-1]["iter"]
        reached_s = r["line_seen_s"][len(lines) - 1]
        fields.update(stretch_iters=iters, stretch_eval_every=every, stretch_iters_done=done,
                      stretch_cut_by_time_box=r["timed_out"], stretch_process_s=r["seconds"],
                      stretch_last_eval_reached_s=reached_s, steady_s_per_iter=round(spi, 6) if spi else None,
                      steady_img_per_s=round(p["batch_size"] / spi, 1) if spi else None, losses_finite=not bad,
                      last_test_error=lines[-1].get("test_error"))
        if bad:
            return self.failed(name, f"non-finite values logged: {', '.join(bad)}", **fields)
        if not spi:
            return self.failed(name, "fewer than two evaluations in the stretch: no steady rate", **fields)
        if variant == "graph":
            problems = graph_follows_eager(lines, read_metrics(self.runs_dir / "ft-timing-fast" / "stretch" /
                                                             "metrics.jsonl"), self.profile["require_fall"])
            fields["graph_vs_eager"] = problems or "the graphed stretch learned and followed the eager one"
            if problems:
                return self.failed(name, "; ".join(problems), **fields)
        full_iters = self.args.full_iters
        estimate = extrapolate(reached_s, done, spi, full_iters)
        fields.update(full_schedule_iters=full_iters, extrapolated_full_s=round(estimate, 1),
                      extrapolated_full_min=round(estimate / 60, 2),
                      full_schedule_time=(
                          f"extrapolated from {done} iterations: {estimate:.0f} s ({estimate / 60:.1f} min) = "
                          f"{reached_s:.1f} s to iteration {done} (process start-up, data, warm-up included) + "
                          f"{full_iters - done} x {spi * 1e3:.3f} ms (the seconds per iteration between its "
                          f"evaluations at iterations {lines[0]['iter']} and {done}, evaluations and checkpoints "
                          f"every {every} included)"))
        room = self.time_box(name, math.inf)
        if not r["timed_out"] and estimate * 1.15 + 10 < room:
            out_full = self.runs_dir / name / "full"
            cmd_full = [self.python, "train_student.py",
                        *self.student_argv("ft", full_iters, min(1000, full_iters), out_full, flags)]
            rf = run_command(cmd_full, f"{name}/full", self.child_env, room)
            fields["full_run"] = {"run": True, "command": shown(cmd_full), "rc": rf["rc"], "seconds": rf["seconds"],
                                  "iters": full_iters, "predicted_s": round(estimate, 1)}
            if rf["rc"] != 0:
                return self.failed(name, f"the full {full_iters}-iteration run: exit {rf['rc']}"
                                   + (" (time box exceeded)" if rf["timed_out"] else ""),
                                   error_tail=rf["tail"], **fields)
            self.keep_run(f"{name}/full", out_full)
            fields["full_schedule_time"] = f"measured: {rf['seconds']:.0f} s for {full_iters} iterations (process)"
            fields["full_run"]["final"] = read_json(out_full / "final.json")
        else:
            fields["full_run"] = {"run": False, "iters": full_iters,
                                  "reason": f"budget: the estimated {estimate:.0f} s exceed the "
                                            f"{max(room, 0):.0f} s left" if not r["timed_out"] else
                                            "budget: the stretch itself was cut by its time box"}
        self.record(name, "ok", **fields)

