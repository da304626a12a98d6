"""RealNVP (Dinh et al., 2017): the MLP model of the classic assignment and the multi-scale
convolutional model, behind the dequantisation/logit front end of :class:`ImageFlow`.

* :class:`MLPRealNVP`: flattened images; ``couplings`` affine couplings whose masks are a
  checkerboard over the image alternating with its complement; each coupling net is an MLP
  ``D -> hidden -> hidden -> 2D`` (ReLU, last layer zero-initialised) with log-scale
  ``tanh(h)`` (realnvp-mnist, SPEC §3: 8 couplings, hidden 1024), computed as
  :class:`~dgm_ext.flows.coupling.MaskedMLPCouplingNet`: only the kept half goes in and only
  the transformed half's ``s, t`` come out (the same function, 2/3 of the matrix products).
* :class:`MultiScaleRealNVP`: per scale, 3 checkerboard couplings, a squeeze, 3 channel
  couplings and a factor-out of half the channels (which go straight to the base); the last
  scale has 4 checkerboard couplings. Coupling nets are residual conv nets
  (:class:`~dgm_ext.flows.coupling.ConvCouplingNet`, ``channels`` wide, ``blocks`` deep),
  log-scale ``scale·tanh(h)`` with a learnable per-channel ``scale``. The factored-out parts
  are put back by the inverse squeezes, so ``z`` has the image's shape.

Both chain their couplings (:class:`~dgm_ext.flows.coupling.AffineCoupling` transforms) in
:class:`~dgm_ext.flows.base.ComposedTransform` compositions (``MLPRealNVP.layers``;
``MultiScaleRealNVP.checker[i]``, ``.channel[i]`` per scale, with the squeezes and the
factor-out between them), whose members have the state-dict keys of the layer lists they
replace.

:func:`build_realnvp` makes the :class:`ImageFlow` of a :class:`RealNVPConfig`;
:func:`save_realnvp` / :func:`load_realnvp` store config and weights in one file.
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

from dgm_ext.flows.base import ComposedTransform, Flow, Transform
from dgm_ext.flows.coupling import (
    AffineCoupling,
    ConvCouplingNet,
    MaskedMLPCouplingNet,
    channel_mask,
    checkerboard_mask,
)
from dgm_ext.flows.image import ImageFlow
from dgm_ext.flows.transforms import FactorOutTransform, SqueezeTransform
from dgm_ext.ops import resolve_ops
from dgm_ext.persistence import REALNVP_FORMAT, read, read_family, write_model_file

__all__ = [
    "FILE_FORMAT",
    "MLPRealNVP",
    "MultiScaleRealNVP",
    "RealNVPConfig",
    "build_realnvp",
    "is_realnvp_file",
    "load_realnvp",
    "save_realnvp",
]

FILE_FORMAT = REALNVP_FORMAT
ARCHS = ("mlp", "multiscale")


class MLPRealNVP(Flow):
    """RealNVP on flattened examples of ``event_shape``: ``couplings`` MLP couplings with
    alternating checkerboard masks (see the module docstring)."""

    def __init__(
        self,
        event_shape: tuple[int, ...] = (1, 28, 28),
        couplings: int = 8,
        hidden: int = 1024,
        ops: ModuleType | str | None = None,
        context_dim: int = 0,
    ) -> None:
        super().__init__(event_shape)
        if couplings < 1 or hidden < 1:
            raise ValueError(f"couplings and hidden must be >= 1, got {couplings}, {hidden}")
        self.ops = resolve_ops(ops)
        h, w = self.event_shape[-2:] if len(self.event_shape) >= 2 else (1, self.event_shape[0])
        dims = math.prod(self.event_shape)
        base = checkerboard_mask(h, w).expand(*self.event_shape[:-2], h, w).reshape(dims)
        masks = [base if k % 2 == 0 else 1.0 - base for k in range(couplings)]
        self.context_dim = int(context_dim)
        self.layers = ComposedTransform(
            *(
                AffineCoupling(m, MaskedMLPCouplingNet(m, hidden, self.context_dim), ops=self.ops)
                for m in masks
            )
        )
        # The halves of the first mask, one after the other: the couplings alternate between
        # them, so the model runs on the two blocks of this order (one gather in, one out)
        # rather than gathering and scattering full rows at every coupling.
        first = self.layers[0].net
        order = torch.cat([first.kept, first.moved])
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("unorder", torch.argsort(order), persistent=False)
        self.split = (len(first.kept), len(first.moved))

    def _run(self, h: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        """``layers`` (or their inverse) on flat rows ``h``, on the two halves of ``order``:
        even couplings keep block 0 and move block 1, odd ones the other way round (through
        ``layers`` itself when a coupling net was swapped for another kind)."""
        if not all(isinstance(c.net, MaskedMLPCouplingNet) for c in self.layers):
            return self.layers.inverse(h, context) if inverse else self.layers(h, context)
        blocks = list(h.index_select(1, self.order).split(self.split, dim=1))
        steps = list(enumerate(self.layers))
        logdet = None
        for k, coupling in reversed(steps) if inverse else steps:
            keep, move = (0, 1) if k % 2 == 0 else (1, 0)
            blocks[move], ld = coupling.transform_block(
                blocks[keep], blocks[move], context, inverse
            )
            logdet = ld if logdet is None else logdet + ld
        return torch.cat(blocks, dim=1).index_select(1, self.unorder), logdet

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data → base: the same function as ``self.layers(x.flatten(1), context)``."""
        z, logdet = self._run(x.flatten(1), context, inverse=False)
        return z.view_as(x), logdet

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Base → data: the same function as ``self.layers.inverse(z.flatten(1), context)``."""
        x, logdet = self._run(z.flatten(1), context, inverse=True)
        return x.view_as(z), logdet


class MultiScaleRealNVP(Flow):
    """Multi-scale convolutional RealNVP on ``(C, H, W)`` images (see the module docstring);
    ``H`` and ``W`` must be divisible by ``2^(scales − 1)``."""

    def __init__(
        self,
        event_shape: tuple[int, int, int] = (1, 28, 28),
        scales: int = 2,
        channels: int = 32,
        blocks: int = 2,
        ops: ModuleType | str | None = None,
        context_dim: int = 0,
    ) -> None:
        super().__init__(event_shape)
        if len(self.event_shape) != 3:
            raise ValueError(f"event_shape must be (C, H, W), got {event_shape}")
        if scales < 1:
            raise ValueError(f"scales must be >= 1, got {scales}")
        c, h, w = self.event_shape
        if h % 2 ** (scales - 1) or w % 2 ** (scales - 1):
            raise ValueError(
                f"event_shape {self.event_shape}: H and W must be divisible by 2^(scales-1) = "
                f"{2 ** (scales - 1)}"
            )
        self.ops = resolve_ops(ops)
        self.scales = scales
        self.context_dim = int(context_dim)
        self.checker = nn.ModuleList()
        self.channel = nn.ModuleList()

        def coupling(mask: Tensor, in_ch: int) -> AffineCoupling:
            net = ConvCouplingNet(in_ch, channels, blocks, self.context_dim)
            return AffineCoupling(mask, net, learn_scale=True, ops=self.ops)

        for i in range(scales):
            last = i == scales - 1
            n_checker = 4 if last else 3
            self.checker.append(
                ComposedTransform(
                    *(coupling(checkerboard_mask(h, w, k % 2), c) for k in range(n_checker))
                )
            )
            if last:
                break
            self.channel.append(
                ComposedTransform(*(coupling(channel_mask(4 * c, k % 2), 4 * c) for k in range(3)))
            )
            c, h, w = 2 * c, h // 2, w // 2

        # The whole map as one composition of the modules above (not registered a second
        # time, so the state dict keeps the keys checker.i / channel.i).
        object.__setattr__(self, "_transform", self._scale(0))

    def _scale(self, i: int) -> Transform:
        """Scale ``i`` and everything after it: checkerboard couplings, then (but at the last
        scale) squeeze, channel couplings, factor-out of half the channels with the next
        scales on the other half, unsqueeze."""
        if i == self.scales - 1:
            return self.checker[i]
        squeeze = SqueezeTransform()
        return ComposedTransform(
            self.checker[i],
            squeeze,
            self.channel[i],
            FactorOutTransform(self._scale(i + 1)),
            squeeze.inv,
        )

    @property
    def transform(self) -> Transform:
        """The model's map (data → base) as one :class:`~dgm_ext.flows.base.Transform`."""
        return self._transform

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._transform(x, context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._transform.inverse(z, context)


@dataclass
class RealNVPConfig:
    """A RealNVP image model. ``arch``: ``"mlp"`` (uses ``couplings``, ``hidden``) or
    ``"multiscale"`` (uses ``scales``, ``channels``, ``blocks``); ``image_shape`` ``(C, H, W)``;
    ``alpha`` of the logit transform (1e-5 for MNIST, 0.05 for RGB); ``levels`` per pixel."""

    arch: str = "mlp"
    image_shape: tuple[int, int, int] = (1, 28, 28)
    couplings: int = 8
    hidden: int = 1024
    scales: int = 2
    channels: int = 32
    blocks: int = 2
    alpha: float = 1e-5
    levels: int = 256
    num_classes: int = 0

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        self.image_shape = tuple(int(s) for s in self.image_shape)  # type: ignore[assignment]
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W) of sizes >= 1, got {self.image_shape}")
        for name in ("couplings", "hidden", "scales", "channels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.blocks < 0:
            raise ValueError(f"blocks must be >= 0, got {self.blocks}")
        k = self.num_classes
        if isinstance(k, bool) or not isinstance(k, int) or k < 0 or k == 1:
            raise ValueError(f"num_classes must be 0 (unconditional) or an int >= 2, got {k!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (JSON and ``weights_only`` friendly); ``num_classes`` only for a
        class-conditional model (so unconditional files are as before)."""
        d = dataclasses.asdict(self)
        d["image_shape"] = list(self.image_shape)
        if not self.num_classes:
            del d["num_classes"]
        return d


def build_realnvp(
    config: RealNVPConfig | None = None, ops: ModuleType | str | None = None, **kw: Any
) -> ImageFlow:
    """The :class:`ImageFlow` of ``config`` (or of ``RealNVPConfig(**kw)``)."""
    cfg = config if config is not None else RealNVPConfig(**kw)
    k = cfg.num_classes
    if cfg.arch == "mlp":
        inner: Flow = MLPRealNVP(cfg.image_shape, cfg.couplings, cfg.hidden, ops, k)
    else:
        inner = MultiScaleRealNVP(cfg.image_shape, cfg.scales, cfg.channels, cfg.blocks, ops, k)
    model = ImageFlow(inner, alpha=cfg.alpha, levels=cfg.levels, num_classes=k)
    model.config = cfg
    return model


def save_realnvp(model: ImageFlow, path: str | Path) -> Path:
    """Write config and weights of a :func:`build_realnvp` model to ``path`` (format
    ``dgm_ext.realnvp/1``, atomically)."""
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, RealNVPConfig):
        raise TypeError("model must be built by build_realnvp (it has no RealNVPConfig)")
    return write_model_file(path, FILE_FORMAT, cfg.to_dict(), state_dict=model.state_dict())


def is_realnvp_file(path: str | Path) -> bool:
    """Whether ``path`` is a file written by :func:`save_realnvp`."""
    try:
        return read(path).tag == FILE_FORMAT
    except (OSError, ValueError):  # any unreadable file is simply "not ours"
        return False


def realnvp_from_blob(blob: dict[str, Any], ops: ModuleType | str | None = None) -> ImageFlow:
    """The model of a dict read from a :func:`save_realnvp` file."""
    model = build_realnvp(RealNVPConfig(**blob["config"]), ops=ops)
    model.load_state_dict(blob["state_dict"])
    return model


def load_realnvp(path: str | Path, ops: ModuleType | str | None = None) -> ImageFlow:
    """Load a model written by :func:`save_realnvp` (``weights_only=True``)."""
    return realnvp_from_blob(read_family(path, FILE_FORMAT), ops)
