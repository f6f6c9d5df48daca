"""The committed teacher and paraphraser (results/shipped/) are what their records say: finished
runs of the stated schedule, weights without training state, the paraphraser tied to that
teacher, and a teacher that classifies the CIFAR-10 copy as well as its record says; and the
mid-scale row's records (results/midscale/), runs of one schedule on that teacher, with a
committed report that scripts/report.py makes from them; the demo's committed runs (results/demo/,
results/demo-teachers/), whose summaries their records give; and the full-schedule row's
finished runs (results/fullschedule/), the commands scripts/table1.sh issues at the paper's
schedule."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

from conftest import CIFAR_TAR
from helpers import dry_run, final, metrics
from utils import record as run_record
from utils.checkpoint import fingerprint, load_classifier, load_paraphraser

REPO = Path(__file__).resolve().parent.parent

import demo_summary  # noqa: E402
import report  # noqa: E402
import ship_run  # noqa: E402

SHIPPED = REPO / "results" / "shipped"
TEACHER, PARA = SHIPPED / "teacher-resnet56", SHIPPED / "para-resnet56-k0.5"
TEACHER_64K, PARA_64K = SHIPPED / "teacher-resnet56-64k", SHIPPED / "para-resnet56-k0.5-64k"
# the full-schedule runs of results/fullschedule/ that are shipped, and their folders there
SHIPPED_FULL = {TEACHER_64K: "teacher-resnet56-s0", PARA_64K: "para-resnet56-k0.5-s0"}
FULL = REPO / "results" / "fullschedule"


def record(run: Path) -> tuple[dict, list[dict], dict]:
    """The run's arguments, its metrics lines and final.json."""
    return json.loads((run / "args.json").read_text())["args"], metrics(run), final(run)


def assert_taught_by(run: Path, made: dict, teacher=None, para=None) -> None:
    """The run's final.json "run" names the given teacher and paraphraser networks (by fingerprint)."""
    if teacher is not None:
        assert made["teacher"]["fingerprint"] == fingerprint(teacher), run
    if para is not None:
        assert [p["fingerprint"] for p in made["paraphrasers"]] == [fingerprint(para)], run


def test_shipped_teacher_is_a_finished_16000_iteration_run():
    args, lines, last = record(TEACHER)
    assert (args["arch"], args["dataset"], args["iters"], args["milestones"]) == ("resnet56", "folder", 16000,
                                                                                   [8000, 12000])
    assert args["train_subset"] is None and args["test_subset"] is None  # all 50,000 / 10,000 images
    assert lines[-1]["iter"] == 16000 and last["test_error_last"] == lines[-1]["test_error"]
    ckpt = torch.load(TEACHER / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == 16000 and not set(ship_run.TRAINING_STATE) & set(ckpt)


@pytest.mark.parametrize("para, teacher", [(PARA, TEACHER), (PARA_64K, TEACHER_64K)], ids=["16k", "64k"])
def test_shipped_paraphraser_belongs_to_the_shipped_teacher(para, teacher):
    args, lines, _ = record(para)
    _, ckpt = load_paraphraser(para)
    network, _ = load_classifier(teacher)
    assert ckpt["paraphraser_config"]["k"] == 0.5 and not set(ship_run.TRAINING_STATE) & set(ckpt)
    assert ckpt["teacher"]["fingerprint"] == fingerprint(network)
    assert lines[-1]["iter"] == args["iters"] == ckpt["iteration"]


@pytest.mark.parametrize("shipped", list(SHIPPED_FULL), ids=lambda path: path.name)
def test_shipped_full_schedule_run_is_the_finished_full_schedule_run(shipped):
    """The shipped folder holds the records of its results/fullschedule/ run, byte for byte,
    and that run's final weights without the training state."""
    full_run = FULL / "folder" / SHIPPED_FULL[shipped]
    for name in run_record.FILES:
        assert (shipped / name).read_bytes() == (full_run / name).read_bytes(), name
    args, lines, _ = record(shipped)
    ckpt = torch.load(shipped / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == lines[-1]["iter"] == args["iters"] and not set(ship_run.TRAINING_STATE) & set(ckpt)


@pytest.mark.skipif(not CIFAR_TAR.exists(), reason=f"needs the CIFAR-10 copy at {CIFAR_TAR}")
@pytest.mark.slow
@pytest.mark.parametrize("teacher", [TEACHER, TEACHER_64K], ids=lambda path: path.name)
def test_shipped_teacher_classifies_the_cifar_copy_as_recorded(teacher):
    """On 1,000 class-balanced test images (a sampling sd of ~1 point around the recorded
    full-test error); a network that had lost its weights would err on ~90%."""
    recorded = final(teacher)["test_error_last"]
    data = {"dataset": "folder", "data_root": str(CIFAR_TAR), "train_subset": 100, "test_subset": 1000,
            "norm": None, "pad_mode": "zero", "workers": None, "device": "cpu", "eval_batch_size": 500}
    arch, error, n_test = demo_summary.teacher_error(str(teacher), data)  # as the demo measures it
    assert (arch, n_test) == ("resnet56", 1000)
    assert abs(error - recorded) < 4.0, (error, recorded)


# The demo's committed runs (records and what scripts/demo.sh printed) and the shipped
# teacher and paraphraser their FT students learned from.
DEMOS = {"demo": (TEACHER, PARA), "demo-teachers/teacher-16k": (TEACHER, PARA),
         "demo-teachers/teacher-64k": (TEACHER_64K, PARA_64K)}


@pytest.mark.parametrize("demo", list(DEMOS))
def test_committed_demo_summary_is_what_its_records_give(demo, monkeypatch, capsys):
    """The committed summary.txt is what scripts/demo_summary.py prints of the folder's
    records (the teacher's error taken from its record instead of re-measured: the test
    above measures it), and every FT student was taught by the shipped pair it names."""
    folder = REPO / "results" / demo
    teacher, para = DEMOS[demo]
    network, _ = load_classifier(teacher)
    paraphraser, _ = load_paraphraser(para)
    for ft in sorted(folder.glob("ft-resnet20-s*")):
        assert_taught_by(ft, final(ft)["run"], network, paraphraser)
    monkeypatch.setattr(demo_summary, "teacher_error",
                        lambda path, args: ("resnet56", final(Path(path))["test_error_last"], 10000))
    demo_summary.main(demo_summary.get_args_parser().parse_args(
        [str(folder), "--teacher", str(teacher), "--seeds", "0", "1", "2"]))
    printed = [line.rstrip() for line in capsys.readouterr().out.splitlines() if line.strip()]
    committed = [line.rstrip() for line in (folder / "summary.txt").read_text().splitlines() if line.strip()]
    assert printed == committed


MIDSCALE = REPO / "results" / "midscale"
# Flags that differ by method or seed (kd_form: resolved for KD runs only); every other
# argument is the same in every run of the row.
PER_RUN = {"method", "seed", "out", "teacher", "paraphraser", "kd_form"}


def test_midscale_records_are_finished_runs_of_one_row_on_the_shipped_teacher():
    """results/midscale/: records only, every run 4,000 iterations on all images with the same
    flags, taught by the shipped teacher (its fingerprint) and paraphraser."""
    runs = sorted(p.parent for p in MIDSCALE.glob("folder/*/final.json"))
    assert runs, "no finished mid-scale run under results/midscale/folder"
    teacher, _ = load_classifier(TEACHER)
    para, _ = load_paraphraser(PARA)
    shared = None
    for run in runs:
        args, lines, last = record(run)
        assert not (run / "checkpoint.pt").exists(), f"{run}: records only, no weights"
        assert (args["arch"], args["iters"], args["milestones"]) == ("resnet20", 4000, [2000, 3000]), run
        assert args["train_subset"] is None and args["test_subset"] is None, run
        assert lines[-1]["iter"] == 4000 and last["test_error_last"] == lines[-1]["test_error"], run
        same = {k: v for k, v in args.items() if k not in PER_RUN}
        assert shared is None or same == shared, f"{run}: flags differ from the other runs"
        shared = same
        assert_taught_by(run, last["run"], teacher if args["method"] != "ce" else None,
                         para if args["method"] == "ft" else None)


# the committed reports: the roots scripts/report.py reads (the first holds the report), and the
# fewest table rows the README copies of it
REPORTS = {"midscale": (["results/midscale", "results/shipped/teacher-resnet56"], 7),
           "fullschedule": (["results/fullschedule"], 5)}


@pytest.mark.parametrize("name", list(REPORTS))
def test_committed_report_regenerates_from_the_records(name, tmp_path, monkeypatch):
    """results/<name>/report-table1.md is what `scripts/report.py <roots> --table 1` makes of the
    committed records, nothing edited by hand."""
    roots, _ = REPORTS[name]
    committed = REPO / roots[0] / "report-table1.md"
    assert committed.exists(), f"make it: python scripts/report.py {' '.join(roots)} --table 1 --out {roots[0]}"
    monkeypatch.chdir(REPO)
    report.main([*roots, "--table", "1", "--out", str(tmp_path)])
    assert (tmp_path / "report-table1.md").read_text() == committed.read_text()


@pytest.mark.parametrize("name", list(REPORTS))
def test_readme_report_lines_are_the_committed_report(name):
    """The README's lines copied from results/<name>/report-table1.md are lines of it, verbatim."""
    roots, least = REPORTS[name]
    readme = (REPO / "README.md").read_text()
    start = f"<!-- copied from results/{name}/report-table1.md -->"
    end = f"<!-- end of the lines copied from results/{name}/report-table1.md -->"
    assert start in readme and end in readme
    block = readme.split(start)[1].split(end)[0]
    rows = [line for line in block.splitlines() if line.startswith("|")]
    report_lines = set((REPO / roots[0] / "report-table1.md").read_text().splitlines())
    assert len(rows) >= least and [r for r in rows if r not in report_lines] == []


# scripts/table1.sh's environment for the full-schedule row (results/fullschedule/README.md)
FULL_ENV = {"SEEDS": "1", "DATASET": "folder", "DATA_ROOT": "../shared/data/cifar10-jpeg.tar.gz", "RUNS": "runs_full"}


def table1_line(run: str) -> list[str]:
    """The command scripts/table1.sh issues for `run` (its dry run, finished or not), as argv."""
    lines = dry_run("table1", finished=True, timeout=120, **FULL_ENV, ONLY=f"^folder/{run}$")
    assert len(lines) == 1, lines
    return lines[0]


def test_fullschedule_records_are_table1s_commands_at_the_papers_schedule():
    """results/fullschedule/: records only of the row's four finished runs, each the command
    scripts/table1.sh issues for its folder (the settings resolved from that command line agree
    with the record as a resume would require) at the paper's schedule, on all images; the FT
    student taught by the shipped full-schedule teacher and paraphraser."""
    runs = sorted(p.parent for p in FULL.glob("folder/*/final.json"))
    assert [run.name for run in runs] == ["ce-resnet20-s0", "ft-resnet20-from-resnet56-k0.5-s0",
                                          "para-resnet56-k0.5-s0", "teacher-resnet56-s0"]
    assert not (REPO / "results" / "fullschedule-resume").exists(), "no unfinished run left to resume"
    for run in runs:
        args = run_record.read(run).args
        assert not (run / "checkpoint.pt").exists(), f"{run}: records only, no weights"
        argv = table1_line(run.name)
        script = importlib.import_module(Path(argv[1]).stem)
        config = script.resolve(script.get_args_parser().parse_args(argv[2:]), lambda: 50000)
        issued = json.loads(json.dumps(vars(config)))
        assert run_record.resume_differences(args, issued) == [], run
        assert (args["out"], args["data_root"]) == (issued["out"], issued["data_root"]), run
        lines, last = metrics(run), final(run)
        assert args["train_subset"] is None and args["test_subset"] is None, run
        assert lines[-1]["iter"] == args["iters"], run
        if script.__name__ == "train_paraphraser":  # the paper's recipe: 30 epochs of the 45,000 kept images
            assert (args["epochs"], args["iters"], args["milestones"], args["lr"], args["holdout"]) == \
                (30, 10530, [], 0.1, 0.1), run
            continue
        assert (args["iters"], args["milestones"], args["lr"], args["batch_size"], args["wd"]) == \
            (64000, [32000, 48000], 0.1, 128, 5e-4), run
        assert last["test_error_last"] == lines[-1]["test_error"], run
        if args.get("method") == "ft":  # from the shipped full-schedule teacher and paraphraser
            assert_taught_by(run, last["run"], load_classifier(TEACHER_64K)[0], load_paraphraser(PARA_64K)[0])
