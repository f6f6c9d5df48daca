"""scripts/report.py on synthetic run folders: cells from each run's record, means and stds
over seeds, the paper's layout, missing cells, conflicts, scales, --best and the outputs."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
import report  # noqa: E402

COMMON = {"dataset": "cifar10", "data_root": "./data", "norm": None, "train_subset": None, "test_subset": None,
          "lr": 0.1, "momentum": 0.9, "wd": 5e-4, "batch_size": 128, "device": "auto", "progress": "auto",
          "eval_every": 1000, "eval_batch_size": 1000, "force": False, "amp": "none", "channels_last": False,
          "compile": False, "milestone_fractions": [0.5, 0.75]}
PRETRAINED = "torchvision:"


def write_run(path: Path, args: dict, record: dict, error: float | None = None, best: float | None = None,
              top5: float | None = None) -> Path:
    """A run folder as the training scripts leave it: its arguments and record (what the run
    is), two evaluations, at half and at the end (the first `best`, by default error + 1);
    error None: unfinished."""
    path.mkdir(parents=True)
    iters = args["iters"]
    full = {**COMMON, "milestones": [iters // 2, iters * 3 // 4], "out": str(path), **args}
    (path / "args.json").write_text(json.dumps({"args": full, "run": record, "git_commit": "x"}))
    if error is None:
        return path
    curve = [(iters // 2, best if best is not None else error + 1, (top5 or 0) + 0.5), (iters, error, top5)]
    (path / "metrics.jsonl").write_text("".join(
        json.dumps({"iter": i, "test_error": e, "test_error_top5": t5}) + "\n" for i, e, t5 in curve))
    best_iter, best_value, _ = min(curve, key=lambda r: r[1])
    (path / "final.json").write_text(json.dumps({
        "test_error_last": error, "test_error_best": best_value, "best_iter": best_iter, "iters": iters,
        "wall_time_s": 1.0, "kind": record["stage"], "last": {"test_error": error, "test_error_top5": top5},
        "run": record}))
    return path


def record_of(path: Path) -> dict:
    return json.loads((Path(path) / "args.json").read_text())["run"]


def args_of(path: Path) -> dict:
    return json.loads((Path(path) / "args.json").read_text())["args"]


def fingerprint(path) -> str:
    """Stands in for the hash of a run's weights: one per run folder."""
    return hashlib.sha1(str(path).encode()).hexdigest()[:16]


def teacher_identity(teacher_dir) -> dict:
    """What train_student.py and train_paraphraser.py record of their --teacher."""
    if str(teacher_dir).startswith(PRETRAINED):  # published weights: no run, no schedule
        return {"arch": str(teacher_dir)[len(PRETRAINED):], "iters": None, "seed": None, "recipe": "paper",
                "fingerprint": fingerprint(teacher_dir), "dataset": "imagenet", "source": str(teacher_dir)}
    r = record_of(teacher_dir)
    return {"arch": r["arch"], "iters": r["iters"], "seed": r["seed"], "recipe": r["recipe"],
            "fingerprint": fingerprint(teacher_dir), "dataset": r["dataset"], "source": None,
            "args": args_of(teacher_dir)}


def paraphraser_identity(para_dir) -> dict:
    """What train_student.py records of a --paraphraser."""
    r = record_of(para_dir)
    return {**{k: r[k] for k in ("kind", "k", "layers", "bn", "group", "iters", "seed")},
            "fingerprint": fingerprint(para_dir), "args": args_of(para_dir)}


def teacher(root, name, arch, seed, error, dataset="cifar10", iters=64000, **extra):
    record = {"stage": "teacher", "arch": arch, "dataset": dataset, "recipe": extra.get("recipe", "paper"),
              "iters": iters, "seed": seed}
    return write_run(root / name, {"arch": arch, "dataset": dataset, "seed": seed, "iters": iters, **extra},
                     record, error)


def para(root, name, teacher_dir, seed, k=0.5, kind="conv", layers=3, dataset="cifar10", **extra):
    args = {"teacher": str(teacher_dir), "k": 2.0 if kind == "rae" else k, "kind": kind, "layers": layers,
            "group": -1, "bn": True, "recon_loss": "l1", "rae_lambda": 1e-4, "epochs": 30, "holdout": 0.1,
            "dataset": dataset, "seed": seed, "iters": 11700, **extra}
    record = {"stage": "paraphraser", "dataset": dataset, "recipe": args.get("recipe", "paper"),
              **{k: args[k] for k in ("iters", "seed", "kind", "k", "layers", "bn", "group")},
              "teacher": teacher_identity(teacher_dir)}
    return write_run(root / name, args, record, 0.01)


def student(root, name, method, arch, seed, error, teacher_dir=None, para_dir=None, dataset="cifar10",
            iters=64000, teacher_record=None, **extra):
    """A student run; para_dir: one paraphraser folder or a list; teacher_record: what the run
    recorded of its teacher, if not that of the folder teacher_dir."""
    paras = [] if para_dir is None else para_dir if isinstance(para_dir, list) else [para_dir]
    args = {"method": method, "arch": arch, "teacher": str(teacher_dir) if teacher_dir else None,
            "paraphraser": [str(p) for p in paras] or None, "beta": 500.0, "p": 1, "kd_T": 4.0,
            "kd_alpha": 0.9, "at_beta": 1000.0, "no_paraphraser": False, "no_translator": False,
            "ft_groups": "last", "translator_bn": None, "dataset": dataset, "seed": seed, "iters": iters}
    measured = {k: extra.pop(k) for k in ("best", "top5") if k in extra}
    args.update(extra)
    if teacher_record is None and teacher_dir:
        teacher_record = teacher_identity(teacher_dir)
    record = {"stage": "student", "method": method, "arch": arch, "dataset": dataset,
              "recipe": args.get("recipe", "paper"), "iters": iters, "seed": seed, "teacher": teacher_record,
              "paraphrasers": [paraphraser_identity(p) for p in paras]}
    return write_run(root / name, args, record, error, **measured)


def make_report(root: Path, *argv: str) -> dict:
    args = report.get_args_parser().parse_args([str(root), *argv])
    return report.report(args)


def markdown(root: Path, *argv: str) -> str:
    return next(v for k, v in make_report(root, *argv).items() if k.endswith(".md"))


def table_lines(text: str, first_label: str) -> list[str]:
    """The ours / paper / delta lines of the row starting with `first_label`."""
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_label} |"))
    return lines[i:i + 3]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.fixture
def t7_runs(tmp_path):
    """Table 7's CIFAR-10 row, folders named so that names say nothing."""
    root = tmp_path / "runs"
    t = [teacher(root, f"a/t{s}", "resnet56", s, 6.0 + s) for s in range(3)]
    p = [para(root, f"a/p{s}", t[s], s) for s in range(3)]
    for s, err in enumerate((8.0, 9.0, 10.0)):
        student(root, f"b/alone{s}", "ce", "resnet20", s, err)
    for s, err in enumerate((7.0, 7.5)):
        student(root, f"c/x{s}", "ft", "resnet20", s, err, t[s], p[s], best=err - 1)
    student(root, "c/unfinished", "ft", "resnet20", 2, None, t[2], p[2], p=2)
    return root


def test_means_stds_layout_and_missing_cells(t7_runs):
    text = markdown(t7_runs, "--table", "7")
    assert "## Table 7" in text and "| dataset | teacher | k |  | student alone | FT p=1 | FT p=2 | teacher |" in text
    ours, paper, delta = table_lines(text, "CIFAR-10")
    assert cells(ours) == ["CIFAR-10", "ResNet-56", "0.5", "ours", "9.00 ± 1.00 (n=3)", "7.25 ± 0.35 (n=2)",
                           "—", "7.00 ± 1.00 (n=3)"]
    assert cells(paper)[3:] == ["paper", "7.78", "6.85", "6.88", "6.39"]
    assert cells(delta)[3:] == ["Δ", "+1.22", "+0.40", "—", "+0.61"]
    ours100 = table_lines(text, "CIFAR-100")[0]
    assert cells(ours100)[4:] == ["—"] * 4  # never filled in
    assert "students 64,000 iterations (the paper's) · teachers 64,000 iterations (the paper's)" in text and "data cifar10" in text
    assert "12 run folders: 11 finished, 1 unfinished (not counted)" in text


def test_best_switch(t7_runs):
    text = markdown(t7_runs, "--table", "7", "--best")
    assert "at the best evaluation" in text
    ours = cells(table_lines(text, "CIFAR-10")[0])
    assert ours[5] == "6.25 ± 0.35 (n=2)"  # best-iteration errors 6.0 and 6.5
    assert "last iteration" not in text.split("## Table 7")[1].splitlines()[2]


def test_csv_and_json_records(t7_runs, tmp_path):
    outputs = make_report(t7_runs, "--table", "7", "--format", "csv", "json")
    rows = list(csv.DictReader(io.StringIO(outputs["report-table7.csv"])))
    ft = next(r for r in rows if r["row"].startswith("CIFAR-10") and r["column"] == "FT p=1")
    assert float(ft["ours_mean"]) == pytest.approx(7.25) and ft["n"] == "2" and ft["seeds"] == "0 1"
    assert float(ft["paper"]) == 6.85 and float(ft["diff"]) == pytest.approx(0.40)
    blob = json.loads(outputs["report-table7.json"])
    missing = [c for c in blob["cells"] if c["row"].startswith("CIFAR-100")]
    assert len(missing) == 4 and all(c["status"] == "missing" and c["ours_mean"] is None for c in missing)
    assert blob["metric"] == "last" and blob["unfinished_runs"] == 1


def test_cells_come_from_records_and_best_k(tmp_path):
    """Table 1: the FT column is the best k; CAE, RAE and FT+KD land in their own cells."""
    root = tmp_path / "runs"
    t = teacher(root, "t", "resnet56", 0, 6.5)
    for k, err in ((0.5, 7.0), (2, 6.5)):
        student(root, f"s{k}", "ft", "resnet20", 0, err, t, para(root, f"p{k}", t, 0, k=k))
    student(root, "scae", "ft", "resnet20", 0, 7.7, t, para(root, "pcae", t, 0, kind="cae"))
    student(root, "srae", "ft", "resnet20", 0, 7.9, t, para(root, "prae", t, 0, kind="rae"))
    student(root, "sftkd", "ft+kd", "resnet20", 0, 7.1, t, root / "p0.5")
    student(root, "sat", "at", "resnet20", 0, 7.3, t)
    text = markdown(root, "--table", "1")
    ours = cells(table_lines(text, "ResNet-20 | ResNet-56")[0])
    assert ours[3:] == ["—", "7.30 (n=1)", "—", "6.50 (n=1, k=2, best of 2/5)", "—", "7.10 (n=1)", "6.50 (n=1)"]
    sweep = text.split("k sweep")[1]
    ours = cells(table_lines(sweep, "ResNet-20 | ResNet-56")[0])
    assert ours[3:] == ["7.00 (n=1)", "—", "6.50 (n=1)", "—", "—", "7.70 (n=1)", "7.90 (n=1)"]
    # The other rows (other teachers) stay empty although the student arch matches.
    assert cells(table_lines(text, "ResNet-20 | WRN-40-1")[0])[3:] == ["—"] * 7
    # The teacher is no better than the student alone? Here there is no student alone: no warning.
    assert "⚠" not in text


def test_runs_are_placed_from_their_record_alone(tmp_path):
    """A student is placed from what it recorded of its teacher and paraphraser; the folders its
    --teacher / --paraphraser name are never read: gone, or holding another network."""
    root = tmp_path / "runs"
    t = teacher(root, "cifar10/teacher-resnet56-s0", "resnet56", 0, 6.5)
    p = para(root, "cifar10/para-resnet56-k0.5-s0", t, 0)
    wrn = teacher(root, "cifar10/teacher-wrn_40_1-s1", "wrn_40_1", 1, 6.0)
    student(root, "cifar10/ft", "ft", "resnet20", 0, 7.0, t, p, p=2)
    student(root, "cifar10/ft-other", "ft", "resnet20", 1, 8.0, wrn, p, p=2,
            teacher_record={**teacher_identity(t), "seed": 1})
    shutil.rmtree(t)
    shutil.rmtree(p)
    text = markdown(root, "--table", "7")
    ours = cells(table_lines(text, "CIFAR-10")[0])
    assert ours[4:] == ["—", "—", "7.50 ± 0.71 (n=2)", "—"]
    assert "students 64,000 iterations (the paper's) · teachers 64,000 iterations (the paper's) · " \
           "paraphrasers 11,700 iterations" in text
    assert "not placed" not in text
    # A finished run without a record (made before runs recorded what they are) is named, not
    # placed; an unfinished one is only counted.
    for name, error in (("cifar10/old", 7.0), ("cifar10/old-unfinished", None)):
        old = student(root, name, "ce", "resnet20", 0, error)
        for file in ("args.json", "final.json")[:2 if error else 1]:
            blob = json.loads((old / file).read_text())
            del blob["run"]
            (old / file).write_text(json.dumps(blob))
    text = markdown(root, "--table", "7")
    assert f"- {root / 'cifar10/old'}: not placed, its folder has no 'run' record" in text
    assert "old-unfinished" not in text
    assert cells(table_lines(text, "CIFAR-10")[0])[4] == "—"


def test_conflicting_settings_are_not_averaged(tmp_path):
    root = tmp_path / "runs"
    t = teacher(root, "t", "resnet56", 0, 6.0)
    p = para(root, "p", t, 0)
    student(root, "a", "ft", "resnet20", 0, 7.0, t, p)
    student(root, "b", "ft", "resnet20", 1, 8.0, t, p, beta=1000.0)
    text = markdown(root, "--table", "7")
    assert cells(table_lines(text, "CIFAR-10")[0])[5] == "conflict (2 settings)"
    assert "runs differ in beta=500.0; beta=1000.0" in text


def test_teachers_and_paraphrasers_trained_differently_are_not_averaged(tmp_path):
    """The students' records carry how their teacher and paraphraser were trained: students of
    teachers trained at another learning rate, or of paraphrasers with another loss, conflict;
    teachers that differ only in seed do not."""
    root = tmp_path / "runs"
    t0, t1 = teacher(root, "t0", "resnet56", 0, 6.0), teacher(root, "t1", "resnet56", 1, 6.2)
    p0, p1 = para(root, "p0", t0, 0), para(root, "p1", t1, 1)
    student(root, "a", "ft", "resnet20", 0, 7.0, t0, p0)
    student(root, "b", "ft", "resnet20", 1, 8.0, t1, p1)
    assert cells(table_lines(markdown(root, "--table", "7"), "CIFAR-10")[0])[5] == "7.50 ± 0.71 (n=2)"
    t2 = teacher(root, "t2", "resnet56", 2, 6.1, lr=0.05)
    student(root, "c", "ft", "resnet20", 2, 9.0, t2, para(root, "p2", t2, 2))
    text = markdown(root, "--table", "7")
    assert cells(table_lines(text, "CIFAR-10")[0])[5] == "conflict (2 settings)" and "teacher.lr=0.05" in text
    shutil.rmtree(root / "c")
    student(root, "d", "ft", "resnet20", 2, 9.0, t0, para(root, "p3", t0, 2, recon_loss="l2"))
    text = markdown(root, "--table", "7")
    assert cells(table_lines(text, "CIFAR-10")[0])[5] == "conflict (2 settings)"
    assert "paraphraser.recon_loss=l2" in text


def test_an_option_added_later_is_no_difference_while_off(tmp_path):
    # Seed 0 was trained before --ft-reduction existed (no key), seed 1 at the value those
    # runs had (mean): one cell, n = 2.
    root = tmp_path / "runs"
    t = teacher(root, "t", "resnet56", 0, 6.0)
    p = para(root, "p", t, 0)
    student(root, "a", "ft", "resnet20", 0, 7.0, t, p)
    student(root, "b", "ft", "resnet20", 1, 8.0, t, p, ft_reduction="mean")
    assert cells(table_lines(markdown(root, "--table", "7"), "CIFAR-10")[0])[5] == "7.50 ± 0.71 (n=2)"
    # Another value is a different setting.
    student(root, "c", "ft", "resnet20", 2, 9.0, t, p, ft_reduction="norm")
    text = markdown(root, "--table", "7")
    assert cells(table_lines(text, "CIFAR-10")[0])[5] == "conflict (2 settings)"
    assert "ft_reduction=norm" in text


def test_fast_paths_do_not_split_a_cell(tmp_path):
    # --fold-bn / --channels-last change float32 rounding only: on, off and auto share a cell.
    root = tmp_path / "runs"
    t = teacher(root, "t", "resnet56", 0, 6.0)
    p = para(root, "p", t, 0)
    student(root, "a", "ft", "resnet20", 0, 7.0, t, p, fold_bn=None, channels_last=None)
    student(root, "b", "ft", "resnet20", 1, 8.0, t, p, fold_bn=True, channels_last=False)
    student(root, "c", "ft", "resnet20", 2, 9.0, t, p, fold_bn=False, channels_last=True)
    assert cells(table_lines(markdown(root, "--table", "7"), "CIFAR-10")[0])[5] == "8.00 ± 1.00 (n=3)"


def test_scales_make_sections_and_teacher_warning(tmp_path):
    root = tmp_path / "runs"
    for iters, t_iters, err in ((3000, 12000, 20.0), (3000, 3000, 22.0)):
        t = teacher(root, f"t{t_iters}", "resnet56", 0, 24.0 if t_iters == 3000 else 15.0, iters=t_iters)
        p = para(root, f"p{t_iters}", t, 0)
        student(root, f"ft{t_iters}", "ft", "resnet20", 0, err, t, p, iters=iters)
    student(root, "alone", "ce", "resnet20", 0, 21.0, iters=3000)
    text = markdown(root, "--table", "7")
    assert "**Scale 1:** students 3,000 iterations · teachers 3,000 iterations" in text
    assert "**Scale 2:** students 3,000 iterations · teachers 12,000 iterations" in text
    first, second = text.split("**Scale 2:**")
    assert cells(table_lines(first, "CIFAR-10")[0])[4:] == ["21.00 (n=1)", "22.00 (n=1)", "—", "24.00 (n=1)"]
    assert cells(table_lines(second, "CIFAR-10")[0])[4:] == ["21.00 (n=1)", "20.00 (n=1)", "—", "15.00 (n=1)"]
    assert "the teacher (24.00) is no better than the student alone (21.00)" in first
    assert "⚠" not in second


def test_a_section_takes_runs_of_its_own_iterations_and_subsets_only(tmp_path):
    """Mid-scale runs beside full-schedule ones (a student alone and a teacher at 64,000, no FT
    yet) make two sections, the second pairing the full-schedule student alone with the
    full-schedule teacher; a run on a subset of the training images is never averaged with runs
    on all of them; a teacher with no student of its iterations has a section of its own, which
    takes no student alone of other iterations."""
    mid, full = tmp_path / "mid", tmp_path / "full"
    t = teacher(mid, "t16k", "resnet56", 0, 11.0, iters=16000)
    p = para(mid, "p", t, 0)
    for seed, err in ((0, 19.0), (1, 20.0)):
        student(mid, f"alone{seed}", "ce", "resnet20", seed, err, iters=4000)
    student(mid, "ft", "ft", "resnet20", 0, 17.0, t, p, iters=4000)
    student(mid, "alone-subset", "ce", "resnet20", 2, 60.0, iters=4000, train_subset=5000)
    text = markdown(mid, "--table", "7")
    assert "**Scale 1:** students 4,000 iterations · teachers 16,000 iterations" in text
    first, second = text.split("**Scale 2:**")
    assert cells(table_lines(first, "CIFAR-10")[0])[4:6] == ["19.50 ± 0.71 (n=2)", "17.00 (n=1)"]
    assert "train subset 5000" in second and cells(table_lines(second, "CIFAR-10")[0])[4] == "60.00 (n=1)"

    teacher(full, "t64k", "resnet56", 0, 7.0)
    student(full, "alone", "ce", "resnet20", 0, 8.0)
    text = markdown(mid, str(full), "--table", "7")
    sections = text.split("**Scale ")[1:]
    assert len(sections) == 3
    sixty_four = next(s for s in sections if "students 64,000 iterations (the paper's) · teachers 64,000" in s)
    assert cells(table_lines(sixty_four, "CIFAR-10")[0])[4:] == ["8.00 (n=1)", "—", "—", "7.00 (n=1)"]

    shutil.rmtree(full / "alone")
    sections = markdown(mid, str(full), "--table", "7").split("**Scale ")[1:]
    assert len(sections) == 3
    teacher_only = next(s for s in sections if "students — · teachers 64,000 iterations" in s)
    assert cells(table_lines(teacher_only, "CIFAR-10")[0])[4:] == ["—", "—", "—", "7.00 (n=1)"]


def test_two_roots_join_students_and_the_teacher_they_name(tmp_path, capsys):
    """Students in one root, their teacher's run in another (results/midscale + results/shipped):
    one root alone leaves the teacher's cell missing; both fill it; a missing root is an error."""
    shipped, mid = tmp_path / "shipped", tmp_path / "mid"
    t = teacher(shipped, "t", "resnet56", 0, 11.0, iters=16000)
    p = para(shipped, "p", t, 0)
    student(mid, "alone", "ce", "resnet20", 0, 19.0, iters=4000)
    student(mid, "ft", "ft", "resnet20", 0, 17.0, t, p, iters=4000)
    alone = cells(table_lines(markdown(mid, "--table", "7"), "CIFAR-10")[0])
    assert alone[4:] == ["19.00 (n=1)", "17.00 (n=1)", "—", "—"]
    text = markdown(mid, str(shipped), "--table", "7")
    assert text.startswith(f"# Factor Transfer: reproduced tables ({mid} {shipped})")
    assert cells(table_lines(text, "CIFAR-10")[0])[4:] == ["19.00 (n=1)", "17.00 (n=1)", "—", "11.00 (n=1)"]
    with pytest.raises(SystemExit, match="is not a folder"):
        report.main([str(mid), str(tmp_path / "absent"), "--table", "7"])


def test_folder_copy_fills_cifar10_and_table4_ablations(tmp_path):
    root = tmp_path / "runs"
    d = {"dataset": "folder"}
    t = teacher(root, "t", "wrn_40_2", 0, 5.0, **d)
    p = para(root, "p", t, 0, **d)
    p1 = para(root, "p1", t, 0, layers=1, **d)
    student(root, "full", "ft", "wrn_40_1", 0, 5.7, t, p, **d)
    student(root, "notrans", "ft", "wrn_40_1", 0, 6.2, t, p, no_translator=True, **d)
    student(root, "nopara", "ft", "wrn_40_1", 0, 6.1, t, None, no_paraphraser=True, **d)
    student(root, "l1", "ft", "wrn_40_1", 0, 6.0, t, p1, **d)
    text = markdown(root, "--table", "4")
    assert cells(table_lines(text, "yes | no")[0])[3:] == ["6.20 (n=1)", "—"]
    assert cells(table_lines(text, "no | yes")[0])[3:] == ["6.10 (n=1)", "—"]
    assert cells(table_lines(text, "yes | yes")[0])[3:] == ["5.70 (n=1)", "—"]
    layer1 = cells(table_lines(text, "1")[0])
    assert layer1[:3] == ["1", "0.07M", "0.07M"] and layer1[4:] == ["6.00 (n=1)", "—"]
    assert cells(table_lines(text, "3")[0])[4] == "5.70 (n=1)"
    assert cells(table_lines(text, "teacher (WRN-40-2)")[0])[3:] == ["5.00 (n=1)", "—"]
    assert "data folder" in text


def test_mmrazor_top1_top5_accuracy_params_flops(tmp_path):
    root = tmp_path / "runs"
    # scripts/mmrazor_r50_r18.sh's networks: mmcls's ResNet_CIFAR with pre-BN FT taps.
    t = teacher(root, "t", "resnet50_cifar_mmcls", 0, 4.5)
    p = para(root, "p", t, 0)
    for s, (err, top5) in enumerate(((5.0, 0.2), (5.2, 0.1))):
        student(root, f"ft{s}", "ft", "resnet18_cifar_mmcls", s, err, t, p, top5=top5, best=4.0)
    text = markdown(root, "--table", "mmrazor")
    ours, ref, delta = table_lines(text, "ResNet-18 FT (k=0.5)")
    label, params, flops = cells(ours)[:3]
    assert float(params) == pytest.approx(11.17, abs=0.1) and float(flops) == pytest.approx(0.56, abs=0.05)
    assert cells(ours)[4:] == ["94.90 ± 0.14 (n=2)", "99.85 ± 0.07 (n=2)"]
    assert cells(ref)[4:] == ["94.86", "99.88"] and cells(delta)[4:] == ["+0.04", "-0.03"]
    assert cells(table_lines(text, "teacher ResNet-50")[0])[4:] == ["95.50 (n=1)", "—"]
    assert cells(table_lines(text, "teacher ResNet-50")[1])[4:] == ["95.55", "99.91"]
    assert cells(table_lines(text, "ResNet-18 alone")[1])[4:] == ["94.82", "99.87"]
    best = cells(table_lines(markdown(root, "--table", "mmrazor", "--best"), "ResNet-18 FT (k=0.5)")[0])
    assert best[4:] == ["96.00 ± 0.00 (n=2)", "99.35 ± 0.07 (n=2)"]  # top-5 at the best iteration


def test_files_and_plots(t7_runs, tmp_path):
    out = tmp_path / "report"
    report.main([str(t7_runs), "--table", "7", "--format", "md", "csv", "--out", str(out)])
    assert (out / "report-table7.md").read_text().startswith("# Factor Transfer")
    assert (out / "report-table7.csv").exists()
    if importlib.util.find_spec("matplotlib") is not None:
        assert list(out.glob("table7-*-curves.png"))


def test_multi_group_ft_beside_the_papers_7_01(tmp_path):
    """Table 1 prints FT on every group (--ft-groups all) beside the paper's 7.01 and the
    last-group FT at k = 0.5."""
    root = tmp_path / "runs"
    t = teacher(root, "t", "resnet56", 0, 6.5)
    paras = [para(root, f"p{g}", t, 0, group=g) for g in (0, 1)] + [para(root, "plast", t, 0)]
    student(root, "last", "ft", "resnet20", 0, 7.2, t, paras[-1])
    student(root, "all", "ft", "resnet20", 0, 7.4, t, paras, ft_groups="all")
    text = markdown(root, "--table", "1")
    part = text.split("Multi-group FT")[1]
    ours, paper = table_lines(part, "ResNet-20 | ResNet-56")[:2]
    assert cells(ours)[3:] == ["7.20 (n=1)", "7.40 (n=1)"]
    assert cells(paper)[3:] == ["6.85", "7.01"]


def test_recipes_make_separate_sections(tmp_path):
    """Table 2 runs under --recipe at and Table 1 runs of the same teacher arch under the
    paper's recipe never share a cell; each section's header names its recipe."""
    root = tmp_path / "runs"
    for recipe, err in (("paper", 6.0), ("at", 5.0)):
        extra = {"recipe": recipe, "lr_decay": 0.2 if recipe == "at" else 0.1,
                 "pad_mode": "reflect" if recipe == "at" else "zero"}
        t = teacher(root, f"{recipe}/t", "wrn_40_1", 0, err, **extra)
        student(root, f"{recipe}/ce", "ce", "wrn_16_1", 0, err + 3, **extra)
        student(root, f"{recipe}/at", "at", "wrn_16_1", 0, err + 2, t, **extra)
    text = markdown(root, "--table", "2")
    assert "conflict" not in text
    headers = [line for line in text.splitlines() if line.startswith("**Scale")]
    assert len(headers) == 2
    assert any("recipe at (the attention-transfer code's" in h for h in headers)
    assert any("recipe paper (the paper's)" in h for h in headers)
    at_part = text.split("recipe at")[1]
    assert cells(table_lines(at_part, "WRN-16-1 | WRN-40-1")[0])[3:5] == ["8.00 (n=1)", "7.00 (n=1)"]
    # a run made before --recipe existed (no recipe, lr_decay, pad_mode) joins the paper's section
    student(root, "old/ce", "ce", "wrn_16_1", 1, 10.0)
    text = markdown(root, "--table", "2")
    paper_part = text.split("recipe paper")[1].split("**Scale")[0]
    assert "9.50 ± 0.71 (n=2)" in paper_part


def test_backfill_gives_old_folders_the_record_of_today(tmp_path, monkeypatch):
    """scripts/backfill_run_records.py on folders made before runs recorded what they are: the
    record the training scripts write now, with the fingerprints of the weights the teacher's
    and paraphraser's checkpoints hold; the report then places the runs."""
    import torch

    import backfill_run_records
    from models import build_model
    from paraphraser import Paraphraser
    from utils.checkpoint import fingerprint

    monkeypatch.chdir(tmp_path)  # the folder the runs were started in: their paths are relative to it
    root = Path("runs")
    t = teacher(root, "teacher-resnet56-s0", "resnet56", 0, 6.5, iters=800)
    p = para(root, "para-resnet56-k0.5-s0", t, 0)
    ft = student(root, "ft-resnet20-s0", "ft", "resnet20", 0, 7.0, t, p, iters=200)
    ce = student(root, "ce-resnet20-s0", "ce", "resnet20", 0, 8.0, iters=200)
    orphan = student(root, "kd-resnet20-s0", "kd", "resnet20", 0, 7.5, t, iters=200)
    wants = {run: record_of(run) for run in (t, p, ft, ce)}
    torch.manual_seed(0)
    model, paraphraser = build_model("resnet56", 10), Paraphraser(64, k=0.5, bn=True, layers=3)
    t_args = json.loads((t / "args.json").read_text())["args"]
    torch.save({"kind": "teacher", "arch": "resnet56", "num_classes": 10, "dataset": "cifar10", "args": t_args,
                "iteration": 800, "modules": {"model": model.state_dict()}}, t / "checkpoint.pt")
    torch.save({"kind": "paraphraser", "paraphraser_config": paraphraser.config, "group": -1, "dataset": "cifar10",
                "args": json.loads((p / "args.json").read_text())["args"], "iteration": 11700,
                "teacher": {"arch": "resnet56", "fingerprint": fingerprint(model), "group_channels": [16, 32, 64]},
                "modules": {"paraphraser": paraphraser.state_dict()}}, p / "checkpoint.pt")
    blob = json.loads((orphan / "args.json").read_text())
    blob["args"]["teacher"] = "elsewhere/teacher-resnet56-s0"
    (orphan / "args.json").write_text(json.dumps(blob))
    for run in (t, p, ft, ce, orphan):
        for file in ("args.json", "final.json"):
            blob = json.loads((run / file).read_text())
            del blob["run"]
            (run / file).write_text(json.dumps(blob))

    written, problems = backfill_run_records.backfill(root)
    assert sorted(written) == sorted((t, p, ft, ce)) and len(problems) == 1 and "elsewhere" in problems[0]
    teacher_id = {"arch": "resnet56", "iters": 800, "seed": 0, "recipe": "paper", "fingerprint": fingerprint(model),
                  "dataset": "cifar10", "source": None, "args": t_args}
    para_id = {"kind": "conv", "k": 0.5, "layers": 3, "bn": True, "group": -1, "iters": 11700, "seed": 0,
               "fingerprint": fingerprint(paraphraser), "args": args_of(p)}
    wants[p]["teacher"], wants[ft]["teacher"], wants[ft]["paraphrasers"] = teacher_id, teacher_id, [para_id]
    for run, want in wants.items():
        assert record_of(run) == want
        assert json.loads((run / "final.json").read_text())["run"] == want
    assert backfill_run_records.backfill(root)[0] == []  # a record is written once
    text = markdown(root, "--table", "7")
    assert cells(table_lines(text, "CIFAR-10")[0])[4:] == ["8.00 (n=1)", "7.00 (n=1)", "—", "6.50 (n=1)"]
    assert f"- {orphan}: not placed, its folder has no 'run' record" in text


@pytest.mark.parametrize("table", ["1", "2", "3"])
def test_at_kd_columns_are_labelled_constant_beta(table):
    """The AT authors' AT+KD decayed beta (schedule unreleased); ours keeps it constant, and
    every table with an AT+KD column says so."""
    import paper

    parts = [p for p in paper.TABLES[table]().parts if "AT+KD" in p.headers]
    assert parts and all("AT+KD with constant beta" in p.note or "AT+KD: constant beta" in p.note for p in parts)
