"""What scripts/demo.sh prints: the student alone and with FT over seeds, their per-seed
difference with its 95 % t-interval, the teacher's error on the same test images, and the
paper's Table 1 numbers for ResNet-56 -> ResNet-20.

    python scripts/demo_summary.py runs/demo --teacher results/shipped/teacher-resnet56 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import repo_path  # noqa: F401  (the repository's packages, for a script run as a file)
from aggregate import t_interval
from paper import PAPER_T1, T1_COLUMNS, pretty
from utils import record
from utils.checkpoint import load_classifier
from utils.cli import run_main
from utils.errors import UserError
from utils.train import classification_metrics, load_training_data, resolve_device

METHODS = (("ce", "student ResNet-20 alone"), ("ft", "student ResNet-20 + FT"))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the demo's folder (ce-resnet20-sS, ft-resnet20-sS)")
    parser.add_argument("--teacher", required=True, help="the teacher run folder the FT students used")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    return parser


def read_run(folder: Path) -> record.RunRecord:
    """A finished run of the demo."""
    run = record.read(folder)
    if run is None or not run.finished:
        raise UserError(f"{folder / record.FINAL} is missing; re-run scripts/demo.sh to finish the run")
    return run


def teacher_error(teacher: str, student_args: dict) -> tuple[str, float, int]:
    """The teacher's network, its top-1 test error (%) on the students' test images, and how
    many images those are."""
    model, ckpt = load_classifier(teacher)
    args = argparse.Namespace(**student_args)
    data = load_training_data(args, resolve_device(args.device))
    error = classification_metrics(model.to(data.device), data, args.eval_batch_size)["test_error"]
    return ckpt["arch"], error, len(data.test_y)


def mean_sd(values: list[float]) -> str:
    sd = f" +- {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.2f}{sd} (n={len(values)})"


def main(args: argparse.Namespace) -> None:
    runs = {m: [read_run(args.out / f"{m}-resnet20-s{s}") for s in args.seeds] for m, _ in METHODS}
    finals = {m: [r.final for r in runs[m]] for m in runs}
    errors = {m: [f["test_error_last"] for f in finals[m]] for m in finals}
    student_args = runs["ft"][0].args
    paper = dict(zip(T1_COLUMNS, PAPER_T1[("resnet20", "resnet56")]))
    wall = sum(f["wall_time_s"] for fs in finals.values() for f in fs)
    arch, error, n_test = teacher_error(args.teacher, student_args)

    print(f"\nResNet-56 -> ResNet-20, {student_args['dataset']} ({student_args['data_root']}), "
          f"{student_args['iters']} student iterations (batch {student_args['batch_size']}), "
          f"{n_test:,} test images, seeds {' '.join(map(str, args.seeds))}")
    print(f"{'':<26} {'test error %':>22} {'paper (64,000 it.)':>19}")
    print(f"{'teacher ' + pretty(arch):<26} {error:>22.2f} {paper['teacher']:>19.2f}")
    for method, name in METHODS:
        print(f"{name:<26} {mean_sd(errors[method]):>22} {paper['student' if method == 'ce' else 'ft']:>19.2f}")
    diffs = [ft - ce for ft, ce in zip(errors["ft"], errors["ce"])]
    mean, _, half = t_interval(diffs)
    interval = f", 95% t-interval [{mean - half:+.2f}, {mean + half:+.2f}]" if half is not None else ""
    print(f"FT - alone, per seed: {', '.join(f'{d:+.2f}' for d in diffs)}; mean {mean:+.2f}{interval} "
          f"(paper: {paper['ft'] - paper['student']:+.2f})")
    if len(diffs) > 1:
        spread = max(statistics.stdev(errors[m]) for m in errors)
        verdict = "yes" if mean < 0 and -mean > spread else "no"
        print(f"FT lower than the student alone by more than the seeds' spread (largest sd {spread:.2f}): {verdict}")
    print(f"student training time: {wall / 60:.1f} min in all")


if __name__ == "__main__":
    run_main(main, get_args_parser())
