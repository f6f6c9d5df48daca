"""Each loss against a value worked out by hand on a small tensor, and FT's invariances."""

import math

import pytest
import torch

from paraphraser import Paraphraser, load_official_paraphraser
from utils.distill.at import (ActivationTransfer, AttentionTransfer, activation_transfer_loss, attention_map,
                              attention_transfer_loss)
from utils.distill.base import KD, Distillation, kd_loss
from utils.distill.ft import factor_transfer_loss
from utils.distill.ktan import adversarial_loss, discriminator_loss, feature_matching_loss
from utils.distill.paraphrase import ParaphraserTraining, factor_l1_penalty, reconstruction_loss


def close(a, b, tol=1e-6):
    return abs(float(a) - float(b)) < tol


# ---------------------------------------------------------------- KD

# Two samples x three classes, worked out by hand at temperature T = 2.
KD_S = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]
KD_T = [[3.0, 1.0, 0.0], [2.0, 0.0, -2.0]]


def _kl_terms(T: float) -> list[list[float]]:
    """p_t log(p_t / p_s) per sample and class, p = softmax(logits / T)."""
    def softmax(z):
        e = [math.exp(v / T) for v in z]
        return [v / sum(e) for v in e]

    return [[pt * math.log(pt / ps) for pt, ps in zip(softmax(t), softmax(s))] for s, t in zip(KD_S, KD_T)]


def test_kd_against_the_formula():
    """T^2 KL(p_t^T || p_s^T), KL summed over classes and averaged over the batch."""
    logits_s, logits_t, T = KD_S, KD_T, 2.0
    kl = [sum(row) for row in _kl_terms(T)]
    expected = T * T * sum(kl) / 2
    assert close(kd_loss(torch.tensor(logits_s), torch.tensor(logits_t), T), expected)
    assert close(kd_loss(torch.tensor(logits_s), torch.tensor(logits_t), T, "hinton"), expected)
    assert close(kd_loss(torch.tensor(logits_t), torch.tensor(logits_t), T), 0.0)


def test_kd_at2017_form_against_the_attention_transfer_code():
    """The AT authors' `distillation()`: KLDiv averaged over batch AND classes, times 2 T^2
    (alpha applied by the task).  Worked out by hand on 2 samples x 3 classes."""
    logits_s, logits_t, T = KD_S, KD_T, 2.0
    terms = [v for row in _kl_terms(T) for v in row]
    expected = 2 * T * T * sum(terms) / 6  # mean over the 2 x 3 elements
    got = kd_loss(torch.tensor(logits_s), torch.tensor(logits_t), T, "at2017")
    assert close(got, expected)
    # 2/C of Hinton's form (C = 3 here)
    assert close(got, 2 / 3 * kd_loss(torch.tensor(logits_s), torch.tensor(logits_t), T, "hinton"))
    with pytest.raises(ValueError, match="KD form"):
        kd_loss(torch.tensor(logits_s), torch.tensor(logits_t), T, "other")


def test_kd_task_weights_ce_and_kd():
    torch.manual_seed(0)
    student, teacher = _Linear(), _Linear()
    x, y = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
    logits_s, losses = Distillation(student, teacher, KD(T=4.0, alpha=0.9))(x, y)
    ce = torch.nn.functional.cross_entropy(logits_s, y)
    torch.testing.assert_close(losses["ce"], 0.1 * ce)
    torch.testing.assert_close(losses["kd"], 0.9 * kd_loss(logits_s, teacher(x)[0], 4.0))
    _, losses = Distillation(student, teacher, KD(T=4.0, alpha=0.9, form="at2017"))(x, y)
    torch.testing.assert_close(losses["kd"], 0.9 * 2 / 3 * kd_loss(logits_s, teacher(x)[0], 4.0))


class _Linear(torch.nn.Module):
    """A 'network' with one group: its input; logits: a linear map of the mean."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3))), [x]


# ---------------------------------------------------------------- AT and F-ActT
# Student map, 2 channels of 2x2:  c0 = [[1,0],[0,0]], c1 = [[1,0],[0,2]];
# teacher map:                     c0 = [[0,1],[0,0]], c1 = [[0,1],[0,0]].
X_S = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 2.0]]]])
X_T = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]]])


def test_attention_map_is_normalized_channel_mean_of_squares():
    # mean over channels of x^2: [[1,0],[0,2]] -> [1,0,0,2] / sqrt(5)
    expected = torch.tensor([[1.0, 0.0, 0.0, 2.0]]) / math.sqrt(5)
    torch.testing.assert_close(attention_map(X_S), expected)


def test_at_loss_by_hand():
    # Q_s = [1,0,0,2]/sqrt5, Q_t = [0,1,0,0]; squared differences 1/5, 1, 0, 4/5 -> mean 2/4
    assert close(attention_transfer_loss([X_S], [X_T]), 0.5)
    # summed over groups
    assert close(attention_transfer_loss([X_S, X_S], [X_T, X_T]), 1.0)
    # channel counts may differ, spatial sizes may not
    assert close(attention_transfer_loss([X_S.repeat(1, 3, 1, 1)], [X_T]), 0.5)
    with pytest.raises(ValueError, match="pair 0"):
        attention_transfer_loss([X_S], [torch.ones(1, 2, 4, 4)])


def test_at_and_fact_tasks_apply_beta_as_the_at_code():
    """beta * sum_j (not beta/2): the AT authors' cifar.py adds `opt.beta * sum(loss_groups)`."""
    task = AttentionTransfer(_Linear(), _Linear(), pairs=[(0, 0)], beta=1000.0)
    assert close(task.transfer([X_S], [X_T])["at"], 1000.0 * 0.5, 1e-3)
    task = ActivationTransfer(_Linear(), _Linear(), pairs=[(0, 0)], beta=1000.0)
    assert close(task.transfer([X_S], [X_T])["fact"], 1000.0 * 0.5, 1e-3)
    task = ActivationTransfer(_Linear(), _Linear(), pairs=[(0, 0)], beta=1000.0, reduction="elements")
    assert close(task.transfer([X_S], [X_T])["fact"], 1000.0 * 0.25, 1e-3)


def test_fact_loss_by_hand():
    # x_s = [1,0,0,0, 1,0,0,2]/sqrt6, x_t = [0,1,0,0, 0,1,0,0]/sqrt2
    # squared differences: 1/6 + 1/2 + 1/6 + 1/2 + 4/6 = 2, over 4 positions (summed over
    # the 2 channels) or over 8 elements
    assert close(activation_transfer_loss([X_S], [X_T]), 0.5)
    assert close(activation_transfer_loss([X_S], [X_T], "positions"), 0.5)
    assert close(activation_transfer_loss([X_S], [X_T], "elements"), 0.25)
    # summed over groups
    assert close(activation_transfer_loss([X_S, X_S], [X_T, X_T]), 1.0)
    with pytest.raises(ValueError, match="pair 0"):
        activation_transfer_loss([X_S.repeat(1, 2, 1, 1)], [X_T])


# ---------------------------------------------------------------- FT

F_S = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)  # normalized: [0.6, 0.8]
F_T = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)  # normalized: [1, 0]


def test_ft_loss_by_hand():
    # |diff| = [0.4, 0.8]: p=1 -> mean 0.6; p=2 -> mean(0.16, 0.64) = 0.4
    assert close(factor_transfer_loss(F_S, F_T, p=1), 0.6)
    assert close(factor_transfer_loss(F_S, F_T, p=2), 0.4)
    # per-sample normalization and a batch mean
    both = factor_transfer_loss(torch.cat([F_S, F_T]), torch.cat([F_T, F_T]), p=1)
    assert close(both, 0.3)


@pytest.mark.parametrize("p", [1, 2])
def test_ft_loss_properties(p):
    torch.manual_seed(0)
    f_s, f_t = torch.randn(4, 8, 3, 3), torch.randn(4, 8, 3, 3)
    assert factor_transfer_loss(f_t, f_t, p) == 0
    base = factor_transfer_loss(f_s, f_t, p)
    assert base > 0
    torch.testing.assert_close(factor_transfer_loss(7.5 * f_s, f_t, p), base)
    torch.testing.assert_close(factor_transfer_loss(f_s, 0.01 * f_t, p), base)
    with pytest.raises(ValueError, match="differ in shape"):
        factor_transfer_loss(f_s, f_t[:, :4], p)


def test_ft_loss_matches_the_authors_reference(fixtures_dir):
    ref = torch.load(fixtures_dir / "official_paraphraser_resnet56_k0.5_reference.pt", weights_only=True)
    torch.testing.assert_close(factor_transfer_loss(ref["student_factor"], ref["factor"], p=1),
                               ref["ft_loss_l1"], atol=1e-6, rtol=0)
    # and with the factor our paraphraser computes from the released weights
    model = load_official_paraphraser(str(fixtures_dir / "official_paraphraser_resnet56_k0.5.pth"))
    with torch.no_grad():
        factor = model.encode(ref["input"])
    torch.testing.assert_close(factor_transfer_loss(ref["student_factor"], factor, p=1),
                               ref["ft_loss_l1"], atol=1e-5, rtol=0)


# ---------------------------------------------------------------- paraphraser losses

def test_reconstruction_loss_by_hand():
    a, b = torch.tensor([1.0, -2.0, 0.0]), torch.tensor([0.0, 0.0, 3.0])
    assert close(reconstruction_loss(a, b, "l1"), (1 + 2 + 3) / 3)
    assert close(reconstruction_loss(a, b, "l2"), (1 + 4 + 9) / 3)
    with pytest.raises(ValueError, match="l1, l2, unit-l2"):
        reconstruction_loss(a, b, "l3")


def test_rae_penalty_by_hand():
    factor = torch.tensor([[-1.0, 2.0], [3.0, -4.0]])
    assert close(factor_l1_penalty(factor), 2.5)
    # inside the paraphraser stage: lambda * mean |encode(x)|
    torch.manual_seed(0)
    teacher, paraphraser = _Linear(), Paraphraser(3, k=2, bn=False)
    task = ParaphraserTraining(teacher, paraphraser, factor_l1=0.5)
    x = torch.randn(2, 3, 4, 4)
    _, losses = task(x, None)
    torch.testing.assert_close(losses["factor_l1"], 0.5 * paraphraser.encode(x).abs().mean())


# ---------------------------------------------------------------- KTAN

def test_ktan_losses_by_hand():
    zero = torch.zeros(3, 1)
    assert close(adversarial_loss(zero), math.log(2))          # D undecided
    assert close(discriminator_loss(zero, zero), math.log(2))
    big = torch.full((3, 1), 30.0)
    assert close(discriminator_loss(big, -big), 0.0)          # D right on both
    assert close(adversarial_loss(big), 0.0)                   # student fools D
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 2.0]])
    assert close(feature_matching_loss(a, b), 2.0)             # (4 + 0) / 2


def test_ft_norm_reduction_is_the_per_image_p_norm():
    """--ft-reduction norm: ||q_T - q_S||_p per image, averaged over the batch (Eq. 3 as a
    p-norm); for p = 1 it is C*H*W times the mean reduction."""
    # normalized: q_s = [0.6, 0.8], q_t = [1, 0]; d = [-0.4, 0.8]
    assert close(factor_transfer_loss(F_S, F_T, 1, "norm"), 1.2)
    assert close(factor_transfer_loss(F_S, F_T, 2, "norm"), math.sqrt(0.16 + 0.64))
    assert close(factor_transfer_loss(F_S, F_T, 2), (0.16 + 0.64) / 2)
    assert close(factor_transfer_loss(F_S, F_T, 1, "norm"), 2 * factor_transfer_loss(F_S, F_T, 1))
