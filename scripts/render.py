"""The report's outputs from filled tables: markdown, CSV and JSON records, PNG plots."""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from pathlib import Path

from aggregate import Agg, Conflict, Filled, Pair, Run, Section
from paper import PAPER_ITERS, Part, Table

MISSING = "—"
RECIPES = {"paper": "the paper's", "at": "the attention-transfer code's (Table 2's environment)"}


def fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return MISSING
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def fmt_ours(f: Filled) -> str:
    v = f.value
    if v is None:
        return MISSING
    if isinstance(v, Conflict):
        return f"conflict ({len(v.settings)} settings)"
    text = f"{v.mean:.2f} ± {v.std:.2f}" if v.std is not None else f"{v.mean:.2f}"
    return f"{text} (n={v.n}{', ' + f.note if f.note else ''})"


def describe_scale(section: Section) -> str:
    it, tit, train, test, recipe = section.scale
    runs = section.runs()

    def iters(n):
        if n is None:
            return MISSING
        return f"{n:,} iterations" + (" (the paper's)" if n in PAPER_ITERS else "")
    para = sorted({p["iters"] for r in runs for p in r.record.get("paraphrasers") or []})
    datasets = sorted({r.record["dataset"] for r in runs})
    return (f"students {iters(it)} · teachers {iters(tit)} · paraphrasers "
            f"{', '.join(f'{i:,}' for i in para) or MISSING} iterations · "
            f"train subset {train if train is not None else 'all'} · test subset "
            f"{test if test is not None else 'all'} · data {', '.join(datasets) or MISSING} · recipe "
            f"{recipe} ({RECIPES.get(recipe, 'unknown')})")


def scale_warnings(part: Part, filled_rows: list) -> list[str]:
    out = []
    for row, cells in zip(part.rows, filled_rows):
        if row.teacher_col is None:
            continue
        t, s = cells[row.teacher_col].value, cells[row.student_col].value
        if isinstance(t, Agg) and isinstance(s, Agg) and t.mean >= s.mean:
            out.append(f"{row.name}: the teacher ({t.mean:.2f}) is no "
                       f"better than the student alone ({s.mean:.2f}); transfer results at this scale "
                       f"say little about the paper's claim (docs/reproducing.md, 'Reduced scale').")
    return out


# ----------------------------------------------------------------------------- markdown
def render_markdown(table: Table, sections: list[Section], results: dict, best: bool,
                    pairs: dict | None = None) -> str:
    which = "best evaluation (chosen on the test set, optimistic)" if best else "last iteration"
    lines = [f"## {table.title}", "",
             f"Ours: {table.unit} at the {which}, mean ± sample std over seeds (n = seeds). "
             f"{'Reference' if table.key == 'mmrazor' else 'Paper'}: the published figure. "
             f"Δ = ours − {'reference' if table.key == 'mmrazor' else 'paper'}. {MISSING}: no finished run.", ""]
    if not sections:
        sections = [None]
    for si, section in enumerate(sections):
        if section is not None:
            lines += [f"**Scale{f' {si + 1}' if len(sections) > 1 else ''}:** {describe_scale(section)}", ""]
        else:
            lines += ["**Scale:** no finished runs for this table.", ""]
        for pi, part in enumerate(table.parts):
            filled_rows = results[(si, pi)]
            if part.title:
                lines += [f"*{part.title}*", ""]
            head = [*part.label_headers, "", *part.headers]
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            ref = "reference" if table.key == "mmrazor" else "paper"
            for row, cells in zip(part.rows, filled_rows):
                lines.append("| " + " | ".join([*row.labels, "ours", *(fmt_ours(c) for c in cells)]) + " |")
                blank = [""] * len(row.labels)
                lines.append("| " + " | ".join([*blank, ref, *(fmt(c.paper) for c in cells)]) + " |")
                lines.append("| " + " | ".join([*blank, "Δ", *(fmt(c.diff, True) for c in cells)]) + " |")
            lines.append("")
            if part.note:
                lines += [part.note, ""]
            conflicts = [(row, h, c.value) for row, cells in zip(part.rows, filled_rows)
                         for h, c in zip(part.headers, cells) if isinstance(c.value, Conflict)]
            for row, h, c in conflicts:
                lines.append(f"- conflict in {row.name}, {h}: runs "
                             f"differ in {c.describe()}; use one setting per run folder tree.")
            warns = scale_warnings(part, filled_rows) if section is not None else []
            lines += [f"- ⚠ {w}" for w in warns]
            if conflicts or warns:
                lines.append("")
            lines += paired_markdown((pairs or {}).get((si, pi), []), best)
    return "\n".join(lines)


def paired_markdown(pairs: list[Pair], best: bool) -> list[str]:
    if not pairs:
        return []
    lines = [f"*Paired differences (method − baseline):* error(method) − error(baseline) in points at the "
             f"{'best evaluation' if best else 'last iteration'}, seed by seed, over runs that share the "
             "seed and the teacher run (the student alone: the seed): FT against every other method, "
             "and every method against the student alone. n = pairs, mean and 95 % t-interval "
             "(mean ± t(0.975, n−1) · sd / √n). A best-of-k FT is paired at the k the table chose (shown). "
             "Paper: the paper's method − baseline, whose sign gives the ordering.", ""]
    for row in dict.fromkeys(p.row for p in pairs):
        group = [p for p in pairs if p.row == row]
        lines += [f"| {row}: method − baseline | n | mean | 95% CI | paper | ordering (paper) | ours |",
                  "|---|---|---|---|---|---|---|"]
        for p in group:
            method = f"{p.method} ({p.method_note})" if p.method_note else p.method
            ci = (f"[{fmt(p.mean - p.half, True)}, {fmt(p.mean + p.half, True)}]" if p.half is not None
                  else "n=1, no interval" if len(p.diffs) == 1 else MISSING)
            lines.append(f"| {method} − {p.baseline} | {len(p.diffs)} | {fmt(p.mean, True)} | {ci} | "
                         f"{fmt(p.paper, True)} | {ordering(p) or MISSING} | {p.verdict} |")
        lines += ["", f"Paper orderings, {row}: "
                  + "; ".join(f"{ordering(p)}: {p.verdict}" for p in group if ordering(p)) + ".", ""]
    return lines


def ordering(pair: Pair) -> str:
    """The paper's ordering of the method and the baseline, e.g. "FT < KD"; empty without a paper figure."""
    if pair.paper is None:
        return ""
    return f"{pair.method} {'<' if pair.paper < 0 else '>' if pair.paper else '='} {pair.baseline}"


# ----------------------------------------------------------------------------- records (CSV, JSON)
def metric_name(table: Table, best: bool) -> str:
    return ("best" if best else "last") + " " + table.unit


def records(table: Table, sections: list[Section], results: dict, best: bool) -> list[dict]:
    out = []
    for si, section in enumerate(sections or [None]):
        for pi, part in enumerate(table.parts):
            for row, cells in zip(part.rows, results[(si, pi)]):
                for header, c in zip(part.headers, cells):
                    v = c.value
                    out.append({
                        "table": table.key, "part": part.title or "main",
                        "scale": describe_scale(section) if section else None,
                        "row": row.name, "column": header, "metric": metric_name(table, best),
                        "status": "ok" if isinstance(v, Agg) else "conflict" if v else "missing",
                        "ours_mean": v.mean if isinstance(v, Agg) else None,
                        "ours_std": v.std if isinstance(v, Agg) else None,
                        "n": v.n if isinstance(v, Agg) else 0,
                        "seeds": v.seeds if isinstance(v, Agg) else [],
                        "note": c.note or (c.value.describe() if isinstance(v, Conflict) else ""),
                        "paper": c.paper, "diff": c.diff,
                    })
    return out


def pair_records(table: Table, part: Part, section: Section, pairs: list[Pair], best: bool) -> list[dict]:
    return [{
        "table": table.key, "part": part.title or "main", "scale": describe_scale(section),
        "row": p.row, "metric": metric_name(table, best),
        "method": p.method, "method_note": p.method_note, "baseline": p.baseline, "n": len(p.diffs),
        "seeds": [s for s, _ in p.diffs], "diffs": [round(d, 6) for _, d in p.diffs],
        "mean": p.mean, "sd": p.sd, "ci_low": None if p.half is None else p.mean - p.half,
        "ci_high": None if p.half is None else p.mean + p.half, "paper_diff": p.paper,
        "ordering": ordering(p), "verdict": p.verdict} for p in pairs]


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: " ".join(map(str, v)) if isinstance(v, list) else v for k, v in r.items()})
    return buf.getvalue()


def to_json(runs_dir: str, best: bool, finished: int, unfinished: int, cells: list, pairs: list) -> str:
    return json.dumps({"runs_dir": str(runs_dir), "metric": "best" if best else "last",
                       "finished_runs": finished, "unfinished_runs": unfinished,
                       "cells": cells, "paired": pairs}, indent=2)


# ----------------------------------------------------------------------------- plots
def plot(table: Table, sections: list[Section], results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for si, section in enumerate(sections):
        for pi, part in enumerate(table.parts):
            for ri, (row, cells) in enumerate(zip(part.rows, results[(si, pi)])):
                curves = {h: c.value for h, c in zip(part.headers, cells) if isinstance(c.value, Agg)}
                if not curves:
                    continue
                fig, ax = plt.subplots(figsize=(6, 4))
                for header, agg in curves.items():
                    xs, ys = mean_curve(agg.runs)
                    if xs:
                        label = f"{header} (its own schedule)" if "teacher" in header else header
                        ax.plot(xs, ys, label=label, marker="." if len(xs) < 30 else None)
                written.append(_finish(fig, ax, "iteration", f"Table {table.key}: {row.name}",
                                       out / f"table{table.key}-s{si + 1}-p{pi + 1}-r{ri + 1}-curves.png"))
                ks = [(float(h[2:]), a) for h, a in curves.items() if h.startswith("k=")]
                if len(ks) >= 2:
                    fig, ax = plt.subplots(figsize=(5, 3.5))
                    ks.sort()
                    ax.errorbar([k for k, _ in ks], [a.mean for _, a in ks],
                                yerr=[a.std or 0 for _, a in ks], marker="o", capsize=3, label="ours")
                    paper = [(float(h[2:]), c.paper) for h, c in zip(part.headers, cells)
                             if h.startswith("k=") and c.paper is not None]
                    ax.plot(*zip(*paper), marker="s", linestyle="--", label="paper")
                    written.append(_finish(fig, ax, "paraphrase rate k", f"Table {table.key}: {row.name}",
                                           out / f"table{table.key}-s{si + 1}-r{ri + 1}-k.png"))
    return written


def _finish(fig, ax, xlabel: str, title: str, name: Path) -> Path:
    """Label a test-error plot and write it to `name`."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel("test error (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(name, dpi=100)
    plt.close(fig)
    return name


def mean_curve(runs: list[Run]) -> tuple[list, list]:
    per_iter = defaultdict(list)
    for run in runs:
        for line in run.rec.metrics():
            if "test_error" in line:
                per_iter[line["iter"]].append(line["test_error"])
    xs = sorted(i for i, v in per_iter.items() if len(v) == len(runs))
    return xs, [statistics.fmean(per_iter[i]) for i in xs]
