"""The VAE model: encoder, decoder, likelihood, optional planar-flow posterior.

With ``VAEConfig.num_classes`` K >= 2 the VAE is class-conditional (CVAE, Sohn et al. 2015):
the label enters the encoder and the decoder, q(z | x, y) and p(x | z, y), with the prior
N(0, I) kept unconditional; its ELBO and importance-sampled likelihood bound log p(x | y).
Training takes the labels from the ``(images, labels)`` batch; ``sample(n, labels=...)``
draws images of the requested classes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from dgm_ext.labels import batch_labels, check_labels, sampling_labels
from dgm_ext.networks import build_network, network_spec
from dgm_ext.ops import resolve_ops
from dgm_ext.persistence import VAE_FORMAT, read_family, write_model_file
from dgm_ext.vae.likelihoods import Likelihood, make_likelihood
from dgm_ext.vae.networks import ARCHITECTURES, check_conv_shape, make_decoder, make_encoder
from dgm_ext.vae.planar import PlanarPosterior

__all__ = ["VAE", "VAEConfig", "build_vae", "load_vae", "resolve_ops", "save_vae"]

NUM_PIXELS = 784  # MNIST's, the default image shape (1, 28, 28)
MNIST_SHAPE = (1, 28, 28)


@dataclass
class VAEConfig:
    """Everything needed to rebuild a VAE (stored next to its weights).

    ``arch``: ``mlp`` (D→500→L), ``mlp-deep`` (D→300→300→2L, ELU; vae-elbo) or
    ``conv``, for images of ``image_shape`` ``(C, H, W)`` (D = C·H·W; default MNIST's
    ``(1, 28, 28)``; the conv networks need H, W >= 8, multiples of 4). ``hidden``: MLP
    width, or the conv decoder's first channel count.
    ``likelihood``: ``bernoulli``, ``gaussian``, ``beta`` or ``categorical``
    (``categories`` bins). ``binarize``: ``"threshold"`` to binarise grey inputs for the
    Bernoulli likelihood. ``decoder_shift``: added to the ``mlp-deep`` decoder output.
    ``flow_length`` > 0 adds a planar-flow posterior with that many layers.
    ``num_classes``: 0 (unconditional) or K >= 2 for a class-conditional VAE (labels one-hot
    into encoder and decoder, see :mod:`dgm_ext.vae.networks`); an amortised flow then reads
    the encoder features, which see the label, so the flow is conditional too.
    ``encoder`` / ``decoder``: a user's registered network (``{"name": ..., "kwargs": {...}}``
    or a name, see :mod:`dgm_ext.networks` for the contracts) instead of ``arch``'s.
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
    num_classes: int = 0
    image_shape: tuple[int, int, int] = MNIST_SHAPE
    encoder: dict[str, Any] | None = None
    decoder: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        shape = self.image_shape
        if (
            not isinstance(shape, (tuple, list))
            or len(shape) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)
        ):
            raise ValueError(f"image_shape must be (C, H, W) of positive ints, got {shape!r}")
        self.image_shape = tuple(shape)
        for role in ("encoder", "decoder"):
            spec = getattr(self, role)
            if spec is not None:
                setattr(self, role, network_spec(spec, role))
        if self.arch == "conv":
            check_conv_shape(self.image_shape)
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, got {self.arch!r}")
        if not isinstance(self.latent_dim, int) or self.latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {self.latent_dim!r}")
        if self.flow_length < 0:
            raise ValueError(f"flow_length must be >= 0, got {self.flow_length}")
        k = self.num_classes
        if isinstance(k, bool) or not isinstance(k, int) or k < 0 or k == 1:
            raise ValueError(
                f"num_classes must be 0 (unconditional) or an int >= 2, got {self.num_classes!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The config as saved: ``num_classes`` only when conditional and ``image_shape``
        only when not MNIST's, so such a model's file holds the config earlier versions wrote
        (and can read)."""
        d = dataclasses.asdict(self)
        if not self.num_classes:
            del d["num_classes"]
        if tuple(self.image_shape) == MNIST_SHAPE:
            del d["image_shape"]
        else:
            d["image_shape"] = list(self.image_shape)
        for role in ("encoder", "decoder"):
            if d[role] is None:
                del d[role]
        return d

    @property
    def num_pixels(self) -> int:
        """D = C·H·W, the number of modelled values per image."""
        c, h, w = self.image_shape
        return c * h * w


class VAE(nn.Module):
    """Variational autoencoder whose likelihoods, KL and sampling go through ``ops``.

    Implements the trainer protocol: ``training_step`` / ``validation_step`` take a batch
    ``(images, labels)`` (or images) with images in [0, 1] and return scalar metrics with
    ``loss`` = mean negative ELBO in nats per example. A class-conditional VAE
    (``num_classes`` > 0) needs the labels: from the batch when training, as ``labels`` (one
    class index per example, or an int for all) in ``encode``, ``decode``, ``elbo_terms``,
    ``log_weights``, ``forward``, ``sample`` and ``reconstruct``.
    """

    def __init__(self, config: VAEConfig, ops: ModuleType | str | None = None) -> None:
        super().__init__()
        self.config = config
        self.likelihood: Likelihood = make_likelihood(
            config.likelihood, config.num_pixels, config.categories, config.binarize
        )
        k, shape = config.num_classes, config.image_shape
        if config.encoder is not None:  # a user's network (dgm_ext.networks)
            self.encoder = build_network(config.encoder, "encoder")
        else:
            self.encoder = make_encoder(
                config.arch, config.latent_dim, config.hidden, num_classes=k, image_shape=shape
            )
        self.decoder = (
            build_network(config.decoder, "decoder")
            if config.decoder
            else make_decoder(
                config.arch,
                config.latent_dim,
                self.likelihood.n_params,
                config.hidden,
                config.decoder_shift,
                num_classes=k,
                image_shape=shape,
            )
        )
        self.flow: PlanarPosterior | None = None
        if config.flow_length > 0 and config.flow_amortized:
            if not isinstance(getattr(self.encoder, "feature_dim", None), int):
                raise ValueError(
                    "flow_length > 0 with an amortised flow reads the encoder's features: the "
                    "encoder must return (mu, logvar, h) and have an int feature_dim"
                )
        if config.flow_length > 0:
            self.flow = PlanarPosterior(
                config.latent_dim,
                config.flow_length,
                getattr(self.encoder, "feature_dim", 0),
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
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the modelled images."""
        return self.config.image_shape

    @property
    def num_pixels(self) -> int:
        """D = C·H·W."""
        return self.config.num_pixels

    @property
    def num_classes(self) -> int:
        """Number of classes K of a class-conditional VAE (0: unconditional)."""
        return self.config.num_classes

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device

    # -- labels ------------------------------------------------------------------------
    def check_labels(self, labels: int | Tensor | None, n: int) -> Tensor | None:
        """``n`` labels as int64 on the model's device (an int: that class for all), or
        ``None`` for an unconditional VAE (see :func:`dgm_ext.labels.check_labels`)."""
        return check_labels(labels, n, self.config.num_classes, self.device, "VAE")

    def labels_for(
        self, n: int, labels: int | Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor | None:
        """``n`` labels for sampling: ``None`` → uniform over the classes (from
        ``generator``), an int → that class, a tensor → as given (``(n,)``); ``None`` for an
        unconditional VAE."""
        return sampling_labels(n, labels, self.config.num_classes, self.device, "VAE", generator)

    def batch_labels(self, batch: Tensor | tuple | list, n: int) -> Tensor | None:
        """The labels of a training batch for a class-conditional VAE (``None`` otherwise)."""
        return batch_labels(batch, n, self.config.num_classes, self.device, "VAE")

    # -- pieces ------------------------------------------------------------------------
    def prepare(self, images: Tensor) -> Tensor:
        """Likelihood targets ``(B, D)`` from images in [0, 1] (``(B, C, H, W)`` or flat)."""
        if images.dim() > 1 and images[0].numel() != self.num_pixels:
            raise ValueError(
                f"images: this VAE models images of shape {self.image_shape} "
                f"({self.num_pixels} values), got {tuple(images.shape[1:])}"
            )
        return self.likelihood.prepare(images.to(self.device))

    def encode(
        self, images: Tensor, labels: int | Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(mu, logvar, h)`` of q(z_0|x) (q(z_0|x, y) with ``labels``) for images in [0, 1]
        (or int64 levels 0..255)."""
        return self._encode(images, self.check_labels(labels, images.shape[0]))

    def decode(self, z: Tensor, labels: int | Tensor | None = None) -> Tensor:
        """Raw likelihood parameters ``(*B, P, D)`` of p(x|z) (p(x|z, y) with ``labels``,
        one per example of the batch dimension ``B``, shared by leading sample dimensions)."""
        n = z.shape[-2] if z.dim() >= 2 else 1
        return self._decode(z, self.check_labels(labels, n))

    def _encode(self, images: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        if not images.is_floating_point():
            images = images.to(torch.float32) / 255.0
        images = images.to(self.device, torch.float32)
        # unconditional networks are called as before (and user encoders need no y)
        out = self.encoder(images) if y is None else self.encoder(images, y)
        if len(out) == 2:  # a user's encoder without features (dgm_ext.networks contract)
            return out[0], out[1], None
        return out

    def _decode(self, z: Tensor, y: Tensor | None) -> Tensor:
        out = self.decoder(z) if y is None else self.decoder(z, y)
        if out.dim() == z.dim():  # (*B, D): one parameter per value
            out = out.unsqueeze(-2)
        return out

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
    def elbo_terms(
        self, images: Tensor, x: Tensor | None = None, labels: int | Tensor | None = None
    ) -> dict[str, Tensor]:
        """Per-example ``elbo``, ``rec`` (log p(x|z)) and ``kl`` with one posterior sample.

        The KL is analytic (``ops.kl_normal_std``) without a flow and the single-sample
        estimate ``log q(z_K|x) − log p(z_K)`` with one. A class-conditional VAE needs
        ``labels``: the terms are then those of log p(x | y).
        """
        ops = self.ops
        y = self.check_labels(labels, images.shape[0])
        if x is None:
            x = self.prepare(images)
        mu, logvar, h = self._encode(images, y)
        if self.flow is None:
            z = ops.reparameterize(mu, logvar, torch.randn_like(mu))
            kl = ops.kl_normal_std(mu, logvar)
        else:
            z, log_q = self.sample_posterior(mu, logvar, h)
            kl = log_q - self.log_prior(z)
        rec = self.likelihood.log_prob(self._decode(z, y), x, ops)
        return {"elbo": rec - kl, "rec": rec, "kl": kl}

    def log_weights(
        self,
        images: Tensor,
        n_samples: int,
        x: Tensor | None = None,
        labels: int | Tensor | None = None,
    ) -> Tensor:
        """Importance log-weights ``log p(x|z) + log p(z) − log q(z|x)``, shape ``(S, B)``
        (``log p(x|z, y) + log p(z) − log q(z|x, y)`` with the ``labels`` of a conditional VAE).
        """
        y = self.check_labels(labels, images.shape[0])
        if x is None:
            x = self.prepare(images)
        mu, logvar, h = self._encode(images, y)
        z, log_q = self.sample_posterior(mu, logvar, h, n_samples)
        rec = self.likelihood.log_prob(self._decode(z, y), x, self.ops)
        return rec + self.log_prior(z) - log_q

    def bits_per_dim(self, nll: Tensor | float) -> Tensor | float:
        """Bits/dim of a negative log-likelihood in nats per example (see ``Likelihood``).

        For discrete likelihoods this is over their own (binary/binned) data, for the
        continuous ones over the 8-bit data (dequantisation bound).
        """
        offset = (
            0.0
            if self.likelihood.discrete or self.likelihood.name == "bernoulli"
            else (self.likelihood.log_256_offset(self.num_pixels))
        )
        return (nll + offset) / (self.num_pixels * math.log(2.0))

    def _step(self, batch: Tensor | tuple | list) -> dict[str, Tensor]:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        t = self.elbo_terms(images, labels=self.batch_labels(batch, images.shape[0]))
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

    def forward(self, images: Tensor, labels: int | Tensor | None = None) -> Tensor:
        """Per-example ELBO of a batch of images in [0, 1] (given ``labels``, if conditional)."""
        return self.elbo_terms(images, labels=labels)["elbo"]

    # -- generation --------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        n: int | None = None,
        z: Tensor | None = None,
        mean: bool = True,
        labels: int | Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Images ``(N, C, H, W)`` from the prior: decoder means or likelihood samples.

        A class-conditional VAE draws images of ``labels`` (see :meth:`labels_for`: ``None``
        → uniform over the classes, an int → that class, or one label per image); ``z`` and
        uniform labels are drawn from ``generator`` when given.
        """
        if z is None:
            if n is None:
                raise ValueError("sample needs n or z")
            dev = generator.device if generator is not None else self.device
            z = torch.randn(n, self.latent_dim, device=dev, generator=generator)
        z = z.to(self.device)
        if self.num_classes:
            z = z.reshape(-1, self.latent_dim)  # one label per row
        y = self.labels_for(len(z) if z.dim() > 1 else 1, labels, generator)
        out = self._decode(z, y)
        img = self.likelihood.mean(out) if mean else self.likelihood.sample(out)
        return img.reshape(-1, *self.image_shape)

    @torch.no_grad()
    def reconstruct(self, images: Tensor, labels: int | Tensor | None = None) -> Tensor:
        """Decoder means at the encoder means, ``(N, C, H, W)`` (given ``labels``, if
        conditional: encoder and decoder see the same labels)."""
        y = self.check_labels(labels, images.shape[0])
        mu, _, _ = self._encode(images, y)
        return self.likelihood.mean(self._decode(mu, y)).reshape(-1, *self.image_shape)


def build_vae(ops: ModuleType | str | None = None, **kwargs: object) -> VAE:
    """Build a VAE from ``VAEConfig`` keyword arguments."""
    return VAE(VAEConfig(**kwargs), ops=ops)  # type: ignore[arg-type]


def save_vae(model: VAE, path: str | Path) -> Path:
    """Save config and weights to ``path`` (format ``dgm_ext.vae/1``, written atomically).

    ``num_classes`` is saved for a class-conditional VAE only (see ``VAEConfig.to_dict``)."""
    return write_model_file(path, VAE_FORMAT, model.config.to_dict(), state_dict=model.state_dict())


def vae_from_blob(blob: dict[str, Any], ops: ModuleType | str | None = None) -> VAE:
    """The VAE of a dict read from a ``save_vae`` file (tagged or not)."""
    model = VAE(VAEConfig(**blob["config"]), ops=ops)
    model.load_state_dict(blob["state_dict"])
    return model


def load_vae(path: str | Path, ops: ModuleType | str | None = None) -> VAE:
    """Load a VAE written by ``save_vae`` (``weights_only=True``; untagged files of earlier
    versions too)."""
    return vae_from_blob(read_family(path, VAE_FORMAT), ops)
