"""GAN networks: the MLP generator/discriminator for MNIST (any image shape) and the
DCGAN-style ("standard CNN", Miyato et al. 2018) generator/critic, defined for 32×32 and
generalised to square images of other sizes (28×28, 64×64, ...: see :func:`dcgan_levels`).
Generators take ``z`` of shape ``(N, z_dim)`` and return images in [-1, 1]; critics return
logits/scores of shape ``(N,)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = [
    "ConditionalBatchNorm",
    "DCGANCritic",
    "DCGANGenerator",
    "MLPDiscriminator",
    "MLPGenerator",
    "dcgan_levels",
]


class ConditionalBatchNorm(nn.Module):
    """BatchNorm whose scale and shift are chosen by the class label (de Vries et al. 2017;
    the generator of Miyato & Koyama 2018): ``gamma[y] * BN(x) + beta[y]``, initialised to
    the identity (gamma 1, beta 0). ``dim`` 1 for ``(N, C)``, 2 for ``(N, C, H, W)``."""

    def __init__(self, num_features: int, num_classes: int, dim: int = 2) -> None:
        super().__init__()
        bn = nn.BatchNorm2d if dim == 2 else nn.BatchNorm1d
        self.bn = bn(num_features, affine=False)
        self.gamma = nn.Embedding(num_classes, num_features)
        self.beta = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        shape = (x.shape[0], -1) + (1,) * (x.dim() - 2)
        return self.gamma(y).view(shape) * self.bn(x) + self.beta(y).view(shape)


class _Labelled(nn.Sequential):
    """A Sequential whose :class:`ConditionalBatchNorm` layers also receive the labels."""

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, y) if isinstance(layer, ConditionalBatchNorm) else layer(x)
        return x


def _bn(features: int, num_classes: int, dim: int) -> nn.Module:
    """Plain BatchNorm, or a :class:`ConditionalBatchNorm` for a class-conditional model."""
    if num_classes:
        return ConditionalBatchNorm(features, num_classes, dim)
    return nn.BatchNorm2d(features) if dim == 2 else nn.BatchNorm1d(features)


def _labels(y: Tensor | None, num_classes: int, n: int, who: str) -> Tensor | None:
    """Check the labels a (un)conditional network receives."""
    if not num_classes:
        if y is not None:
            raise ValueError(f"{who} is not class-conditional (num_classes=0) but got labels")
        return None
    if y is None:
        raise ValueError(f"{who} is class-conditional ({num_classes} classes): pass labels y")
    if y.shape != (n,) or y.dtype != torch.long:
        raise ValueError(f"{who}: labels y must be int64 of shape ({n},), got {y.dtype} "
                         f"{tuple(y.shape)}")  # fmt: skip
    return y


class _Projection(nn.Module):
    """The projection discriminator's class term (Miyato & Koyama 2018): ``<embed(y), phi>``
    added to the unconditional output ``psi(phi)``."""

    def __init__(self, num_classes: int, features: int, wrap) -> None:
        super().__init__()
        self.embed = wrap(nn.Embedding(num_classes, features))

    def forward(self, phi: Tensor, y: Tensor) -> Tensor:
        return (self.embed(y) * phi).sum(-1)


class MLPGenerator(nn.Module):
    """MNIST MLP generator (SPEC §2): z (N, 100) → images (N, 1, 28, 28) in [-1, 1].

    Linear(100, 128), LeakyReLU(0.2); then for 256, 512, 1024: Linear, BatchNorm1d,
    LeakyReLU(0.2); Linear(1024, 784), Tanh. 1,510,032 parameters (z_dim=100).
    """

    def __init__(
        self, z_dim: int = 100, image_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 0
    ) -> None:
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        self.image_shape = tuple(image_shape)
        out = 1
        for s in self.image_shape:
            out *= s
        layers: list[nn.Module] = [nn.Linear(z_dim, 128), nn.LeakyReLU(0.2)]
        for a, b in ((128, 256), (256, 512), (512, 1024)):
            layers += [nn.Linear(a, b), _bn(b, num_classes, 1), nn.LeakyReLU(0.2)]
        layers += [nn.Linear(1024, out), nn.Tanh()]
        self.net = _Labelled(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """``(N, z_dim)`` (and labels ``(N,)`` when class-conditional) → ``(N, *image_shape)``
        in [-1, 1]."""
        y = _labels(y, self.num_classes, z.shape[0], "MLPGenerator")
        return self.net(z, y).view(z.shape[0], *self.image_shape)


class MLPDiscriminator(nn.Module):
    """MNIST MLP discriminator (SPEC §2): images (N, ...) with 784 values → logits (N,).

    Flatten; Linear(784, 512), LeakyReLU(0.2), Dropout(p); Linear(512, 256), LeakyReLU(0.2),
    Dropout(p); Linear(256, 1). 533,505 parameters.
    """

    def __init__(self, in_features: int = 784, dropout: float = 0.3, num_classes: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, 512),
            nn.LeakyReLU(0.2),
            nn.Dropout(dropout),
            nn.Linear(512, 256),
            nn.LeakyReLU(0.2),
            nn.Dropout(dropout),
            nn.Linear(256, 1),
        )
        if num_classes:
            self.projection = _Projection(num_classes, 256, _identity)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """``(N, ...)`` (and labels ``(N,)`` when class-conditional) → logits ``(N,)``."""
        return _critic_out(self, x, y, "MLPDiscriminator")


def _check_width(width: int) -> None:
    if width < 2 or width % 2:
        raise ValueError(f"width must be an even integer >= 2, got {width!r}")


def dcgan_levels(image_size: int) -> tuple[int, int]:
    """``(n, base)``: the DCGAN networks work at ``n`` resolutions, from ``base x base`` to
    ``image_size = base * 2**n``, halving while the side stays even and at least 4·2
    (32: 3 levels from 4×4, as Miyato et al.; 64: 4 from 4×4; 28: 2 from 7×7)."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 4:
        raise ValueError(f"image_size must be an int >= 4, got {image_size!r}")
    n, base = 0, image_size
    while base % 2 == 0 and base // 2 >= 4:
        n, base = n + 1, base // 2
    if n == 0:
        raise ValueError(
            f"image_size {image_size} cannot be halved to a side >= 4; the DCGAN networks need "
            "a side of 8 or more with a factor 2 (e.g. 28, 32, 64)"
        )
    return n, base


class DCGANGenerator(nn.Module):
    """DCGAN "standard CNN" generator (Miyato et al. 2018, Table 3) with width ``w``.

    At 32×32: z (N, z_dim) → Linear(z_dim, 4·4·4w), BatchNorm1d, ReLU, reshape (4w, 4, 4);
    ConvTranspose(4w→2w, 4, s2, p1), BN, ReLU → 8×8; ConvTranspose(2w→w) → 16×16;
    ConvTranspose(w→w/2) → 32×32 (each + BN, ReLU); Conv(w/2→3, 3, s1, p1), Tanh.
    Default w=128 gives Miyato's 512/256/128/64 channels: 3,599,363 parameters (z_dim=100).
    Other sizes (:func:`dcgan_levels`: ``n`` upsamplings from ``base x base``) start at
    ``(w/2)·2**n`` channels and halve them at each upsampling, so the last block always has
    w/2 channels (64×64: 8w → ... → w/2 from 4×4; 28×28: 2w → w → w/2 from 7×7).
    """

    def __init__(
        self,
        z_dim: int = 100,
        width: int = 128,
        channels: int = 3,
        image_size: int = 32,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        _check_width(width)
        self.z_dim, self.width, self.image_size = z_dim, width, image_size
        self.num_classes = num_classes
        n, self.base = dcgan_levels(image_size)
        self.c0 = (width // 2) * 2**n
        area = self.base * self.base
        self.fc = _Labelled(
            nn.Linear(z_dim, area * self.c0), _bn(area * self.c0, num_classes, 1), nn.ReLU()
        )
        layers: list[nn.Module] = []
        c = self.c0
        for _ in range(n):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1), _bn(c // 2, num_classes, 2)]
            layers += [nn.ReLU()]
            c //= 2
        layers += [nn.Conv2d(width // 2, channels, 3, 1, 1), nn.Tanh()]
        self.net = _Labelled(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """``(N, z_dim)`` (and labels ``(N,)`` when class-conditional) → ``(N, channels,
        image_size, image_size)`` in [-1, 1]."""
        y = _labels(y, self.num_classes, z.shape[0], "DCGANGenerator")
        h = self.fc(z, y).view(z.shape[0], self.c0, self.base, self.base)
        return self.net(h, y)


class DCGANCritic(nn.Module):
    """DCGAN "standard CNN" discriminator (Miyato et al. 2018, Table 3) with width ``w``.

    At 32×32: (N, 3, 32, 32) → Conv(3→w/2, 3, s1, p1); Conv(w/2→w/2, 4, s2, p1) → 16×16;
    Conv(w/2→w, 3, s1); Conv(w→w, 4, s2) → 8×8; Conv(w→2w, 3, s1); Conv(2w→2w, 4, s2)
    → 4×4; Conv(2w→4w, 3, s1); each followed by LeakyReLU(0.1); flatten, Linear(4·4·4w, 1)
    → scores (N,). ``spectral_norm=True`` wraps every conv and linear layer in
    ``torch.nn.utils.parametrizations.spectral_norm``. Default w=128 (Miyato's
    64/64/128/128/256/256/512): 2,935,873 parameters (with or without spectral norm).
    Other sizes take ``n`` (stride-2, 3×3) pairs (:func:`dcgan_levels`), doubling the
    channels after each: the mirror of :class:`DCGANGenerator`.
    """

    def __init__(
        self,
        width: int = 128,
        channels: int = 3,
        spectral_norm: bool = False,
        image_size: int = 32,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        _check_width(width)
        self.width, self.image_size, self.num_classes = width, image_size, num_classes
        n, base = dcgan_levels(image_size)
        c = width // 2
        specs = [(channels, c, 3, 1)]
        for _ in range(n):
            specs += [(c, c, 4, 2), (c, 2 * c, 3, 1)]
            c *= 2
        wrap = _spectral if spectral_norm else _identity
        layers: list[nn.Module] = []
        for a, b, k, s in specs:
            layers += [wrap(nn.Conv2d(a, b, k, s, 1)), nn.LeakyReLU(0.1)]
        layers += [nn.Flatten(), wrap(nn.Linear(base * base * c, 1))]
        self.net = nn.Sequential(*layers)
        if num_classes:
            self.projection = _Projection(num_classes, base * base * c, wrap)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """``(N, channels, image_size, image_size)`` (and labels ``(N,)`` when
        class-conditional) → scores ``(N,)``."""
        return _critic_out(self, x, y, "DCGANCritic")


def _critic_out(critic: nn.Module, x: Tensor, y: Tensor | None, who: str) -> Tensor:
    """``psi(phi(x))`` (+ the projection term for labels ``y``): ``phi`` is everything before
    the critic's last linear layer ``psi``."""
    y = _labels(y, critic.num_classes, x.shape[0], who)
    if y is None:
        return critic.net(x).squeeze(-1)
    phi = critic.net[:-1](x)
    return critic.net[-1](phi).squeeze(-1) + critic.projection(phi, y)


def _spectral(m: nn.Module) -> nn.Module:
    return spectral_norm(m)


def _identity(m: nn.Module) -> nn.Module:
    return m
