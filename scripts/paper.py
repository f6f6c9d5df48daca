"""The paper's numbers and its tables' layouts: which runs fill which cell.

    python scripts/paper.py --k-sweep     # the k sweep, as scripts/lib.sh reads it

A cell holds runs by identity (`teacher_id`, `student_id`), never by folder name; the
report (scripts/report.py) places each run from the record its run folder keeps.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import repo_path  # noqa: F401  (the repository's packages, for a script run as a file)
from utils.record import student_id, teacher_id


# ----------------------------------------------------------------------------- the paper
# The paper's five k values between 0.5 and 4 are not stated; this is our reading
# (docs/choices.md).  The table scripts train these k (scripts/lib.sh), the report lays them out.
K_SWEEP = (0.5, 1.0, 2.0, 3.0, 4.0)
# Error (%) from the paper's Tables 1-4, 6 and 7.  Sweeps: the k of K_SWEEP, then CAE and RAE.
T1_COLUMNS = ("student", "at", "kd", "ft", "at+kd", "ft+kd", "teacher")  # of Tables 1 and 3; FT: its best k
PAPER_T1 = {  # (student, teacher): T1_COLUMNS
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
PAPER_T3 = {  # as Table 1 (T1_COLUMNS), CIFAR-100
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
# The paper's schedules: 64,000 iterations on CIFAR; 90 epochs of ImageNet-1k at batch 256.
PAPER_ITERS = (64000, 450360)

NAMES = {"resnet20": "ResNet-20", "resnet32": "ResNet-32", "resnet44": "ResNet-44",
         "resnet56": "ResNet-56", "resnet110": "ResNet-110", "vgg13": "VGG-13",
         "resnet18_cifar": "ResNet-18", "resnet50_cifar": "ResNet-50",
         "resnet18": "ResNet-18", "resnet34": "ResNet-34"}


def pretty(arch: str) -> str:
    if arch in NAMES:
        return NAMES[arch]
    if arch.startswith("wrn_"):
        return "WRN-" + "-".join(arch.split("_")[1:])
    return arch


def k_text() -> str:
    """The k sweep as the table scripts loop over it: 0.5 1 2 3 4."""
    return " ".join(f"{k:g}" for k in K_SWEEP)


# ----------------------------------------------------------------------------- cell identities
# A cell's identity is defined once, in utils/record.py: `student_id` / `teacher_id` lay the
# tables out here, and `utils.record.cell` derives the same tuple from a run's record.

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
    pairs: tuple = ()    # (method column, baseline column): paired comparisons under the table


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
                        "in the AT code's form (--kd-form at2017), alpha 0.9, T 4. AT+KD: constant beta (the AT "
                        "authors' AT+KD decayed beta on a schedule they did not release).",
             pairs=((3, 0), (3, 1), (3, 2), (3, 4), (3, 5), (1, 0), (2, 0), (4, 0), (5, 0))),
        Part("FT's paraphraser: k sweep (conv), CAE and RAE", ["student", "teacher"],
             [*(f"k={k:g}" for k in K_SWEEP), "CAE", "RAE"], sweep_rows,
             note=f"The paper's five k values are not stated; we read them as {k_text()}. RAE: k = 2 "
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
             "over positions (--fact-reduction positions); AT+KD with constant beta (the AT authors' "
             "decayed beta on a schedule they did not release).", pairs=((6, 0), (6, 1), (6, 2), (6, 3), (6, 4),
                                                                        (1, 0), (2, 0), (3, 0), (4, 0)))])


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
        pairs=((3, 0), (3, 1), (3, 2), (1, 0), (2, 0)))])


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
        from models import build_model
        from models.summary import count_macs, count_params

        model = build_model(arch, 10)
        return f"{count_params(model) / 1e6:.2f}", f"{count_macs(model) / 1e9:.2f}"
    except Exception as exc:  # the report must not die for want of a model definition
        return f"? ({type(exc).__name__})", "?"


@lru_cache(maxsize=None)
def paraphraser_params(layers: int) -> str:
    try:
        from paraphraser import Paraphraser

        para = Paraphraser(128, k=0.5, bn=True, layers=layers)
        return f"{sum(p.numel() for p in para.encoder.parameters()) / 1e6:.2f}M"
    except Exception as exc:
        return f"? ({type(exc).__name__})"


TABLES: dict[str, Callable[[], Table]] = {
    "1": lambda: transfer_table("1", "cifar10", PAPER_T1, PAPER_T1_SWEEP, "Table 1 — CIFAR-10"),
    "2": table2,
    "3": lambda: transfer_table("3", "cifar100", PAPER_T3, PAPER_T3_SWEEP, "Table 3 — CIFAR-100"),
    "4": table4, "6": table6, "7": table7, "mmrazor": mmrazor,
}


def build_tables(which: str) -> list[Table]:
    return [make() for key, make in TABLES.items() if which in ("all", key)]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k-sweep", action="store_true", help="print the k sweep, space-separated")
    parser.add_argument("--pairs", choices=tuple(PAIRS),
                        help="print a table's student:teacher pairs, space-separated, in the paper's order")
    return parser


# The student/teacher pairs the table scripts train, from the paper's tables above.
PAIRS = {"1": PAPER_T1, "2": PAPER_T2, "3": PAPER_T3}


def main(args: argparse.Namespace) -> None:
    if args.k_sweep:
        print(k_text())
    if args.pairs:
        print(" ".join(f"{s}:{t}" for s, t in PAIRS[args.pairs]))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
