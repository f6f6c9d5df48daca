"""scripts/demo.sh and what it stands on: shipping a run without its training state
(scripts/ship_run.py), the shipped teacher teaching on another copy of its images
(--teacher-data-copy), and the demo end to end on an image folder, on torchvision's
CIFAR-10 and with TEACHER=train, at a tiny scale."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_cli, run_script, tiny_runs, train_student  # noqa: F401  (tiny_runs: a pytest fixture)
from utils.checkpoint import fingerprint, load_classifier, load_paraphraser

REPO = Path(__file__).resolve().parent.parent

import aggregate  # noqa: E402
import ship_run  # noqa: E402


@pytest.fixture(scope="module")
def shipped(tiny_runs, tmp_path_factory):
    """The tiny teacher and paraphraser, shipped the way results/shipped/ is."""
    root = tmp_path_factory.mktemp("shipped")
    for run, name in ((tiny_runs.teacher, "teacher"), (tiny_runs.paraphraser(), "para")):
        ship_run.main(ship_run.get_args_parser().parse_args([str(run), str(root / name)]))
    return root


def test_ship_run_keeps_weights_and_record_and_drops_the_training_state(tiny_runs, shipped, tmp_path, capsys):
    teacher, para = shipped / "teacher", shipped / "para"
    full = torch.load(tiny_runs.teacher / "checkpoint.pt", weights_only=False)
    light = torch.load(teacher / "checkpoint.pt", weights_only=False)
    assert "optimizer" in full and not set(ship_run.TRAINING_STATE) & set(light)
    assert set(light) == set(full) - set(ship_run.TRAINING_STATE)
    assert (teacher / "checkpoint.pt").stat().st_size < (tiny_runs.teacher / "checkpoint.pt").stat().st_size
    for name in ship_run.FILES:
        assert (teacher / name).read_bytes() == (tiny_runs.teacher / name).read_bytes()
    # the shipped folders load like the runs they came from, and the paraphraser still
    # belongs to the teacher (same weights, same fingerprint)
    assert fingerprint(load_classifier(teacher)[0]) == fingerprint(load_classifier(tiny_runs.teacher)[0])
    assert load_paraphraser(para)[1]["teacher"]["fingerprint"] == fingerprint(load_classifier(teacher)[0])

    code, err = run_cli(ship_run, [str(tiny_runs.teacher), str(teacher)], capsys)
    assert code == 2 and "exists" in err
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "checkpoint.pt").write_bytes((tiny_runs.teacher / "checkpoint.pt").read_bytes())
    code, err = run_cli(ship_run, [str(unfinished), str(tmp_path / "dest")], capsys)
    assert code == 2 and "has not finished" in err and not (tmp_path / "dest").exists()


def test_ship_records_only_copies_each_finished_run_of_a_tree(tiny_runs, tmp_path, capsys):
    """--records-only: the records of every finished run under a tree, at the same paths,
    without weights; unfinished runs are named and skipped; the report reads the copy as it
    reads the runs (scripts/report.py needs nothing else)."""
    tree = tmp_path / "runs"
    shutil.copytree(tiny_runs.teacher, tree / "c10" / "teacher")
    shutil.copytree(tiny_runs.paraphraser(), tree / "c10" / "para")
    unfinished = tree / "c10" / "student"
    unfinished.mkdir()
    (unfinished / "args.json").write_text("{}")
    ship_run.main(ship_run.get_args_parser().parse_args(["--records-only", str(tree), str(tmp_path / "records")]))
    out = capsys.readouterr().out
    assert f"skipped {unfinished}" in out and "of 2 finished run(s)" in out
    for name in ("teacher", "para"):
        copied = tmp_path / "records" / "c10" / name
        assert sorted(p.name for p in copied.iterdir()) == sorted(ship_run.FILES)
        for file in ship_run.FILES:
            assert (copied / file).read_bytes() == (tree / "c10" / name / file).read_bytes()
    assert not (tmp_path / "records" / "c10" / "student").exists()
    original = [(r.record, r.final) for r in aggregate.load_runs(tree) if r.final]
    assert [(r.record, r.final) for r in aggregate.load_runs(tmp_path / "records")] == original

    code, err = run_cli(ship_run, ["--records-only", str(tmp_path / "empty"), str(tmp_path / "x")], capsys)
    assert code == 2 and "no run folder" in err


# ----------------------------------------------------------------------------- torchvision's CIFAR-10

def fake_torchvision_cifar10(root: Path, per_class: int = 8, test_per_class: int = 4) -> Path:
    """torchvision's CIFAR-10 layout (cifar-10-batches-py, pickled batches of 3072-byte rows)
    with a few images of one colour per class, as the tiny image folder has."""
    rng = np.random.default_rng(0)
    colours = rng.integers(30, 226, size=(10, 3))
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(count):
        labels = [c for c in range(10) for _ in range(count)]
        pixels = colours[labels][:, :, None, None] + rng.normal(0, 25, size=(len(labels), 3, 32, 32))
        return {"data": pixels.clip(0, 255).astype(np.uint8).reshape(len(labels), -1), "labels": labels}

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(per_class // 5 + 1)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(test_per_class)))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{c}" for c in range(10)]}))
    return root


@pytest.fixture
def torchvision_cifar10(tmp_path, monkeypatch):
    """The fake CIFAR-10 root, with torchvision's checksum test of the real archive's
    batches answered yes, in this process and (through sitecustomize) in subprocesses."""
    import torchvision.datasets.cifar

    root = fake_torchvision_cifar10(tmp_path / "data")
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import torchvision.datasets.cifar\n"
        "torchvision.datasets.cifar.check_integrity = lambda *args, **kwargs: True\n")
    return root, hook


def test_teacher_of_another_copy_teaches_only_when_asked(shipped, torchvision_cifar10, tmp_path, capsys):
    root, _ = torchvision_cifar10
    argv = ["--dataset", "cifar10", "--data-root", str(root), "--method", "ft", "--arch", "resnet20",
            "--teacher", str(shipped / "teacher"), "--paraphraser", str(shipped / "para"), "--iters", "2",
            "--eval-every", "2", "--batch-size", "16", "--progress", "off"]
    code, err = run_cli(train_student, [*argv, "--out", str(tmp_path / "refused")], capsys)
    assert code == 2 and "trained on folder" in err and "--teacher-data-copy" in err
    code, err = run_cli(train_student, [*argv, "--teacher-data-copy", "--out", str(tmp_path / "ok")], capsys)
    assert code == 0, err
    assert "note: --teacher was trained on --dataset folder, this run uses cifar10" in err
    record = json.loads((tmp_path / "ok" / "final.json").read_text())["run"]
    assert record["dataset"] == "cifar10" and record["teacher"]["dataset"] == "folder"


# ----------------------------------------------------------------------------- demo.sh end to end

def demo(tmp_path: Path, *data: str, hook: Path | None = None, **env) -> subprocess.CompletedProcess:
    settings = {"FT_NO_VENV": 1, "OUT": tmp_path / "demo", "STUDENT_ITERS": 4, "EXTRA_ARGS": "--batch-size 16",
                "DEVICE": "cpu", **env}
    if hook is not None:
        settings["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    return run_script("demo", *data, timeout=600, **settings)


def summary_rows(stdout: str) -> dict:
    rows = {}
    for line in stdout.splitlines():
        match = re.match(r"(teacher \S+|student ResNet-20 (?:alone|\+ FT))\s+(\S+)", line)
        if match:
            rows[match.group(1)] = float(match.group(2))
    return rows


def finals(out: Path, method: str, seeds) -> list[float]:
    return [json.loads((out / f"{method}-resnet20-s{s}" / "final.json").read_text())["test_error_last"]
            for s in seeds]


@pytest.mark.slow
def test_demo_with_the_shipped_teacher_on_a_folder(shipped, tiny_folder, tmp_path):
    proc = demo(tmp_path, str(tiny_folder), SEEDS="0 1", SHIPPED_TEACHER=shipped / "teacher",
                SHIPPED_PARAPHRASER=shipped / "para")
    out = tmp_path / "demo"
    rows = summary_rows(proc.stdout)
    ce, ft = finals(out, "ce", (0, 1)), finals(out, "ft", (0, 1))
    assert rows["student ResNet-20 alone"] == pytest.approx(sum(ce) / 2, abs=0.006)
    assert rows["student ResNet-20 + FT"] == pytest.approx(sum(ft) / 2, abs=0.006)
    # the teacher evaluated on the students' test images, as a plain (not channels-last)
    # network: the same computation here, so no CPU's rounding can tell the two apart
    from utils.data import load_data
    from utils.train import classification_metrics

    model = load_classifier(shipped / "teacher")[0]
    expected = classification_metrics(model, load_data("folder", tiny_folder), 1000)["test_error"]
    assert rows["teacher ResNet-20"] == pytest.approx(expected, abs=0.006)
    diffs = ", ".join(f"{b - a:+.2f}" for a, b in zip(ce, ft))
    assert f"FT - alone, per seed: {diffs};" in proc.stdout and "95% t-interval" in proc.stdout
    assert "7.78" in proc.stdout and "6.85" in proc.stdout and "6.39" in proc.stdout  # the paper's Table 1
    assert not (out / "teacher-resnet56").exists()  # nothing but the students trained
    numbered = [line for line in proc.stderr.splitlines() if line.startswith("demo.sh: run ")]
    assert numbered == ["demo.sh: run 1 of 4: student ResNet-20 alone, seed 0, 4 iterations",
                        "demo.sh: run 2 of 4: student ResNet-20 with FT, seed 0, 4 iterations",
                        "demo.sh: run 3 of 4: student ResNet-20 alone, seed 1, 4 iterations",
                        "demo.sh: run 4 of 4: student ResNet-20 with FT, seed 1, 4 iterations"]


@pytest.mark.slow
def test_demo_on_torchvision_cifar10_trains_its_own_teacher_without_shipped_ones(torchvision_cifar10, tmp_path):
    """TEACHER=auto with nothing shipped trains the teacher and paraphraser first, here on
    torchvision's CIFAR-10 (the shipped teacher's --teacher-data-copy on it is tested above)."""
    root, hook = torchvision_cifar10
    proc = demo(tmp_path, hook=hook, DATA_ROOT=root, SHIPPED_TEACHER=tmp_path / "none", TEACHER_ITERS=4,
                PARA_ITERS=2, SEEDS="0")
    assert "demo.sh: TEACHER=train" in proc.stderr
    out = tmp_path / "demo"
    assert (out / "teacher-resnet56" / "final.json").exists() and (out / "para-resnet56-k0.5" / "final.json").exists()
    args = json.loads((out / "ft-resnet20-s0" / "args.json").read_text())["args"]
    assert args["dataset"] == "cifar10" and args["teacher"] == str(out / "teacher-resnet56")
    assert args["teacher_data_copy"] is False  # its own teacher learned on these very images
    assert "teacher ResNet-56" in proc.stdout and "cifar10" in proc.stdout


def test_demo_without_the_shipped_files_says_what_to_do(tiny_folder, tmp_path):
    proc = run_script("demo", tiny_folder, check=False, timeout=60, FT_NO_VENV=1, OUT=tmp_path / "demo",
                      SHIPPED_TEACHER=tmp_path / "none", TEACHER="shipped")
    assert proc.returncode == 2 and "TEACHER=train" in proc.stderr
