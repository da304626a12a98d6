"""GAN networks: the MLP generator/discriminator for MNIST (any image shape) and the
DCGAN-style ("standard CNN", Miyato et al. 2018) generator/critic, defined for 32×32 and
generalised to square images of other sizes (28×28, 64×64, ...: see :func:`dcgan_levels`).
Generators take ``z`` of shape ``(N, z_dim)`` and return images in [-1, 1]; critics return
logits/scores of shape ``(N,)``.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = [
    "DCGANCritic",
    "DCGANGenerator",
    "MLPDiscriminator",
    "MLPGenerator",
    "dcgan_levels",
]


class MLPGenerator(nn.Module):
    """MNIST MLP generator (SPEC §2): z (N, 100) → images (N, 1, 28, 28) in [-1, 1].

    Linear(100, 128), LeakyReLU(0.2); then for 256, 512, 1024: Linear, BatchNorm1d,
    LeakyReLU(0.2); Linear(1024, 784), Tanh. 1,510,032 parameters (z_dim=100).
    """

    def __init__(self, z_dim: int = 100, image_shape: tuple[int, ...] = (1, 28, 28)) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.image_shape = tuple(image_shape)
        out = 1
        for s in self.image_shape:
            out *= s
        layers: list[nn.Module] = [nn.Linear(z_dim, 128), nn.LeakyReLU(0.2)]
        for a, b in ((128, 256), (256, 512), (512, 1024)):
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.LeakyReLU(0.2)]
        layers += [nn.Linear(1024, out), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """``(N, z_dim)`` → ``(N, *image_shape)`` in [-1, 1]."""
        return self.net(z).view(z.shape[0], *self.image_shape)


class MLPDiscriminator(nn.Module):
    """MNIST MLP discriminator (SPEC §2): images (N, ...) with 784 values → logits (N,).

    Flatten; Linear(784, 512), LeakyReLU(0.2), Dropout(p); Linear(512, 256), LeakyReLU(0.2),
    Dropout(p); Linear(256, 1). 533,505 parameters.
    """

    def __init__(self, in_features: int = 784, dropout: float = 0.3) -> None:
        super().__init__()
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

    def forward(self, x: Tensor) -> Tensor:
        """``(N, ...)`` → logits ``(N,)``."""
        return self.net(x).squeeze(-1)


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
        self, z_dim: int = 100, width: int = 128, channels: int = 3, image_size: int = 32
    ) -> None:
        super().__init__()
        _check_width(width)
        self.z_dim, self.width, self.image_size = z_dim, width, image_size
        n, self.base = dcgan_levels(image_size)
        self.c0 = (width // 2) * 2**n
        area = self.base * self.base
        self.fc = nn.Sequential(
            nn.Linear(z_dim, area * self.c0), nn.BatchNorm1d(area * self.c0), nn.ReLU()
        )
        layers: list[nn.Module] = []
        c = self.c0
        for _ in range(n):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.BatchNorm2d(c // 2), nn.ReLU()]
            c //= 2
        layers += [nn.Conv2d(width // 2, channels, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """``(N, z_dim)`` → ``(N, channels, image_size, image_size)`` in [-1, 1]."""
        return self.net(self.fc(z).view(z.shape[0], self.c0, self.base, self.base))


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
    ) -> None:
        super().__init__()
        _check_width(width)
        self.width, self.image_size = width, image_size
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

    def forward(self, x: Tensor) -> Tensor:
        """``(N, channels, image_size, image_size)`` → scores ``(N,)``."""
        return self.net(x).squeeze(-1)


def _spectral(m: nn.Module) -> nn.Module:
    return spectral_norm(m)


def _identity(m: nn.Module) -> nn.Module:
    return m
