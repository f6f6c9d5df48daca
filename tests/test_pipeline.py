"""The three stages end to end: run folders, resume, frozen parts, real data."""

import json

import pytest
import torch

import train_paraphraser
import train_student
import train_teacher
from utils.distill.ft import FactorTransfer, Link
from utils.run import RunDir


def run(script, argv):
    args = script.get_args_parser().parse_args(argv)
    script.main(args)
    return args


def metrics(out):
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("wall_time_s")
    return lines


def final(out):
    return json.loads((out / "final.json").read_text())


def weights(out):
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    return {f"{m}.{k}": v for m, sd in ckpt["modules"].items() for k, v in sd.items()}


@pytest.fixture(scope="module")
def stages(tmp_path_factory, tiny_folder):
    """Teacher -> paraphraser -> FT student and the student alone, each a few iterations."""
    root = tmp_path_factory.mktemp("runs")
    common = ["--dataset", "folder", "--data-root", str(tiny_folder), "--iters", "4",
              "--eval-every", "2", "--batch-size", "16", "--progress", "off"]
    run(train_teacher, [*common, "--arch", "resnet20", "--out", str(root / "teacher")])
    run(train_paraphraser, [*common, "--teacher", str(root / "teacher"), "--k", "0.5",
                            "--out", str(root / "para")])
    run(train_student, [*common, "--method", "ft", "--arch", "resnet20", "--teacher", str(root / "teacher"),
                        "--paraphraser", str(root / "para"), "--out", str(root / "ft")])
    run(train_student, [*common, "--method", "ce", "--arch", "resnet20", "--out", str(root / "ce")])
    return root, common


def test_run_folders_are_complete(stages):
    root, _ = stages
    for name in ("teacher", "para", "ft", "ce"):
        out = root / name
        final = json.loads((out / "final.json").read_text())
        args = json.loads((out / "args.json").read_text())
        assert args["args"]["out"] == str(out) and "git_commit" in args
        assert final["iters"] == 4 and final["wall_time_s"] > 0
        assert [m["iter"] for m in metrics(out)] == [2, 4]
        assert list(out.glob("events.out.tfevents.*"))
    ft = json.loads((root / "ft" / "final.json").read_text())
    assert {"test_error_last", "test_error_best"} <= set(ft)
    assert 0 <= ft["test_error_best"] <= ft["test_error_last"] <= 100
    line = metrics(root / "ft")[-1]
    assert {"loss_ce", "loss_ft", "lr", "test_error", "train_error"} <= set(line)
    para = metrics(root / "para")[-1]
    assert {"loss_recon", "recon_holdout", "recon_test"} <= set(para)


def test_run_folders_say_what_the_run_is(stages):
    """final.json and args.json carry the run's identity: stage, method, networks, data,
    recipe, and for a student its teacher's and paraphrasers' identities (fingerprints tie
    them to the weights)."""
    from utils.checkpoint import fingerprint, load_classifier, load_paraphraser

    root, _ = stages
    runs = {name: final(root / name)["run"] for name in ("teacher", "para", "ft", "ce")}
    for name, identity in runs.items():
        assert json.loads((root / name / "args.json").read_text())["run"] == identity
    common = {"dataset": "folder", "recipe": "paper", "iters": 4, "seed": 0}
    assert runs["teacher"] == {"stage": "teacher", "arch": "resnet20", **common}
    def trained_with(name):
        return json.loads((root / name / "args.json").read_text())["args"]

    teacher = {"arch": "resnet20", "iters": 4, "seed": 0, "recipe": "paper", "dataset": "folder", "source": None,
               "fingerprint": fingerprint(load_classifier(root / "teacher")[0]), "args": trained_with("teacher")}
    assert runs["para"] == {"stage": "paraphraser", "kind": "conv", "k": 0.5, "layers": 3, "bn": True,
                            "group": -1, "teacher": teacher, **common}
    paraphraser = {"kind": "conv", "k": 0.5, "layers": 3, "bn": True, "group": -1, "iters": 4, "seed": 0,
                   "fingerprint": fingerprint(load_paraphraser(root / "para")[0]), "args": trained_with("para")}
    assert runs["ft"] == {"stage": "student", "method": "ft", "arch": "resnet20", "teacher": teacher,
                          "paraphrasers": [paraphraser], **common}
    assert runs["ce"] == {"stage": "student", "method": "ce", "arch": "resnet20", "teacher": None,
                          "paraphrasers": [], **common}


def test_checkpoints_rebuild_without_outside_help(stages):
    from models import build_model
    from paraphraser import Paraphraser

    root, _ = stages
    ckpt = torch.load(root / "teacher" / "checkpoint.pt", weights_only=False)
    model = build_model(ckpt["arch"], ckpt["num_classes"])
    model.load_state_dict(ckpt["modules"]["model"])
    para = torch.load(root / "para" / "checkpoint.pt", weights_only=False)
    Paraphraser(**para["paraphraser_config"]).load_state_dict(para["modules"]["paraphraser"])
    assert para["paraphraser_config"]["bn"] is True  # the paper's rule for CIFAR-10 data


def test_finished_run_reports_and_does_not_retrain(stages, capsys):
    root, common = stages
    before = (root / "ce" / "checkpoint.pt").stat().st_mtime_ns
    run(train_student, [*common, "--method", "ce", "--arch", "resnet20", "--out", str(root / "ce")])
    assert (root / "ce" / "checkpoint.pt").stat().st_mtime_ns == before
    assert "test_error_last" in capsys.readouterr().out


def test_resume_equals_uninterrupted(stages, monkeypatch, tmp_path):
    root, common = stages
    argv = [*common, "--method", "ft", "--arch", "resnet20", "--teacher", str(root / "teacher"),
            "--paraphraser", str(root / "para"), "--out", str(tmp_path / "resumed")]
    original = RunDir.save_checkpoint

    def save_then_die(self, state):
        original(self, state)
        if state["iteration"] == 2:
            raise KeyboardInterrupt("simulated kill after the first checkpoint")

    monkeypatch.setattr(RunDir, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(train_student, argv)
    assert not (tmp_path / "resumed" / "final.json").exists()
    monkeypatch.setattr(RunDir, "save_checkpoint", original)
    run(train_student, argv)
    assert metrics(tmp_path / "resumed") == metrics(root / "ft")
    a, b = weights(tmp_path / "resumed"), weights(root / "ft")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_run_other_seed_differs(stages, tmp_path):
    root, common = stages
    argv = [*common, "--method", "ce", "--arch", "resnet20"]
    run(train_student, [*argv, "--out", str(tmp_path / "again")])
    run(train_student, [*argv, "--seed", "1", "--out", str(tmp_path / "seed1")])
    assert metrics(tmp_path / "again") == metrics(root / "ce")
    assert metrics(tmp_path / "seed1") != metrics(root / "ce")


def test_frozen_parts_stay_frozen(stages):
    from models import build_model
    from translator import Translator
    from utils.checkpoint import load_classifier, load_paraphraser

    root, _ = stages
    teacher, _ = load_classifier(root / "teacher")
    paraphraser, _ = load_paraphraser(root / "para")
    before = {k: v.clone() for k, v in {**teacher.state_dict(), **paraphraser.state_dict()}.items()}
    student = build_model("resnet20", 10)
    task = FactorTransfer(student, teacher, Link(Translator(64, 32), paraphraser)).train()
    assert not teacher.training and not paraphraser.training and student.training
    optimizer = torch.optim.SGD([p for m in task.trainable().values() for p in m.parameters()], lr=0.1)
    _, losses = task(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    sum(losses.values()).backward()
    optimizer.step()
    assert all(p.grad is None for p in [*teacher.parameters(), *paraphraser.parameters()])
    assert all(p.grad is not None for p in task.trainable()["translator"].parameters())
    after = {**teacher.state_dict(), **paraphraser.state_dict()}
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included


@pytest.mark.slow
def test_real_cifar10_short_run_beats_chance(shared_cifar, tmp_path):
    """A few hundred iterations on 2,000 real CIFAR-10 images: the teacher, and an FT and
    an AT+KD student of it (both baselines' losses in one run), far above 10% accuracy.

    Short SGD runs are chaotic: their float trajectories, and so their final errors, differ
    between CPUs (seed 0's teacher / FT errors were 71.4 / 74.5 % on an AVX-512 Xeon and
    70.8 / 71.3 % here). The bounds are sized from the spread over seeds, a fair proxy for
    that. Seeds 0-7 of exactly this configuration (x86-64, torch CPU) gave
      teacher error %    70.8 67.9 63.7 66.7 67.5 68.0 63.7 72.0
      FT error %         72.0 69.7 68.4 66.4 68.7 69.3 66.6 71.8
      KD / AT error %    71.9 / 70.7, 69.3 / 68.6 (seeds 0, 1; on another CPU, whose teacher
                         and FT gave 70.6 / 70.6 and 67.7 / 70.0)
      AT+KD error %      73.0, 70.4 (student seeds 0, 1 of the seed-0 teacher, AMD EPYC)
      recon_holdout at iteration 40 / at 10    0.68 0.68 0.64 0.65 0.62 0.72 0.64 0.59
    Each error bound is >= 7.5 points above the worst result seen on any CPU and >= 8 points
    below chance (90 %; on 1,000 test images a network that has not learned scores 90 +- ~1).
    The paraphraser check is paired (the held-out loss at the end against the first
    evaluation): an untrained paraphraser's absolute loss (0.37-0.56 on these teachers,
    rising as its BatchNorm statistics adapt) overlaps what a short run reaches.
    Not learning fails every check: with --lr 1e-8 for all three stages the errors are
    90.0 / 90.0 % and the recon ratio 1.00; a paraphraser at lr 1e-8 on trained teachers
    (seeds 0, 4) ends at 1.28 / 1.22 times its first loss.
    """
    common = ["--dataset", "folder", "--data-root", str(shared_cifar), "--train-subset", "2000",
              "--test-subset", "1000", "--batch-size", "64", "--progress", "off"]
    run(train_teacher, [*common, "--arch", "resnet20", "--iters", "160", "--eval-every", "160",
                        "--out", str(tmp_path / "teacher")])
    run(train_paraphraser, [*common, "--teacher", str(tmp_path / "teacher"), "--iters", "40",
                            "--eval-every", "10", "--out", str(tmp_path / "para")])
    errors = {}
    for method, extra in (("ft", ["--paraphraser", str(tmp_path / "para")]), ("at+kd", [])):
        run(train_student, [*common, "--method", method, "--arch", "resnet20", "--teacher", str(tmp_path / "teacher"),
                            *extra, "--iters", "100", "--eval-every", "100", "--out", str(tmp_path / method)])
        errors[method] = json.loads((tmp_path / method / "final.json").read_text())["test_error_last"]
    teacher = json.loads((tmp_path / "teacher" / "final.json").read_text())
    recon = [m["recon_holdout"] for m in metrics(tmp_path / "para")]
    print("teacher", teacher["test_error_last"], "students", errors, "recon", recon)
    assert teacher["test_error_last"] < 80, teacher
    assert all(e < 82 for e in errors.values()), errors
    assert len(recon) == 4 and recon[-1] < 0.85 * recon[0], recon


def test_default_fast_paths_match_the_plain_run(stages, tmp_path):
    """On the CPU the default run folds the frozen teacher's and paraphraser's BatchNorms
    and trains channels-last: float32 rounding only, so the first step (same weights, same
    batch) logs the plain run's (--no-fold-bn --no-channels-last) losses to 1e-5, and
    final.json says which fast paths each used.  What follows the first update is looser:
    the student's BatchNorms see 16 near-constant-colour images, whose tiny channel
    variances amplify rounding (measured on these runs: test loss after one step 0.03-0.2%
    apart, from channels-last; the training losses 3e-4 apart after two steps, 2% after
    four), so the test loss after one step is held to 1%.  tests/test_fastpaths.py holds
    one step's gradients on real images to 1e-3 of their norm."""
    root, common = stages
    runs = {}
    for name, flags in (("fast", []), ("plain", ["--no-fold-bn", "--no-channels-last"])):
        run(train_student, [*common, "--method", "ft", "--arch", "resnet20", "--teacher", str(root / "teacher"),
                            "--paraphraser", str(root / "para"), "--iters", "1", "--eval-every", "1",
                            *flags, "--out", str(tmp_path / name)])
        runs[name] = metrics(tmp_path / name)
    (fast,), (plain,) = runs["fast"], runs["plain"]
    for key in ("loss_ce", "loss_ft"):
        assert fast[key] == pytest.approx(plain[key], rel=1e-5), (key, fast, plain)
    assert fast["test_loss"] == pytest.approx(plain["test_loss"], rel=1e-2), (fast, plain)
    assert final(tmp_path / "fast")["fast_paths"] == {"channels_last": True, "fold_bn": True}
    assert final(tmp_path / "plain")["fast_paths"] == {"channels_last": False, "fold_bn": False}
