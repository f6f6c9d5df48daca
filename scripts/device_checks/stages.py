"""Checks 2-3: every stage and method in the shared worker."""

from __future__ import annotations

import json
import math
import shlex
import time
from pathlib import Path

from utils.record import read_metrics

from .analysis import analyse_run, extrapolate, graph_follows_eager
from .common import REPO, Proc, say


class StageChecks:
    """Methods of device_check's Check (driver.py), which holds the state they use."""

    # ---------------------------------------------------------------- 2-3. stage runs in a worker
    def check_stage_groups(self) -> None:
        groups = [g for g in ("default", "fast", "graph") if g in self.selected]
        if self.methods is None:
            if not self.env_ok:  # the method registry is unknown too
                for g in groups:
                    self.failed(f"{g}/*", "not run: the environment check failed")
                return
            self.methods = list(self.environment["methods"])
        needed = set()
        if "default" not in groups and self.selected & {"fast", "graph", "kill-resume", "distributed", "ft-timing",
                                                          "ft-timing-fast", "ft-timing-graph"}:
            needed = {"default/teacher", "default/paraphraser"}  # later checks need them: train them anyway
        pending = []
        for g in ("default", "fast", "graph"):
            for e in self.stage_entries(g):
                if g in groups or e["name"] in needed:
                    e["group"] = g
                    pending.append(e)
        launch = 0
        while pending:
            ready = []
            for e in pending:
                deps = {n: self.status(n) for n in e["needs"]}
                if not self.env_ok:
                    self.failed(e["name"], "not run: the environment check failed", command=self.cli(e))
                elif any(s == "failed" for s in deps.values()):
                    bad = [n for n, s in deps.items() if s == "failed"]
                    self.failed(e["name"], f"not run: needs {', '.join(bad)}, which failed", command=self.cli(e))
                elif any(s == "skipped" for s in deps.values()):
                    self.record(e["name"], "skipped", command=self.cli(e),
                                reason="budget: a run it needs was skipped for the budget")
                elif self.time_box(e["group"], math.inf) < 0.25 * self.entry_cap(e):
                    left = max(self.time_box(e["group"], math.inf), 0)
                    self.record(e["name"], "skipped", command=self.cli(e),
                                reason=f"budget: {left:.0f} s left for it, {0.25 * self.entry_cap(e):.0f} s "
                                       f"needed to start")
                else:
                    ready.append(e)
            if not ready:
                break
            launch += 1
            pending = self.run_worker(ready, launch)

    @staticmethod
    def cli(entry: dict) -> str:
        return shlex.join(["python", entry["script"], *entry["argv"]])

    def entry_cap(self, e: dict) -> float:
        return self.profile["compile_cap_s"] if e["compile"] else self.profile["entry_cap_s"]

    def run_worker(self, entries: list[dict], launch: int) -> list[dict]:
        """Run `entries` in one worker process and record each; return those it did not reach
        (it stops after a failure).  The worker skips a run when less than a quarter of the
        run's time box is left of the budget; the driver kills a run that outlives its box."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        results = self.tmp / f"worker{launch}.jsonl"
        spec = self.tmp / f"worker{launch}.json"
        deadlines = {g: time.time() + self.time_box(g, math.inf) for g in {e["group"] for e in entries}}
        spec.write_text(json.dumps({
            "entries": [{"name": e["name"], "script": e["script"], "argv": e["argv"],
                         "deadline": deadlines[e["group"]], "min_start_s": 0.25 * self.entry_cap(e)}
                        for e in entries],
            "results": str(results)}))
        results.write_text("")
        proc = Proc([self.python, "-u", str(REPO / "scripts" / "device_check.py"), "--worker", str(spec)],
                    f"worker{launch}", self.child_env)
        by_name = {e["name"]: e for e in entries}
        reached: set[str] = set()
        consumed = 0
        current, started_at, box = None, 0.0, 0.0
        killed = False

        def consume():
            nonlocal consumed, current, started_at, box
            lines = read_metrics(results)
            for rec in lines[consumed:]:
                e = by_name[rec["name"]]
                reached.add(rec["name"])
                if rec["event"] == "start":
                    current, started_at = rec["name"], time.monotonic()
                    box = max(0.0, min(self.entry_cap(e), deadlines[e["group"]] - time.time()))
                    say(f"{current}: started (time box {box:.0f} s) $ {self.cli(e)}")
                elif rec["event"] == "skipped":
                    self.record(rec["name"], "skipped", command=self.cli(e), reason=rec["reason"])
                else:
                    self.finish_entry(e, rec)
                    current = None
            consumed = len(lines)

        while True:
            consume()
            if proc.poll() is not None:
                break
            if current is not None and time.monotonic() - started_at > box:
                killed = True
                proc.kill()
                break
            time.sleep(0.1)
        rc, _ = proc.wait(60)
        consume()
        if current is not None:
            e = by_name[current]
            cap = self.entry_cap(e)
            seconds = round(time.monotonic() - started_at, 1)
            if killed and box < cap:  # the budget ran out, not the run's own time box
                self.record(current, "skipped", command=self.cli(e), seconds=seconds, process="shared worker",
                            reason=f"budget: cut after {box:.0f} s, less than its own time box of {cap:.0f} s "
                                   f"(raise --budget-s)")
            else:
                why = (f"exceeded its time box of {box:.0f} s; killed" if killed else
                       f"the worker process died (exit {rc}) during this run")
                self.failed(current, why, command=self.cli(e), seconds=seconds,
                            error_tail=proc.output_tail(), process="shared worker")
        elif rc not in (0, 3):
            for e in entries:
                if e["name"] not in reached:
                    self.failed(e["name"], f"not run: the worker process exited {rc} before it",
                                command=self.cli(e), error_tail=proc.output_tail(), process="shared worker")
            return []
        return [e for e in entries if e["name"] not in reached]

    def finish_entry(self, e: dict, rec: dict) -> None:
        out = Path(e["out"])
        fields = {"command": self.cli(e), "seconds": rec["seconds"], "process": "shared worker",
                  "flags": e["group"], "compile": e["compile"]}
        if rec["rc"] != 0:
            last = [x for x in rec["tail"].splitlines() if x.strip()]
            self.failed(e["name"], f"exit {rec['rc']}: {last[-1][:300] if last else 'no output'}",
                        error_tail=rec["tail"], **fields)
            return
        self.keep_run(e["name"], out)
        info, problems = analyse_run(out, self.profile["batch_size"], self.profile["require_fall"])
        fields.update(info)
        if e["name"].endswith("student-ft") and info.get("steady_s_per_iter"):
            fields["extrapolated_64000_s"] = round(extrapolate(rec["seconds"], info["iters"],
                                                               info["steady_s_per_iter"]), 1)
            fields["extrapolated_note"] = (f"extrapolated from {info['iters']} iterations (evaluations every "
                                           f"{self.profile['eval_every']}); see ft-timing for the measured stretch")
        if e["group"] == "graph":  # the captured step must learn as the eager one with the same flags
            eager = e["name"].replace("graph/", "fast/", 1)
            if self.status(eager) == "ok":
                problems += graph_follows_eager(read_metrics(out / "metrics.jsonl"),
                                                read_metrics(Path(e["out"].replace("/graph/", "/fast/"))
                                                           / "metrics.jsonl"), self.profile["require_fall"])
                fields["graph_vs_eager"] = f"compared with {eager}"
        if problems:
            self.failed(e["name"], "; ".join(problems), error_tail=rec["tail"], **fields)
        else:
            self.record(e["name"], "ok", **fields)

