"""Estimated wall time of a table script, from its run list and a benchmark.

    python scripts/benchmark.py --json > bench.json          # once per machine
    python scripts/estimate.py --table 1 --bench bench.json  # hours for table1.sh
    SEEDS=1 ITERS=3000 python scripts/estimate.py --table 1 --bench bench.json

The table script is asked for its runs (`DRY_RUN=1`, the same environment
variables apply; finished runs are left out). Each run's cost is counted in
multiply-adds per image: a training step costs three forward passes of the
trained network, a frozen network one; the paraphraser stage is the teacher
forward plus the paraphraser trained; a student with a teacher adds the
teacher's forward (paraphraser encoder and translator are left out). The
benchmark's three stages (ResNet-56 teacher, its k=0.5 paraphraser, FT
ResNet-56 -> ResNet-20) turn multiply-adds into seconds, one rate per stage
kind. Evaluations, start-up and checkpoints are not counted; expect +-30%.
CIFAR tables only (ImageNet's cost depends on its data pipeline).
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import torch

import repo_path  # noqa: F401  (the repository's packages, for a script run as a file)
from models import build_model
from models.summary import count_macs
from paraphraser import Paraphraser
from utils.cli import PAPER_ITERS

ROOT = Path(repo_path.ROOT)

STEPS_PER_EPOCH = 390  # 50,000 // 128: CIFAR's training set at the paper's batch size, last partial batch dropped
RECIPE_EPOCHS = {"at": 200}  # --recipe at: 200 epochs unless --iters / --epochs say otherwise
DEFAULT_ITERS = {"teacher": PAPER_ITERS, "student": PAPER_ITERS}
DEFAULT_PARA_EPOCHS = 30
BENCH = {"teacher": ("resnet56", None), "paraphraser": ("resnet56", 0.5), "student": ("resnet20", "resnet56")}


@lru_cache(maxsize=None)
def network_macs(arch: str, num_classes: int) -> int:
    return count_macs(build_model(arch, num_classes))


@lru_cache(maxsize=None)
def paraphraser_macs(teacher: str, num_classes: int, k: float, kind: str, layers: int, group: int) -> int:
    model = build_model(teacher, num_classes).eval()
    with torch.no_grad():
        feat = model(torch.zeros(1, 3, 32, 32))[1][group]
    para = Paraphraser(feat.shape[1], k=k, layers=layers, kind=kind)
    return count_macs(para, tuple(feat.shape))


def step_macs(stage: str, arch: str, teacher: str | None, num_classes: int = 10, k: float = 0.5,
              kind: str = "conv", layers: int = 3, group: int = -1) -> int:
    """Multiply-adds per training image of one step of `stage`."""
    if stage == "teacher":
        return 3 * network_macs(arch, num_classes)
    if stage == "paraphraser":
        return network_macs(arch, num_classes) + 3 * paraphraser_macs(arch, num_classes, k, kind, layers, group)
    cost = 3 * network_macs(arch, num_classes)
    return cost + (network_macs(teacher, num_classes) if teacher else 0)


def _opt(tokens: list[str], name: str, default=None):
    return tokens[tokens.index(name) + 1] if name in tokens else default


def parse_run(line: str) -> dict:
    """One command line of a table script's DRY_RUN listing -> stage, networks, iterations."""
    tokens = shlex.split(line)
    script = next((t for t in tokens if t.endswith(".py")), "")
    stage = {"train_teacher.py": "teacher", "train_paraphraser.py": "paraphraser",
             "train_student.py": "student"}.get(Path(script).name)
    if stage is None:
        raise ValueError(f"not a training command: {line.strip()}")
    if _opt(tokens, "--dataset") == "imagenet":
        raise ValueError("ImageNet runs are not estimated (their cost depends on the data pipeline)")
    num_classes = 100 if _opt(tokens, "--dataset") == "cifar100" else 10
    teacher = None
    if "--teacher" in tokens:
        m = re.search(r"teacher-(.+?)-s\d+$", _opt(tokens, "--teacher").rstrip("/"))
        if not m:
            raise ValueError(f"cannot tell the teacher's architecture from {_opt(tokens, '--teacher')}")
        teacher = m.group(1)
    iters = _opt(tokens, "--iters")
    if stage == "paraphraser":
        arch = teacher
        iters = int(iters) if iters else round(float(_opt(tokens, "--epochs", DEFAULT_PARA_EPOCHS)) * STEPS_PER_EPOCH)
        kind = _opt(tokens, "--kind", "conv")
        k = float(_opt(tokens, "--k", 2.0 if kind == "rae" else 0.5))  # train_paraphraser.py: rae's k is 2
        macs = step_macs(stage, arch, None, num_classes, k, kind, int(_opt(tokens, "--layers", 3)),
                         int(_opt(tokens, "--group", -1)))
    else:
        arch = _opt(tokens, "--arch")
        epochs = _opt(tokens, "--epochs") or RECIPE_EPOCHS.get(_opt(tokens, "--recipe", "paper"))
        iters = int(iters) if iters else round(float(epochs) * STEPS_PER_EPOCH) if epochs else DEFAULT_ITERS[stage]
        if stage == "student" and _opt(tokens, "--method", "ce") == "ce":
            teacher = None
        macs = step_macs(stage, arch, teacher, num_classes)
    batch = int(_opt(tokens, "--batch-size", 128))
    return {"stage": stage, "arch": arch, "teacher": teacher, "iters": iters, "images": iters * batch,
            "macs_per_image": macs}


def rates(bench: dict, flags: str) -> dict:
    """Multiply-adds per second of each stage kind, from a benchmark JSON."""
    out = {}
    for stage, (arch, extra) in BENCH.items():
        try:
            images_per_s = bench["stages"][stage]["images_per_s"][flags]
        except KeyError:
            raise SystemExit(f"error: the benchmark JSON has no {stage} '{flags}' figure; run "
                             f"`python scripts/benchmark.py --json` (all stages) and pass its output")
        if stage == "paraphraser":
            macs = step_macs(stage, arch, None, k=extra)
        else:
            macs = step_macs(stage, arch, extra)
        out[stage] = images_per_s * macs
    return out


def estimate(lines: list[str], bench: dict, flags: str = "default") -> dict:
    rate = rates(bench, flags)
    runs = [parse_run(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    seconds = {"teacher": 0.0, "paraphraser": 0.0, "student": 0.0}
    for run in runs:
        seconds[run["stage"]] += run["images"] * run["macs_per_image"] / rate[run["stage"]]
    return {"runs": len(runs), "seconds": seconds, "total_seconds": sum(seconds.values()),
            "device": bench.get("device"), "flags": flags}


def table_runs(table: str) -> list[str]:
    script = ROOT / "scripts" / (f"table{table}.sh" if table.isdigit() else f"{table}.sh")
    if not script.exists():
        raise SystemExit(f"error: no {script.relative_to(ROOT)}; use 1, 2, 3, 4, 7 or mmrazor_r50_r18")
    env = dict(os.environ, DRY_RUN="1")
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"error: {script.name} failed to list its runs: {proc.stderr.strip()[-300:]}")
    return [line for line in proc.stdout.splitlines() if ".py" in line and not line.startswith("#")]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default=None,
                        help="table script to estimate: 1, 2, 3, 4, 7 or mmrazor_r50_r18 "
                             "(default: read a DRY_RUN listing from standard input)")
    parser.add_argument("--bench", required=True, help="output of `python scripts/benchmark.py --json`")
    parser.add_argument("--flags", choices=["default", "fast"], default="default",
                        help="which benchmark figure to use (default: default)")
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    return parser


def main(argv=None) -> None:
    args = get_args_parser().parse_args(argv)
    try:
        bench = json.loads(Path(args.bench).read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: cannot read the benchmark JSON {args.bench}: {e}")
    lines = table_runs(args.table) if args.table else sys.stdin.read().splitlines()
    try:
        result = estimate(lines, bench, args.flags)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    if args.json:
        print(json.dumps(result, indent=1))
        return
    s = result["seconds"]
    print(f"{result['runs']} runs on {result['device']} ({args.flags} flags): "
          f"{result['total_seconds'] / 3600:.1f} h sequential "
          f"(teachers {s['teacher'] / 3600:.1f} h, paraphrasers {s['paraphraser'] / 3600:.1f} h, "
          f"students {s['student'] / 3600:.1f} h)")


if __name__ == "__main__":
    main()
