"""utils/record.py, the one reader and writer of a run folder's records: the schema a new record
carries, the migration of records written before it, and the table cell a record fills, which
is where the report places the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import aggregate
import paper
from test_report import para, student, teacher
from utils import record
from utils.errors import UserError
from utils.run import RunDir

REPO = Path(__file__).resolve().parent.parent


def write(folder: Path, blob: dict, final: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "args.json").write_text(json.dumps(blob))
    if final is not None:
        (folder / "final.json").write_text(json.dumps(final))
    return folder


def test_a_version_0_record_reads_as_its_migrated_form(tmp_path):
    """args.json without "schema" and without the options added since: read with each option
    at the value that reproduces the run, for the stages that have it; "run" from final.json
    when a later version of the code finished the run."""
    run = {"stage": "student", "method": "ft", "arch": "resnet20", "dataset": "cifar10", "recipe": "paper",
           "iters": 64000, "seed": 0, "teacher": None, "paraphrasers": []}
    old = {"method": "ft", "arch": "resnet20", "iters": 64000, "lr": 0.1, "p": 1}
    s = record.read(write(tmp_path / "s", {"args": old}, {"test_error_last": 7.0, "run": run}))
    assert s.schema == 0 and s.run == run and s.finished
    assert s.args == {**old, "recipe": "paper", "lr_decay": 0.1, "pad_mode": "zero", "ft_reduction": "mean",
                      "wrn_init": "standard", "bn_images": 0, "at_beta_decay": "none"}
    # a paraphraser has neither the WRN init nor the AT schedule; an option the run gave is kept;
    # the placeholder --rae-lambda outside --kind rae is none, as train_paraphraser.py records it now
    old_p = {"recon_loss": "l1", "kind": "conv", "recipe": "at", "rae_lambda": 1e-4}
    p = record.read(write(tmp_path / "p", {"args": old_p}))
    assert p.schema == 0 and p.run == {}
    assert p.args == {**old_p, "rae_lambda": None, "lr_decay": 0.1, "pad_mode": "zero"}
    rae = record.read(write(tmp_path / "rae", {"args": {**old_p, "kind": "rae", "rae_lambda": 0.1}}))
    assert rae.args["rae_lambda"] == 0.1
    d = record.read(write(tmp_path / "d", {"args": {"arch": "vgg16"}, "run": {"stage": "teacher", "task": "detection"}}))
    assert d.args == {"arch": "vgg16", "lr_decay": 0.1}
    # the migration is the reading: the folder on disk is untouched
    assert json.loads((tmp_path / "s" / "args.json").read_text()) == {"args": old}


def test_a_written_record_carries_the_schema_and_reads_back(tmp_path):
    args = {"iters": 10, "lr": 0.1, "out": str(tmp_path / "r"), "recipe": "paper"}
    identity = {"stage": "teacher", "arch": "resnet56", "dataset": "cifar10", "recipe": "paper", "iters": 10,
                "seed": 0}
    run_dir = RunDir(tmp_path / "r", dict(args))
    run_dir.start(identity)
    run_dir.append_metrics({"iter": 10, "test_error": 9.0})
    run_dir.write_final({"test_error_last": 9.0, "run": identity})
    run_dir.close()
    blob = json.loads((tmp_path / "r" / "args.json").read_text())
    assert blob["schema"] == record.SCHEMA and blob["run"] == identity
    r = record.read(tmp_path / "r")
    assert (r.schema, r.args, r.run, r.metrics()) == (record.SCHEMA, args, identity, [{"iter": 10, "test_error": 9.0}])
    assert r.cell == paper.teacher_id("cifar10", "resnet56")


def test_a_record_of_an_unknown_schema_is_a_clear_error(tmp_path):
    write(tmp_path / "new", {"schema": record.SCHEMA + 1, "args": {}})
    with pytest.raises(UserError, match="newer than this code's.*update the code"):
        record.read(tmp_path / "new")
    with pytest.raises(UserError, match="newer than this code's"):
        RunDir(tmp_path / "new", {"iters": 1})


def test_the_cell_of_a_record_is_where_the_report_places_it(tmp_path):
    """For synthetic runs of every kind and for the shipped records: the record's cell is the
    identity the report places the run under, and the table layout's cell holds it."""
    t = teacher(tmp_path, "teacher-resnet56-s0", "resnet56", 0, 6.5)
    p = para(tmp_path, "para-resnet56-k0.5-s0", t, 0)
    ft = student(tmp_path, "ft-resnet20-s0", "ft", "resnet20", 0, 7.0, t, p)
    student(tmp_path, "ft-p2-resnet20-s0", "ft", "resnet20", 0, 7.0, t, p, p=2)
    student(tmp_path, "ft-nopara-resnet20-s0", "ft", "resnet20", 0, 7.0, t, None, no_paraphraser=True)
    student(tmp_path, "kd-resnet20-s0", "kd", "resnet20", 0, 7.5, t)
    student(tmp_path, "ce-resnet20-s0", "ce", "resnet20", 0, 8.0)
    for root in (tmp_path, REPO / "results"):
        runs = aggregate.load_runs(root)
        assert len(runs) == len(record.read_all(root)) and any(r.identity for r in runs)
        for run in runs:
            assert run.identity == record.read(run.path).cell, run.path
    placed = {r.path.name: r.identity for r in aggregate.load_runs(tmp_path)}
    assert placed["teacher-resnet56-s0"] == paper.teacher_id("cifar10", "resnet56")
    assert placed["para-resnet56-k0.5-s0"] is None  # a paraphraser fills no cell
    assert placed[ft.name] == paper.student_id("cifar10", "resnet20", "ft", "resnet56", k=0.5)
    assert placed["ft-p2-resnet20-s0"] == paper.student_id("cifar10", "resnet20", "ft", "resnet56", k=0.5, p=2)
    assert placed["ft-nopara-resnet20-s0"] == paper.student_id("cifar10", "resnet20", "ft", "resnet56", k=0.5,
                                                                no_paraphraser=True)
    assert placed["kd-resnet20-s0"] == paper.student_id("cifar10", "resnet20", "kd", "resnet56")
    layout = {i for table in paper.build_tables("all") for part in table.parts for row in part.rows
              for cell in row.cells for i in cell.ids}
    assert {placed[n] for n in ("teacher-resnet56-s0", ft.name, "ft-p2-resnet20-s0", "kd-resnet20-s0",
                                "ce-resnet20-s0")} <= layout  # (Table 4's no-paraphraser rows are other networks)


def test_a_resumed_version_0_run_checks_its_migrated_arguments(tmp_path):
    """The resume check reads through the migration: a run made before --recipe existed resumes
    under the command of today, and the recipe it ran is the one it is held to."""
    write(tmp_path / "r", {"args": {"iters": 10, "lr": 0.1, "out": "x"}})
    now = {"iters": 10, "lr": 0.1, "out": "y", "recipe": "paper", "lr_decay": 0.1, "pad_mode": "zero"}
    RunDir(tmp_path / "r", dict(now))  # no error
    with pytest.raises(UserError, match="--lr-decay 0.1 -> 0.2"):
        RunDir(tmp_path / "r", {**now, "lr_decay": 0.2})


def test_the_migration_gives_each_stage_the_added_options_its_script_has():
    """ADDED_ARGS names, for each option, the stages whose script has it: exactly those."""
    import importlib

    scripts = {"teacher": "train_teacher", "paraphraser": "train_paraphraser", "student": "train_student",
               "detection/teacher": "detection.train_teacher", "detection/paraphraser": "detection.train_paraphraser",
               "detection/student": "detection.train_student"}
    for stage, module in scripts.items():
        options = {a.dest for a in importlib.import_module(module).get_args_parser()._actions}
        assert {k for k, (_, stages) in record.ADDED_ARGS.items() if stage in stages} == \
            set(record.ADDED_ARGS) & options, stage
