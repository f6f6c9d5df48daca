"""The paper's tables from run folders: ours (mean +- std over seeds) beside the paper's.

    python scripts/report.py runs                      # every table, markdown, to stdout
    python scripts/report.py runs --table 1 --best     # error at the best evaluation instead
    python scripts/report.py runs --format md csv json --out report/   # files (+ PNG plots)

Every run folder under RUNS_DIR (args.json, final.json) is read.  A run's table cell
comes from its arguments, never its folder name: the method, the student's arch, the
teacher's arch (read from the teacher run that --teacher names), the paraphraser's k,
kind and layers (from its run), p, the ablation flags and the dataset (the `folder`
copy counts as CIFAR-10).  Runs of one cell at one scale are averaged over seeds.

Scale: student iterations, teacher iterations, the subsets and the training recipe
(--recipe: the paper's, or the attention-transfer code's that Table 2 follows) make a
*section*; a table gets one section per scale found, and its header says which.  Any other
difference between runs of one cell (beta, lr, paraphraser epochs, cifar10 vs the
folder copy...) is shown as a conflict, never averaged.  A cell without a finished run
is shown as missing ("—"), never filled in.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
MISSING = "—"

# ----------------------------------------------------------------------------- the paper
# Error (%) from the paper's Tables 1-4, 6 and 7.  Sweeps: k = 0.5 1 2 3 4 (the paper's
# five values are not stated; our reading, see README "Choices"), then CAE and RAE.
PAPER_T1 = {  # (student, teacher): student, AT, KD, FT (best k), AT+KD, FT+KD, teacher
    ("resnet20", "resnet56"): (7.78, 7.13, 7.19, 6.85, 6.89, 7.04, 6.39),
    ("resnet20", "wrn_40_1"): (7.78, 7.34, 7.09, 6.85, 7.00, 6.95, 6.84),
    ("vgg13", "wrn_46_4"): (5.99, 5.54, 5.71, 4.84, 5.30, 4.65, 4.44),
    ("wrn_16_1", "wrn_16_2"): (8.62, 8.10, 7.64, 7.64, 7.52, 7.59, 6.27),
}
# Multi-group FT (Sec. 4.1): ResNet-56 -> ResNet-20 on CIFAR-10 with FT on every group.
PAPER_MULTI_GROUP = {"1": ("resnet20", "resnet56", 7.01)}
PAPER_T1_SWEEP = {  # k1..k5, CAE, RAE
    ("resnet20", "resnet56"): (6.85, 6.92, 6.89, 6.87, 7.08, 7.07, 7.24),
    ("resnet20", "wrn_40_1"): (7.16, 7.05, 7.04, 6.85, 7.05, 7.26, 7.33),
    ("vgg13", "wrn_46_4"): (4.84, 5.09, 5.04, 5.01, 4.98, 5.85, 5.53),
    ("wrn_16_1", "wrn_16_2"): (7.64, 7.83, 7.74, 7.87, 7.95, 8.48, 8.00),
}
PAPER_T2 = {  # student, AT, F-ActT, KD, AT+KD, teacher (AT paper's), FT, FT's teacher
    ("wrn_16_1", "wrn_40_1"): (8.77, 8.25, 8.62, 8.39, 8.01, 6.58, 8.12, 6.55),
    ("wrn_16_2", "wrn_40_2"): (6.31, 5.85, 6.24, 6.08, 5.71, 5.23, 5.51, 5.09),
}
PAPER_T3 = {  # as Table 1, CIFAR-100
    ("resnet56", "resnet110"): (28.04, 27.28, 27.96, 25.62, 28.01, 26.93, 26.91),
    ("resnet20", "resnet110"): (31.24, 31.04, 33.14, 29.08, 34.78, 32.19, 26.91),
}
PAPER_T3_SWEEP = {
    ("resnet56", "resnet110"): (25.62, 25.78, 25.85, 25.63, 25.87, 26.41, 26.29),
    ("resnet20", "resnet110"): (29.20, 29.25, 29.28, 29.19, 29.08, 29.84, 30.11),
}
PAPER_T4 = {  # (CIFAR-10, CIFAR-100)
    "student": (7.02, 28.81), "teacher": (4.96, 24.10),
    ("yes", "no"): (6.18, 27.61), ("no", "yes"): (6.12, 27.39), ("yes", "yes"): (5.71, 26.91),
    1: (6.09, 27.07), 2: (5.99, 27.03), 3: (5.71, 26.91),
}
PAPER_T4_PARAMS = {1: 0.07, 2: 0.22, 3: 0.26}  # M, WRN-40-2 paraphraser (C=128, k=0.5)
PAPER_T6 = {  # ImageNet, (top-1, top-5): ResNet-18 student alone, KD, AT, FT, ResNet-34 teacher
    "student": (29.91, 10.68), "kd": (33.83, 12.55), "at": (29.36, 10.23), "ft": (28.57, 9.71),
    "teacher": (26.73, 8.57),
}
# torchvision's published ImageNet accuracy of its ResNet-34 (IMAGENET1K_V1): 73.314 / 91.42.
TORCHVISION_RESNET34_ERROR = (26.69, 8.58)
PAPER_T7 = {  # student alone, p = 1, p = 2
    "cifar10": (7.78, 6.85, 6.88), "cifar100": (31.24, 29.08, 29.18),
}
# MMRazor's published CIFAR-10 figures, accuracy (%), (top-1, top-5): FT from the README of
# configs/distill/mmcls/factor_transfer (its metafile.yml says 94.88 top-1); teacher and student
# alone from that metafile (mmcls's ResNet-50 / ResNet-18 checkpoints).  docs/mmrazor.md.
MMRAZOR = {"teacher": (95.55, 99.91), "student": (94.82, 99.87), "ft": (94.86, 99.88)}

K_SWEEP = (0.5, 1.0, 2.0, 3.0, 4.0)
NAMES = {"resnet20": "ResNet-20", "resnet32": "ResNet-32", "resnet44": "ResNet-44",
         "resnet56": "ResNet-56", "resnet110": "ResNet-110", "vgg13": "VGG-13",
         "resnet18_cifar": "ResNet-18", "resnet50_cifar": "ResNet-50",
         "resnet18": "ResNet-18", "resnet34": "ResNet-34"}
FULL_ITERS = 64000
FULL_ITERS_IMAGENET = 450360  # 90 epochs of ImageNet-1k at batch 256 (scripts/table6.sh)
PRETRAINED_PREFIX = "torchvision:"  # --teacher torchvision:NAME: published weights, no run folder


def pretty(arch: str) -> str:
    if arch in NAMES:
        return NAMES[arch]
    if arch.startswith("wrn_"):
        return "WRN-" + "-".join(arch.split("_")[1:])
    return arch


# ----------------------------------------------------------------------------- run folders
# Arguments that name a run rather than define it (the float32 fast paths change rounding only).
PER_RUN_ARGS = {"seed", "out", "force", "device", "progress", "data_root", "eval_batch_size",
                "save_every", "eval_every", "teacher", "paraphraser", "compile", "channels_last",
                "fold_bn", "cuda_graph", "default_iters"}
SCALE_ARGS = {"iters", "train_subset", "test_subset", "recipe"}
# Options added after runs were made, at the value those runs had (utils.run.ADDED_ARGS,
# which lets such runs resume): counted as absent.
sys.path.insert(0, str(REPO))
from utils.run import ADDED_ARGS as ADDED_DEFAULTS  # noqa: E402
RECIPES = {"paper": "the paper's", "at": "the attention-transfer code's (Table 2's environment)"}
TRANSFER_FACTOR = {"ft", "ft+kd"}  # methods with a paraphraser/translator


@dataclass
class Run:
    path: Path
    args: dict
    final: dict | None
    kind: str
    identity: tuple | None = None
    scale: tuple | None = None     # (student iters, teacher iters, train subset, test subset, recipe)
    setting: dict = field(default_factory=dict)
    problem: str | None = None
    teacher: str | None = None     # the teacher run's resolved path (or torchvision:NAME)


def family(dataset: str) -> str:
    """The folder source is the CIFAR-10 copy: it fills the CIFAR-10 tables."""
    return "cifar10" if dataset in ("cifar10", "folder") else dataset


def teacher_id(dataset: str, arch: str) -> tuple:
    return ("teacher", family(dataset), arch)


def student_id(dataset: str, arch: str, method: str, teacher: str | None = None, k=None,
               kind: str | None = None, layers: int | None = None, p: int | None = None,
               no_paraphraser: bool = False, no_translator: bool = False,
               groups: str | None = None) -> tuple:
    """A table cell's identity; runs and table layouts both build it here, so defaults agree."""
    if method in TRANSFER_FACTOR:
        p, groups = int(p or 1), groups or "last"
        if no_paraphraser:
            k = kind = layers = None
        else:
            kind, layers = kind or "conv", int(layers or 3)
            k = None if kind == "cae" else 2.0 if kind == "rae" else round(float(k), 4)
    else:
        k = kind = layers = p = groups = None
        no_paraphraser = no_translator = False
    return ("student", family(dataset), arch, method, teacher, k, kind, layers, p,
            bool(no_paraphraser), bool(no_translator), groups)


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_runs(root: Path) -> list[Run]:
    runs = []
    for args_path in sorted(root.rglob("args.json")):
        blob = read_json(args_path)
        if not isinstance(blob, dict) or not isinstance(blob.get("args"), dict):
            continue
        args, final = blob["args"], read_json(args_path.parent / "final.json")
        kind = (final or {}).get("kind") or ("student" if "method" in args else
                                             "paraphraser" if "recon_loss" in args else "teacher")
        runs.append(Run(args_path.parent, args, final, kind))
    index = RunIndex(runs)
    for run in runs:
        describe(run, index)
    return runs


class RunIndex:
    """Finds the run a --teacher / --paraphraser path names, wherever the report is run from."""

    def __init__(self, runs: list[Run]):
        self.by_path = {r.path.resolve(): r for r in runs}

    def find(self, name: str | None) -> Run | None:
        if not name:
            return None
        path = Path(name)
        for candidate in ([path] if path.is_absolute() else [Path.cwd() / path, REPO / path]):
            run = self.by_path.get(candidate.resolve())
            if run is not None:
                return run
        # The run tree was moved or the report runs elsewhere: match the longest tail of parts.
        want = [p for p in path.parts if p not in (".", "")]
        best, best_len, ties = None, 0, 0
        for full, run in self.by_path.items():
            n = 0
            while n < min(len(want), len(full.parts)) and want[-1 - n] == full.parts[-1 - n]:
                n += 1
            if n > best_len:
                best, best_len, ties = run, n, 0
            elif n == best_len and n:
                ties += 1
        return best if best_len >= 2 and not ties else None


def _setting(args: dict, exclude: set) -> dict:
    """The arguments that must agree for runs to share a cell.  An option that is off (None or
    False) counts as absent, so a run made before the option existed shares its cell."""
    return {k: v for k, v in args.items()
            if k not in PER_RUN_ARGS | SCALE_ARGS | exclude and v is not None and v is not False
            and not (k in ADDED_DEFAULTS and v == ADDED_DEFAULTS[k])}


def describe(run: Run, index: RunIndex) -> None:
    """Fill in the run's cell identity, scale and remaining setting from its arguments."""
    a = run.args
    subsets = (a.get("train_subset"), a.get("test_subset"), a.get("recipe") or "paper")
    if run.kind == "teacher":
        run.identity = teacher_id(a["dataset"], a["arch"])
        run.scale = (None, a.get("iters"), *subsets)
        run.setting = _setting(a, {"arch"})
        return
    if run.kind != "student":
        return
    pretrained = str(a.get("teacher") or "").startswith(PRETRAINED_PREFIX)
    teacher = index.find(a.get("teacher")) if a.get("teacher") and not pretrained else None
    if a.get("teacher") and teacher is None and not pretrained:
        run.problem = f"its teacher run {a['teacher']} is not under the report's folder"
        return
    paras = a.get("paraphraser") or []
    paras = [paras] if isinstance(paras, str) else paras
    para = index.find(paras[0]) if paras else None
    if paras and para is None:
        run.problem = f"its paraphraser run {paras[0]} is not under the report's folder"
        return
    pa = para.args if para else {}
    teacher_arch = a["teacher"][len(PRETRAINED_PREFIX):] if pretrained else \
        teacher.args["arch"] if teacher else None
    run.identity = student_id(
        a["dataset"], a["arch"], a["method"], teacher_arch,
        k=pa.get("k"), kind=pa.get("kind"), layers=pa.get("layers"), p=a.get("p"),
        no_paraphraser=a.get("no_paraphraser", False) or not para,
        no_translator=a.get("no_translator", False), groups=a.get("ft_groups"))
    run.scale = (a.get("iters"), teacher.args.get("iters") if teacher else None, *subsets)
    run.teacher = a["teacher"] if pretrained else str(teacher.path.resolve()) if teacher else None
    run.setting = _setting(a, {"arch", "method", "p", "no_paraphraser", "no_translator", "ft_groups"})
    if teacher:
        run.setting.update({f"teacher.{k}": v for k, v in _setting(teacher.args, {"arch"}).items()})
        if (teacher.args.get("recipe") or "paper") != (a.get("recipe") or "paper"):
            run.setting["teacher.recipe"] = teacher.args.get("recipe") or "paper"
    if pretrained:  # never averaged with students of a teacher trained here
        run.setting["teacher.weights"] = a["teacher"]
    if para:
        run.setting.update({f"paraphraser.{k}": v for k, v in pa.items()
                            if k not in PER_RUN_ARGS | {"k", "kind", "layers", "dataset",
                                                        "train_subset", "test_subset"}
                            and v is not None and v is not False})


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
    for line in (run.path / "metrics.jsonl").read_text().splitlines() if (run.path / "metrics.jsonl").exists() else []:
        record = json.loads(line)
        if record.get("iter") == final.get("best_iter"):
            return record.get("test_error_top5")
    return None


def aggregate(runs: list[Run], best: bool, top5: bool = False, accuracy: bool = False) -> Agg | None:
    values, seeds, used = [], [], []
    for run in runs:
        v = metric_value(run, best, top5)
        if v is None:
            continue
        values.append(100.0 - v if accuracy else v)
        seeds.append(run.args.get("seed"))
        used.append(run)
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None
    return Agg(statistics.fmean(values), std, len(values), seeds, used)


def compatible(a: tuple, b: tuple) -> bool:
    return all(x is None or y is None or x == y for x, y in zip(a, b))


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
    """One section per scale; teachers and students alone join every scale they fit."""
    scales = {r.scale for r in runs}
    full = {s for s in scales if s[0] is not None and s[1] is not None}
    if not full:
        alone = {s for s in scales if s[0] is not None}
        teachers = {s for s in scales if s[1] is not None}
        full = {(a[0], t[1], *a[2:]) for a in alone for t in teachers if a[2:] == t[2:]}
    keys = set(full)
    for s in scales:
        if not any(compatible(s, f) for f in full):
            keys.add(s)
    order = sorted(keys, key=lambda s: tuple((x is None, x or 0) for x in s))
    return [Section(k, [r for r in runs if compatible(r.scale, k)]) for k in order]


# ----------------------------------------------------------------------------- table layouts
@dataclass
class Cell:
    ids: list            # identities; more than one: the best of them (lowest mean error)
    paper: float | None
    note: Callable[[tuple], str] | None = None  # identity -> label of the chosen one (best-of cells)
    top5: bool = False
    accuracy: bool = False


@dataclass
class Row:
    labels: list
    cells: list
    teacher_col: int | None = None   # for the teacher-vs-student-alone check
    student_col: int | None = None
    name: str = ""                   # how notes name the row (default: its first two labels)

    def __post_init__(self):
        self.name = self.name or " / ".join(x for x in self.labels[:2] if x)


@dataclass
class Part:
    title: str
    label_headers: list
    headers: list
    rows: list
    note: str = ""
    pairs: tuple = ()    # (FT column, baseline column): paired comparisons under the table


@dataclass
class Table:
    key: str
    title: str
    parts: list
    unit: str = "test error (%)"


def k_label(identity: tuple) -> str:
    return f"k={identity[5]:g}"


def transfer_table(key: str, dataset: str, paper: dict, sweep: dict, title: str) -> Table:
    """Tables 1 and 3: the main comparison and the paraphraser sweep."""
    main, sweep_rows = [], []
    for (s, t), values in paper.items():
        ft_k = [student_id(dataset, s, "ft", t, k=k) for k in K_SWEEP]
        main.append(Row([pretty(s), pretty(t)], [
            Cell([student_id(dataset, s, "ce")], values[0]),
            Cell([student_id(dataset, s, "at", t)], values[1]),
            Cell([student_id(dataset, s, "kd", t)], values[2]),
            Cell(ft_k, values[3], note=k_label),
            Cell([student_id(dataset, s, "at+kd", t)], values[4]),
            Cell([student_id(dataset, s, "ft+kd", t, k=0.5)], values[5]),
            Cell([teacher_id(dataset, t)], values[6]),
        ], teacher_col=6, student_col=0))
        sweep_rows.append(Row([pretty(s), pretty(t)], [
            *(Cell([i], v) for i, v in zip(ft_k, sweep[(s, t)])),
            Cell([student_id(dataset, s, "ft", t, kind="cae")], sweep[(s, t)][5]),
            Cell([student_id(dataset, s, "ft", t, kind="rae")], sweep[(s, t)][6]),
        ]))
    parts = [
        Part("", ["student", "teacher"], ["student", "AT", "KD", "FT", "AT+KD", "FT+KD (k=0.5)", "teacher"],
             main, note="FT: the best k of the sweep below, chosen on the test error (as the paper did); "
                        "its k is shown. AT = beta * sum of the groups' losses (beta 1000, the AT code); KD "
                        "in the AT code's form (--kd-form at2017), alpha 0.9, T 4.",
             pairs=((3, 0), (3, 1), (3, 2), (3, 4), (3, 5))),
        Part("FT's paraphraser: k sweep (conv), CAE and RAE", ["student", "teacher"],
             [*(f"k={k:g}" for k in K_SWEEP), "CAE", "RAE"], sweep_rows,
             note="The paper's five k values are not stated; we read them as 0.5 1 2 3 4. RAE: k = 2 "
                  "with the L1 penalty on the factor (train_paraphraser.py --kind rae)."),
    ]
    if key in PAPER_MULTI_GROUP:
        s, t, paper_value = PAPER_MULTI_GROUP[key]
        parts.append(Part("Multi-group FT (every group of the teacher)", ["student", "teacher"],
                          ["FT, last group (k=0.5)", "FT, every group (k=0.5)"], [Row([pretty(s), pretty(t)], [
                              Cell([student_id(dataset, s, "ft", t, k=0.5)], paper[(s, t)][3]),
                              Cell([student_id(dataset, s, "ft", t, k=0.5, groups="all")], paper_value)])],
                          note="The paper (Sec. 4.1) reports FT on all three groups at 7.01 %, worse than "
                               "the last group alone; its last-group figure is Table 1's FT (best k). Ours: "
                               "a k = 0.5 paraphraser and a translator per group, the FT losses summed "
                               "(train_student.py --ft-groups all)."))
    return Table(key, title, parts)


def table2() -> Table:
    d, rows = "cifar10", []
    for (s, t), v in PAPER_T2.items():
        rows.append(Row([pretty(s), pretty(t)], [
            Cell([student_id(d, s, "ce")], v[0]), Cell([student_id(d, s, "at", t)], v[1]),
            Cell([student_id(d, s, "fact", t)], v[2]), Cell([student_id(d, s, "kd", t)], v[3]),
            Cell([student_id(d, s, "at+kd", t)], v[4]), Cell([teacher_id(d, t)], v[5]),
            Cell([student_id(d, s, "ft", t, k=0.5)], v[6]), Cell([teacher_id(d, t)], v[7]),
        ], teacher_col=5, student_col=0))
    return Table("2", "Table 2 — CIFAR-10, wide ResNets", [Part(
        "", ["student", "teacher"], ["student", "AT", "F-ActT", "KD", "AT+KD", "teacher", "FT (k=0.5)",
                                     "FT's teacher"], rows,
        note="The paper's first six columns are the AT paper's, with the AT paper's teacher; its FT "
             "used a teacher of its own (last column), trained, like its student, \"with the same "
             "experimental environment of [31]\". Ours: one teacher for every column, every run with "
             "--recipe at (scripts/table2.sh: 200 epochs, lr x0.2 at epochs 60/120/160, reflect "
             "padding, the AT code's normalization); AT = beta * sum of the groups' losses (beta 1000), "
             "KD in the AT code's form (--kd-form at2017), F-ActT summed over channels and averaged "
             "over positions (--fact-reduction positions).", pairs=((6, 0), (6, 1), (6, 2), (6, 3), (6, 4)))])


def table4() -> Table:
    s, t, rows, layer_rows = "wrn_40_1", "wrn_40_2", [], []
    sets = ("cifar10", "cifar100")
    rows.append(Row([f"student alone ({pretty(s)})", ""],
                    [Cell([student_id(d, s, "ce")], PAPER_T4["student"][i]) for i, d in enumerate(sets)]))
    rows.append(Row([f"teacher ({pretty(t)})", ""],
                    [Cell([teacher_id(d, t)], PAPER_T4["teacher"][i]) for i, d in enumerate(sets)]))
    for para, trans in (("yes", "no"), ("no", "yes"), ("yes", "yes")):
        rows.append(Row([para, trans], [
            Cell([student_id(d, s, "ft", t, k=0.5, no_paraphraser=para == "no",
                             no_translator=trans == "no")], PAPER_T4[(para, trans)][i])
            for i, d in enumerate(sets)]))
    for layers in (1, 2, 3):
        layer_rows.append(Row([str(layers), f"{PAPER_T4_PARAMS[layers]:.2f}M", paraphraser_params(layers)], [
            Cell([student_id(d, s, "ft", t, k=0.5, layers=layers)], PAPER_T4[layers][i])
            for i, d in enumerate(sets)], name=f"{layers}-layer paraphraser"))
    return Table("4", f"Table 4 — ablation, {pretty(s)} student, {pretty(t)} teacher, k=0.5", [
        Part("Paraphraser and translator", ["paraphraser", "translator"], ["CIFAR-10", "CIFAR-100"], rows),
        Part("Paraphraser depth", ["layers", "params (paper)", "encoder params (ours)"],
             ["CIFAR-10", "CIFAR-100"], layer_rows,
             note="The paper's parameter counts match the paraphraser's encoder (C=128, k=0.5). Only "
                  "the paraphraser's depth varies: the translator keeps three layers "
                  "(train_student.py --translator-layers 3, the default)."),
    ])


def table7() -> Table:
    rows = []
    for d, t, k in (("cifar10", "resnet56", 0.5), ("cifar100", "resnet110", 4.0)):
        v = PAPER_T7[d]
        rows.append(Row([{"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}[d], pretty(t), f"{k:g}"], [
            Cell([student_id(d, "resnet20", "ce")], v[0]),
            Cell([student_id(d, "resnet20", "ft", t, k=k, p=1)], v[1]),
            Cell([student_id(d, "resnet20", "ft", t, k=k, p=2)], v[2]),
            Cell([teacher_id(d, t)], PAPER_T1[("resnet20", t)][6] if d == "cifar10" else PAPER_T3[("resnet20", t)][6]),
        ], teacher_col=3, student_col=0))
    return Table("7", "Table 7 — L_FT with p = 1 vs p = 2, ResNet-20 student", [Part(
        "", ["dataset", "teacher", "k"], ["student alone", "FT p=1", "FT p=2", "teacher"], rows,
        note="k: the paper's best k of the sweep (its p = 1 figures equal the sweep's k1 on CIFAR-10 "
             "and k5 on CIFAR-100). The paper's teacher errors are those of Tables 1 and 3.",
        pairs=((1, 0), (2, 0), (1, 2)))])


def table6() -> Table:
    d, s, t = "imagenet", "resnet18", "resnet34"
    columns = (student_id(d, s, "ce"), student_id(d, s, "kd", t), student_id(d, s, "at", t),
               student_id(d, s, "ft", t, k=0.5), teacher_id(d, t))
    keys = ("student", "kd", "at", "ft", "teacher")
    rows = [Row([pretty(s), pretty(t), metric], [
        Cell([ident], PAPER_T6[key][i], top5=i == 1) for ident, key in zip(columns, keys)],
        teacher_col=4 if i == 0 else None, student_col=0, name=f"{pretty(s)} / {pretty(t)} {metric}")
        for i, metric in enumerate(("top-1", "top-5"))]
    tv1, tv5 = TORCHVISION_RESNET34_ERROR
    return Table("6", f"Table 6 — ImageNet, {pretty(s)} student, {pretty(t)} teacher", [Part(
        "", ["student", "teacher", "error"], ["student", "KD", "AT", "FT (k=0.5)", "teacher"], rows,
        note=f"Top-1 and top-5 error on the validation set (single centre crop). A teacher given as "
             f"--teacher torchvision:{t} (PRETRAINED_TEACHER=1) has no run folder: its column stays "
             f"empty; torchvision publishes {tv1:.2f} / {tv5:.2f} for those weights.",
        pairs=((3, 0), (3, 1), (3, 2)))])


def mmrazor() -> Table:
    # The runs of scripts/mmrazor_r50_r18.sh: mmcls's networks (pre-BN FT taps, mmcls's init).
    d, s, t = "cifar10", "resnet18_cifar_mmcls", "resnet50_cifar_mmcls"
    name_s, name_t = pretty("resnet18_cifar"), pretty("resnet50_cifar")
    rows = []
    for label, arch, ident, key in ((f"teacher {name_t}", t, teacher_id(d, t), "teacher"),
                                    (f"{name_s} alone", s, student_id(d, s, "ce"), "student"),
                                    (f"{name_s} FT (k=0.5)", s, student_id(d, s, "ft", t, k=0.5), "ft")):
        params, flops = network_cost(arch)
        rows.append(Row([label, params, flops], [
            Cell([ident], MMRAZOR[key][0], accuracy=True),
            Cell([ident], MMRAZOR[key][1], top5=True, accuracy=True)], name=label))
    return Table("mmrazor", "MMRazor's setting — CIFAR-10, ResNet-50 teacher, ResNet-18 student", [Part(
        "", ["network", "Params (M)", "FLOPs (G)"], ["top-1", "top-5"], rows,
        note="MMRazor's recipe, not the paper's (scripts/mmrazor_r50_r18.sh, docs/mmrazor.md): teacher "
             "and student alone 200 epochs of mmcls's CIFAR-10 recipe; paraphraser 20 epochs, "
             "normalized L2, no BN; FT beta = 1 on the last block's pre-BN convolution output, "
             "translator with BN, MMRazor's channel-reversed ImageNet normalization. "
             "Accuracy (%), higher is better (MMRazor publishes accuracy); the reference column is "
             "MMRazor's published figure (FT: its README; teacher and student alone: mmcls's "
             "checkpoints as MMRazor's metafile lists them). Params and FLOPs (multiply-adds) of the "
             "deployed network (models.summary), translator excluded.")], unit="accuracy (%)")


@lru_cache(maxsize=None)
def network_cost(arch: str) -> tuple[str, str]:
    try:
        sys.path.insert(0, str(REPO))
        from models import build_model
        from models.summary import count_macs, count_params

        model = build_model(arch, 10)
        return f"{count_params(model) / 1e6:.2f}", f"{count_macs(model) / 1e9:.2f}"
    except Exception as exc:  # the report must not die for want of a model definition
        return f"? ({type(exc).__name__})", "?"


@lru_cache(maxsize=None)
def paraphraser_params(layers: int) -> str:
    try:
        sys.path.insert(0, str(REPO))
        from paraphraser import Paraphraser

        para = Paraphraser(128, k=0.5, bn=True, layers=layers)
        return f"{sum(p.numel() for p in para.encoder.parameters()) / 1e6:.2f}M"
    except Exception as exc:
        return f"? ({type(exc).__name__})"


def build_tables(which: str) -> list[Table]:
    makers = {
        "1": lambda: transfer_table("1", "cifar10", PAPER_T1, PAPER_T1_SWEEP, "Table 1 — CIFAR-10"),
        "2": table2,
        "3": lambda: transfer_table("3", "cifar100", PAPER_T3, PAPER_T3_SWEEP, "Table 3 — CIFAR-100"),
        "4": table4, "6": table6, "7": table7, "mmrazor": mmrazor,
    }
    return [makers[k]() for k in makers if which in ("all", k)]


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


def table_runs(table: Table, runs: list[Run]) -> list[Run]:
    wanted = {i for part in table.parts for row in part.rows for c in row.cells for i in c.ids}
    return [r for r in runs if r.final is not None and r.identity in wanted]


# ----------------------------------------------------------------------------- rendering
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
        return f"{n:,} iterations" + (" (the paper's)" if n in (FULL_ITERS, FULL_ITERS_IMAGENET) else "")
    para = sorted({r.setting["paraphraser.iters"] for r in runs if "paraphraser.iters" in r.setting})
    datasets = sorted({r.args.get("dataset") for r in runs})
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
                        "row": row.name, "column": header,
                        "metric": ("best" if best else "last") + (" " + table.unit),
                        "status": "ok" if isinstance(v, Agg) else "conflict" if v else "missing",
                        "ours_mean": v.mean if isinstance(v, Agg) else None,
                        "ours_std": v.std if isinstance(v, Agg) else None,
                        "n": v.n if isinstance(v, Agg) else 0,
                        "seeds": v.seeds if isinstance(v, Agg) else [],
                        "note": c.note or (c.value.describe() if isinstance(v, Conflict) else ""),
                        "paper": c.paper, "diff": c.diff,
                    })
    return out


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: " ".join(map(str, v)) if isinstance(v, list) else v for k, v in r.items()})
    return buf.getvalue()


# ----------------------------------------------------------------------------- paired comparisons
# FT against each other method of its row, seed by seed: error(FT) - error(baseline) over the runs
# of one section that share the seed and the teacher run (the student alone has none: the seed).
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


def paired_diffs(ft: list[Run], base: list[Run], best: bool, top5: bool) -> list[tuple]:
    """[(seed, error(FT) - error(baseline))]; a (seed, teacher) key held by two runs pairs nothing."""
    by_teacher = any(r.teacher for r in base)

    def values(runs):
        found = defaultdict(list)
        for r in runs:
            found[(r.args.get("seed"), r.teacher if by_teacher else None)].append(metric_value(r, best, top5))
        return {key: v[0] for key, v in found.items() if len(v) == 1 and v[0] is not None}
    a, b = values(ft), values(base)
    keys = sorted(a.keys() & b.keys(), key=lambda k: (k[0] is None, k[0] or 0, str(k[1])))
    return [(k[0], a[k] - b[k]) for k in keys]


def verdict(mean: float | None, half: float | None, paper: float | None) -> str:
    """Ours against the ordering the paper's FT - baseline gives."""
    if not paper:
        return "the paper's figures tie" if paper == 0 else "no paper figure"
    if mean is None or mean == 0:
        return "no paired runs" if mean is None else "tie on the mean"
    holds = (mean < 0) == (paper < 0)
    if half is not None and abs(mean) > half:
        return ("holds" if holds else "reversed") + " (CI excl. 0)"
    return "holds on the mean only" if holds else "reversed on the mean"


def paired(table: Table, part: Part, section: Section, filled_rows: list, best: bool) -> list[dict]:
    """One record per row with FT runs and per (FT, baseline) column pair of the part."""
    out = []
    for row, cells in zip(part.rows, filled_rows):
        for fi, bi in part.pairs:
            ft, base, ft_name, base_name = cells[fi], cells[bi], part.headers[fi], part.headers[bi]
            if not isinstance(ft.value, Agg):
                continue
            diffs = paired_diffs(ft.value.runs, base.value.runs if isinstance(base.value, Agg) else [],
                                 best, row.cells[fi].top5)
            mean, sd, half = t_interval([d for _, d in diffs])
            paper = None if None in (ft.paper, base.paper) else round(ft.paper - base.paper, 2)
            sign = "" if paper is None else "<" if paper < 0 else ">" if paper else "="
            out.append({
                "table": table.key, "part": part.title or "main", "scale": describe_scale(section),
                "row": row.name, "metric": ("best" if best else "last") + " " + table.unit,
                "ft": ft_name, "ft_note": ft.note, "baseline": base_name, "n": len(diffs),
                "seeds": [s for s, _ in diffs], "diffs": [round(d, 6) for _, d in diffs],
                "mean": mean, "sd": sd, "ci_low": None if half is None else mean - half,
                "ci_high": None if half is None else mean + half, "paper_diff": paper,
                "ordering": f"{ft_name} {sign} {base_name}" if sign else "",
                "verdict": verdict(mean, half, paper)})
    return out


def paired_markdown(recs: list[dict], best: bool) -> list[str]:
    if not recs:
        return []
    lines = [f"*Paired differences (FT − baseline):* error(FT) − error(baseline) in points at the "
             f"{'best evaluation' if best else 'last iteration'}, seed by seed, over runs that share the "
             "seed and the teacher run (the student alone: the seed); n = pairs, mean and 95 % t-interval "
             "(mean ± t(0.975, n−1) · sd / √n). A best-of-k FT is paired at the k the table chose (shown). "
             "Paper: the paper's FT − baseline, whose sign gives the ordering.", ""]
    for row in dict.fromkeys(r["row"] for r in recs):
        group = [r for r in recs if r["row"] == row]
        lines += [f"| {row}: FT − baseline | n | mean | 95% CI | paper | ordering (paper) | ours |",
                  "|---|---|---|---|---|---|---|"]
        for r in group:
            ft = f"{r['ft']} ({r['ft_note']})" if r["ft_note"] else r["ft"]
            ci = (f"[{fmt(r['ci_low'], True)}, {fmt(r['ci_high'], True)}]" if r["ci_low"] is not None
                  else "n=1, no interval" if r["n"] == 1 else MISSING)
            lines.append(f"| {ft} − {r['baseline']} | {r['n']} | {fmt(r['mean'], True)} | {ci} | "
                         f"{fmt(r['paper_diff'], True)} | {r['ordering'] or MISSING} | {r['verdict']} |")
        lines += ["", f"Paper orderings, {row}: "
                  + "; ".join(f"{r['ordering']}: {r['verdict']}" for r in group if r["ordering"]) + ".", ""]
    return lines


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
                ax.set_xlabel("iteration")
                ax.set_ylabel("test error (%)")
                ax.set_title(f"Table {table.key}: {row.name}", fontsize=9)
                ax.legend(fontsize=7)
                name = out / f"table{table.key}-s{si + 1}-p{pi + 1}-r{ri + 1}-curves.png"
                fig.tight_layout()
                fig.savefig(name, dpi=100)
                plt.close(fig)
                written.append(name)
                ks = [(float(h[2:]), a) for h, a in curves.items() if h.startswith("k=")]
                if len(ks) >= 2:
                    fig, ax = plt.subplots(figsize=(5, 3.5))
                    ks.sort()
                    ax.errorbar([k for k, _ in ks], [a.mean for _, a in ks],
                                yerr=[a.std or 0 for _, a in ks], marker="o", capsize=3, label="ours")
                    paper = [(float(h[2:]), c.paper) for h, c in zip(part.headers, cells)
                             if h.startswith("k=") and c.paper is not None]
                    ax.plot(*zip(*paper), marker="s", linestyle="--", label="paper")
                    ax.set_xlabel("paraphrase rate k")
                    ax.set_ylabel("test error (%)")
                    ax.set_title(f"Table {table.key}: {row.name}", fontsize=9)
                    ax.legend(fontsize=7)
                    name = out / f"table{table.key}-s{si + 1}-r{ri + 1}-k.png"
                    fig.tight_layout()
                    fig.savefig(name, dpi=100)
                    plt.close(fig)
                    written.append(name)
    return written


def mean_curve(runs: list[Run]) -> tuple[list, list]:
    per_iter = defaultdict(list)
    for run in runs:
        path = run.path / "metrics.jsonl"
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if "test_error" in record:
                per_iter[record["iter"]].append(record["test_error"])
    xs = sorted(i for i, v in per_iter.items() if len(v) == len(runs))
    return xs, [statistics.fmean(per_iter[i]) for i in xs]


# ----------------------------------------------------------------------------- main
def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir", type=Path, help="root of the run folders (e.g. runs)")
    parser.add_argument("--table", default="all", choices=("1", "2", "3", "4", "6", "7", "mmrazor", "all"))
    parser.add_argument("--best", action="store_true",
                        help="error at the best evaluation (default: at the last iteration)")
    parser.add_argument("--format", nargs="+", default=["md"], choices=("md", "csv", "json"),
                        help="output formats (default: md)")
    parser.add_argument("--out", type=Path, help="write files (and PNG plots) here instead of stdout")
    return parser


def report(args: argparse.Namespace) -> dict[str, str]:
    """{file name: contents} for the requested tables and formats."""
    runs = load_runs(args.runs_dir)
    tables = build_tables(args.table)
    done = [r for r in runs if r.final is not None]
    header = [f"# Factor Transfer: reproduced tables ({args.runs_dir})", "",
              f"{len(runs)} run folders: {len(done)} finished, {len(runs) - len(done)} unfinished "
              f"(not counted). Metric: {'best evaluation' if args.best else 'last iteration'}.", ""]
    problems = [f"- {r.path}: not placed, {r.problem}" for r in runs if r.problem]
    if problems:
        header += ["Runs left out:", *problems, ""]
    md, rows, pair_rows, outputs = ["\n".join(header)], [], [], {}
    args.plots = []
    for table in tables:
        sections = sections_for(table_runs(table, runs))
        results = {(si, pi): [[fill(c, s, args.best) for c in row.cells] for row in part.rows]
                   if s is not None else [[Filled(None, c.paper) for c in row.cells] for row in part.rows]
                   for si, s in enumerate(sections or [None]) for pi, part in enumerate(table.parts)}
        pairs = {(si, pi): paired(table, part, s, results[(si, pi)], args.best)
                 for si, s in enumerate(sections) for pi, part in enumerate(table.parts) if part.pairs}
        md.append(render_markdown(table, sections, results, args.best, pairs))
        rows += records(table, sections, results, args.best)
        pair_rows += [r for recs in pairs.values() for r in recs]
        if args.out is not None and sections:
            try:
                args.plots += plot(table, sections, results, args.out)
            except ImportError:
                args.plots = None
    suffix = "" if args.table == "all" else f"-table{args.table}"
    if "md" in args.format:
        outputs[f"report{suffix}{'-best' if args.best else ''}.md"] = "\n".join(md)
    if "csv" in args.format:
        outputs[f"report{suffix}{'-best' if args.best else ''}.csv"] = to_csv(rows)
        if pair_rows:
            outputs[f"report{suffix}{'-best' if args.best else ''}-paired.csv"] = to_csv(pair_rows)
    if "json" in args.format:
        outputs[f"report{suffix}{'-best' if args.best else ''}.json"] = json.dumps(
            {"runs_dir": str(args.runs_dir), "metric": "best" if args.best else "last",
             "finished_runs": len(done), "unfinished_runs": len(runs) - len(done),
             "cells": rows, "paired": pair_rows}, indent=2)
    return outputs


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    if not args.runs_dir.is_dir():
        sys.exit(f"report.py: error: {args.runs_dir} is not a folder")
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
