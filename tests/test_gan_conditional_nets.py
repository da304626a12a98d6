"""Class-conditional GAN networks (issue 25): conditional BatchNorm in the generators
(de Vries et al. 2017) and the projection discriminator (Miyato & Koyama 2018)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dgm_ext.gan.models import (
    ConditionalBatchNorm,
    DCGANCritic,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
)


def test_conditional_batchnorm_is_the_class_affine_of_batch_statistics():
    torch.manual_seed(0)
    cbn = ConditionalBatchNorm(5, num_classes=3, dim=2)
    with torch.no_grad():
        cbn.gamma.weight.normal_()
        cbn.beta.weight.normal_()
    x, y = torch.randn(6, 5, 4, 4), torch.tensor([0, 2, 1, 1, 0, 2])
    mean = x.mean((0, 2, 3), keepdim=True)
    var = x.var((0, 2, 3), unbiased=False, keepdim=True)
    normed = (x - mean) / torch.sqrt(var + 1e-5)
    want = cbn.gamma.weight[y][:, :, None, None] * normed + cbn.beta.weight[y][:, :, None, None]
    torch.testing.assert_close(cbn(x, y), want, rtol=1e-5, atol=1e-5)
    fresh = ConditionalBatchNorm(5, 3, dim=1)  # identity affine at initialisation
    x1 = torch.randn(8, 5)
    want = F.batch_norm(x1, None, None, training=True)
    torch.testing.assert_close(fresh(x1, y.repeat(2)[:8]), want)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MLPGenerator(z_dim=8, num_classes=10),
        lambda: DCGANGenerator(z_dim=8, width=8, channels=1, image_size=28, num_classes=10),
        lambda: DCGANGenerator(z_dim=8, width=8, image_size=64, num_classes=10),
    ],
)
def test_generators_follow_the_label(make):
    torch.manual_seed(0)
    g = make()
    for m in g.modules():
        if isinstance(m, ConditionalBatchNorm):
            torch.nn.init.normal_(m.gamma.weight, 1.0, 0.5)
            torch.nn.init.normal_(m.beta.weight, 0.0, 0.5)
    g.eval()  # running statistics: each sample's output depends on its own label only
    z = torch.randn(4, 8)
    a = g(z, torch.tensor([0, 1, 2, 3]))
    b = g(z, torch.tensor([0, 5, 2, 7]))
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])  # same labels, same images
    assert not torch.allclose(a[1], b[1]) and not torch.allclose(a[3], b[3])


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda: MLPDiscriminator(in_features=784, num_classes=10, dropout=0.0), (1, 28, 28)),
        (lambda: DCGANCritic(width=8, channels=1, image_size=28, num_classes=10), (1, 28, 28)),
        (lambda: DCGANCritic(width=8, num_classes=10, spectral_norm=True), (3, 32, 32)),
    ],
)
def test_projection_adds_the_label_embedding_times_the_features(make, shape):
    """score(x, y) = psi(phi(x)) + <embed(y), phi(x)>: phi is captured at the input of the
    last linear layer psi, the class term computed here from the embedding."""
    torch.manual_seed(0)
    critic = make().eval()
    x, y = torch.randn(3, *shape), torch.tensor([4, 0, 9])
    phi = {}
    psi = critic.net[-1]
    psi.register_forward_hook(lambda m, inp, out: phi.__setitem__("v", inp[0].detach()))
    got = critic(x, y)
    e = critic.projection.embed(y).detach()  # spectrally normalised where the critic is
    want = psi(phi["v"]).squeeze(-1) + (e * phi["v"]).sum(-1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    other = critic(x, torch.tensor([5, 1, 2]))
    assert not torch.allclose(got, other)  # the label changes the score


def test_labels_are_checked():
    g, c = MLPGenerator(z_dim=4, num_classes=3), MLPDiscriminator(num_classes=3)
    with pytest.raises(ValueError, match=r"class-conditional .*pass labels y"):
        g(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"labels y must be int64 of shape \(2,\)"):
        c(torch.randn(2, 784), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="not class-conditional"):
        MLPGenerator(z_dim=4)(torch.randn(2, 4), torch.tensor([0, 1]))
    # an unconditional network keeps its state-dict keys (old files load)
    assert (
        set(MLPGenerator(z_dim=4).state_dict()) == {k for k in MLPGenerator(z_dim=4).state_dict()}
        and "net.3.running_mean" in MLPGenerator(z_dim=4).state_dict()
    )
