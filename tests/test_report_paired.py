"""scripts/report.py's paired comparisons (FT − each baseline, each method − the student alone;
seed by seed, same teacher weights) on synthetic run folders with known answers: the t
quantiles, the intervals, the pairing rules, the verdicts against the paper's orderings, and
the markdown, JSON and CSV outputs."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from test_report import cells, make_report, markdown, para, student, teacher

import aggregate  # noqa: E402  (scripts/, on the path through test_report)

T_HALF3 = 4.303 / math.sqrt(3)  # half width of the 95 % interval of three pairs with sd 1


def t_quantile(df: int, q: float = 0.975) -> float:
    """Student-t quantile from its density: Simpson's rule for the CDF, bisection for x."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(x, n=4000):
        h = x / n
        f = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(n + 1)]
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    lo, hi = 0.0, 20.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
    return (lo + hi) / 2


def test_t_quantiles_table():
    assert len(aggregate.T975) == 30
    for df, known in ((1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (29, 2.045)):
        assert aggregate.T975[df - 1] == known
    for df in range(1, 31):
        assert aggregate.T975[df - 1] == pytest.approx(t_quantile(df), abs=6e-4), df
    assert t_quantile(10_000) == pytest.approx(1.96, abs=1e-3)


def test_t_interval():
    mean, sd, half = aggregate.t_interval([1.0, 2.0, 3.0])
    assert (mean, sd) == (2.0, 1.0) and half == pytest.approx(T_HALF3)
    assert aggregate.t_interval([-1.5]) == (-1.5, None, None)  # n = 1: no interval
    assert aggregate.t_interval([]) == (None, None, None)
    mean, sd, half = aggregate.t_interval([0.0, 1.0] * 20)  # df = 39 > 30: the normal quantile
    assert half == pytest.approx(1.96 * sd / math.sqrt(40))


def test_verdicts():
    v = aggregate.verdict
    assert v(-2.0, 2.484, -0.93) == "holds on the mean only"
    assert v(-6.0, 2.484, -0.28) == "holds (CI excl. 0)"
    assert v(3.0, 2.484, -0.34) == "reversed (CI excl. 0)"
    assert v(2.0, 2.484, -0.04) == "reversed on the mean"
    assert v(2.0, 2.484, 0.19) == "holds on the mean only"  # the paper's FT is the worse one
    assert v(-0.5, None, -0.19) == "holds on the mean only"  # n = 1
    assert v(None, None, -0.5) == "no paired runs"
    assert v(1.0, 0.5, 0.0) == "the paper's figures tie"


@pytest.fixture
def t1_runs(tmp_path):
    """Table 1, ResNet-56 -> ResNet-20, three seeds, a teacher per seed.  Per seed s, FT (k = 0.5,
    the best k) errs 7.0 + 0.2 s; against it the student alone is worse by 1, 2, 3 points, AT by
    5, 6, 7, KD better by 2, 3, 4, AT+KD better by 1, 2, 3; FT+KD pairs with seed 0 alone."""
    root = tmp_path / "runs"
    t = [teacher(root, f"t{s}", "resnet56", s, 6.0) for s in range(3)]
    ft = [7.0 + 0.2 * s for s in range(3)]
    for s in range(3):
        p = para(root, f"p{s}", t[s], s)
        student(root, f"ft{s}", "ft", "resnet20", s, ft[s], t[s], p)
        student(root, f"ce{s}", "ce", "resnet20", s, ft[s] + 1 + s)
        student(root, f"at{s}", "at", "resnet20", s, ft[s] + 5 + s, t[s])
        student(root, f"kd{s}", "kd", "resnet20", s, ft[s] - 2 - s, t[s])
        student(root, f"atkd{s}", "at+kd", "resnet20", s, ft[s] - 1 - s, t[s])
    # k = 2, worse on the mean: not the table's FT, so never paired.
    student(root, "ft-k2", "ft", "resnet20", 0, 9.0, t[0], para(root, "pk2", t[0], 0, k=2))
    # Not paired: a KD run of seed 0 under another teacher run, a student alone of a seed FT lacks.
    student(root, "kd-other-teacher", "kd", "resnet20", 0, 1.0, t[1])
    student(root, "ce3", "ce", "resnet20", 3, 1.0)
    # FT+KD: seed 0 pairs (0.5 worse than FT); seed 1 under seed 0's teacher does not; no seed 2.
    student(root, "ftkd0", "ft+kd", "resnet20", 0, ft[0] + 0.5, t[0], root / "p0")
    student(root, "ftkd1", "ft+kd", "resnet20", 1, 5.0, t[0], root / "p0")
    return root


def test_table1_paired_block(t1_runs):
    text = markdown(t1_runs, "--table", "1")
    block = text.split("*Paired differences (method − baseline):*")[1]
    lines = block.splitlines()
    head = next(i for i, line in enumerate(lines)
                if line.startswith("| ResNet-20 / ResNet-56: method − baseline |"))
    assert cells(lines[head]) == ["ResNet-20 / ResNet-56: method − baseline", "n", "mean", "95% CI", "paper",
                                  "ordering (paper)", "ours"]
    rows = [cells(line) for line in lines[head + 2:head + 11]]
    ft = "FT (k=0.5, best of 2/5)"
    assert rows == [
        [f"{ft} − student", "3", "-2.00", "[-4.48, +0.48]", "-0.93", "FT < student", "holds on the mean only"],
        [f"{ft} − AT", "3", "-6.00", "[-8.48, -3.52]", "-0.28", "FT < AT", "holds (CI excl. 0)"],
        [f"{ft} − KD", "3", "+3.00", "[+0.52, +5.48]", "-0.34", "FT < KD", "reversed (CI excl. 0)"],
        [f"{ft} − AT+KD", "3", "+2.00", "[-0.48, +4.48]", "-0.04", "FT < AT+KD", "reversed on the mean"],
        [f"{ft} − FT+KD (k=0.5)", "1", "-0.50", "n=1, no interval", "-0.19", "FT < FT+KD (k=0.5)",
         "holds on the mean only"],
        # Every method against the student alone, paired by seed: AT is 4 worse in every seed (sd 0);
        # KD's seed 0 has two runs (two teachers) against one student alone, so it pairs seeds 1, 2
        # (-5, -7); AT+KD -2, -4, -6; FT+KD seed 0 (-0.5) and seed 1 (5.0 - 9.2).
        ["AT − student", "3", "+4.00", "[+4.00, +4.00]", "-0.65", "AT < student", "reversed (CI excl. 0)"],
        ["KD − student", "2", "-6.00", "[-18.71, +6.71]", "-0.59", "KD < student", "holds on the mean only"],
        ["AT+KD − student", "3", "-4.00", "[-8.97, +0.97]", "-0.89", "AT+KD < student", "holds on the mean only"],
        ["FT+KD (k=0.5) − student", "2", "-2.35", "[-25.86, +21.16]", "-0.74", "FT+KD (k=0.5) < student",
         "holds on the mean only"],
    ]
    assert lines[head + 12] == (
        "Paper orderings, ResNet-20 / ResNet-56: FT < student: holds on the mean only; FT < AT: holds "
        "(CI excl. 0); FT < KD: reversed (CI excl. 0); FT < AT+KD: reversed on the mean; "
        "FT < FT+KD (k=0.5): holds on the mean only; AT < student: reversed (CI excl. 0); KD < student: "
        "holds on the mean only; AT+KD < student: holds on the mean only; FT+KD (k=0.5) < student: "
        "holds on the mean only.")
    # Rows without FT runs get no block; the k sweep and multi-group parts have none.
    assert text.count("Paired differences") == 1 and "WRN-40-1: method − baseline" not in text
    # The table itself is unchanged: the student alone averages its four runs.
    assert "| ResNet-20 | ResNet-56 | ours | 7.15 ± 4.22 (n=4) |" in text


def test_table1_paired_json_and_csv(t1_runs):
    outputs = make_report(t1_runs, "--table", "1", "--format", "json", "csv")
    paired = json.loads(outputs["report-table1.json"])["paired"]
    assert [(r["method"], r["baseline"]) for r in paired] == [
        ("FT", "student"), ("FT", "AT"), ("FT", "KD"), ("FT", "AT+KD"), ("FT", "FT+KD (k=0.5)"),
        ("AT", "student"), ("KD", "student"), ("AT+KD", "student"), ("FT+KD (k=0.5)", "student")]
    by = {r["baseline"]: r for r in paired if r["method"] == "FT"}
    ce = by["student"]
    assert ce["n"] == 3 and ce["seeds"] == [0, 1, 2] and ce["diffs"] == pytest.approx([-1.0, -2.0, -3.0])
    assert ce["mean"] == pytest.approx(-2.0) and ce["sd"] == pytest.approx(1.0)
    assert ce["ci_low"] == pytest.approx(-2.0 - T_HALF3) and ce["ci_high"] == pytest.approx(-2.0 + T_HALF3)
    assert ce["ci_low"] == pytest.approx(-4.484, abs=1e-3) and ce["ci_high"] == pytest.approx(0.484, abs=1e-3)
    assert ce["paper_diff"] == pytest.approx(6.85 - 7.78) and ce["method_note"] == "k=0.5, best of 2/5"
    assert ce["table"] == "1" and ce["row"] == "ResNet-20 / ResNet-56" and ce["metric"] == "last test error (%)"
    assert by["AT"]["ci_high"] == pytest.approx(-6.0 + T_HALF3) and by["AT"]["verdict"] == "holds (CI excl. 0)"
    kd = by["KD"]  # the KD run under another teacher run is in the cell but not in a pair
    assert kd["n"] == 3 and kd["diffs"] == pytest.approx([2.0, 3.0, 4.0])
    assert kd["ci_low"] == pytest.approx(3.0 - T_HALF3) and kd["verdict"] == "reversed (CI excl. 0)"
    assert by["AT+KD"]["mean"] == pytest.approx(2.0) and by["AT+KD"]["verdict"] == "reversed on the mean"
    ftkd = by["FT+KD (k=0.5)"]
    assert ftkd["n"] == 1 and ftkd["seeds"] == [0] and ftkd["mean"] == pytest.approx(-0.5)
    assert ftkd["sd"] is None and ftkd["ci_low"] is None and ftkd["ci_high"] is None
    rows = list(csv.DictReader(io.StringIO(outputs["report-table1-paired.csv"])))
    assert len(rows) == 9 and rows[0]["seeds"] == "0 1 2" and float(rows[0]["ci_high"]) == pytest.approx(0.484, abs=1e-3)


def test_table7_pairs_by_seed_and_teacher_and_best(tmp_path):
    """FT p=1 and p=2 each against the student alone and against each other; --best pairs the
    best evaluations; a student alone of another scale pairs nothing."""
    root = tmp_path / "runs"
    t = [teacher(root, f"t{s}", "resnet56", s, 6.0) for s in range(2)]
    for s in range(2):
        p = para(root, f"p{s}", t[s], s)
        student(root, f"ce{s}", "ce", "resnet20", s, 8.0 + s, best=7.0)
        student(root, f"p1-{s}", "ft", "resnet20", s, 7.0 + 2 * s, t[s], p, best=6.0)
        student(root, f"p2-{s}", "ft", "resnet20", s, 7.5, t[s], p, p=2, best=6.5)
    student(root, "ce-short", "ce", "resnet20", 5, 1.0, iters=3000)
    blob = json.loads(make_report(root, "--table", "7", "--format", "json")["report-table7.json"])
    by = {(r["method"], r["baseline"]): r for r in blob["paired"] if r["row"].startswith("CIFAR-10")}
    assert set(by) == {("FT p=1", "student alone"), ("FT p=2", "student alone"), ("FT p=1", "FT p=2")}
    r = by[("FT p=1", "student alone")]
    assert r["diffs"] == pytest.approx([-1.0, 0.0]) and r["mean"] == pytest.approx(-0.5)
    assert r["ci_high"] == pytest.approx(-0.5 + 12.706 * math.sqrt(0.5) / math.sqrt(2))
    assert r["verdict"] == "holds on the mean only" and r["ordering"] == "FT p=1 < student alone"
    r = by[("FT p=1", "FT p=2")]
    assert r["diffs"] == pytest.approx([-0.5, 1.5]) and r["paper_diff"] == pytest.approx(-0.03)
    assert r["verdict"] == "reversed on the mean"
    best = json.loads(make_report(root, "--table", "7", "--best", "--format", "json")["report-table7-best.json"])
    r = next(r for r in best["paired"] if (r["method"], r["baseline"]) == ("FT p=2", "student alone"))
    assert r["diffs"] == pytest.approx([-0.5, -0.5]) and r["sd"] == pytest.approx(0.0)
    assert r["verdict"] == "holds (CI excl. 0)" and r["metric"] == "best test error (%)"  # sd 0
    text = markdown(root, "--table", "7", "--best")
    assert "in points at the best evaluation" in text
    assert "| FT p=2 − student alone | 2 | -0.50 | [-0.50, -0.50] | -0.90 | FT p=2 < student alone |" in text


def test_paper_tie_and_missing_baselines(tmp_path):
    """WRN-16-2 -> WRN-16-1: the paper's FT and KD tie at 7.64; baselines without runs say so."""
    root = tmp_path / "runs"
    t = teacher(root, "t", "wrn_16_2", 0, 6.0)
    student(root, "ft", "ft", "wrn_16_1", 0, 7.0, t, para(root, "p", t, 0))
    student(root, "kd", "kd", "wrn_16_1", 0, 7.5, t)
    text = markdown(root, "--table", "1")
    kd = next(line for line in text.splitlines() if line.startswith("| FT (k=0.5, best of 1/5) − KD |"))
    assert cells(kd)[1:] == ["1", "-0.50", "n=1, no interval", "+0.00", "FT = KD", "the paper's figures tie"]
    ce = next(line for line in text.splitlines() if line.startswith("| FT (k=0.5, best of 1/5) − student |"))
    assert cells(ce)[1:] == ["0", "—", "—", "-0.98", "FT < student", "no paired runs"]
    assert "FT = KD: the paper's figures tie; " in text


def test_table6_pretrained_teacher_top5(tmp_path):
    """ImageNet with a torchvision teacher (no run folder): pairs by seed and teacher name, top-5
    from the top-5 errors."""
    root = tmp_path / "runs"
    spec = "torchvision:resnet34"
    p = para(root, "p", spec, 0, dataset="imagenet")
    for s in range(2):
        common = {"dataset": "imagenet", "iters": 450360}
        student(root, f"ce{s}", "ce", "resnet18", s, 30.0 + s, top5=11.0, **common)
        student(root, f"ft{s}", "ft", "resnet18", s, 29.0, spec, p, top5=10.0 - s, **common)
    blob = json.loads(make_report(root, "--table", "6", "--format", "json")["report-table6.json"])
    by = {(r["row"], r["baseline"]): r for r in blob["paired"]}
    top1, top5 = by[("ResNet-18 / ResNet-34 top-1", "student")], by[("ResNet-18 / ResNet-34 top-5", "student")]
    assert top1["diffs"] == pytest.approx([-1.0, -2.0]) and top5["diffs"] == pytest.approx([-1.0, -2.0])
    assert by[("ResNet-18 / ResNet-34 top-1", "KD")]["n"] == 0
