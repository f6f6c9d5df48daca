"""Copy a finished run folder without its training state, to commit or hand on.

    python scripts/ship_run.py runs/teacher-r56-16k results/issue15/teacher-resnet56-16k

The copy holds args.json, metrics.jsonl, final.json and a checkpoint.pt with the weights
and what rebuilds them (architecture, configuration, teacher fingerprint, arguments), but
without the optimizer's momentum, the random-number state and the loss window, which only
resuming needs: a ResNet-56 teacher goes from 7.0 MB to 3.5 MB.  It loads with --teacher
DEST (or --paraphraser DEST) like the original; it cannot be resumed.

    python scripts/ship_run.py --records-only runs_mid results/midscale

With --records-only only the record is copied (args.json, metrics.jsonl, final.json; no
weights), which is all scripts/report.py reads.  RUN may then also be a tree of run folders:
each finished run under it is copied to the same relative path under DEST, and unfinished
ones are named and skipped.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

import repo_path  # noqa: F401  (the repository's packages, for a script run as a file)
from utils import record
from utils.cli import run_main
from utils.errors import UserError
from utils.run import CHECKPOINT

TRAINING_STATE = ("optimizer", "rng_cpu", "window", "auxiliary")
FILES = record.FILES


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished run folder (holding final.json)")
    parser.add_argument("dest", type=Path, help="the folder to write (created; must not hold a checkpoint)")
    parser.add_argument("--records-only", action="store_true",
                        help="copy args.json, metrics.jsonl and final.json without the weights; RUN may "
                             "be a tree of run folders, copied run by run to the same paths under DEST")
    return parser


def copy_records(run: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(run / name, dest / name)


def ship_records(args: argparse.Namespace) -> None:
    if (args.run / record.FINAL).exists():
        runs = [args.run]
    else:
        runs = sorted(path.parent for path in args.run.rglob(record.ARGS))
        if not runs:
            raise UserError(f"{args.run} holds no run folder (no {record.ARGS} under it)")
    copied = 0
    for run in runs:
        if not (run / record.FINAL).exists():
            print(f"skipped {run}: not finished (no {record.FINAL})")
            continue
        copy_records(run, args.dest / run.relative_to(args.run))  # RUN itself: DEST
        copied += 1
    print(f"{args.dest}: the records ({', '.join(FILES)}) of {copied} finished run(s)")


def main(args: argparse.Namespace) -> None:
    if args.records_only:
        return ship_records(args)
    if not (args.run / record.FINAL).exists():
        raise UserError(f"{args.run} has not finished (no {record.FINAL}); finish it by re-running its command")
    if (args.dest / CHECKPOINT).exists():
        raise UserError(f"{args.dest / CHECKPOINT} exists; remove it or choose another destination")
    ckpt = torch.load(args.run / CHECKPOINT, map_location="cpu", weights_only=False)
    shipped = {key: value for key, value in ckpt.items() if key not in TRAINING_STATE}
    copy_records(args.run, args.dest)
    torch.save(shipped, args.dest / CHECKPOINT)
    size = (args.dest / CHECKPOINT).stat().st_size / 2**20
    print(f"{args.dest}: {', '.join(FILES)}, {CHECKPOINT} ({size:.1f} MB, without "
          f"{', '.join(k for k in TRAINING_STATE if k in ckpt)})")


if __name__ == "__main__":
    run_main(main, get_args_parser())
