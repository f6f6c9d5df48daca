"""The driver: configuration, records, JSON, budget, the environment and data checks."""

from __future__ import annotations

import collections
import json
import os
import shlex
import shutil
import sys
import time
import traceback
from pathlib import Path

from utils.record import FILES as RECORD_FILES

from .analysis import make_synthetic_folder
from .common import FAST_FLAGS, FT_BETA, FULL_ITERS, GRAPH_REFUSED, GROUPS, INJECTED, PARA_K, PROFILES, REPO, STUDENT_ARCH, run_command, say, write_json_atomic

from .common import T0
from .environment import ENV_PROBE, git_info, nvidia_smi
from .resume import ResumeCheck
from .stages import StageChecks
from .timing import TimingChecks


# ============================================================================ the driver

class Check(StageChecks, ResumeCheck, TimingChecks):
    """The driver: the configuration, the records, the JSON."""

    def __init__(self, args):
        self.args = args
        self.out = Path(args.out).resolve()
        self.tmp = self.out / "tmp"
        self.runs_dir = self.tmp / "runs"
        self.keep_dir = self.out / "runs"
        self.profile = dict(PROFILES[args.device + ("-quick" if args.quick else "")])
        p = self.profile
        for name in ("iters", "eval_every", "batch_size", "teacher_arch", "compile_method", "stretch_iters",
                     "stretch_eval_every", "kill_iters", "kill_eval_every"):
            value = getattr(args, name, None)
            if value is not None:
                p[name] = value
        if args.require_fall is not None:
            p["require_fall"] = args.require_fall
        self.fast_flags = (shlex.split(args.fast_flags) if args.fast_flags is not None
                           else list(p.get("fast_flags", FAST_FLAGS)))
        self.budget = args.budget_s if args.budget_s is not None else p["budget_s"]
        self.deadline = time.monotonic() + self.budget
        self.methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
        self.selected = set(GROUPS if not args.only else [g.strip() for g in args.only.split(",")])
        unknown = self.selected - set(GROUPS)
        if unknown:
            raise SystemExit(f"device_check.py: unknown --only group(s) {sorted(unknown)}; choose from {GROUPS}")
        self.selected.add("environment")
        self.records: list[dict] = []
        self.env_ok = True
        self.environment: dict = {}
        self.data: dict = {}
        self.child_env = dict(os.environ)
        self.child_env.setdefault("FT_CACHE_DIR", str(self.tmp / "cache"))
        self.child_env["PYTHONUNBUFFERED"] = "1"
        self.python = sys.executable

    # ---------------------------------------------------------------- records and JSON
    def record(self, name: str, status: str, **fields) -> dict:
        rec = {"name": name, "ok": status != "failed", "status": status, **fields}
        self.records.append(rec)
        line = f"{name}: {status.upper()}"
        if fields.get("seconds") is not None:
            line += f" in {fields['seconds']:.1f} s"
        if fields.get("reason"):
            line += f" - {fields['reason']}"
        say(line)
        if status == "failed" and fields.get("error_tail"):
            for part in fields["error_tail"].splitlines()[-15:]:
                say(f"    | {part}")
        self.write()
        return rec

    def failed(self, name, reason, **fields):
        return self.record(name, "failed", reason=reason, **fields)

    def status(self, name: str) -> str | None:
        for rec in self.records:
            if rec["name"] == name:
                return rec["status"]
        return None

    def summary(self) -> tuple[bool, str]:
        failures = [r for r in self.records if r["status"] == "failed"]
        skipped = [r for r in self.records if r["status"] == "skipped"]
        passed = [r for r in self.records if r["status"] == "ok"]
        wall = time.monotonic() - T0
        skip_text = "; skipped: " + ", ".join(f"{r['name']} ({r['reason']})" for r in skipped) if skipped else ""
        if failures:
            ran = [r for r in failures if not (r.get("reason") or "").startswith("not run: ")]
            not_run = collections.defaultdict(list)
            for r in failures:
                if r not in ran:
                    not_run[r["reason"].removeprefix("not run: ")].append(r["name"])
            parts = [f"{r['name']} ({(r.get('reason') or '').splitlines()[0][:160]})" for r in ran]
            parts += [f"not run ({why}): {', '.join(names)}" for why, names in not_run.items()]
            text = (f"device_check: FAILED {len(failures)} of {len(self.records)} checks: " + "; ".join(parts)
                    + f"; {len(passed)} passed{skip_text}; {wall:.0f} s")
        else:
            text = (f"device_check: OK, {len(passed)} checks passed{skip_text}; {wall:.0f} s "
                    f"(budget {self.budget:.0f} s)")
        return not failures, text

    def write(self, final: bool = False) -> tuple[bool, str]:
        ok, text = self.summary()
        doc = {
            "ok": ok if final else None,
            "finished": final,
            "summary": text,
            "device": self.args.device,
            "quick": self.args.quick,
            "budget_s": self.budget,
            "wall_s": round(time.monotonic() - T0, 1),
            "environment": self.environment,
            "data": self.data,
            "config": {k: v for k, v in self.profile.items() if k != "reserve"} | {
                "methods": self.methods, "student_arch": STUDENT_ARCH, "k": PARA_K, "beta": FT_BETA,
                "fast_flags": self.fast_flags, "full_schedule_iters": FULL_ITERS, "reserve_s": self.profile["reserve"],
                "inject_failure": self.args.inject_failure, "only": sorted(self.selected)},
            "failures": [r["name"] for r in self.records if r["status"] == "failed"],
            "skipped": {r["name"]: r.get("reason") for r in self.records if r["status"] == "skipped"},
            "checks": self.records,
        }
        write_json_atomic(self.out / "device_check.json", doc)
        return ok, text

    # ---------------------------------------------------------------- budget
    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def time_box(self, group: str, cap: float) -> float:
        """Seconds `group` may use: its cap, less what the later selected checks keep in reserve."""
        later = [g for g in GROUPS[GROUPS.index(group) + 1:] if g in self.selected]
        if "distributed" in later and not self.distributed_runs():
            later.remove("distributed")  # it will be a recorded skip: nothing to keep for it
        reserve = sum(self.profile["reserve"].get(g, 0) for g in later)
        return min(cap, self.remaining() - reserve)

    def distributed_runs(self) -> bool:
        if self.args.device == "cpu":
            return self.args.distributed_on_cpu
        return (self.environment.get("device_count") or 0) >= 2

    def not_run(self, name: str, box: float, needed: float = 5.0) -> bool:
        """Record a budget skip when `box` seconds cannot hold the check; True if skipped."""
        if box >= needed:
            return False
        self.record(name, "skipped", reason=f"budget: {max(box, 0):.0f} s left of --budget-s {self.budget:.0f} "
                                            f"for it, {needed:.0f} s needed")
        return True

    def budget_cut(self, name: str, what: str, start: float, **fields) -> dict:
        """Record a check whose time box (what the budget left it) ran out: skipped, not failed."""
        return self.record(name, "skipped", seconds=round(time.monotonic() - start, 1),
                           reason=f"budget: {what} was cut when the time left for this check ran out "
                                  f"(raise --budget-s)", **fields)

    def blocked(self, name: str, needs: list[str]) -> bool:
        """Record a failure (not run) when the environment or a run this check needs failed."""
        if not self.env_ok:
            self.failed(name, "not run: the environment check failed")
            return True
        missing = [n for n in needs if self.status(n) != "ok"]
        if missing:
            self.failed(name, f"not run: needs {', '.join(missing)}, which "
                              f"{'did not pass' if len(missing) == 1 else 'did not all pass'}")
            return True
        return False

    def inject(self, name: str, argv: list[str]) -> list[str]:
        return [*argv, INJECTED] if self.args.inject_failure == name else argv

    # ---------------------------------------------------------------- commands
    def common(self) -> list[str]:
        p = self.profile
        argv = ["--dataset", "folder", "--data-root", self.data.get("root", "<no data>"), "--device", self.args.device,
                "--progress", "off", "--batch-size", str(p["batch_size"])]
        if self.data.get("test_subset"):
            argv += ["--test-subset", str(self.data["test_subset"])]
        if self.data.get("train_subset"):
            argv += ["--train-subset", str(self.data["train_subset"])]
        return argv

    def teacher_dir(self) -> Path:
        return self.runs_dir / "default" / "teacher"

    def para_dir(self) -> Path:
        return self.runs_dir / "default" / "paraphraser"

    def student_argv(self, method: str, iters: int, eval_every: int, out: Path, extra=()) -> list[str]:
        argv = [*self.common(), "--method", method, "--arch", STUDENT_ARCH, "--iters", str(iters),
                "--eval-every", str(eval_every), "--out", str(out)]
        needs = self.needs(method)
        if "default/teacher" in needs:
            argv += ["--teacher", str(self.teacher_dir())]
        if "default/paraphraser" in needs:
            argv += ["--paraphraser", str(self.para_dir()), "--beta", FT_BETA]
        return [*argv, *extra]

    def needs(self, method: str) -> list[str]:
        """The default/ runs a student method needs, from utils.distill.METHODS (read by the
        environment probe); a name not there needs a teacher (and fails as an unknown method)."""
        spec = self.environment.get("methods", {}).get(method, {"teacher": True, "paraphraser": False})
        return ["default/teacher"] * spec["teacher"] + ["default/paraphraser"] * spec["paraphraser"]

    def stage_entries(self, group: str) -> list[dict]:
        """(name, script, argv, needs) of every run of default/ or fast/."""
        p = self.profile
        n, e = str(p["iters"]), str(p["eval_every"])
        root = self.runs_dir / group
        flags = {"default": [], "fast": self.fast_flags, "graph": [*self.fast_flags, "--cuda-graph"]}[group]
        entries = [
            {"name": f"{group}/teacher", "script": "train_teacher.py", "needs": [],
             "argv": [*self.common(), "--arch", p["teacher_arch"], "--iters", n, "--eval-every", e,
                      "--out", str(root / "teacher"), *flags]},
            {"name": f"{group}/paraphraser", "script": "train_paraphraser.py", "needs": ["default/teacher"],
             "argv": [*self.common(), "--teacher", str(self.teacher_dir()), "--k", PARA_K, "--iters", n,
                      "--eval-every", e, "--out", str(root / "paraphraser"), *flags]},
        ]
        for m in self.methods:
            if group == "graph" and m in GRAPH_REFUSED:
                continue
            extra = list(flags)
            if group == "fast" and m == p["compile_method"]:
                extra.append("--compile")
            entries.append({"name": f"{group}/student-{m}", "script": "train_student.py", "needs": self.needs(m),
                            "argv": self.student_argv(m, p["iters"], p["eval_every"], root / f"student-{m}", extra)})
        # the compiled run last: its compile time is the least predictable
        entries.sort(key=lambda entry: "--compile" in entry["argv"])
        for entry in entries:
            entry["argv"] = self.inject(entry["name"], entry["argv"])
            entry["out"] = entry["argv"][entry["argv"].index("--out") + 1]
            entry["compile"] = "--compile" in entry["argv"]
        return entries

    def keep_run(self, name: str, out: Path) -> None:
        """Copy the small files of a run folder to OUT/runs/<name>/ (the rest is scratch)."""
        dest = self.keep_dir / name.replace("/", "__")
        dest.mkdir(parents=True, exist_ok=True)
        for f in RECORD_FILES:
            if (out / f).exists():
                shutil.copy2(out / f, dest / f)

    # ---------------------------------------------------------------- 1. environment
    def check_environment(self) -> None:
        name = "environment"
        self.environment = {"git": git_info(), "nvidia_smi": nvidia_smi(), "python_executable": self.python,
                            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
        cmd = [self.python, "-c", ENV_PROBE, self.args.device]
        if self.args.inject_failure == name:
            cmd = [self.python, "-c", "raise SystemExit('injected failure (--inject-failure environment)')"]
        r = run_command(cmd, name, self.child_env, self.profile["env_cap_s"], keep_stdout=True)
        probe = None
        for line in reversed(r["stdout"].splitlines()):
            try:
                probe = json.loads(line)
                break
            except ValueError:
                continue
        if probe:
            self.environment.update(probe)
        if r["rc"] != 0 or probe is None or r["timed_out"]:
            self.env_ok = False
            self.failed(name, f"exit {r['rc']}" + (" (timed out)" if r["timed_out"] else "") +
                        f": {r['tail'].splitlines()[-1] if r['tail'] else 'no output'}",
                        command="python -c <probe> " + self.args.device, seconds=r["seconds"],
                        error_tail=r["tail"])
            return
        fields = {"torch": probe.get("torch"), "cuda": probe.get("torch_cuda"), "cudnn": probe.get("cudnn"),
                  "device_count": probe.get("device_count"),
                  "devices": [d["name"] for d in probe.get("devices", [])]}
        self.record(name, "ok", command="python -c <probe> " + self.args.device, seconds=r["seconds"], **fields)

    # ---------------------------------------------------------------- data
    def prepare_data(self) -> None:
        start = time.monotonic()
        choice = self.args.data
        p = self.profile
        if choice == "auto":
            bundled = REPO / "data" / "cifar10-jpeg.tar.gz"
            choice = str(bundled) if bundled.exists() else "synthetic"
        if choice == "synthetic":
            root = self.tmp / "data"
            if not (root / "train").exists():
                make_synthetic_folder(root, p["synthetic_train"], p["synthetic_test"])
            self.data = {"source": "synthetic", "root": str(root),
                         "description": "10 classes of 32x32 PNGs generated by scripts/device_check.py "
                                        "(class colour + faint oriented grating + per-image brightness "
                                        "shift + pixel noise)",
                         "train_images": 10 * p["synthetic_train"], "test_images": 10 * p["synthetic_test"]}
        else:
            path = Path(choice).resolve()
            if not path.exists():
                raise SystemExit(f"device_check.py: --data {choice} does not exist")
            self.data = {"source": "folder", "root": str(path), "test_subset": p["real_test_subset"],
                         "train_subset": p.get("real_train_subset"),
                         "description": f"image folder / archive {path} (test error on a class-balanced "
                                        f"{p['real_test_subset']}-image subset of its test set"
                                        + (f", training on {p['real_train_subset']} images)"
                                           if p.get("real_train_subset") else ")")}
        self.data["seconds"] = round(time.monotonic() - start, 1)
        say(f"data: {self.data['source']} at {self.data['root']} ({self.data['seconds']} s)")

    # ---------------------------------------------------------------- all
    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        say(f"device_check: --device {self.args.device}{' --quick' if self.args.quick else ''}, budget "
            f"{self.budget:.0f} s, out {self.out}")
        self.write()
        self.check_environment()
        if not self.env_ok:
            self.data = {"source": "not prepared: the environment check failed"}
        else:
            try:
                self.prepare_data()
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - no data fails every run
                self.env_ok = False
                self.failed("data", f"preparing the data failed: {exc}", error_tail=traceback.format_exc())
        self.check_stage_groups()
        for group, check in (("kill-resume", self.check_kill_resume), ("distributed", self.check_distributed),
                             ("benchmark", self.check_benchmark), ("ft-timing", lambda: self.check_ft_timing("default")),
                             ("ft-timing-fast", lambda: self.check_ft_timing("fast")),
                             ("ft-timing-graph", lambda: self.check_ft_timing("graph"))):
            if group not in self.selected:
                continue
            try:
                check()
            except Exception:  # noqa: BLE001 - a bug here fails this check, not the others
                self.failed(group, "device_check.py raised", error_tail=traceback.format_exc())
        if not self.args.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        ok, text = self.write(final=True)
        say(text)
        return 0 if ok else 1


