"""Reliability: clear errors for bad input, exact resumption after kills, divergence, one writer."""

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train_paraphraser
import train_student
import train_teacher
from helpers import comparable, evaluations_logged, interrupt
from utils.cli import run_main
from utils.errors import UserError
from utils.run import RunDir
from utils.progress import TrainingDiverged

REPO = Path(__file__).resolve().parent.parent


def cli(script, argv, capsys):
    """Run a script's entry point; return (exit code, stderr)."""
    with pytest.raises(SystemExit) as exc:
        run_main(script.main, script.get_args_parser(), argv)
    return exc.value.code, capsys.readouterr().err


def finished_runs(tmp_path_factory, tiny_folder):
    root = tmp_path_factory.mktemp("rel")
    common = ["--dataset", "folder", "--data-root", str(tiny_folder), "--iters", "2", "--eval-every", "2",
              "--batch-size", "16", "--progress", "off"]
    for script, extra, name in ((train_teacher, ["--arch", "resnet20"], "teacher"),
                                (train_paraphraser, ["--teacher", str(root / "teacher")], "para"),
                                (train_teacher, ["--arch", "resnet20", "--seed", "1"], "teacher2")):
        script.main(script.get_args_parser().parse_args([*common, *extra, "--out", str(root / name)]))
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_folder):
    return finished_runs(tmp_path_factory, tiny_folder)


def bad_inputs(runs: Path, data: Path, tmp: Path):
    """(script, arguments, expected words in the message) for each kind of bad input."""
    truncated = tmp / "truncated.pt"
    truncated.write_bytes((runs / "teacher" / "checkpoint.pt").read_bytes()[:5000])
    foreign = tmp / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    other_data = tmp / "cifar100-teacher.pt"
    ckpt = torch.load(runs / "teacher" / "checkpoint.pt", weights_only=False)
    torch.save({**ckpt, "dataset": "cifar100"}, other_data)
    no_test = tmp / "no_test"
    (no_test / "train" / "a").mkdir(parents=True)
    (no_test / "train" / "a" / "0.png").write_bytes(next(data.glob("train/*/*.png")).read_bytes())
    blocker = tmp / "a_file"
    blocker.write_text("")
    t, p = str(runs / "teacher"), str(runs / "para")
    ft = ["--method", "ft", "--teacher", t, "--paraphraser", p]
    return [
        (train_teacher, ["--arch", "resnet21"], "unknown model 'resnet21'"),
        (train_student, ["--method", "distill"], "invalid choice: 'distill'"),
        (train_teacher, ["--dataset", "mnist"], "invalid choice: 'mnist'"),
        (train_teacher, ["--arch", "wrn_30_2"], "6n+4"),
        (train_teacher, ["--lr", "0"], "--lr must be positive"),
        (train_teacher, ["--iters", "0"], "--iters must be positive"),
        (train_teacher, ["--milestones", "3", "1"], "strictly increasing"),
        (train_teacher, ["--milestones", "1", "9"], "between 1 and --iters"),
        (train_paraphraser, ["--teacher", t, "--k", "-1"], "--k must be positive"),
        (train_paraphraser, ["--teacher", str(truncated)], "truncated"),
        (train_paraphraser, ["--teacher", str(foreign)], "expected teacher"),
        (train_paraphraser, ["--teacher", str(tmp / "nowhere")], "no checkpoint there"),
        (train_paraphraser, ["--teacher", str(other_data)], "trained on cifar100"),
        (train_student, [*ft, "--beta", "0"], "--beta must be positive"),
        (train_student, ["--method", "ft", "--teacher", t], "needs --paraphraser"),
        (train_student, ["--method", "ft", "--teacher", str(runs / "teacher2"), "--paraphraser", p],
         "another teacher"),
        (train_student, ["--method", "ce", "--data-root", str(tmp / "missing")], "does not exist"),
        (train_student, ["--method", "ce", "--data-root", str(no_test)], "no test/"),
        (train_student, ["--method", "ce", "--out", str(blocker / "run")], "not a writable folder"),
    ]


def test_bad_inputs_get_one_line_and_write_nothing(runs, tiny_folder, tmp_path, capsys):
    for script, extra, words in bad_inputs(runs, tiny_folder, tmp_path):
        out = tmp_path / "out"
        argv = ["--dataset", "folder", "--data-root", str(tiny_folder), "--iters", "2",
                "--progress", "off", "--out", str(out), *extra]
        code, err = cli(script, argv, capsys)
        assert code == 2, (extra, err)
        assert words in err, (extra, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert not out.exists(), extra


def test_changed_arguments_are_named(tiny_args, tmp_path, capsys):
    train_student.main(train_student.get_args_parser().parse_args(
        tiny_args(tmp_path / "r", "--method", "ce", "--iters", "2")))
    code, err = cli(train_student, tiny_args(tmp_path / "r", "--method", "ce", "--iters", "2",
                                             "--lr", "0.05"), capsys)
    assert code == 2 and "--lr 0.1 -> 0.05" in err and "--force" in err
    run_main(train_student.main, train_student.get_args_parser(),
             tiny_args(tmp_path / "r", "--method", "ce", "--iters", "2", "--lr", "0.05", "--force"))
    assert json.loads((tmp_path / "r" / "args.json").read_text())["args"]["lr"] == 0.05


def test_an_option_added_later_is_no_difference_while_off(tiny_args, tmp_path, capsys):
    """A run made before an option existed (its args.json lacks it) resumes, or reports as
    finished, while the option is off; turned on, it is a named difference."""
    argv = tiny_args(tmp_path / "r", "--method", "ce", "--iters", "2")
    train_student.main(train_student.get_args_parser().parse_args(argv))
    saved = json.loads((tmp_path / "r" / "args.json").read_text())
    del saved["args"]["fold_bn"]
    (tmp_path / "r" / "args.json").write_text(json.dumps(saved))
    capsys.readouterr()
    train_student.main(train_student.get_args_parser().parse_args(argv))  # no UserError
    assert "is finished" in capsys.readouterr().err
    code, err = cli(train_student, [*argv, "--fold-bn"], capsys)
    assert code == 2 and "--fold-bn None -> True" in err


def test_cli_subprocess_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "train_teacher.py", "--arch", "nonet", "--out", str(tmp_path / "o")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("train_teacher.py: error: unknown model 'nonet'; valid: " +
                                   proc.stderr.split("valid: ")[1].strip())
    assert not (tmp_path / "o").exists()


def student_cmd(data: Path, out: Path, iters: int = 24) -> list[str]:
    return [sys.executable, "train_student.py", "--method", "ce", "--arch", "resnet20", "--dataset", "folder",
            "--data-root", str(data), "--iters", str(iters), "--eval-every", "2", "--batch-size", "16",
            "--progress", "off", "--out", str(out)]


def fingerprint_run(out: Path):
    lines, _ = comparable(out)  # the evaluations without their wall-clock times, as tests/test_device_paths.py compares
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    return lines, ckpt["modules"]["model"]


def assert_same_run(a: Path, b: Path):
    lines_a, weights_a = fingerprint_run(a)
    lines_b, weights_b = fingerprint_run(b)
    assert lines_a == lines_b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_folder):
    out = tmp_path_factory.mktemp("clean") / "run"
    subprocess.run(student_cmd(tiny_folder, out), cwd=REPO, check=True, capture_output=True, timeout=300)
    return out


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_is_exact(tiny_folder, tmp_path, uninterrupted):
    """SIGKILL at random points of training (located by progress, not by wall-clock time, so
    that the test kills on fast and slow machines alike), resume each time, compare."""
    out = tmp_path / "run"
    rng = random.Random(1234)
    kills = 0
    for attempt in range(8):
        proc = subprocess.Popen(student_cmd(tiny_folder, out), cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        if kills < 3:
            target = evaluations_logged(out) + rng.randint(1, 3)  # a few evaluations past the resume point
            kills += interrupt(proc, out, target, signal.SIGKILL, timeout=240, pause=rng.uniform(0.0, 0.15))
        proc.wait(timeout=300)
        if (out / "final.json").exists():
            break
    assert kills >= 2, f"only {kills} kill(s) landed before the run finished; the test tested too little"
    assert (out / "final.json").exists()
    assert_same_run(out, uninterrupted)


def test_sigterm_saves_then_resume_is_exact(tiny_folder, tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = subprocess.Popen(student_cmd(tiny_folder, out), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    interrupt(proc, out, 1, signal.SIGTERM, timeout=240)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "checkpoint saved" in err
    assert not (out / "final.json").exists()
    subprocess.run(student_cmd(tiny_folder, out), cwd=REPO, check=True, capture_output=True, timeout=300)
    assert_same_run(out, uninterrupted)


def test_truncated_run_checkpoint_is_reported_and_kept(tiny_args, tmp_path, capsys):
    argv = tiny_args(tmp_path / "r", "--method", "ce", "--iters", "4")
    original = RunDir.save_checkpoint

    def stop_after_first(self, state):
        original(self, state)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RunDir, "save_checkpoint", stop_after_first)
        with pytest.raises(KeyboardInterrupt):
            train_student.main(train_student.get_args_parser().parse_args(argv))
    path = tmp_path / "r" / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:1000])
    code, err = cli(train_student, argv, capsys)
    assert code == 2 and "corrupt or truncated" in err
    assert path.stat().st_size == 1000  # left for the user to inspect, not deleted


def test_nan_loss_stops_with_iteration_and_part_and_keeps_last_good(tiny_args, tmp_path, monkeypatch):
    from utils.distill import base

    calls = {"n": 0}
    original = base.Classification.forward

    def poisoned(self, x, y):
        logits, losses = original(self, x, y)
        calls["n"] += 1
        if calls["n"] >= 3:  # iteration 3 of the run
            losses["ce"] = losses["ce"] * float("nan")
        return logits, losses

    monkeypatch.setattr(base.Classification, "forward", poisoned)
    argv = tiny_args(tmp_path / "r", "--method", "ce", "--iters", "6")
    with pytest.raises(TrainingDiverged, match=r"iteration 3 \(parts: ce\)"):
        train_student.main(train_student.get_args_parser().parse_args(argv))
    ckpt = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=False)
    assert ckpt["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["modules"]["model"].values() if v.is_floating_point())
    assert not (tmp_path / "r" / "final.json").exists()


def test_one_writer_per_folder_and_stale_lock_is_free(tmp_path):
    first = RunDir(tmp_path / "r", {"a": 1})
    first.start()
    with pytest.raises(UserError, match="in use by another training process"):
        RunDir(tmp_path / "r", {"a": 1}).start()
    first.close()
    again = RunDir(tmp_path / "r", {"a": 1})
    again.start()  # a lock file left behind does not block once its holder is gone
    again.close()
    assert (tmp_path / "r" / ".lock").exists()
