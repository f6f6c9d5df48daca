"""Paraphraser and translator: layer layout (paper Sec. 3.1, appendix), shapes, and the authors' checkpoint."""

import pytest
import torch
from torch import nn

from paraphraser import Paraphraser, factor_channels, load_official_paraphraser
from translator import Translator
from utils.distill.ft import factor_transfer_loss


def convs(module):
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


@pytest.mark.parametrize("k", [0.5, 1, 2, 3, 4])
@pytest.mark.parametrize("bn", [True, False])
def test_paraphraser_shapes(k, bn):
    p = Paraphraser(64, k=k, bn=bn)
    x = torch.rand(2, 64, 8, 8)
    factor = p.encode(x)
    assert factor.shape == (2, int(round(64 * k)), 8, 8)
    assert p.factor_channels == int(round(64 * k))
    assert p(x).shape == x.shape


def test_paraphraser_layout_matches_spec():
    p = Paraphraser(64, k=0.5, bn=True)
    enc, dec = convs(p.encoder), convs(p.decoder)
    assert [(c.in_channels, c.out_channels) for c in enc] == [(64, 64), (64, 32), (32, 32)]
    assert [(c.in_channels, c.out_channels) for c in dec] == [(32, 32), (32, 64), (64, 64)]
    assert all(isinstance(c, nn.ConvTranspose2d) for c in dec)
    for c in enc + dec:
        assert c.kernel_size == (3, 3) and c.stride == (1, 1) and c.padding == (1, 1)
        assert c.bias is not None
    # every layer, the decoder's last included: conv -> BN -> LeakyReLU(0.1)
    for layer in list(p.encoder) + list(p.decoder):
        kinds = [type(m) for m in layer]
        assert kinds[1:] == [nn.BatchNorm2d, nn.LeakyReLU]
        assert layer[-1].negative_slope == 0.1
    assert not any(isinstance(m, nn.BatchNorm2d) for m in Paraphraser(64, bn=False).modules())


def test_factor_channels_rounds():
    assert factor_channels(64, 0.5) == 32
    assert factor_channels(128, 0.5) == 64
    assert factor_channels(16, 0.3) == 5


def test_translator_layout():
    t = Translator(64, 32, bn=False)
    layers = convs(t)
    assert [(c.in_channels, c.out_channels) for c in layers] == [(64, 64), (64, 32), (32, 32)]
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) for c in layers)
    assert all(isinstance(layer[-1], nn.LeakyReLU) and layer[-1].negative_slope == 0.1 for layer in t)
    assert t(torch.rand(2, 64, 8, 8)).shape == (2, 32, 8, 8)
    # a wider teacher: C_s -> C_s -> kC_t -> kC_t
    assert Translator(64, 128)(torch.rand(2, 64, 8, 8)).shape == (2, 128, 8, 8)


def test_invalid_paraphraser_arguments():
    with pytest.raises(ValueError, match="kind"):
        Paraphraser(64, kind="vae")
    with pytest.raises(ValueError, match="layers"):
        Paraphraser(64, layers=4)
    with pytest.raises(ValueError, match="factor channels"):
        Paraphraser(4, k=0.1)


def test_official_checkpoint_reproduces_reference(fixtures_dir):
    model = load_official_paraphraser(str(fixtures_dir / "official_paraphraser_resnet56_k0.5.pth"))
    ref = torch.load(fixtures_dir / "official_paraphraser_resnet56_k0.5_reference.pt", weights_only=True)
    assert model.config == dict(in_channels=64, k=0.5, bn=False, layers=3, kind="conv")
    with torch.no_grad():
        torch.testing.assert_close(model.encode(ref["input"]), ref["factor"], atol=1e-5, rtol=0)
        torch.testing.assert_close(model(ref["input"]), ref["reconstruction"], atol=1e-5, rtol=0)
    loss = factor_transfer_loss(ref["student_factor"], ref["factor"], p=1)
    torch.testing.assert_close(loss, ref["ft_loss_l1"], atol=1e-6, rtol=0)
