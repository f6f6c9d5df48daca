"""scripts/estimate.py: table wall time from a run list and a benchmark."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import dry_run, script_env
from models import build_model
from models.summary import count_macs
from paraphraser import Paraphraser

ROOT = Path(__file__).resolve().parent.parent
import estimate  # noqa: E402

BENCH = {"device": "test", "stages": {
    "teacher": {"images_per_s": {"default": 100.0, "fast": 200.0}},
    "paraphraser": {"images_per_s": {"default": 400.0, "fast": 800.0}},
    "student": {"images_per_s": {"default": 200.0, "fast": 400.0}}}}

TEACHER = "python train_teacher.py --arch resnet56 --dataset cifar10 --iters 1000 --out runs/c10/teacher-resnet56-s0"
PARA = "python train_paraphraser.py --teacher runs/c10/teacher-resnet56-s0 --k 0.5 --out runs/c10/para-resnet56-k0.5-s0"
FT = ("python train_student.py --method ft --arch resnet20 --teacher runs/c10/teacher-resnet56-s0 "
      "--paraphraser runs/c10/para-resnet56-k0.5-s0 --iters 1000 --out runs/c10/ft-s0")
CE = "python train_student.py --method ce --arch resnet20 --iters 1000 --out runs/c10/ce-resnet20-s0"


def test_transposed_convolutions_are_counted():
    # Stride-1 3x3 layers: each decoder layer mirrors an encoder layer's multiply-adds.
    para = Paraphraser(64, k=0.5)
    assert count_macs(para, (1, 64, 8, 8)) == 2 * count_macs(para.encoder, (1, 64, 8, 8)) > 0


def test_the_benchmarked_runs_take_the_benchmarked_time():
    # A run of a benchmarked stage takes images / (benchmark images/s), whatever its MACs.
    assert estimate.estimate([TEACHER], BENCH)["total_seconds"] == pytest.approx(1000 * 128 / 100.0)
    assert estimate.estimate([FT], BENCH)["total_seconds"] == pytest.approx(1000 * 128 / 200.0)
    assert estimate.estimate([FT], BENCH, "fast")["total_seconds"] == pytest.approx(1000 * 128 / 400.0)
    # The paraphraser's default schedule is 30 epochs of 390 steps (50,000 // 128).
    assert estimate.estimate([PARA], BENCH)["total_seconds"] == pytest.approx(30 * 390 * 128 / 400.0)


def test_costs_scale_with_the_networks():
    r20, r56 = count_macs(build_model("resnet20", 10)), count_macs(build_model("resnet56", 10))
    ce = estimate.estimate([CE], BENCH)["total_seconds"]
    assert ce == pytest.approx(1000 * 128 / 200.0 * 3 * r20 / (3 * r20 + r56))
    bigger = estimate.estimate([TEACHER.replace("resnet56", "resnet110")], BENCH)["total_seconds"]
    assert bigger == pytest.approx(1000 * 128 / 100.0 * count_macs(build_model("resnet110", 10)) / r56)


def test_finished_runs_and_imagenet():
    result = estimate.estimate(["# finished: " + TEACHER, FT], BENCH)
    assert result["runs"] == 1 and result["seconds"]["teacher"] == 0
    with pytest.raises(ValueError, match="ImageNet"):
        estimate.parse_run(TEACHER.replace("cifar10", "imagenet"))


def test_a_table_is_listed_by_its_own_script(tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(BENCH))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "estimate.py"), "--table", "7",
                          "--bench", str(bench), "--json"], capture_output=True, text=True,
                         env=script_env(SEEDS=1, RUNS=tmp_path / "runs"), cwd=ROOT, check=True)
    listed = dry_run("table7", SEEDS=1, RUNS=tmp_path / "runs")
    result = json.loads(out.stdout)
    assert result["runs"] == sum(any(w.endswith(".py") for w in argv) for argv in listed) > 0
    assert result["total_seconds"] > 0


def test_recipe_at_counts_its_200_epochs():
    """--recipe at without --iters: 200 epochs of 390 steps; --iters still wins."""
    at = TEACHER.replace("--iters 1000", "--recipe at")
    assert estimate.estimate([at], BENCH)["total_seconds"] == pytest.approx(200 * 390 * 128 / 100.0)
    assert estimate.estimate([TEACHER + " --recipe at"], BENCH)["total_seconds"] == \
        pytest.approx(1000 * 128 / 100.0)


def test_an_rae_line_without_k_is_counted_at_k_2():
    # train_paraphraser.py gives --kind rae k = 2 (the RAE paper's over-complete code); a
    # line that leaves --k out must be counted there, not at conv's 0.5.
    rae = PARA.replace("--k 0.5 ", "") + " --kind rae"
    assert estimate.parse_run(rae)["macs_per_image"] == estimate.parse_run(rae + " --k 2")["macs_per_image"]
    assert estimate.parse_run(rae)["macs_per_image"] > estimate.parse_run(rae + " --k 0.5")["macs_per_image"]
