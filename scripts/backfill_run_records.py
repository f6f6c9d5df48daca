"""Write the "run" record into run folders made before runs recorded what they are.

    python scripts/backfill_run_records.py RUNS_DIR [--dry-run]

scripts/report.py places a run from the record its folder keeps ("run" in args.json and
final.json, written by the training scripts). utils/record.py migrates every older record as it
reads it, but a folder made before runs recorded what they are cannot be completed from itself:
what its teacher and paraphrasers are lies in their checkpoints. For each folder under RUNS_DIR
without a record, this writes the record a current run would have: from the run's own
arguments, and for a paraphraser or student from the checkpoints its --teacher and
--paraphraser name (their architecture, schedule, kind, k, layers and weight fingerprint).
Those paths are read as the training command gave them: run this from the folder the runs were
started in. A folder that already has a record is left alone; one whose teacher or paraphraser
cannot be loaded is named and left alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import repo_path  # noqa: F401  (the repository's packages, for a script run as a file)
from utils.checkpoint import load_classifier, load_paraphraser, paraphraser_identity, teacher_identity
from utils.errors import UserError
from utils import record


def stage_of(args: dict) -> str:
    return record.stage_key({}, args)


def teacher_record(spec: str) -> dict:
    return teacher_identity(*load_classifier(spec))


def record_of(args: dict) -> dict:
    """The record train_teacher.py, train_paraphraser.py or train_student.py writes today."""
    stage = stage_of(args)
    common = {"dataset": args["dataset"], "recipe": args.get("recipe", "paper"), "iters": args["iters"],
              "seed": args["seed"]}
    if stage == "teacher":
        return {"stage": stage, "arch": args["arch"], **common}
    if stage == "paraphraser":
        return {"stage": stage, **common, **{k: args[k] for k in ("kind", "k", "layers", "bn", "group")},
                "teacher": teacher_record(args["teacher"])}
    loaded = []
    paths = args.get("paraphraser") or []
    for path in [paths] if isinstance(paths, str) else paths:
        paraphraser, ckpt = load_paraphraser(path)
        n_groups = len(ckpt["teacher"]["group_channels"])
        loaded.append((ckpt["group"] % n_groups, paraphraser_identity(paraphraser, ckpt)))
    return {"stage": stage, "method": args["method"], "arch": args["arch"], **common,
            "teacher": teacher_record(args["teacher"]) if args.get("teacher") else None,
            "paraphrasers": [identity for _, identity in sorted(loaded, key=lambda e: e[0])]}


def backfill(root: Path, dry_run: bool = False) -> tuple[list[Path], list[str]]:
    """(folders given a record, problems)."""
    written, problems = [], []
    for rec in record.read_all(root):
        if not record.lacks_run(rec.path):
            continue
        try:
            run = rec.run or record_of(rec.args)
        except (UserError, KeyError) as exc:
            problems.append(f"{rec.path}: {exc}")
            continue
        written.append(rec.path)
        if not dry_run:
            record.write_run(rec.path, run)
    return written, problems


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir", type=Path, help="root of the run folders")
    parser.add_argument("--dry-run", action="store_true", help="name the folders, write nothing")
    return parser


def main(args: argparse.Namespace) -> None:
    written, problems = backfill(args.runs_dir, args.dry_run)
    for path in written:
        print(f"{'would write' if args.dry_run else 'wrote'} the record of {path}")
    for problem in problems:
        print(f"left as it is: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
