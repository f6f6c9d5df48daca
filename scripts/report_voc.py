"""The paper's detection result (Sec. 4.5, PASCAL VOC 2007 test mAP) from run folders: ours
(mean +- std over seeds) beside the paper's 69.5 / 70.3 / 75.0.

    python scripts/report_voc.py runs/voc2007            # markdown to stdout
    python scripts/report_voc.py runs/voc2007 --best     # mAP at the best evaluation instead

Every finished run of detection/train_*.py under the folder is read (final.json's "run"
record: stage, method, networks, iterations, ImageNet initialisation, seed).  Runs of one
row are averaged over seeds only when they share their scale (their own iterations, subsets,
initialisation); each scale is a section (the FT row's teacher is the one it names).  The FT row is paired seed by seed with the student
alone (a 95% t interval of FT - alone when there are two seeds or more).  mAP is VOC 2007's
11-point AP at IoU 0.5; the area-under-curve AP is shown beside it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import repo_path  # noqa: F401  (the repository's packages, for a script run as a file)
from aggregate import t_interval
from utils import record as records

PAPER = {"student": 69.5, "ft": 70.3, "teacher": 75.0}
ROWS = (("student", "VGG-16 alone"), ("ft", "VGG-16 + FT"), ("teacher", "ResNet-101 teacher"))


def load(root: Path) -> list[dict]:
    """Finished detection runs: {row, arch, teacher, scale, seed, map, map_area, path}."""
    runs = []
    for rec in records.read_all(root):
        final, args, record = rec.final, rec.args, rec.run
        if final is None or record.get("task") != "detection" or record.get("stage") not in ("teacher", "student"):
            continue  # paraphrasers have no mAP
        row = "teacher" if record["stage"] == "teacher" else "ft" if record.get("method") == "ft" else "student"
        teacher = record.get("teacher") or {}
        scale = (record["iters"], args.get("train_subset"), args.get("test_subset"), record.get("pretrained"))
        runs.append({"row": row, "arch": record["arch"], "teacher": teacher.get("arch"), "scale": scale,
                     "seed": record["seed"], "path": rec.path, "final": final})
    return runs


def value(run: dict, key: str, best: bool) -> float:
    final = run["final"]
    if key == "map":
        return final["map_best" if best else "map_last"]
    return final["last"][key]  # the area-under-curve AP is reported at the last evaluation


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def report(root: Path, best: bool) -> str:
    runs = load(root)
    lines = [f"# PASCAL VOC 2007 detection, Faster R-CNN ({root})", "",
             f"{len(runs)} finished detection runs. mAP (%) on the test split, VOC 2007 11-point AP at IoU "
             f"0.5 ({'best evaluation' if best else 'last iteration'}); area-under-curve AP (last) beside it.", ""]
    by_scale = defaultdict(list)
    for r in runs:
        by_scale[r["scale"]].append(r)
    for scale, group in sorted(by_scale.items(), key=lambda kv: str(kv[0])):
        iters, train_subset, test_subset, pretrained = scale
        lines += [f"## {iters} iterations"
                  f"{f', train subset {train_subset}' if train_subset else ''}"
                  f"{f', test subset {test_subset}' if test_subset else ''}, "
                  f"{'ImageNet-initialised' if pretrained else 'randomly initialised'}", "",
                  "| row | network | mAP (ours) | AUC AP (ours) | seeds | mAP (paper) |", "|---|---|---|---|---|---|"]
        cells = {}
        for row, label in ROWS:
            members = [r for r in group if r["row"] == row]
            cells[row] = {r["seed"]: value(r, "map", best) for r in members}
            nets = ", ".join(sorted({r["arch"] + (f" from {r['teacher']}" if r["teacher"] else "") for r in members}))
            lines.append(f"| {label} | {nets or '—'} | {mean_std(list(cells[row].values()))} | "
                         f"{mean_std([value(r, 'map_area', best) for r in members])} | "
                         f"{len(members)} | {PAPER[row]} |")
        common = sorted(set(cells["ft"]) & set(cells["student"]))
        if common:
            diffs = [cells["ft"][s] - cells["student"][s] for s in common]
            mean, _, half = t_interval(diffs)
            interval = f" ± {half:.1f} (95% t interval)" if half is not None else ""
            lines += ["", f"FT - alone, paired over {len(common)} seed(s): {mean:+.1f}{interval} "
                          f"(paper: {PAPER['ft'] - PAPER['student']:+.1f})"]
        lines.append("")
    if not runs:
        lines.append("No finished detection run (scripts/table_voc.sh trains them).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir", type=Path, help="root of the detection run folders (e.g. runs/voc2007)")
    parser.add_argument("--best", action="store_true", help="mAP at the best evaluation (default: the last)")
    args = parser.parse_args(argv)
    if not args.runs_dir.is_dir():
        sys.exit(f"report_voc.py: error: {args.runs_dir} is not a folder")
    print(report(args.runs_dir, args.best))


if __name__ == "__main__":
    main()
