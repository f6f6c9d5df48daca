"""Check 4: kill and resume."""

from __future__ import annotations

import json
import math
import signal
import time

from .analysis import compare_runs
from .common import Proc, evaluations_logged, interrupt, run_command, shown


class ResumeCheck:
    """Methods of device_check's Check (driver.py), which holds the state they use."""

    # ---------------------------------------------------------------- 4. kill and resume
    def check_kill_resume(self) -> None:
        name = "kill-resume"
        if self.blocked(name, ["default/teacher", "default/paraphraser"]):
            return
        p = self.profile
        box = self.time_box(name, math.inf)
        if self.not_run(name, box, needed=max(10, 0.5 * p["reserve"]["kill-resume"])):
            return
        end = time.monotonic() + box
        start = time.monotonic()
        root = self.runs_dir / "kill"
        iters, every = p["kill_iters"], p["kill_eval_every"]
        kill_after_lines = max(1, (iters // every) // 2)  # half-way: checkpoints logged before the kill

        # On CUDA each process's cuDNN autotuner may choose other algorithms: --deterministic
        # takes cuDNN's deterministic ones, so that equality between processes means something.
        det = ["--deterministic"] if self.args.device == "cuda" else []

        def cmd(out):
            argv = self.student_argv("ft", iters, every, out, det)
            return [self.python, "train_student.py", *(self.inject(name, argv) if out.name == "reference" else argv)]

        repeat_reference = (self.args.repeat_reference if self.args.repeat_reference is not None
                            else self.args.device == "cuda")
        steps = {}
        fields = {"command": shown(cmd(root / "killed")), "method": "ft", "iters": iters, "eval_every": every}
        # uninterrupted reference (and, on CUDA, a repeat to measure run-to-run differences)
        refs = ["reference"] + (["repeat"] if repeat_reference else [])
        for ref in refs:
            r = run_command(cmd(root / ref), f"{name}/{ref}", self.child_env, end - time.monotonic())
            steps[ref] = {"rc": r["rc"], "seconds": r["seconds"]}
            if r["timed_out"]:
                return self.budget_cut(name, f"the uninterrupted {ref} run", start, steps=steps, **fields)
            if r["rc"] != 0:
                return self.failed(name, f"the uninterrupted {ref} run: exit {r['rc']}"
                                   + (" (time box exceeded)" if r["timed_out"] else ""),
                                   seconds=round(time.monotonic() - start, 1), error_tail=r["tail"],
                                   steps=steps, **fields)
        # the run to kill: SIGKILL once `kill_after_lines` evaluations are logged
        out = root / "killed"
        proc = Proc(cmd(out), f"{name}/killed", self.child_env)
        landed = interrupt(proc, out, kill_after_lines, signal.SIGKILL, end - time.monotonic())
        lines_at_kill = evaluations_logged(out)
        rc, timed_out = proc.wait(max(end - time.monotonic(), 1))
        finished_before = (out / "final.json").exists()
        steps["killed"] = {"rc": rc, "seconds": proc.seconds, "evaluations_logged_at_kill": lines_at_kill}
        if not landed and not finished_before and time.monotonic() >= end:
            return self.budget_cut(name, "the run to kill", start, steps=steps, **fields)
        if not landed or finished_before:
            why = ("the run finished before the kill landed; raise --kill-iters" if finished_before else
                   f"the run ended (exit {rc}) or the time box ran out before {kill_after_lines} evaluations")
            return self.failed(name, why, seconds=round(time.monotonic() - start, 1), error_tail=proc.output_tail(),
                               steps=steps, **fields)
        before = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
        r = run_command(cmd(out), f"{name}/resumed", self.child_env, end - time.monotonic())
        steps["resumed"] = {"rc": r["rc"], "seconds": r["seconds"]}
        if r["timed_out"]:
            return self.budget_cut(name, "the resumed run", start, steps=steps, **fields)
        if r["rc"] != 0:
            return self.failed(name, f"the resumed run: exit {r['rc']}" + (" (time box)" if r["timed_out"] else ""),
                               seconds=round(time.monotonic() - start, 1), error_tail=r["tail"], steps=steps, **fields)
        resumed_from = None
        for line in r["resuming"]:
            resumed_from = int(line.rsplit(" from iteration ", 1)[1].split()[0])
        after = (out / "metrics.jsonl").read_text().splitlines()
        problems = []
        if resumed_from is None:
            problems.append("the re-run did not say it resumed from a checkpoint")
        kept = [x for x in before if json.loads(x)["iter"] <= (resumed_from or 0)]
        if after[:len(kept)] != kept:
            problems.append("lines logged before the kill changed on resume")
        repeat = root / "repeat" if "repeat" in refs else None
        comparison = compare_runs(root / "reference", out, repeat)
        if not comparison["ok"]:
            problems.append(comparison.get("reason") or "differs from the uninterrupted run")
        self.keep_run(f"{name}/resumed", out)
        self.keep_run(f"{name}/reference", root / "reference")
        fields.update(steps=steps, resumed_from_iter=resumed_from, comparison=comparison,
                      equality=("bit for bit (this device is deterministic: "
                                + ("the CPU" if repeat is None else "two uninterrupted runs were equal") + ")")
                      if comparison.get("mode") == "exact" else
                      "within tolerance: two uninterrupted runs differ on this device (nondeterministic "
                      "kernels, e.g. cuDNN autotuner choices, atomics in backward passes)")
        seconds = round(time.monotonic() - start, 1)
        if problems:
            self.failed(name, "; ".join(problems), seconds=seconds, **fields)
        else:
            self.record(name, "ok", seconds=seconds, **fields)

