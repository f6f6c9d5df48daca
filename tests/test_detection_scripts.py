"""scripts/table_voc.sh (on scripts/lib.sh) and scripts/report_voc.py: the detection table's
runs, their dependencies, and the whole pipeline at a tiny scale on a synthetic VOC folder."""

from __future__ import annotations

import subprocess
import sys

import pytest

from detection.synthetic import make_synthetic_voc
from helpers import REPO, dry_run, run_script
from test_scripts import dependencies, flag, out_of


def test_dry_run_declares_the_papers_four_runs():
    lines = dry_run("table_voc", SEEDS=1)
    scripts = [words[1] for words in lines]
    assert scripts == ["detection/train_teacher.py", "detection/train_paraphraser.py",
                       "detection/train_student.py", "detection/train_student.py"]
    teacher, para, alone, ft = lines
    assert flag(teacher, "--arch") == "resnet101" and flag(teacher, "--pretrained").endswith("resnet101-63fe2227.pth")
    assert flag(para, "--k") == "0.5" and "--no-bn" in para and dependencies(para) == [out_of(teacher)]
    assert flag(alone, "--method") == "ce" and flag(alone, "--arch") == "vgg16"
    assert flag(alone, "--pretrained").endswith("vgg16-397923af.pth")
    assert flag(ft, "--method") == "ft" and flag(ft, "--beta") == "1000" and flag(ft, "--p") == "1"
    assert dependencies(ft) == [out_of(teacher), out_of(para)]
    assert len(dry_run("table_voc", SEEDS=3)) == 12
    assert "--pretrained" not in " ".join(" ".join(w) for w in dry_run("table_voc", PRETRAINED=0))


@pytest.mark.slow
def test_table_voc_end_to_end_on_a_synthetic_folder_then_report(tmp_path):
    voc = make_synthetic_voc(tmp_path / "voc", train=8, test=4, size=96)
    settings = dict(
        VOC_ROOT=voc, RUNS=tmp_path / "runs", PRETRAINED=0, TEACHER_ARCH="resnet_tiny", STUDENT_ARCH="vgg16_tiny",
        ITERS=2, PARA_ITERS=2, EVAL_EVERY=2, PYTHON=sys.executable,
        DETECTOR_ARGS="--min-size 96 --max-size 120 --anchor-sizes 16 32 64 --rpn-post-nms-train 64 "
                      "--rpn-post-nms-test 16 --roi-batch 16 --roi-size 7",
        EXTRA_ARGS="--progress off --batch-size 2 --eval-batch-size 4")
    run_script("table_voc", **settings)
    runs = tmp_path / "runs" / "voc2007"
    assert sorted(p.parent.name for p in runs.glob("*/final.json")) == [
        "ce-vgg16_tiny-s0", "ft-vgg16_tiny-from-resnet_tiny-k0.5-s0", "para-resnet_tiny-k0.5-s0",
        "teacher-resnet_tiny-s0"]
    again = run_script("table_voc", **settings)
    assert "4 runs (1 teachers, 1 paraphrasers, 2 students), 4 finished" in again.stderr
    report = subprocess.run([sys.executable, str(REPO / "scripts" / "report_voc.py"), str(runs)],
                            capture_output=True, text=True, check=True).stdout
    rows = [line for line in report.splitlines() if line.startswith("| ") and "row" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["VGG-16 alone", "VGG-16 + FT", "ResNet-101 teacher"]
    assert [r.split("|")[-2].strip() for r in rows] == ["69.5", "70.3", "75.0"]
    assert "randomly initialised" in report and "FT - alone, paired over 1 seed(s)" in report
    # The classification report leaves detection runs out without failing.
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "report.py"), str(tmp_path / "runs"),
                           "--table", "1"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
