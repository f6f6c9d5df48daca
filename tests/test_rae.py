"""The RAE paraphraser (Table 1's "RAE" column): k = 2 only, and a penalty that matters."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import train_paraphraser
from helpers import run_cli, tiny_runs  # noqa: F401  (tiny_runs: a pytest fixture)
from paraphraser import Paraphraser
from utils.distill.paraphrase import ParaphraserTraining, factor_l1_penalty, reconstruction_loss


def parsed(*flags):
    return train_paraphraser.resolve(train_paraphraser.get_args_parser().parse_args(
        ["--teacher", "T", "--out", "O", "--iters", "10", *flags]))


def test_k_defaults_per_kind():
    assert parsed().k == 0.5
    assert parsed("--kind", "cae").k == 0.5
    assert parsed("--kind", "rae").k == 2.0  # no --k given: the RAE's k
    assert parsed("--kind", "rae", "--k", "2").k == 2.0  # the one k it accepts
    assert parsed("--k", "3").k == 3.0


def test_rae_with_another_k_is_a_one_line_error(capsys, tmp_path):
    code, err = run_cli(train_paraphraser, ["--teacher", tmp_path / "none", "--kind", "rae", "--k", "0.5",
                                            "--out", tmp_path / "out"], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "--kind rae" in err and "k = 2" in err and "--k 0.5" in err
    assert not (tmp_path / "out").exists()


def test_rae_lambda_defaults():
    """lambda by --bn for rae; the other kinds have no penalty and record none (their older
    folders' placeholder, the former default, is migrated to none as it is read)."""
    def resolved(*flags):
        return parsed(*flags).rae_lambda

    assert resolved("--kind", "rae") == 0.1  # cifar10: BN on
    assert resolved("--kind", "rae", "--dataset", "cifar100") == 0.03  # BN off
    assert resolved("--kind", "rae", "--no-bn") == 0.03
    assert resolved("--kind", "rae", "--rae-lambda", "0.5") == 0.5
    assert resolved() is resolved("--kind", "cae") is resolved("--rae-lambda", "0.5") is None


@pytest.mark.parametrize("bn", [True, False], ids=["bn", "no-bn"])
def test_default_lambda_measurably_pulls_the_factor(bn):
    """At the default --rae-lambda the penalty is not lost beside the reconstruction loss.

    A fresh k = 2 paraphraser on post-ReLU maps shaped like a ResNet's last group
    (64 x 8 x 8): the penalty's gradient on the factor F_T is at least 3% of the
    reconstruction loss's (measured: 6% with BN, 33% without), and with BN the penalty is
    at least 3% of the loss itself (7%; without BN the untrained encoder's factor is tiny,
    mean|F| ~0.03, so the share grows only as it trains: 1.7% after 200 steps on real
    maps, scripts/rae_lambda.py).  The former default, 1e-4, gave ~1e-4 of both."""
    lam = train_paraphraser.RAE_LAMBDA[bn]
    torch.manual_seed(0)
    x = torch.randn(32, 64, 8, 8).relu()
    paraphraser = Paraphraser(64, k=2, bn=bn)
    factor = paraphraser.encode(x)
    recon = reconstruction_loss(paraphraser.decode(factor), x)
    penalty = factor_l1_penalty(factor)
    g_pen, = torch.autograd.grad(penalty, factor, retain_graph=True)
    g_rec, = torch.autograd.grad(recon, factor)
    pull = (g_pen.norm() / g_rec.norm()).item()  # of lambda = 1
    assert lam * pull >= 0.03
    assert 1e-4 * pull < 0.002
    if bn:
        assert lam * (penalty / recon).item() >= 0.03
    # the same term is what the paraphraser stage adds to its loss
    _, losses = ParaphraserTraining(_Features(), paraphraser, factor_l1=lam)(x, None)
    torch.testing.assert_close(losses["factor_l1"], lam * penalty)


class _Features(nn.Module):
    """A stand-in teacher: its 'last group' is the input, as (logits, [features])."""

    def forward(self, x):
        return None, [x]


def test_rae_lambda_script_runs(tiny_runs, tiny_folder, capsys):
    """scripts/rae_lambda.py end to end on the tiny folder: one row per lambda, the
    lambda = 0 row without penalty, and every statistic where it can be."""
    path = Path(__file__).resolve().parent.parent / "scripts" / "rae_lambda.py"
    spec = importlib.util.spec_from_file_location("rae_lambda", path)
    rae_lambda = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rae_lambda)

    teacher = tiny_runs.teacher
    capsys.readouterr()  # the teacher run's own output
    rae_lambda.main(["--teacher", str(teacher), "--dataset", "folder", "--data-root", str(tiny_folder),
                     "--iters", "2", "--train-subset", "80", "--lambdas", "0", "0.1", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert [r["lambda"] for r in rows] == [0.0, 0.1]
    assert rows[0]["penalty_over_recon"] == 0 and rows[1]["penalty_over_recon"] > 0
    assert rows[0]["cos_to_first"] == pytest.approx(1.0)
    for r in rows:
        assert r["recon_holdout"] > 0 and r["mean_abs"] > 0
        assert all(0 <= r[k] <= 1 for k in ("frac_abs_1e-3", "frac_rel_1pct", "frac_negative", "hoyer"))
    assert rae_lambda.markdown(rows).count("\n") == 3
