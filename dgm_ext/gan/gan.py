"""A GAN that :class:`dgm_ext.train.Trainer` trains: alternating critic and generator steps.

One training step of the trainer is one **critic** step on one data batch; every
``critic_steps``-th step is followed by one generator step, so an epoch is one critic pass
over the data whatever ``critic_steps`` is. The step counter that decides it is the
trainer's ``global_step`` (saved in checkpoints), so a resumed run keeps the schedule.

Critic step: ``critic_loss(real, G(z)) + penalty`` with ``G(z)`` detached; generator step:
``generator_loss(C(G(z')))`` on a fresh ``z'`` against the *updated* critic, the critic's
parameters frozen while it runs. Data come in [0, 1] (``ImageDataset`` grey levels) and are
mapped to the generator's [-1, 1]. The trainer keeps a :class:`GeneratorEMA` of the
generator when ``TrainerConfig.ema_decay`` is set (updated after each generator step,
BatchNorm buffers copied); figures and metrics should use it (``Trainer.ema.applied()``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from dgm_ext.gan.ema import GeneratorEMA
from dgm_ext.gan.losses import (
    CRITIC_LOSSES,
    critic_loss,
    generator_loss,
    gradient_penalty,
    jsd_estimate,
    r1_penalty,
    w1_estimate,
)
from dgm_ext.gan.models import (
    DCGANCritic,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
    dcgan_levels,
)
from dgm_ext.labels import batch_labels, sampling_labels
from dgm_ext.networks import build_network, network_spec
from dgm_ext.ops import resolve_ops
from dgm_ext.persistence import GAN_FORMAT, read_family, write_model_file

__all__ = ["GAN", "GANConfig", "load_gan", "save_gan"]

ARCHS = ("mlp", "dcgan")
PENALTIES = (None, "r1", "gp")
FORMAT = GAN_FORMAT


@dataclass
class GANConfig:
    """Architecture, objective and optimiser settings of a :class:`GAN`.

    ``arch="mlp"``: the MNIST MLP generator/discriminator (SPEC §2; ``image_shape`` with 784
    values); ``arch="dcgan"``: the 32×32 DCGAN generator/critic (``width``,
    ``spectral_norm``; ``image_shape`` ``(C, 32, 32)``). ``loss``: ``jsd-nonsaturating``,
    ``jsd-saturating``, ``w1`` or ``hinge``; ``penalty``: ``None``, ``"r1"`` or ``"gp"``
    with ``penalty_weight``. Two Adam optimisers with ``betas``; the critic takes
    ``critic_steps`` steps per generator step. ``sync_batchnorm=True`` turns the generator's
    BatchNorm layers into ``torch.nn.SyncBatchNorm``: under ``torchrun`` on GPUs the batch
    statistics are then those of the global batch (PyTorch supports it on CUDA only; on the
    CPU it is refused at the first training step of a multi-process run, and a single process
    uses it as plain BatchNorm). Without it each rank normalises with its own batch's
    statistics and the trainer broadcasts rank 0's running statistics before each step.
    ``generator`` / ``critic``: a user's registered network (``{"name": ..., "kwargs":
    {...}}`` or a name; contracts in :mod:`dgm_ext.networks`) instead of ``arch``'s.
    """

    arch: str = "mlp"
    z_dim: int = 100
    image_shape: tuple[int, ...] = (1, 28, 28)
    loss: str = "jsd-nonsaturating"
    penalty: str | None = None
    penalty_weight: float = 0.0
    critic_steps: int = 1
    lr_generator: float = 2e-4
    lr_critic: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    width: int = 128
    spectral_norm: bool = False
    dropout: float = 0.3
    sync_batchnorm: bool = False
    num_classes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    generator: dict[str, Any] | None = None
    critic: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.image_shape = tuple(int(s) for s in self.image_shape)
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        for role in ("generator", "critic"):
            spec = getattr(self, role)
            if spec is not None:
                setattr(self, role, network_spec(spec, f"GANConfig.{role}"))
        if self.arch not in ARCHS:
            raise ValueError(f"GANConfig.arch must be one of {ARCHS}, got {self.arch!r}")
        if self.loss not in CRITIC_LOSSES:
            raise ValueError(
                f"GANConfig.loss must be one of {sorted(CRITIC_LOSSES)}, got {self.loss!r}"
            )
        if self.penalty not in PENALTIES:
            raise ValueError(f"GANConfig.penalty must be one of {PENALTIES}, got {self.penalty!r}")
        if not self.penalty_weight >= 0:
            raise ValueError(f"GANConfig.penalty_weight must be >= 0, got {self.penalty_weight!r}")
        if self.penalty is not None and self.penalty_weight == 0:
            raise ValueError(f"GANConfig.penalty={self.penalty!r} needs penalty_weight > 0")
        if (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, int)
            or self.num_classes < 0
            or self.num_classes == 1
        ):
            raise ValueError(
                f"GANConfig.num_classes must be 0 (unconditional) or an int >= 2, got "
                f"{self.num_classes!r}"
            )
        for name in ("z_dim", "critic_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"GANConfig.{name} must be an int >= 1, got {v!r}")
        for name in ("lr_generator", "lr_critic"):
            if not getattr(self, name) > 0:
                raise ValueError(f"GANConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"GANConfig.betas must be two numbers in [0, 1), got {self.betas}")
        if self.arch == "dcgan":
            if len(self.image_shape) != 3 or self.image_shape[1] != self.image_shape[2]:
                raise ValueError(
                    f"GANConfig.image_shape must be (C, S, S) for arch='dcgan', got "
                    f"{self.image_shape}"
                )
            try:
                dcgan_levels(self.image_shape[1])
            except ValueError as exc:
                raise ValueError(f"GANConfig.image_shape {self.image_shape}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples as lists)."""
        d = dataclasses.asdict(self)
        d["image_shape"], d["betas"] = list(self.image_shape), list(self.betas)
        for role in ("generator", "critic"):  # only when set: files earlier versions read
            if d[role] is None:
                del d[role]
        return d


def build_networks(config: GANConfig) -> tuple[nn.Module, nn.Module]:
    """The generator and critic that ``config`` describes: a user's registered network for
    ``config.generator`` / ``config.critic`` (:mod:`dgm_ext.networks`), else ``arch``'s."""
    return _generator(config), _critic(config)


def _generator(config: GANConfig) -> nn.Module:
    if config.generator is not None:
        return build_network(config.generator, "generator")
    if config.arch == "mlp":
        return MLPGenerator(config.z_dim, config.image_shape, config.num_classes)
    channels, size = config.image_shape[0], config.image_shape[1]
    return DCGANGenerator(config.z_dim, config.width, channels, size, config.num_classes)


def _critic(config: GANConfig) -> nn.Module:
    if config.critic is not None:
        return build_network(config.critic, "critic")
    if config.arch == "mlp":
        n = 1
        for s in config.image_shape:
            n *= s
        return MLPDiscriminator(n, config.dropout, config.num_classes)
    channels, size = config.image_shape[0], config.image_shape[1]
    return DCGANCritic(config.width, channels, config.spectral_norm, size, config.num_classes)


class GAN(nn.Module):
    """Generator + critic with the trainer's multi-optimiser step (see the module docstring).

    ``ops``: ``"fused"`` (default, the C++/CUDA ``bernoulli_log_prob`` in the JSD losses) or
    ``"reference"``. Logged per step: ``critic_loss``, ``generator_loss`` (generator steps
    only), ``penalty`` (with a penalty) and the training metric, ``jsd`` (the JSD estimate
    ``½(E log σ(C(x)) + E log(1 - σ(C(G(z))))) + log 2``) for the JSD losses or ``w1``
    (``E C(x) - E C(G(z))``) otherwise, measured on the critic step's batch before its update.
    """

    def __init__(
        self, config: GANConfig | None = None, ops: ModuleType | str | None = None
    ) -> None:
        super().__init__()
        self.config = config if config is not None else GANConfig()
        self.ops = resolve_ops(ops)
        self.generator, self.critic = build_networks(self.config)
        if self.config.sync_batchnorm:
            self.generator = nn.SyncBatchNorm.convert_sync_batchnorm(self.generator)
        self.metric_name = "jsd" if self.config.loss.startswith("jsd") else "w1"

    # -- trainer hooks ---------------------------------------------------------------------
    def configure_optimizers(self, trainer_config: Any) -> list[torch.optim.Optimizer]:
        """``[critic Adam, generator Adam]`` with the GAN's learning rates and betas."""
        c = self.config
        from dgm_ext.train.trainer import make_adam

        eps = getattr(trainer_config, "eps", 1e-8)
        fused = getattr(trainer_config, "fused_optimizer", True)
        return [
            make_adam(
                self.critic.parameters(), fused=fused, lr=c.lr_critic, betas=c.betas, eps=eps
            ),
            make_adam(
                self.generator.parameters(), fused=fused, lr=c.lr_generator, betas=c.betas, eps=eps
            ),
        ]

    def ema_module(self) -> nn.Module:
        """The generator: the module whose EMA the trainer keeps."""
        return self.generator

    def configure_ema(self, decay: float) -> GeneratorEMA:
        """Generator EMA that copies BatchNorm buffers (StudioGAN's convention)."""
        return GeneratorEMA(self.generator, decay)

    def train_step(self, batch: Any, ctx: Any) -> dict[str, Tensor]:
        """One critic step, and a generator step every ``critic_steps`` steps."""
        c = self.config
        real = self.to_model_space(batch[0] if isinstance(batch, (tuple, list)) else batch)
        y = self._batch_labels(batch, real.shape[0])
        if c.sync_batchnorm and real.device.type == "cpu" and _distributed():
            raise ValueError(
                "GANConfig.sync_batchnorm=True needs CUDA devices under torchrun (PyTorch's "
                "SyncBatchNorm does not run on the CPU); use sync_batchnorm=False with gloo"
            )
        opt_critic, opt_generator = ctx.optimizers
        # a class-conditional GAN generates the batch's own labels (same class balance as the
        # data; GP interpolates pairs of one class); critic and generator see the labels
        critic = self.critic if y is None else partial(self.critic, y=y)
        with torch.no_grad():
            fake = self._generate(self.sample_z(real.shape[0], real), y)
        real_out, fake_out = critic(real), critic(fake)
        loss = critic_loss(c.loss, real_out, fake_out, ops=self.ops)
        out = {"critic_loss": loss.detach(), self.metric_name: self._metric(real_out, fake_out)}
        if c.penalty == "r1":
            pen = r1_penalty(critic, real, c.penalty_weight)
        elif c.penalty == "gp":
            pen = gradient_penalty(critic, real, fake, c.penalty_weight)
        else:
            pen = None
        if pen is not None:
            out["penalty"] = pen.detach()
            loss = loss + pen
        ctx.step(opt_critic, loss, name="critic loss")
        if (ctx.global_step + 1) % c.critic_steps == 0:
            self.critic.requires_grad_(False)  # the generator step needs no critic gradients
            try:
                fake = self._generate(self.sample_z(real.shape[0], real), y)
                g_loss = generator_loss(c.loss, critic(fake), ops=self.ops)
                ctx.step(opt_generator, g_loss, name="generator loss")
            finally:
                self.critic.requires_grad_(True)
            out["generator_loss"] = g_loss.detach()
        return out

    def _generate(self, z: Tensor, y: Tensor | None) -> Tensor:
        return self.generator(z) if y is None else self.generator(z, y)

    def _device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def _batch_labels(self, batch: Any, n: int) -> Tensor | None:
        """The batch's class labels for a class-conditional GAN (None otherwise)."""
        return batch_labels(batch, n, self.config.num_classes, self._device(), "GAN")

    def labels_for(
        self, n: int, labels: int | Tensor | None, generator: torch.Generator | None = None
    ) -> Tensor | None:
        """``n`` labels for sampling: ``None`` → uniform over the classes (from
        ``generator``), an int → that class, a tensor → as given (``(n,)``)."""
        k = self.config.num_classes
        return sampling_labels(n, labels, k, self._device(), "GAN", generator)

    # -- sampling --------------------------------------------------------------------------
    def sample_z(
        self, n: int, like: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` latent codes ``N(0, I)`` of shape ``(n, z_dim)`` (device/dtype of ``like``)."""
        ref = like if like is not None else next(self.generator.parameters())
        return torch.randn(
            n, self.config.z_dim, device=ref.device, dtype=ref.dtype, generator=generator
        )

    @torch.no_grad()
    def decode(self, z: Tensor, labels: int | Tensor | None = None) -> Tensor:
        """Images in [0, 1] from latent codes (and class labels, for a class-conditional GAN:
        see :meth:`labels_for`; ``None`` here cycles through the classes, ``0, 1, ..., k-1,
        0, ...``, so that a grid shows every class and no random number is drawn), the
        generator in eval mode (BatchNorm uses its running statistics); the generator's
        train/eval mode is restored afterwards."""
        k = self.config.num_classes
        if k and labels is None:
            labels = torch.arange(z.shape[0], device=z.device) % k
        y = self.labels_for(z.shape[0], labels) if k else None
        was = self.generator.training
        self.generator.eval()
        try:
            return self.to_image_space(self._generate(z, y))
        finally:
            self.generator.train(was)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        batch_size: int = 1000,
        labels: int | Tensor | None = None,
    ) -> Tensor:
        """``n`` images ``(n, C, H, W)`` in [0, 1] (see :meth:`decode`), on the CPU. A
        class-conditional GAN draws ``labels`` (None: uniform; an int: that class; or one
        label per image)."""
        z = self.sample_z(n, generator=generator)  # one draw: the result ignores batch_size
        y = self.labels_for(n, labels, generator)
        ys = y.split(batch_size) if y is not None else [None] * len(z.split(batch_size))
        parts = [self.decode(zb, yb).cpu() for zb, yb in zip(z.split(batch_size), ys, strict=True)]
        return torch.cat(parts) if parts else torch.empty(0, *self.config.image_shape)

    @staticmethod
    def to_model_space(images: Tensor) -> Tensor:
        """[0, 1] → the generator's [-1, 1]."""
        return images * 2.0 - 1.0

    @staticmethod
    def to_image_space(x: Tensor) -> Tensor:
        """[-1, 1] → [0, 1] (clamped)."""
        return ((x + 1.0) * 0.5).clamp(0.0, 1.0)

    def _metric(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        with torch.no_grad():
            if self.metric_name == "jsd":
                return jsd_estimate(real_out, fake_out, ops=self.ops)
            return w1_estimate(real_out, fake_out)


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def save_gan(model: GAN, path: str | Path, ema: GeneratorEMA | None = None) -> Path:
    """Write config, critic and generator weights to ``path`` (format ``dgm_ext.gan/1``,
    atomically).

    With ``ema`` the saved generator holds the EMA weights (and the live generator's copied
    buffers) and the file says so; :func:`load_gan` then returns the EMA generator.
    """
    gen = {k: v.detach().cpu() for k, v in model.generator.state_dict().items()}
    if ema is not None:
        gen = {k: v.detach().cpu().clone() for k, v in ema.shadow.items()}
    return write_model_file(
        path,
        FORMAT,
        model.config.to_dict(),
        generator=gen,
        critic={k: v.detach().cpu() for k, v in model.critic.state_dict().items()},
        generator_is_ema=ema is not None,
    )


def gan_from_blob(blob: dict[str, Any], ops: ModuleType | str | None = None) -> GAN:
    """The GAN (eval mode) of a dict read from a :func:`save_gan` file."""
    model = GAN(GANConfig(**blob["config"]), ops=ops)
    model.generator.load_state_dict(blob["generator"])
    model.critic.load_state_dict(blob["critic"])
    return model.eval()


def load_gan(path: str | Path, ops: ModuleType | str | None = None) -> GAN:
    """Load a GAN written by :func:`save_gan` (``weights_only=True``), in eval mode."""
    return gan_from_blob(read_family(path, FORMAT), ops)
