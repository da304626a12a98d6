"""Decoder likelihoods p(x|z) chosen by name, each evaluated through a fused op.

A likelihood owns three things: how many parameters per pixel the decoder must emit
(``n_params``), how raw images in [0, 1] are turned into its targets (``prepare``), and
the log-probability of those targets given the decoder output (``log_prob``). The decoder
output always has shape ``(*B, n_params, D)`` with ``D`` the number of pixels.

To compare likelihoods on the same footing every likelihood also knows how to turn its
log-probability into a *discrete* log-probability of the 8-bit image (``log_256_offset``):
a likelihood over ``k`` equal bins of the 256 grey levels spreads the mass of a bin
uniformly over the ``256 / k`` levels inside it, and a continuous density over uniformly
dequantised data ``(level + u) / 256`` gives a lower bound on the discrete probability
(Theis et al., 2016). Both give ``log P(level) >= log p(target) - D * log(256 / k)``
with ``k = 1`` for continuous densities.
"""

from __future__ import annotations

import math
from types import ModuleType

import torch
from torch import Tensor, nn

__all__ = [
    "LIKELIHOODS",
    "BernoulliLikelihood",
    "BetaLikelihood",
    "CategoricalLikelihood",
    "GaussianLikelihood",
    "Likelihood",
    "make_likelihood",
]


def _levels(images: Tensor) -> Tensor:
    """Integer grey levels 0..255 from images in [0, 1] (or pass int64 levels through)."""
    if images.dtype == torch.int64:
        return images
    return torch.round(images * 255.0).clamp_(0, 255).to(torch.int64)


def _select(t: Tensor, index: Tensor | None) -> Tensor:
    """Keep the pixels ``index`` of the last dimension (or everything when ``None``)."""
    return t if index is None else t.index_select(-1, index)


class Likelihood(nn.Module):
    """Base class of the decoder likelihoods (see the module docstring)."""

    name: str = ""
    n_params: int = 1
    bins: int = 1  # 1 = continuous density on [0, 1]
    discrete: bool = False

    def prepare(self, images: Tensor) -> Tensor:
        """Turn a batch of images in [0, 1], shape ``(B, ...)``, into flat targets ``(B, D)``."""
        return images.flatten(1)

    def log_prob(
        self, out: Tensor, x: Tensor, ops: ModuleType, index: Tensor | None = None
    ) -> Tensor:
        """Summed log p(x|z) over pixels; ``out`` is ``(*B, n_params, D)``, ``x`` ``(*B', D)``.

        ``index`` (int64, 1-D) restricts the sum to a subset of pixels shared by the batch.
        """
        raise NotImplementedError

    def mean(self, out: Tensor) -> Tensor:
        """Expected image in [0, 1], shape ``(*B, D)``."""
        raise NotImplementedError

    def sample(self, out: Tensor) -> Tensor:
        """A draw from p(x|z) mapped to [0, 1], shape ``(*B, D)``."""
        raise NotImplementedError

    def log_256_offset(self, num_pixels: int) -> float:
        """Nats to subtract from ``log_prob`` to get a bound on log P of the 8-bit image."""
        return num_pixels * math.log(256.0 / self.bins)

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


class BernoulliLikelihood(Likelihood):
    """Bernoulli pixels with logits from the decoder (``ops.bernoulli_log_prob``).

    ``binarize``: ``None`` uses the data as given (already binary or grey values as
    "soft" targets), ``"threshold"`` maps grey levels >= 128 to 1 (two bins of 128
    levels each, which makes the 8-bit comparison exact).
    """

    name = "bernoulli"
    n_params = 1

    def __init__(self, binarize: str | None = None) -> None:
        super().__init__()
        if binarize not in (None, "threshold"):
            raise ValueError(f"binarize must be None or 'threshold', got {binarize!r}")
        self.binarize = binarize
        self.bins = 2

    def prepare(self, images: Tensor) -> Tensor:
        x = images.flatten(1)
        if self.binarize == "threshold":
            return (_levels(x) >= 128).to(torch.float32)
        if not x.is_floating_point():
            return x.to(torch.float32) / 255.0
        return x.to(torch.float32)

    def log_prob(
        self, out: Tensor, x: Tensor, ops: ModuleType, index: Tensor | None = None
    ) -> Tensor:
        logits = _select(out[..., 0, :], index)
        x = _select(x, index).to(logits.dtype)
        return ops.bernoulli_log_prob(logits, x.expand_as(logits))

    def mean(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out[..., 0, :])

    def sample(self, out: Tensor) -> Tensor:
        return torch.bernoulli(self.mean(out))


class GaussianLikelihood(Likelihood):
    """Gaussian pixels: decoder mean (through a sigmoid) and a learned per-pixel variance.

    With ``dequantize=True`` (default) targets are ``(level + u) / 256`` with
    ``u ~ U(0, 1)``, so the density cannot collapse onto the 0/1 pixel values.
    """

    name = "gaussian"
    n_params = 1

    def __init__(self, num_pixels: int = 784, dequantize: bool = True) -> None:
        super().__init__()
        self.dequantize = dequantize
        self.logvar = nn.Parameter(torch.full((num_pixels,), math.log(0.05)))

    def prepare(self, images: Tensor) -> Tensor:
        x = images.flatten(1)
        if self.dequantize:
            return (_levels(x).to(torch.float32) + torch.rand(x.shape, device=x.device)) / 256.0
        return x.to(torch.float32)

    def log_prob(
        self, out: Tensor, x: Tensor, ops: ModuleType, index: Tensor | None = None
    ) -> Tensor:
        mean = _select(torch.sigmoid(out[..., 0, :]), index)
        logvar = _select(self.logvar, index).to(mean.dtype).expand_as(mean)
        return ops.gaussian_log_prob(_select(x, index).to(mean.dtype).expand_as(mean), mean, logvar)

    def mean(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out[..., 0, :])

    def sample(self, out: Tensor) -> Tensor:
        m = self.mean(out)
        return (m + torch.randn_like(m) * torch.exp(0.5 * self.logvar)).clamp(0.0, 1.0)


class BetaLikelihood(Likelihood):
    """Beta pixels with concentrations ``softplus(out) + 1e-3`` (``ops.beta_log_prob``).

    Targets are dequantised like the Gaussian's, so they lie strictly inside (0, 1).
    """

    name = "beta"
    n_params = 2

    def __init__(self, dequantize: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.dequantize = dequantize
        self.eps = eps

    def prepare(self, images: Tensor) -> Tensor:
        x = images.flatten(1)
        if self.dequantize:
            return (_levels(x).to(torch.float32) + torch.rand(x.shape, device=x.device)) / 256.0
        return x.to(torch.float32)

    def _conc(self, out: Tensor) -> tuple[Tensor, Tensor]:
        conc = nn.functional.softplus(out) + 1e-3
        return conc[..., 0, :], conc[..., 1, :]

    def log_prob(
        self, out: Tensor, x: Tensor, ops: ModuleType, index: Tensor | None = None
    ) -> Tensor:
        alpha, beta = self._conc(out)
        alpha, beta = _select(alpha, index), _select(beta, index)
        x = _select(x, index).to(alpha.dtype).expand_as(alpha)
        return ops.beta_log_prob(x, alpha, beta, eps=self.eps)

    def mean(self, out: Tensor) -> Tensor:
        alpha, beta = self._conc(out)
        return alpha / (alpha + beta)

    def sample(self, out: Tensor) -> Tensor:
        alpha, beta = self._conc(out)
        return torch.distributions.Beta(alpha, beta).sample()


class CategoricalLikelihood(Likelihood):
    """Categorical pixels over ``k`` equal bins of the 256 grey levels."""

    name = "categorical"
    discrete = True

    def __init__(self, k: int = 4) -> None:
        super().__init__()
        if not isinstance(k, int) or k < 2 or k > 256 or 256 % k != 0:
            raise ValueError(
                f"k (number of bins) must be an integer divisor of 256 >= 2, got {k!r}"
            )
        self.k = k
        self.n_params = k
        self.bins = k

    def prepare(self, images: Tensor) -> Tensor:
        return torch.div(_levels(images.flatten(1)) * self.k, 256, rounding_mode="floor")

    def log_prob(
        self, out: Tensor, x: Tensor, ops: ModuleType, index: Tensor | None = None
    ) -> Tensor:
        logits = _select(out, index).transpose(-1, -2)  # (*B, D, k)
        x = _select(x, index).to(torch.int64).expand(logits.shape[:-1])
        return ops.categorical_log_prob(logits, x)

    def _centres(self, out: Tensor) -> Tensor:
        return (torch.arange(self.k, device=out.device, dtype=out.dtype) + 0.5) / self.k

    def mean(self, out: Tensor) -> Tensor:
        probs = torch.softmax(out, dim=-2)
        return (probs * self._centres(out)[:, None]).sum(-2)

    def sample(self, out: Tensor) -> Tensor:
        idx = torch.distributions.Categorical(logits=out.transpose(-1, -2)).sample()
        return self._centres(out)[idx]

    def extra_repr(self) -> str:
        return f"name={self.name!r}, k={self.k}"


LIKELIHOODS = ("bernoulli", "gaussian", "beta", "categorical")


def make_likelihood(
    name: str, num_pixels: int = 784, categories: int = 4, binarize: str | None = None
) -> Likelihood:
    """Build a likelihood by name (``bernoulli``, ``gaussian``, ``beta``, ``categorical``)."""
    if name == "bernoulli":
        return BernoulliLikelihood(binarize=binarize)
    if name == "gaussian":
        return GaussianLikelihood(num_pixels=num_pixels)
    if name == "beta":
        return BetaLikelihood()
    if name == "categorical":
        return CategoricalLikelihood(k=categories)
    raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {name!r}")
