"""The paper's tables from run folders: ours (mean +- std over seeds) beside the paper's.

    python scripts/report.py runs                      # every table, markdown, to stdout
    python scripts/report.py runs --table 1 --best     # error at the best evaluation instead
    python scripts/report.py runs --format md csv json --out report/   # files (+ PNG plots)
    python scripts/report.py results/midscale results/shipped/teacher-resnet56 --table 1   # two roots

Every run folder under each RUNS_DIR (args.json, final.json) is read.  A run's table cell comes
from the record the run keeps ("run" in final.json and args.json), never its folder name or
the folders it names: the method, the student's arch, the teacher's arch, the paraphraser's
k, kind and layers and the dataset (the `folder` copy counts as CIFAR-10); p, the ablation
flags and --ft-groups from its own arguments.  Runs of one cell at one scale are averaged
over seeds.

Scale: student iterations, teacher iterations, the subsets and the training recipe
(--recipe: the paper's, or the attention-transfer code's that Table 2 follows) make a
*section*; a table gets one section per scale found, and its header says which.  Any other
difference between runs of one cell (beta, lr, paraphraser iterations, cifar10 vs the
folder copy...) is shown as a conflict, never averaged.  A cell without a finished run
is shown as missing ("—"), never filled in.

The pieces: scripts/paper.py (the paper's numbers, the tables' layouts), scripts/aggregate.py
(runs placed, grouped, averaged and paired), scripts/render.py (markdown, CSV, JSON, plots).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import aggregate
import render
from paper import TABLES, build_tables


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir", type=Path, nargs="+",
                        help="root(s) of the run folders (e.g. runs; or results/midscale results/shipped/teacher-resnet56: "
                             "students, and the run folder of their teacher)")
    parser.add_argument("--table", default="all", choices=(*TABLES, "all"))
    parser.add_argument("--best", action="store_true",
                        help="error at the best evaluation (default: at the last iteration)")
    parser.add_argument("--format", nargs="+", default=["md"], choices=("md", "csv", "json"),
                        help="output formats (default: md)")
    parser.add_argument("--out", type=Path, help="write files (and PNG plots) here instead of stdout")
    return parser


def report(args: argparse.Namespace) -> dict[str, str]:
    """{file name: contents} for the requested tables and formats."""
    runs = [run for root in args.runs_dir for run in aggregate.load_runs(root)]
    roots = " ".join(str(root) for root in args.runs_dir)
    done = [r for r in runs if r.final is not None]
    header = [f"# Factor Transfer: reproduced tables ({roots})", "",
              f"{len(runs)} run folders: {len(done)} finished, {len(runs) - len(done)} unfinished "
              f"(not counted). Metric: {'best evaluation' if args.best else 'last iteration'}.", ""]
    problems = [f"- {r.path}: not placed, {r.problem}" for r in runs if r.problem]
    if problems:
        header += ["Runs left out:", *problems, ""]
    md, rows, pair_rows, outputs = ["\n".join(header)], [], [], {}
    args.plots = []
    for table in build_tables(args.table):
        sections = aggregate.sections_for(aggregate.table_runs(table, runs))
        results = aggregate.fill_table(table, sections, args.best)
        pairs = {(si, pi): aggregate.paired(part, results[(si, pi)], args.best)
                 for si in range(len(sections)) for pi, part in enumerate(table.parts) if part.pairs}
        md.append(render.render_markdown(table, sections, results, args.best, pairs))
        rows += render.records(table, sections, results, args.best)
        pair_rows += [r for (si, pi), found in pairs.items()
                      for r in render.pair_records(table, table.parts[pi], sections[si], found, args.best)]
        if args.out is not None and sections:
            try:
                args.plots += render.plot(table, sections, results, args.out)
            except ImportError:
                args.plots = None
    name = f"report{'' if args.table == 'all' else f'-table{args.table}'}{'-best' if args.best else ''}"
    if "md" in args.format:
        outputs[f"{name}.md"] = "\n".join(md)
    if "csv" in args.format:
        outputs[f"{name}.csv"] = render.to_csv(rows)
        if pair_rows:
            outputs[f"{name}-paired.csv"] = render.to_csv(pair_rows)
    if "json" in args.format:
        outputs[f"{name}.json"] = render.to_json(roots, args.best, len(done), len(runs) - len(done),
                                                 rows, pair_rows)
    return outputs


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    for root in args.runs_dir:
        if not root.is_dir():
            sys.exit(f"report.py: error: {root} is not a folder")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    outputs = report(args)
    if args.out is None:
        print("\n\n".join(outputs.values()))
        return
    for name, text in outputs.items():
        (args.out / name).write_text(text + ("\n" if not text.endswith("\n") else ""))
        print(f"wrote {args.out / name}")
    if args.plots is None:
        print("matplotlib is not installed: plots skipped (pip install matplotlib)")
    else:
        print(f"wrote {len(args.plots)} plots to {args.out}")


if __name__ == "__main__":
    main()
