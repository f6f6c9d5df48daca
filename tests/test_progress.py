"""Long work says what it is doing: each run's progress bar names the run and shows the last
evaluation's loss and test error; the demo and table scripts number their runs."""

import train_teacher
from helpers import run, run_script
from utils.progress import bar_postfix, run_label


def test_run_label_names_stage_method_network_and_seed():
    assert run_label({"stage": "student", "method": "ft", "arch": "resnet20", "seed": 1}) == "FT resnet20 s1"
    assert run_label({"stage": "student", "method": "at+kd", "arch": "wrn_16_1", "seed": 0}) == "AT+KD wrn_16_1 s0"
    assert run_label({"stage": "teacher", "arch": "resnet56", "seed": 2}) == "teacher resnet56 s2"
    assert run_label({"stage": "paraphraser", "kind": "conv", "k": 0.5, "seed": 0,
                      "teacher": {"arch": "resnet56"}}) == "paraphraser k0.5 of resnet56 s0"
    assert run_label({"stage": "paraphraser", "kind": "rae", "k": 2, "seed": 0,
                      "teacher": {"arch": "resnet56"}}) == "paraphraser RAE k2 of resnet56 s0"


def testbar_postfix_shows_each_loss_part_and_the_test_error():
    record = {"iter": 200, "loss_ce": 1.6752, "loss_ft": 5.9314, "lr": 0.001, "test_error": 52.23,
              "test_error_top5": 6.66, "train_error": 62.75}
    assert bar_postfix(record) == "ce 1.675  ft 5.931 | test error 52.23"
    assert bar_postfix({"loss_recon": 0.2, "recon_test": 0.174, "recon_holdout": 0.18}) == \
        "recon 0.2 | recon test 0.174"


def test_a_runs_bar_carries_its_name_loss_and_test_error(tiny_args, tmp_path, capsys):
    run(train_teacher, [*tiny_args(tmp_path / "t"), "--arch", "resnet20", "--iters", "4", "--eval-every", "2",
                        "--progress", "on", "--seed", "3"])
    err = capsys.readouterr().err
    assert "teacher resnet20 s3" in err
    assert "ce " in err and "| test error " in err  # the postfix after the first evaluation


def test_table_scripts_number_their_runs_and_say_which_they_skip(tmp_path):
    fake = tmp_path / "fakepython"  # finishes every run at once: writes its final.json
    fake.write_text('#!/usr/bin/env bash\nwhile [ $# -gt 0 ]; do [ "$1" = --out ] && echo "{}" > "$2/final.json"; shift; done\n')
    fake.chmod(0o755)
    done = tmp_path / "runs" / "cifar10" / "teacher-resnet56-s0"
    done.mkdir(parents=True)
    (done / "final.json").write_text("{}")
    proc = run_script("table7", timeout=120, SEEDS=1, RUNS=tmp_path / "runs", PYTHON=fake)
    lines = [line for line in proc.stderr.splitlines() if " of 10: " in line]
    assert [line.split(":")[1].strip() for line in lines] == [f"run {i} of 10" for i in range(1, 11)], proc.stderr
    skipped = [line for line in lines if line.endswith("skipped (finished)")]
    assert len(skipped) == 1 and "cifar10/teacher-resnet56-s0" in skipped[0]
