"""The VAE model: encoder, decoder, likelihood, optional planar-flow posterior."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from dgm_ext.ops import resolve_ops
from dgm_ext.persistence import VAE_FORMAT, read_family, write_model_file
from dgm_ext.vae.likelihoods import Likelihood, make_likelihood
from dgm_ext.vae.networks import ARCHITECTURES, make_decoder, make_encoder
from dgm_ext.vae.planar import PlanarPosterior

__all__ = ["VAE", "VAEConfig", "build_vae", "load_vae", "resolve_ops", "save_vae"]

NUM_PIXELS = 784


@dataclass
class VAEConfig:
    """Everything needed to rebuild a VAE (stored next to its weights).

    ``arch``: ``mlp`` (784→500→L), ``mlp-deep`` (784→300→300→2L, ELU; vae-elbo) or
    ``conv``. ``hidden``: MLP width, or the conv decoder's first channel count.
    ``likelihood``: ``bernoulli``, ``gaussian``, ``beta`` or ``categorical``
    (``categories`` bins). ``binarize``: ``"threshold"`` to binarise grey inputs for the
    Bernoulli likelihood. ``decoder_shift``: added to the ``mlp-deep`` decoder output.
    ``flow_length`` > 0 adds a planar-flow posterior with that many layers.
    """

    arch: str = "mlp"
    latent_dim: int = 20
    hidden: int | None = None
    likelihood: str = "bernoulli"
    categories: int = 4
    binarize: str | None = None
    decoder_shift: float = 0.0
    flow_length: int = 0
    flow_amortized: bool = True

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, got {self.arch!r}")
        if not isinstance(self.latent_dim, int) or self.latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {self.latent_dim!r}")
        if self.flow_length < 0:
            raise ValueError(f"flow_length must be >= 0, got {self.flow_length}")


class VAE(nn.Module):
    """Variational autoencoder whose likelihoods, KL and sampling go through ``ops``.

    Implements the trainer protocol: ``training_step`` / ``validation_step`` take a batch
    ``(images, labels)`` (or images) with images in [0, 1] and return scalar metrics with
    ``loss`` = mean negative ELBO in nats per example.
    """

    def __init__(self, config: VAEConfig, ops: ModuleType | str | None = None) -> None:
        super().__init__()
        self.config = config
        self.likelihood: Likelihood = make_likelihood(
            config.likelihood, NUM_PIXELS, config.categories, config.binarize
        )
        self.encoder = make_encoder(config.arch, config.latent_dim, config.hidden)
        self.decoder = make_decoder(
            config.arch,
            config.latent_dim,
            self.likelihood.n_params,
            config.hidden,
            config.decoder_shift,
        )
        self.flow: PlanarPosterior | None = None
        if config.flow_length > 0:
            self.flow = PlanarPosterior(
                config.latent_dim,
                config.flow_length,
                self.encoder.feature_dim,
                amortized=config.flow_amortized,
            )
        self.set_ops(ops)

    # -- backend -----------------------------------------------------------------------
    def set_ops(self, ops: ModuleType | str | None) -> None:
        """Select the op backend (module objects are stored by name so the model deep-copies)."""
        self._ops_name = resolve_ops(ops).__name__

    @property
    def ops(self) -> ModuleType:
        """The op backend module in use."""
        return resolve_ops(self._ops_name)

    @property
    def latent_dim(self) -> int:
        """Size L of the latent space."""
        return self.config.latent_dim

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device

    # -- pieces ------------------------------------------------------------------------
    def prepare(self, images: Tensor) -> Tensor:
        """Likelihood targets ``(B, 784)`` from images in [0, 1]."""
        return self.likelihood.prepare(images.to(self.device))

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(mu, logvar, h)`` of q(z_0|x) for images in [0, 1] (or int64 levels 0..255)."""
        if not images.is_floating_point():
            images = images.to(torch.float32) / 255.0
        return self.encoder(images.to(self.device, torch.float32))

    def decode(self, z: Tensor) -> Tensor:
        """Raw likelihood parameters ``(*B, P, 784)``."""
        return self.decoder(z)

    def log_prior(self, z: Tensor) -> Tensor:
        """log N(z; 0, I) summed over the latent dimension."""
        zeros = torch.zeros_like(z)
        return self.ops.gaussian_log_prob(z, zeros, zeros)

    def sample_posterior(
        self, mu: Tensor, logvar: Tensor, h: Tensor | None = None, n_samples: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Draw z ~ q(z|x) (with the flow, if any) and return ``(z, log q(z|x))``.

        With ``n_samples`` the result has a leading sample dimension ``(S, B, L)``.
        """
        ops = self.ops
        if n_samples is not None:
            shape = (n_samples, *mu.shape)
            mu, logvar = mu.expand(shape), logvar.expand(shape)
        eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device)
        z = ops.reparameterize(mu, logvar, eps)
        log_q = ops.gaussian_log_prob(z, mu, logvar)
        if self.flow is not None:
            z, logdet = self.flow(z, h, ops)
            log_q = log_q - logdet
        return z, log_q

    # -- objective ---------------------------------------------------------------------
    def elbo_terms(self, images: Tensor, x: Tensor | None = None) -> dict[str, Tensor]:
        """Per-example ``elbo``, ``rec`` (log p(x|z)) and ``kl`` with one posterior sample.

        The KL is analytic (``ops.kl_normal_std``) without a flow and the single-sample
        estimate ``log q(z_K|x) − log p(z_K)`` with one.
        """
        ops = self.ops
        if x is None:
            x = self.prepare(images)
        mu, logvar, h = self.encode(images)
        if self.flow is None:
            z = ops.reparameterize(mu, logvar, torch.randn_like(mu))
            kl = ops.kl_normal_std(mu, logvar)
        else:
            z, log_q = self.sample_posterior(mu, logvar, h)
            kl = log_q - self.log_prior(z)
        rec = self.likelihood.log_prob(self.decode(z), x, ops)
        return {"elbo": rec - kl, "rec": rec, "kl": kl}

    def log_weights(self, images: Tensor, n_samples: int, x: Tensor | None = None) -> Tensor:
        """Importance log-weights ``log p(x|z) + log p(z) − log q(z|x)``, shape ``(S, B)``."""
        if x is None:
            x = self.prepare(images)
        mu, logvar, h = self.encode(images)
        z, log_q = self.sample_posterior(mu, logvar, h, n_samples)
        rec = self.likelihood.log_prob(self.decode(z), x, self.ops)
        return rec + self.log_prior(z) - log_q

    def bits_per_dim(self, nll: Tensor | float) -> Tensor | float:
        """Bits/dim of a negative log-likelihood in nats per example (see ``Likelihood``).

        For discrete likelihoods this is over their own (binary/binned) data, for the
        continuous ones over the 8-bit data (dequantisation bound).
        """
        offset = (
            0.0
            if self.likelihood.discrete or self.likelihood.name == "bernoulli"
            else (self.likelihood.log_256_offset(NUM_PIXELS))
        )
        return (nll + offset) / (NUM_PIXELS * math.log(2.0))

    def _step(self, batch: Tensor | tuple | list) -> dict[str, Tensor]:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        t = self.elbo_terms(images)
        elbo = t["elbo"].mean()
        return {
            "loss": -elbo,
            "elbo": elbo.detach(),
            "rec": -t["rec"].mean().detach(),
            "kl": t["kl"].mean().detach(),
            "bpd": self.bits_per_dim(-elbo.detach()),
        }

    def training_step(self, batch: Tensor | tuple | list) -> dict[str, Tensor]:
        """Trainer hook: mean negative ELBO (``loss``) and its parts on a batch."""
        return self._step(batch)

    def validation_step(self, batch: Tensor | tuple | list) -> dict[str, Tensor]:
        """Trainer hook: same metrics as ``training_step`` without gradients."""
        with torch.no_grad():
            return self._step(batch)

    def forward(self, images: Tensor) -> Tensor:
        """Per-example ELBO of a batch of images in [0, 1]."""
        return self.elbo_terms(images)["elbo"]

    # -- generation --------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int | None = None, z: Tensor | None = None, mean: bool = True) -> Tensor:
        """Images ``(N, 1, 28, 28)`` from the prior: decoder means or likelihood samples."""
        if z is None:
            if n is None:
                raise ValueError("sample needs n or z")
            z = torch.randn(n, self.latent_dim, device=self.device)
        out = self.decode(z.to(self.device))
        img = self.likelihood.mean(out) if mean else self.likelihood.sample(out)
        return img.reshape(-1, 1, 28, 28)

    @torch.no_grad()
    def reconstruct(self, images: Tensor) -> Tensor:
        """Decoder means at the encoder means, ``(N, 1, 28, 28)``."""
        mu, _, _ = self.encode(images)
        return self.likelihood.mean(self.decode(mu)).reshape(-1, 1, 28, 28)


def build_vae(ops: ModuleType | str | None = None, **kwargs: object) -> VAE:
    """Build a VAE from ``VAEConfig`` keyword arguments."""
    return VAE(VAEConfig(**kwargs), ops=ops)  # type: ignore[arg-type]


def save_vae(model: VAE, path: str | Path) -> Path:
    """Save config and weights to ``path`` (format ``dgm_ext.vae/1``, written atomically)."""
    return write_model_file(
        path, VAE_FORMAT, dataclasses.asdict(model.config), state_dict=model.state_dict()
    )


def vae_from_blob(blob: dict[str, Any], ops: ModuleType | str | None = None) -> VAE:
    """The VAE of a dict read from a ``save_vae`` file (tagged or not)."""
    model = VAE(VAEConfig(**blob["config"]), ops=ops)
    model.load_state_dict(blob["state_dict"])
    return model


def load_vae(path: str | Path, ops: ModuleType | str | None = None) -> VAE:
    """Load a VAE written by ``save_vae`` (``weights_only=True``; untagged files of earlier
    versions too)."""
    return vae_from_blob(read_family(path, VAE_FORMAT), ops)
