"""Every command line in README.md and docs/*.md is run, so that a change to a script
cannot silently break what the manual tells a user to type.

The commands are read from the Markdown files' code blocks (indented or fenced), so a
command added to a page later is run without editing this file. Each runs in the form its
cost allows here, chosen by the rules of `plan()`:

- the training scripts for real, at tiny settings given through their own flags
  (`--dataset folder` on a generated image folder, `--iters 2`, `--test-subset 8`);
- the table scripts (`scripts/table*.sh`, `midscale.sh`, `mmrazor_r50_r18.sh`) as their
  dry run (`DRY_RUN=1`), which lists every run with its command;
- commands that need what this machine lacks (ImageNet, a GPU, a cluster, another
  repository, the network) as `--help` of the script they start, or their dry run;
- `scripts/report.py` for real, on the recorded runs of `results/midscale/` when the runs
  the command names are not there.

A command that cannot run in any form is in NOT_RUN with the reason. A command that no
rule covers fails the test with its file and line, so a new kind of command gets a rule.
The training steps of a page share one temporary folder, in the page's order, so a
student finds the teacher the command before it trained.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import runpy
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, make_image_folder
from helpers import run_script, script_env

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "results" / "table1-reduced" / "README.md"]
TRAINING = {"train_teacher.py", "train_paraphraser.py", "train_student.py"}
TABLE_SCRIPT = re.compile(r"scripts/(table\d|table_voc|midscale|mmrazor_r50_r18)\.sh$")
# Command lines, matched from their start, that no form of which runs here, and why.
NOT_RUN = {
    "bash scripts/test.sh": "the test suite itself; a test cannot run the suite it belongs to",
    "git clone ": "needs the network (a checkout of another repository)",
    "bash scripts/demo.sh": "tests/test_demo.py runs it end to end at tiny settings (STUDENT_ITERS=4 on a "
                            "generated folder, the shipped teacher and one it trains); too slow to repeat here",
}
FIRST_WORDS = ("python", "bash", "scripts/", "torchrun", "tensorboard", "git", "grep", "export")
ASSIGN = re.compile(r"^[A-Z_][A-Z0-9_]*=")
PLACEHOLDER = re.compile(r"^(\.\.\.|\[.*\]|[A-Z_]+|T|OUT)$")


def code_lines(text: str):
    """(line number, text) of each code line, a backslash-continued command joined."""
    lines, out, fence, prev_blank, in_block = text.splitlines(), [], False, True, False
    pending, start = "", 0
    for i, line in enumerate(lines, 1):
        if line.startswith("```"):
            fence, pending = not fence, ""
            continue
        if fence:
            code = line
        elif line.startswith("    ") and (prev_blank or in_block) and not line.lstrip().startswith(("- ", "|")):
            in_block, code = True, line[4:]
        else:
            in_block, pending = (False, "") if line.strip() else (in_block, pending)
            prev_blank = not line.strip()
            continue
        prev_blank = False
        code = code.strip()
        if pending:
            code = pending + " " + code
        else:
            start = i
        if code.endswith("\\"):
            pending = code[:-1].strip()
            continue
        pending = ""
        out.append((start, code))
    return out


def commands(page: Path):
    """(line number, words) of each command line of a page; comments dropped."""
    found = []
    for number, code in code_lines(page.read_text()):
        try:
            words = shlex.split(code, comments=True)
        except ValueError:
            continue
        rest = [w for w in words if not ASSIGN.match(w)]
        if rest and rest[0].startswith(FIRST_WORDS) and not rest[0].startswith("OUT/"):
            found.append((number, code, words))
    return found


def not_run_reason(code: str) -> str | None:
    return next((why for start, why in NOT_RUN.items() if code.startswith(start)), None)


class Page:
    """One page's commands, run in order in one temporary folder."""

    def __init__(self, tmp: Path, data: Path):
        self.tmp, self.data, self.env = tmp, data, {}
        self.results_midscale = REPO / "results" / "midscale"

    def bash(self, env: dict, argv: list[str]) -> tuple[int, str]:
        full = script_env(**{"FT_NO_VENV": "1", **self.env, **env})  # the caller's knobs never leak in
        proc = subprocess.run(argv, cwd=REPO, env=full, capture_output=True, text=True, timeout=120)
        return proc.returncode, proc.stdout + proc.stderr

    def python(self, argv: list[str]) -> tuple[int, str]:
        """Run `python SCRIPT ...` / `python -m MODULE ...` in this process (no interpreter start)."""
        buf, code = io.StringIO(), 0
        saved_argv, saved_path, saved_cwd = sys.argv, list(sys.path), os.getcwd()
        try:
            os.chdir(self.tmp)
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                if argv[0] == "-m":
                    sys.argv = [argv[1], *argv[2:]]
                    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
                else:
                    script = REPO / argv[0]
                    sys.argv = [str(script), *argv[1:]]  # its folder: pytest.ini's pythonpath
                    runpy.run_path(str(script), run_name="__main__")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.argv, sys.path[:] = saved_argv, saved_path
            os.chdir(saved_cwd)
        return code, buf.getvalue()

    def plan(self, words: list[str]):
        """(how, callable) for one command, or None when no rule covers it."""
        env = dict(w.split("=", 1) for w in words if ASSIGN.match(w) and words.index(w) < _first(words))
        argv = words[_first(words):]
        if argv[0] == "export":
            self.env.update(dict(w.split("=", 1) for w in argv[1:]))
            return "sets the environment of the page's later commands", lambda: (0, "")
        if argv[0] == "torchrun":  # a GPU launcher: the script's own --help
            script = next(w for w in argv if w.endswith(".py"))
            return "--help (needs GPUs)", lambda: self.python([script, "--help"])
        if argv[0] == "bash":
            argv = argv[1:]
        if argv[0].endswith(".sh"):
            if TABLE_SCRIPT.search(argv[0]):
                env = {**env, "DRY_RUN": "1", "RUNS": str(self.tmp / env.get("RUNS", "runs"))}
                if env.get("LAUNCHER") == "slurm":
                    env["SBATCH"] = "false"  # never submits in a dry run
                return "dry run", lambda: self.bash(env, ["bash", argv[0]])
            if argv[0] == "scripts/gpu_check.sh":
                return "--help (needs a GPU; tests/test_gpu_check.py runs it on the CPU with --tiny)", \
                    lambda: self.bash(env, ["bash", argv[0], str(self.tmp / "gpu-check"), "--help"])
            return None
        if argv[0] == "tensorboard":
            return "--help (a server)", lambda: self.bash(env, ["tensorboard", "--help"])
        if argv[0] == "grep":
            return "as written, in the repository", lambda: self.bash(env, argv)
        if argv[0] != "python":
            return None
        args = argv[1:]
        if ">" in args:  # the redirection of the output: to the test's folder
            args = args[:args.index(">")]
        script = args[0] if args[0] != "-m" else args[1]
        if any(PLACEHOLDER.match(a) for a in args[1:]) or "--authors-code" in args or "imagenet" in args:
            return "--help (a placeholder, ImageNet or another repository)", \
                lambda: self.python([*args[:2 if args[0] == "-m" else 1], "--help"])
        if script == "models.summary":
            return "two networks (--names)", lambda: self.python([*args, "--names", "resnet20", "wrn_16_1"])
        if script in TRAINING:
            return "tiny settings", lambda: self.train(script, args[1:])
        if script == "detection.synthetic":
            return "as written, into the test's folder", lambda: self.python(args)
        if script.startswith("detection/") and script.endswith(".py"):
            return "--help (needs VOC 2007; tests/test_detection.py trains each stage on a synthetic VOC set)", \
                lambda: self.python([script, "--help"])
        if script == "scripts/report.py":
            runs = [a for a in args[1:] if not a.startswith("-") and not (self.tmp / a).exists()
                    and a not in ("1", "2", "3", "4", "6", "7", "all", "mmrazor")]
            fixed = [str(self.results_midscale) if a in runs else a for a in args]
            if "--out" in fixed:
                fixed[fixed.index("--out") + 1] = str(self.tmp / "report")
            if "--table" in fixed and fixed[fixed.index("--table") + 1] not in ("1", "all"):
                fixed[fixed.index("--table") + 1] = "1"  # the recorded runs are Table 1's
            return "on results/midscale when its runs are absent", lambda: self.python(fixed)
        if script.startswith("scripts/") and script.endswith(".py"):
            return "--help", lambda: self.python([script, "--help"])
        return None

    def train(self, script: str, args: list[str]) -> tuple[int, str]:
        """A teacher the command names and no earlier command of the page trained is trained
        first, tiny, with the architecture its folder's name gives."""
        if "--teacher" in args and not (self.tmp / args[args.index("--teacher") + 1]).exists():
            folder = args[args.index("--teacher") + 1]
            arch = re.search(r"teacher-([a-z0-9_]+?)-s\d", folder)
            status, output = self.python(self.tiny("train_teacher.py", [
                "--arch", arch.group(1) if arch else "resnet20", "--out", folder]))
            if status != 0:
                return status, output
        return self.python(self.tiny(script, args))

    def tiny(self, script: str, args: list[str]) -> list[str]:
        """The command with the tiny settings a test affords, through the script's own flags."""
        out, skip = [script], False
        for i, a in enumerate(args):
            if skip:
                skip = False
                continue
            if a in ("--dataset", "--data-root", "--epochs", "--iters", "--eval-every"):
                skip = True
                continue
            out.append(a)
        out += ["--dataset", "folder", "--data-root", str(self.data), "--iters", "2", "--eval-every", "2",
                "--test-subset", "8", "--batch-size", "8", "--device", "cpu", "--progress", "off"]
        return out


def _first(words: list[str]) -> int:
    return next(i for i, w in enumerate(words) if not ASSIGN.match(w))


def _page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_command_of_the_page_runs(page, tmp_path):
    if not page.exists():
        pytest.skip(f"{_page_id(page)} is absent")
    data = make_image_folder(tmp_path / "data", train=4, test=2)
    runner, failures, ran = Page(tmp_path / "work", data), [], 0
    runner.tmp.mkdir()
    for number, code, words in commands(page):
        where = f"{_page_id(page)}:{number}: {code}"
        if not_run_reason(code):
            continue
        planned = runner.plan(words)
        if planned is None:
            failures.append(f"{where}\n    no rule runs this command: add one to plan() or list it in NOT_RUN")
            continue
        how, call = planned
        began = time.perf_counter()
        status, output = call()
        if os.environ.get("DOCS_TIMES"):
            print(f"{time.perf_counter() - began:6.1f} s  {where}", file=sys.__stderr__)
        ran += 1
        if status != 0:
            failures.append(f"{where}\n    ({how}) exited {status}:\n{output[-2000:]}")
    assert not failures, "\n".join(failures)


def test_the_pages_commands_are_found():
    """The reader sees the README's commands (a broken parser would pass every page vacuously)."""
    found = {code for _, code, _ in commands(REPO / "README.md")}
    assert any(c.startswith("bash scripts/demo.sh") for c in found)
    assert any(c.startswith("bash scripts/test.sh") for c in found)
    joined = [c for c in found if c.startswith("python train_student.py")]
    assert joined and all("\\" not in c for c in joined)  # continued lines are one command
    assert any(c.startswith("python -m models.summary") for c in found)


def test_not_run_commands_still_appear_in_the_pages():
    """NOT_RUN lists commands of the pages, not commands that have left them."""
    found = [code for page in PAGES if page.exists() for _, code, _ in commands(page)]
    for start in NOT_RUN:
        assert any(c.startswith(start) for c in found), f"NOT_RUN names {start!r}, which no page holds"


def _dry_run_outs(script: str, seeds: int, runs: Path) -> tuple[str, set[str]]:
    proc = run_script(script, timeout=120, DRY_RUN=1, SEEDS=seeds, RUNS=runs)
    kinds = {"train_teacher.py": "teachers", "train_paraphraser.py": "paraphrasers", "train_student.py": "students"}
    outs = {w[w.index("--out") + 1]: next(kinds[Path(x).name] for x in w if Path(x).name in kinds)
            for w in map(str.split, proc.stdout.splitlines()) if "--out" in w}
    return proc.stderr.splitlines()[0], outs


def test_reproducing_run_counts_are_the_dry_runs(tmp_path):
    """docs/reproducing.md's table of run counts is what each script's dry run declares."""
    rows = {}
    for line in (REPO / "docs" / "reproducing.md").read_text().splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) == 4 and (cells[0].startswith("`scripts/") or cells[0] == "all of them"):
            rows[cells[0].strip("`")] = (cells[2], cells[3])
    assert len(rows) == 7, rows
    union = {1: {}, 3: {}}
    for name, (one, three) in rows.items():
        if name == "all of them":
            continue
        script = Path(name).stem
        for seeds, cell in ((1, one), (3, three)):
            summary, outs = _dry_run_outs(script, seeds, tmp_path)
            union[seeds].update(outs)
            count = len(outs)
            assert summary.startswith(f"{script}.sh: {count} runs"), summary
            assert cell.split()[0] == str(count), f"{name}, SEEDS={seeds}: the page says {cell}, the dry run {summary}"
            if "(" in cell:  # "82 (4 teachers, 30 paraphrasers, 48 students)" or "16 (2, 2, 12)"
                page = re.findall(r"\d+", cell.split("(", 1)[1])
                assert page == re.findall(r"\d+", summary.split("(", 1)[1].split(")")[0]), f"{name}: {cell} / {summary}"
    for seeds, cell in zip((1, 3), rows["all of them"]):
        kinds = list(union[seeds].values())
        want = f"{len(union[seeds])} ({kinds.count('teachers')} teachers, {kinds.count('paraphrasers')} " \
               f"paraphrasers, {kinds.count('students')} students)"
        assert cell == want, f"all of them, SEEDS={seeds}: the page says {cell}, the dry runs {want}"
