"""Encoders and decoders of the VAE suite (MLP, the deeper vae-elbo MLP, convolutional).

Every encoder maps images ``(B, C, H, W)`` (or flat ``(B, D)``, ``D = C·H·W``; MNIST:
``(1, 28, 28)``, ``D = 784``) to ``(mu, logvar, h)`` where ``h`` is the last hidden feature
vector (used by amortised posterior flows). Every decoder maps ``z`` of shape ``(*B, L)`` to
raw likelihood parameters ``(*B, P, D)`` with ``P`` the number of parameters per pixel. The
MLP networks take any image shape; the conv networks any ``H, W`` >= 8 that are multiples of
4 (the decoder doubles ``H/4 × W/4`` twice) and any channel count.

Class conditioning (Sohn et al. 2015): with ``num_classes`` K > 0 every network takes the
labels ``y`` (int64 ``(B,)``) as a second argument and sees them as one-hot vectors:

* MLP encoders: the one-hot vector is concatenated to the flattened image (D + K inputs);
* MLP and conv decoders: it is concatenated to ``z`` before the first layer (L + K inputs; a
  sample dimension in front of ``z`` shares the batch's labels);
* the conv encoder: K constant input channels (channel ``y`` all ones, the others zeros)
  beside the image, so its first convolution has 1 + K input channels. Through the zero
  padding those channels add a class-dependent map to the first convolution's output; it is
  computed once per class and gathered (the same function and weights as convolving the
  concatenated 1 + K channel input, at the cost of the unconditional convolution).

The encoder's features ``h`` then depend on the label, so the amortised planar-flow head that
reads them is conditional too. With K = 0 (the default) the networks, their parameters and
their outputs are those of the unconditional suite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


def _require_labels(y: Tensor | None, num_classes: int) -> Tensor:
    if y is None:
        raise ValueError(
            f"this network is class-conditional (num_classes={num_classes}): pass labels y"
        )
    return y


def one_hot(y: Tensor | None, num_classes: int, like: Tensor) -> Tensor:
    """One-hot codes of labels ``y`` ``(B,)`` as ``like``'s dtype, broadcast to
    ``(*like.shape[:-1], K)`` (leading sample dimensions share the batch's labels)."""
    code = F.one_hot(_require_labels(y, num_classes), num_classes).to(like.dtype)
    return code.expand(*like.shape[:-1], num_classes)


def _concat_label(t: Tensor, y: Tensor | None, num_classes: int) -> Tensor:
    """``t`` with the one-hot labels appended to its last dimension (``t`` itself when K=0)."""
    if not num_classes:
        return t
    return torch.cat([t, one_hot(y, num_classes, t)], dim=-1)


class MLPEncoder(nn.Module):
    """D → hidden → (mu, logvar): the classic assignment encoder (ReLU; MNIST: D = 784)."""

    def __init__(
        self, latent_dim: int, hidden: int = 500, num_pixels: int = 784, num_classes: int = 0
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(num_pixels + num_classes, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, latent_dim)
        self.logvar = nn.Linear(hidden, latent_dim)
        self.feature_dim, self.num_classes = hidden, num_classes

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(mu, logvar, h)`` (``y``: labels, for a class-conditional encoder)."""
        h = self.body(_concat_label(x.flatten(1), y, self.num_classes))
        return self.mu(h), self.logvar(h), h


class MLPDecoder(nn.Module):
    """L → hidden → P·D (ReLU)."""

    def __init__(
        self,
        latent_dim: int,
        n_params: int = 1,
        hidden: int = 500,
        num_pixels: int = 784,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim + num_classes, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_params * num_pixels),
        )
        self.n_params, self.num_pixels, self.num_classes = n_params, num_pixels, num_classes

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Return raw likelihood parameters ``(*B, P, D)`` (``y``: labels, if conditional)."""
        out = self.net(_concat_label(z, y, self.num_classes))
        return out.unflatten(-1, (self.n_params, self.num_pixels))


class DeepMLPEncoder(nn.Module):
    """vae-elbo reference encoder: D → 300 → 300 → 2L with ELU activations."""

    def __init__(
        self, latent_dim: int, hidden: int = 300, num_pixels: int = 784, num_classes: int = 0
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(num_pixels + num_classes, hidden),
            nn.ELU(),
            nn.Linear(hidden, hidden),
            nn.ELU(),
        )
        self.head = nn.Linear(hidden, 2 * latent_dim)
        self.feature_dim, self.num_classes = hidden, num_classes

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(mu, logvar, h)`` (``y``: labels, for a class-conditional encoder)."""
        h = self.body(_concat_label(x.flatten(1), y, self.num_classes))
        mu, logvar = self.head(h).chunk(2, dim=-1)
        return mu, logvar, h


class DeepMLPDecoder(nn.Module):
    """vae-elbo reference decoder: L → 300 → 300 → P·D (ELU), output shifted by ``shift``.

    The shift (−5 for Bernoulli logits) makes the initial pixel probabilities small.
    """

    def __init__(
        self,
        latent_dim: int,
        n_params: int = 1,
        hidden: int = 300,
        num_pixels: int = 784,
        shift: float = -5.0,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim + num_classes, hidden),
            nn.ELU(),
            nn.Linear(hidden, hidden),
            nn.ELU(),
            nn.Linear(hidden, n_params * num_pixels),
        )
        self.n_params, self.num_pixels, self.shift = n_params, num_pixels, shift
        self.num_classes = num_classes

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Return raw likelihood parameters ``(*B, P, D)`` (``y``: labels, if conditional)."""
        out = self.net(_concat_label(z, y, self.num_classes)) + self.shift
        return out.unflatten(-1, (self.n_params, self.num_pixels))


def check_conv_shape(image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """``(C, H, W)`` the conv networks take (H, W multiples of 4, at least 8); else a
    ``ValueError`` naming ``image_shape``."""
    c, h, w = (int(v) for v in image_shape)
    if c < 1 or h < 8 or w < 8 or h % 4 or w % 4:
        raise ValueError(
            "image_shape: the conv VAE needs C >= 1 and H, W >= 8 that are multiples of 4, "
            f"got {tuple(image_shape)} (the mlp architectures take any shape)"
        )
    return c, h, w


class ConvEncoder(nn.Module):
    """Three 3×3 conv layers (32/64/128, ReLU) each followed by 2×2 max pooling; linear heads.

    Class-conditional (``num_classes`` K > 0): K one-hot constant input channels beside the
    image (see the module docstring for how they are applied).
    """

    def __init__(
        self, latent_dim: int, num_classes: int = 0, image_shape: tuple[int, int, int] = (1, 28, 28)
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.image_shape = check_conv_shape(image_shape)
        c, h, w = self.image_shape
        self.body = nn.Sequential(
            nn.Conv2d(c + num_classes, 32, 3, padding=1),
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
        self.feature_dim = 128 * (h // 8) * (w // 8)
        self.mu = nn.Linear(self.feature_dim, latent_dim)
        self.logvar = nn.Linear(self.feature_dim, latent_dim)

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(mu, logvar, h)`` (``y``: labels, for a class-conditional encoder)."""
        x = x.reshape(-1, *self.image_shape)
        if not self.num_classes:
            h = self.body(x)
        else:
            h = self.body[1:](self._first_conv(x, y))
        return self.mu(h), self.logvar(h), h

    def _first_conv(self, x: Tensor, y: Tensor | None) -> Tensor:
        """The first convolution of ``[x, one-hot(y) broadcast over H, W]``, computed as the
        image's convolution plus the label channels' map for each example's class."""
        conv, k, c = self.body[0], self.num_classes, self.image_shape[0]
        y = _require_labels(y, k)
        out = F.conv2d(x, conv.weight[:, :c], conv.bias, padding=1)
        # channel c + j all ones, convolved with its weights: one (32, H, W) map per class j
        ones = x.new_ones(1, 1, *x.shape[-2:])
        label_w = conv.weight[:, c:].transpose(0, 1).reshape(-1, 1, *conv.weight.shape[-2:])
        maps = F.conv2d(ones, label_w, padding=1).view(k, conv.out_channels, *x.shape[-2:])
        return out + maps.index_select(0, y)


class ConvDecoder(nn.Module):
    """Linear L → c×(H/4)×(W/4), transposed convs to c/2×(H/2)×(W/2) and c/4×H×W, 3×3 conv to
    P·C maps (MNIST: c×7×7 → c/2×14×14 → c/4×28×28 → P maps).

    ``width`` is ``c`` (128 mirrors the encoder; smaller is cheaper on CPU).
    """

    def __init__(
        self,
        latent_dim: int,
        n_params: int = 1,
        width: int = 128,
        num_classes: int = 0,
        image_shape: tuple[int, int, int] = (1, 28, 28),
    ) -> None:
        super().__init__()
        if width < 4 or width % 4:
            raise ValueError(f"width must be a positive multiple of 4, got {width}")
        c = width
        self.num_classes = num_classes
        self.image_shape = check_conv_shape(image_shape)
        channels, h, w = self.image_shape
        self.start = (h // 4, w // 4)
        self.fc = nn.Sequential(
            nn.Linear(latent_dim + num_classes, c * self.start[0] * self.start[1]), nn.ReLU()
        )
        self.net = nn.Sequential(
            nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(c // 2, c // 4, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c // 4, n_params * channels, 3, padding=1),
        )
        self.n_params, self.width = n_params, width

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Return raw likelihood parameters ``(*B, P, D)`` (``y``: labels, if conditional)."""
        batch = z.shape[:-1]
        z = _concat_label(z, y, self.num_classes)
        h = self.fc(z.reshape(-1, z.shape[-1])).view(-1, self.width, *self.start)
        out = self.net(h)  # (N, P·C, H, W): parameter p of channel c is map p·C + c
        return out.reshape(*batch, self.n_params, out[0].numel() // self.n_params)


def make_encoder(
    arch: str,
    latent_dim: int,
    hidden: int | None = None,
    num_classes: int = 0,
    image_shape: tuple[int, int, int] = (1, 28, 28),
) -> nn.Module:
    """Encoder by architecture name (``mlp``, ``mlp-deep``, ``conv``) for images of
    ``image_shape``; ``num_classes`` > 0 makes it class-conditional."""
    d = image_shape[0] * image_shape[1] * image_shape[2]
    if arch == "mlp":
        return MLPEncoder(latent_dim, hidden=hidden or 500, num_pixels=d, num_classes=num_classes)
    if arch == "mlp-deep":
        return DeepMLPEncoder(
            latent_dim, hidden=hidden or 300, num_pixels=d, num_classes=num_classes
        )
    if arch == "conv":
        return ConvEncoder(latent_dim, num_classes=num_classes, image_shape=image_shape)
    raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")


def make_decoder(
    arch: str,
    latent_dim: int,
    n_params: int,
    hidden: int | None = None,
    shift: float = 0.0,
    num_classes: int = 0,
    image_shape: tuple[int, int, int] = (1, 28, 28),
) -> nn.Module:
    """Decoder by architecture name for images of ``image_shape``; ``shift`` is only used by
    ``mlp-deep``.

    ``hidden`` is the MLP width, or for ``conv`` the channel count of the first
    transposed convolution (default 128). ``num_classes`` > 0 makes it class-conditional.
    """
    k, d = num_classes, image_shape[0] * image_shape[1] * image_shape[2]
    if arch == "mlp":
        return MLPDecoder(latent_dim, n_params, hidden=hidden or 500, num_pixels=d, num_classes=k)
    if arch == "mlp-deep":
        return DeepMLPDecoder(
            latent_dim, n_params, hidden=hidden or 300, shift=shift, num_pixels=d, num_classes=k
        )
    if arch == "conv":
        return ConvDecoder(
            latent_dim, n_params, width=hidden or 128, num_classes=k, image_shape=image_shape
        )
    raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
