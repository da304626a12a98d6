"""A class-conditional GAN (issue 25): labels from the batch into the generator (conditional
BatchNorm) and the critic (projection), sampling by class, saving and loading; conditioning
honoured on a tiny two-class problem (top-half vs bottom-half bright 8x8 images)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from dgm_ext import load
from dgm_ext.gan import GAN, GANConfig, save_gan
from dgm_ext.train import Trainer, TrainerConfig


def _two_classes(n: int = 512) -> TensorDataset:
    y = torch.arange(n) % 2
    x = torch.full((n, 1, 8, 8), 0.1) + 0.05 * torch.rand(n, 1, 8, 8)
    x[y == 0, :, :4, :] += 0.8
    x[y == 1, :, 4:, :] += 0.8
    return TensorDataset(x, y)


def _class_of(images: torch.Tensor) -> torch.Tensor:
    """The toy problem's classifier: which half of the image is brighter."""
    top, bottom = images[:, :, :4].mean((1, 2, 3)), images[:, :, 4:].mean((1, 2, 3))
    return (bottom > top).long()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    gan = GAN(GANConfig(arch="mlp", image_shape=(1, 8, 8), num_classes=2, z_dim=16))
    run = tmp_path_factory.mktemp("cgan") / "run"
    cfg = TrainerConfig(run_dir=run, epochs=15, batch_size=64, progress=False)
    Trainer(gan, cfg).fit(_two_classes())
    torch.set_num_threads(n)
    return gan, run


def test_samples_are_of_the_class_asked_for(trained):
    gan, _ = trained
    for c in (0, 1):
        images = gan.sample(200, labels=c, generator=torch.Generator().manual_seed(1))
        accuracy = (_class_of(images) == c).float().mean().item()
        assert accuracy >= 0.9, (c, accuracy)
    # uniform labels by default; one label per image when given
    mixed = gan.sample(200, generator=torch.Generator().manual_seed(2))
    assert 0.3 < _class_of(mixed).float().mean().item() < 0.7
    wanted = torch.tensor([0, 1] * 50)
    assert (_class_of(gan.sample(100, labels=wanted)) == wanted).float().mean() >= 0.9


def test_save_and_load_keep_the_conditioning(trained, tmp_path):
    gan, _ = trained
    path = save_gan(gan, tmp_path / "g.pt")
    again = load(path)
    assert again.config.num_classes == 2
    z = torch.randn(6, 16)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    torch.testing.assert_close(again.decode(z, labels), gan.decode(z, labels), rtol=0, atol=0)


def test_labels_are_required_and_checked():
    gan = GAN(GANConfig(arch="mlp", image_shape=(1, 8, 8), num_classes=3, z_dim=4))
    with pytest.raises(ValueError, match=r"trains on \(images, labels\) batches"):
        gan._batch_labels(torch.zeros(2, 1, 8, 8), 2)
    with pytest.raises(ValueError, match=r"labels must be 2 class indices in \[0, 3\)"):
        gan._batch_labels((torch.zeros(2, 1, 8, 8), torch.tensor([0, 3])), 2)
    with pytest.raises(ValueError, match=r"labels must be 4 class indices"):
        gan.sample(4, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="not class-conditional"):
        GAN(GANConfig(arch="mlp", image_shape=(1, 8, 8), z_dim=4)).sample(2, labels=1)
