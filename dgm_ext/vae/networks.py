"""Encoders and decoders of the VAE suite (MLP, the deeper vae-elbo MLP, convolutional).

Every encoder maps images ``(B, 1, 28, 28)`` (or flat ``(B, 784)``) to ``(mu, logvar, h)``
where ``h`` is the last hidden feature vector (used by amortised posterior flows).
Every decoder maps ``z`` of shape ``(*B, L)`` to raw likelihood parameters
``(*B, P, 784)`` with ``P`` the number of parameters per pixel.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = [
    "ARCHITECTURES",
    "ConvDecoder",
    "ConvEncoder",
    "DeepMLPDecoder",
    "DeepMLPEncoder",
    "MLPDecoder",
    "MLPEncoder",
    "make_decoder",
    "make_encoder",
]

ARCHITECTURES = ("mlp", "mlp-deep", "conv")


class MLPEncoder(nn.Module):
    """784 → hidden → (mu, logvar): the classic assignment encoder (ReLU)."""

    def __init__(self, latent_dim: int, hidden: int = 500, num_pixels: int = 784) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(num_pixels, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, latent_dim)
        self.logvar = nn.Linear(hidden, latent_dim)
        self.feature_dim = hidden

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(mu, logvar, h)``."""
        h = self.body(x.flatten(1))
        return self.mu(h), self.logvar(h), h


class MLPDecoder(nn.Module):
    """L → hidden → P·784 (ReLU)."""

    def __init__(
        self, latent_dim: int, n_params: int = 1, hidden: int = 500, num_pixels: int = 784
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_params * num_pixels)
        )
        self.n_params, self.num_pixels = n_params, num_pixels

    def forward(self, z: Tensor) -> Tensor:
        """Return raw likelihood parameters ``(*B, P, D)``."""
        return self.net(z).unflatten(-1, (self.n_params, self.num_pixels))


class DeepMLPEncoder(nn.Module):
    """vae-elbo reference encoder: 784 → 300 → 300 → 2L with ELU activations."""

    def __init__(self, latent_dim: int, hidden: int = 300, num_pixels: int = 784) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(num_pixels, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU()
        )
        self.head = nn.Linear(hidden, 2 * latent_dim)
        self.feature_dim = hidden

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(mu, logvar, h)``."""
        h = self.body(x.flatten(1))
        mu, logvar = self.head(h).chunk(2, dim=-1)
        return mu, logvar, h


class DeepMLPDecoder(nn.Module):
    """vae-elbo reference decoder: L → 300 → 300 → P·784 (ELU), output shifted by ``shift``.

    The shift (−5 for Bernoulli logits) makes the initial pixel probabilities small.
    """

    def __init__(
        self,
        latent_dim: int,
        n_params: int = 1,
        hidden: int = 300,
        num_pixels: int = 784,
        shift: float = -5.0,
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.ELU(),
            nn.Linear(hidden, hidden),
            nn.ELU(),
            nn.Linear(hidden, n_params * num_pixels),
        )
        self.n_params, self.num_pixels, self.shift = n_params, num_pixels, shift

    def forward(self, z: Tensor) -> Tensor:
        """Return raw likelihood parameters ``(*B, P, D)``."""
        return (self.net(z) + self.shift).unflatten(-1, (self.n_params, self.num_pixels))


class ConvEncoder(nn.Module):
    """Three 3×3 conv layers (32/64/128, ReLU) each followed by 2×2 max pooling; linear heads."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 14
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 7
            nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 3
            nn.Flatten(),
        )
        self.feature_dim = 128 * 3 * 3
        self.mu = nn.Linear(self.feature_dim, latent_dim)
        self.logvar = nn.Linear(self.feature_dim, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(mu, logvar, h)``."""
        h = self.body(x.reshape(-1, 1, 28, 28))
        return self.mu(h), self.logvar(h), h


class ConvDecoder(nn.Module):
    """Linear L → c×7×7, transposed convs to c/2×14×14 and c/4×28×28, 3×3 conv to P maps.

    ``width`` is ``c`` (128 mirrors the encoder; smaller is cheaper on CPU).
    """

    def __init__(self, latent_dim: int, n_params: int = 1, width: int = 128) -> None:
        super().__init__()
        if width < 4 or width % 4:
            raise ValueError(f"width must be a positive multiple of 4, got {width}")
        c = width
        self.fc = nn.Sequential(nn.Linear(latent_dim, c * 7 * 7), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(c // 2, c // 4, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c // 4, n_params, 3, padding=1),
        )
        self.n_params, self.width = n_params, width

    def forward(self, z: Tensor) -> Tensor:
        """Return raw likelihood parameters ``(*B, P, 784)``."""
        batch = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).view(-1, self.width, 7, 7)
        out = self.net(h).flatten(2)  # (N, P, 784)
        return out.reshape(*batch, self.n_params, 784)


def make_encoder(arch: str, latent_dim: int, hidden: int | None = None) -> nn.Module:
    """Encoder by architecture name (``mlp``, ``mlp-deep``, ``conv``)."""
    if arch == "mlp":
        return MLPEncoder(latent_dim, hidden=hidden or 500)
    if arch == "mlp-deep":
        return DeepMLPEncoder(latent_dim, hidden=hidden or 300)
    if arch == "conv":
        return ConvEncoder(latent_dim)
    raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")


def make_decoder(
    arch: str, latent_dim: int, n_params: int, hidden: int | None = None, shift: float = 0.0
) -> nn.Module:
    """Decoder by architecture name; ``shift`` is only used by ``mlp-deep``.

    ``hidden`` is the MLP width, or for ``conv`` the channel count of the first
    transposed convolution (default 128).
    """
    if arch == "mlp":
        return MLPDecoder(latent_dim, n_params, hidden=hidden or 500)
    if arch == "mlp-deep":
        return DeepMLPDecoder(latent_dim, n_params, hidden=hidden or 300, shift=shift)
    if arch == "conv":
        return ConvDecoder(latent_dim, n_params, width=hidden or 128)
    raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
