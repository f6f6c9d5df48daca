"""Run folders into table cells: each run placed from its record, grouped by scale and cell,
averaged over seeds; FT paired with each baseline, and each method with the student alone, seed
by seed.

A run folder's args.json and final.json carry a "run" record (utils/record.py reads it): the
stage, the method, the architecture, the dataset, the recipe, the iterations, the seed, and for
a student its teacher's and paraphrasers' identities (architecture, iterations, kind, k,
layers, weight fingerprint).  A run is placed from that record and its own arguments alone
(its cell: utils.record.cell); the folders its --teacher / --paraphraser name are never read.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import repo_path  # noqa: F401  (the repository's packages, for a script run as a file)
from paper import Cell, Part, Table
from utils import record as records
from utils.record import RunRecord

# Arguments that name a run rather than define it (the float32 fast paths, TF32 and cuDNN's
# choice of algorithms change rounding only).
PER_RUN_ARGS = {"seed", "out", "force", "device", "progress", "data_root", "eval_batch_size",
                "save_every", "eval_every", "teacher", "paraphraser", "compile", "channels_last",
                "fold_bn", "cuda_graph", "default_iters", "tf32", "deterministic"}
SCALE_ARGS = {"iters", "train_subset", "test_subset", "recipe"}


@dataclass
class Run:
    rec: RunRecord                 # the folder's records, migrated (utils/record.py)
    identity: tuple | None = None  # its table cell
    scale: tuple | None = None     # (student iters, teacher iters, train subset, test subset, recipe)
    setting: dict = field(default_factory=dict)
    problem: str | None = None
    teacher: str | None = None     # the fingerprint of the teacher's weights

    @property
    def path(self) -> Path:
        return self.rec.path

    @property
    def args(self) -> dict:
        return self.rec.args

    @property
    def final(self) -> dict | None:
        return self.rec.final

    @property
    def record(self) -> dict:      # what the run is: final.json's (or args.json's) "run"
        return self.rec.run

    @property
    def seed(self):
        return self.record.get("seed")


# ----------------------------------------------------------------------------- run folders
def load_runs(root: Path) -> list[Run]:
    runs = []
    for rec in records.read_all(root):
        run = Run(rec)
        place(run)
        runs.append(run)
    return runs


def _setting(args: dict, exclude: set, stage: str | None = None) -> dict:
    """The arguments that must agree for runs to share a cell (utils.record.significant), of a
    run of `stage` when they are a teacher's or paraphraser's kept in a student's record."""
    if stage is not None:
        args = records.migrate_args(args, stage)
    return records.significant(args, PER_RUN_ARGS | SCALE_ARGS | exclude)


def place(run: Run) -> None:
    """The run's cell identity, scale and remaining setting, from its record and its own
    arguments (p, the ablation flags, --ft-groups, the subsets, every other option)."""
    r, a = run.record, run.args
    if r.get("task") == "detection":  # VOC 2007 detection runs: scripts/report_voc.py
        return
    if not r.get("stage"):
        if run.final is not None:
            run.problem = ("its folder has no 'run' record (made before runs recorded what they are; "
                           "python scripts/backfill_run_records.py adds it)")
        return
    run.identity = run.rec.cell
    subsets = (a.get("train_subset"), a.get("test_subset"), r["recipe"])
    if r["stage"] == "teacher":
        run.scale = (None, r["iters"], *subsets)
        run.setting = _setting(a, {"arch"})
        return
    if r["stage"] != "student":
        return
    teacher, paras = r.get("teacher"), r.get("paraphrasers") or []
    para = paras[-1] if paras else {}  # the cell's paraphraser (utils.record.cell)
    run.scale = (r["iters"], teacher["iters"] if teacher else None, *subsets)
    run.teacher = teacher["fingerprint"] if teacher else None
    run.setting = _setting(a, {"arch", "method", "p", "no_paraphraser", "no_translator", "ft_groups"})
    if teacher and teacher["recipe"] != r["recipe"]:
        run.setting["teacher.recipe"] = teacher["recipe"]
    # How the teacher and the cell's paraphraser were trained (lr, weight decay, loss...): what
    # their records keep of their arguments must agree too.
    for key, value in _setting((teacher or {}).get("args") or {}, {"arch"}, "teacher").items():
        run.setting[f"teacher.{key}"] = value
    for key, value in _setting(para.get("args") or {}, {"kind", "k", "layers", "bn", "group"},
                               "paraphraser").items():
        run.setting[f"paraphraser.{key}"] = value
    if teacher and teacher["iters"] is None:  # published weights (--teacher torchvision:NAME), no run
        # never averaged with a teacher trained here (records before "source" name it in args)
        run.setting["teacher.weights"] = teacher.get("source") or a["teacher"]
    for key in ("kind", "k", "layers", "bn", "group", "iters"):
        values = [p.get(key) for p in paras]
        if len(set(values)) > 1:
            run.setting[f"paraphraser.{key}"] = values
        elif values and key not in ("kind", "k", "layers"):  # those three are the cell's
            run.setting[f"paraphraser.{key}"] = values[0]


# ----------------------------------------------------------------------------- aggregation
@dataclass
class Agg:
    mean: float
    std: float | None
    n: int
    seeds: list
    runs: list
    note: str = ""


@dataclass
class Conflict:
    settings: list  # one dict of differing keys per group

    def describe(self) -> str:
        return "; ".join(", ".join(f"{k}={v}" for k, v in sorted(s.items())) or "(other)"
                         for s in self.settings)


def metric_value(run: Run, best: bool, top5: bool) -> float | None:
    final = run.final
    if not top5:
        return final.get("test_error_best" if best else "test_error_last")
    if not best:
        return (final.get("last") or {}).get("test_error_top5")
    line = run.rec.metrics_at(final.get("best_iter"))
    return line.get("test_error_top5") if line else None


def aggregate(runs: list[Run], best: bool, top5: bool = False, accuracy: bool = False) -> Agg | None:
    values, seeds, used = [], [], []
    for run in runs:
        v = metric_value(run, best, top5)
        if v is None:
            continue
        values.append(100.0 - v if accuracy else v)
        seeds.append(run.seed)
        used.append(run)
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None
    return Agg(statistics.fmean(values), std, len(values), seeds, used)


def fits(scale: tuple, key: tuple) -> bool:
    """A run of `scale` belongs to the section of `key`: the same subsets and recipe (None there
    is a value, all images), and the same iterations for each stage the run has (a student alone
    has no teacher, a teacher no student), which the key must name too."""
    (student, teacher, *rest), (key_student, key_teacher, *key_rest) = scale, key
    return rest == key_rest and student in (None, key_student) and teacher in (None, key_teacher)


class Section:
    """The finished runs of one scale, grouped by cell."""

    def __init__(self, scale: tuple, runs: list[Run]):
        self.scale = scale
        self.cells: dict[tuple, list[list[Run]]] = defaultdict(list)
        by_setting: dict[tuple, dict[str, list[Run]]] = defaultdict(dict)
        for run in runs:
            key = json.dumps(run.setting, sort_keys=True, default=str)
            by_setting[run.identity].setdefault(key, []).append(run)
        for identity, groups in by_setting.items():
            self.cells[identity] = list(groups.values())

    def lookup(self, identity: tuple, best: bool, top5: bool = False, accuracy: bool = False):
        groups = self.cells.get(identity)
        if not groups:
            return None
        if len(groups) > 1:
            settings = [g[0].setting for g in groups]
            keys = {k for s in settings for k in s if len({json.dumps(t.get(k), default=str)
                                                           for t in settings}) > 1}
            return Conflict([{k: s.get(k) for k in sorted(keys)} for s in settings])
        return aggregate(groups[0], best, top5, accuracy)

    def runs(self) -> list[Run]:
        return [r for groups in self.cells.values() for g in groups for r in g]


def sections_for(runs: list[Run]) -> list[Section]:
    """One section per scale: each (student, teacher) iterations of the students taught by a
    teacher; teachers and students alone join every section of their own iterations. Those
    that fit none are paired (a student alone with a teacher of its iterations if there is one,
    else with each teacher of its subsets), and whatever still fits none has its own section."""
    scales = {r.scale for r in runs}
    keys = {s for s in scales if s[0] is not None and s[1] is not None}
    left = {s for s in scales if not any(fits(s, k) for k in keys)}
    teachers = {t for t in left if t[0] is None}
    for alone in (a for a in left if a[1] is None):
        matching = [t for t in teachers if t[2:] == alone[2:]]
        same = [t for t in matching if t[1] == alone[0]]
        keys |= {(alone[0], t[1], *alone[2:]) for t in same or matching}
    keys |= {s for s in scales if not any(fits(s, k) for k in keys)}
    order = sorted(keys, key=lambda s: tuple((x is None, x or 0) for x in s))
    return [Section(k, [r for r in runs if fits(r.scale, k)]) for k in order]


def table_runs(table: Table, runs: list[Run]) -> list[Run]:
    wanted = {i for part in table.parts for row in part.rows for c in row.cells for i in c.ids}
    return [r for r in runs if r.final is not None and r.identity in wanted]


# ----------------------------------------------------------------------------- filling
@dataclass
class Filled:
    value: Agg | Conflict | None
    paper: float | None
    note: str = ""

    @property
    def diff(self) -> float | None:
        if isinstance(self.value, Agg) and self.paper is not None:
            return self.value.mean - self.paper
        return None


def fill(cell: Cell, section: Section, best: bool) -> Filled:
    found = [(i, section.lookup(i, best, cell.top5, cell.accuracy)) for i in cell.ids]
    found = [(i, v) for i, v in found if v is not None]
    if len(cell.ids) == 1 or not found:
        return Filled(found[0][1] if found else None, cell.paper)
    conflicts = [v for _, v in found if isinstance(v, Conflict)]
    if conflicts:
        return Filled(conflicts[0], cell.paper)
    ident, agg = min(found, key=lambda iv: iv[1].mean)
    note = cell.note(ident) if cell.note else ""
    if len(found) < len(cell.ids):
        note += f", best of {len(found)}/{len(cell.ids)}"
    return Filled(agg, cell.paper, note)


def fill_table(table: Table, sections: list[Section], best: bool) -> dict:
    """{(section index, part index): rows of Filled}; without sections, the paper's column alone."""
    return {(si, pi): [[fill(c, s, best) for c in row.cells] for row in part.rows]
            if s is not None else [[Filled(None, c.paper) for c in row.cells] for row in part.rows]
            for si, s in enumerate(sections or [None]) for pi, part in enumerate(table.parts)}


# ----------------------------------------------------------------------------- paired comparisons
# The table's pairs (paper.Part.pairs: FT against each other method of its row, and each method
# against the student alone), seed by seed: error(method) - error(baseline) over the runs of one
# section that share the seed and the teacher's weights (the student alone has none: the seed).
# Student-t 0.975 quantiles, df = 1..30 (tests/test_report_paired.py recomputes them); beyond, 1.96.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042)


def t_interval(diffs: list[float]) -> tuple:
    """Mean, sample std and half width of the 95 % t-interval (std and width None below n = 2)."""
    if len(diffs) < 2:
        return (diffs[0] if diffs else None), None, None
    sd, df = statistics.stdev(diffs), len(diffs) - 1
    return statistics.fmean(diffs), sd, (T975[df - 1] if df <= len(T975) else 1.96) * sd / len(diffs) ** 0.5


def paired_diffs(method: list[Run], base: list[Run], best: bool, top5: bool) -> list[tuple]:
    """[(seed, error(method) - error(baseline))]; a (seed, teacher) key held by two runs pairs nothing."""
    by_teacher = any(r.teacher for r in base)

    def values(runs):
        found = defaultdict(list)
        for r in runs:
            found[(r.seed, r.teacher if by_teacher else None)].append(metric_value(r, best, top5))
        return {key: v[0] for key, v in found.items() if len(v) == 1 and v[0] is not None}
    a, b = values(method), values(base)
    keys = sorted(a.keys() & b.keys(), key=lambda k: (k[0] is None, k[0] or 0, str(k[1])))
    return [(k[0], a[k] - b[k]) for k in keys]


def verdict(mean: float | None, half: float | None, paper: float | None) -> str:
    """Ours against the ordering the paper's method - baseline gives."""
    if not paper:
        return "the paper's figures tie" if paper == 0 else "no paper figure"
    if mean is None or mean == 0:
        return "no paired runs" if mean is None else "tie on the mean"
    holds = (mean < 0) == (paper < 0)
    if half is not None and abs(mean) > half:
        return ("holds" if holds else "reversed") + " (CI excl. 0)"
    return "holds on the mean only" if holds else "reversed on the mean"


@dataclass
class Pair:
    row: str
    method: str          # the column under test (FT, or a method paired with the student alone)
    method_note: str     # its cell's note (FT's best k)
    baseline: str        # the baseline column's header
    diffs: list          # [(seed, error(method) - error(baseline))]
    mean: float | None
    sd: float | None
    half: float | None   # half width of the 95 % t-interval
    paper: float | None  # the paper's method - baseline
    verdict: str


def paired(part: Part, filled_rows: list, best: bool) -> list[Pair]:
    """One comparison per row and per (method, baseline) column pair of the part whose method
    cell has runs."""
    out = []
    for row, cells in zip(part.rows, filled_rows):
        for mi, bi in part.pairs:
            method, base = cells[mi], cells[bi]
            if not isinstance(method.value, Agg):
                continue
            diffs = paired_diffs(method.value.runs, base.value.runs if isinstance(base.value, Agg) else [],
                                 best, row.cells[mi].top5)
            mean, sd, half = t_interval([d for _, d in diffs])
            paper = None if None in (method.paper, base.paper) else round(method.paper - base.paper, 2)
            out.append(Pair(row.name, part.headers[mi], method.note, part.headers[bi], diffs, mean, sd, half,
                            paper, verdict(mean, half, paper)))
    return out
