"""RealNVP building blocks (Dinh et al., 2017): masks, squeeze, affine couplings and their nets.

An affine coupling keeps the masked part ``m⊙x`` and transforms the rest,
``y = m⊙x + (1−m)⊙(x·e^s + t)`` with ``(s, t) = net(m⊙x)``; its inverse needs the same
``net(m⊙y) = net(m⊙x)``, so both directions are explicit and
``log|det ∂y/∂x| = Σ (1−m)⊙s``. Both directions run on the fused op
``dgm_ext.ops.affine_coupling`` (or its reference, ``ops="reference"``).

Masks (1 = kept): :func:`checkerboard_mask` over the spatial positions (shared by every
channel) and :func:`channel_mask` (the first half of the channels), each with its complement
(``parity=1``). :func:`squeeze` is a volume-preserving space-to-depth (log-det 0).

:class:`AffineCoupling` is a :class:`~dgm_ext.flows.base.Transform`. Conditional couplings:
a net built with ``context_dim=F`` also reads a context vector per example (concatenated to
its input; broadcast over the pixels for the conv net), and ``forward(x, context)`` hands it
over; with ``context_dim=0`` (the default) the nets are exactly the unconditional ones.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dgm_ext.flows.base import Transform, expand_context

__all__ = [
    "AffineCoupling",
    "ConvCouplingNet",
    "MLPCouplingNet",
    "MaskedMLPCouplingNet",
    "channel_mask",
    "checkerboard_mask",
    "squeeze",
    "unsqueeze",
]


def checkerboard_mask(height: int, width: int, parity: int = 0) -> Tensor:
    """``(1, height, width)`` float mask, 1 where ``(row + col + parity)`` is even."""
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height}x{width}")
    rows = torch.arange(height).unsqueeze(1)
    cols = torch.arange(width).unsqueeze(0)
    return ((rows + cols + parity) % 2 == 0).float().unsqueeze(0)


def channel_mask(channels: int, parity: int = 0) -> Tensor:
    """``(channels, 1, 1)`` float mask keeping the first half of the channels (``parity=1``:
    the second half)."""
    if channels < 2 or channels % 2:
        raise ValueError(f"channels must be even and >= 2 for a channel mask, got {channels}")
    m = (torch.arange(channels) < channels // 2).float()
    return (1.0 - m if parity else m).view(channels, 1, 1)


def squeeze(x: Tensor) -> Tensor:
    """``(N, C, H, W) -> (N, 4C, H/2, W/2)``: each 2×2 block becomes 4 channels (a permutation,
    so its log-det is 0)."""
    if x.ndim != 4 or x.shape[2] % 2 or x.shape[3] % 2:
        raise ValueError(f"x must have shape (N, C, H, W) with even H and W, got {tuple(x.shape)}")
    return F.pixel_unshuffle(x, 2)


def unsqueeze(x: Tensor) -> Tensor:
    """The inverse of :func:`squeeze`: ``(N, 4C, H, W) -> (N, C, 2H, 2W)``."""
    return F.pixel_shuffle(x, 2)


def _with_context(x: Tensor, context: Tensor | None, context_dim: int) -> Tensor:
    """``x`` (N, K) with the context rows (N, ``context_dim``) appended (``x`` itself when the
    net takes no context)."""
    if context is None:
        if context_dim:
            raise ValueError(f"this coupling net needs a context of size {context_dim}")
        return x
    if not context_dim:
        raise ValueError("this coupling net takes no context (built with context_dim=0)")
    context = expand_context(context, x.shape[0])
    if context.shape[1] != context_dim:
        raise ValueError(f"context must have {context_dim} features, got {context.shape[1]}")
    return torch.cat([x, context.to(x.dtype)], dim=1)


class MLPCouplingNet(nn.Module):
    """``dim -> hidden -> hidden -> 2·dim`` with ReLU; the last layer starts at zero, so the
    coupling starts as the identity. Returns ``(s_raw, t)``, each ``(N, dim)``.
    ``context_dim``: size of a context vector appended to the input (0: none)."""

    def __init__(self, dim: int, hidden: int = 1024, context_dim: int = 0) -> None:
        super().__init__()
        self.context_dim = int(context_dim)
        self.net = nn.Sequential(
            nn.Linear(dim + self.context_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * dim),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s, t = self.net(_with_context(x, context, self.context_dim)).chunk(2, dim=1)
        return s, t


class MaskedMLPCouplingNet(nn.Module):
    """The MLP of a coupling on flat inputs that computes only what the coupling uses: it
    reads the ``K`` kept entries of ``mask`` (1 = kept, shape ``(D,)``) and returns ``s_raw``
    and ``t`` for the ``D - K`` transformed ones: ``K -> hidden -> hidden -> 2(D - K)``, ReLU,
    last layer zero-initialised.

    It is :class:`MLPCouplingNet` over the masked input with the rows and columns that only
    ever meet zeros removed: the masked input's zeros contribute nothing to the first layer,
    and the ``s, t`` of kept entries are discarded by the coupling. A checkerboard coupling on
    784 pixels thus does 2/3 of the matrix products of the full MLP (392-1024-1024-784 instead
    of 784-1024-1024-1568). A state dict of the full layout (files written before) is
    converted on load (the weights of the kept columns and transformed rows are taken).
    ``context_dim``: size of a context vector appended to the kept entries (0: none)."""

    def __init__(self, mask: Tensor, hidden: int = 1024, context_dim: int = 0) -> None:
        super().__init__()
        if mask.dim() != 1 or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"mask must be a 0/1 vector, got shape {tuple(mask.shape)}")
        kept = torch.nonzero(mask, as_tuple=True)[0]
        moved = torch.nonzero(mask == 0, as_tuple=True)[0]
        if len(kept) == 0 or len(moved) == 0:
            raise ValueError("mask must keep some entries and transform others")
        self.dim = mask.numel()
        self.context_dim = int(context_dim)
        self.register_buffer("kept", kept, persistent=False)
        self.register_buffer("moved", moved, persistent=False)
        self.net = nn.Sequential(
            nn.Linear(len(kept) + self.context_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * len(moved)),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self._register_load_state_dict_pre_hook(self._from_full_layout)

    def forward(self, x_kept: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(N, K)`` kept entries (and the context) → ``(s_raw, t)``, each ``(N, D - K)``."""
        s, t = self.net(_with_context(x_kept, context, self.context_dim)).chunk(2, dim=1)
        return s, t

    def _from_full_layout(self, state: dict, prefix: str, *args: Any) -> None:
        """Take the used part of an :class:`MLPCouplingNet`-layout state dict."""
        first = state.get(prefix + "net.0.weight")
        if first is None or first.shape[1] != self.dim + self.context_dim:
            return  # already the compact layout (or missing: load_state_dict reports it)
        context_cols = self.dim + torch.arange(self.context_dim, device=self.kept.device)
        cols = torch.cat([self.kept, context_cols])
        state[prefix + "net.0.weight"] = first[:, cols.to(first.device)]
        rows = torch.cat([self.moved, self.dim + self.moved])
        for name in ("net.4.weight", "net.4.bias"):
            if prefix + name in state:
                full = state[prefix + name]
                state[prefix + name] = full[rows.to(full.device)]


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class ConvCouplingNet(nn.Module):
    """Residual coupling network: 3×3 conv ``C -> channels``, ``blocks`` residual blocks
    (two 3×3 convs each), ReLU, 3×3 conv ``channels -> 2C`` (zero-initialised). Its input is
    the masked image and the mask itself (so the net knows which pixels it sees), and with
    ``context_dim > 0`` a context vector per example as that many constant channels.
    Returns ``(s_raw, t)``, each ``(N, C, H, W)``."""

    def __init__(
        self, in_channels: int, channels: int = 32, blocks: int = 2, context_dim: int = 0
    ) -> None:
        super().__init__()
        if channels < 1 or blocks < 0:
            raise ValueError(f"channels must be >= 1 and blocks >= 0, got {channels}, {blocks}")
        self.context_dim = int(context_dim)
        self.inp = nn.Conv2d(in_channels + 1 + self.context_dim, channels, 3, padding=1)
        self.blocks = nn.Sequential(*[_ResidualBlock(channels) for _ in range(blocks)])
        self.out = nn.Conv2d(channels, 2 * in_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self, x: Tensor, mask: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        # one extra channel: the spatial mask (constant 1/2 for a channel mask)
        m = mask.expand(x.shape[1:]).mean(0, keepdim=True).expand(x.shape[0], 1, *x.shape[2:])
        inp = [x, m]
        if context is not None or self.context_dim:
            c = _with_context(x.new_zeros(x.shape[0], 0), context, self.context_dim)
            inp.append(c[:, :, None, None].expand(*c.shape, *x.shape[2:]))
        h = self.blocks(self.inp(torch.cat(inp, dim=1)))
        s, t = self.out(F.relu(h)).chunk(2, dim=1)
        return s, t


class AffineCoupling(Transform):
    """One affine coupling: ``(s_raw, t) = net(m⊙x)``, ``s = scale·tanh(s_raw)``.

    ``mask`` (1 = kept) broadcasts against one example; ``net`` is an :class:`MLPCouplingNet`
    (flat inputs) or a :class:`ConvCouplingNet` (images). ``learn_scale``: a learnable
    per-channel ``scale`` (Dinh et al.'s ``scale·tanh``, starting at 1); otherwise the
    log-scale is ``tanh(s_raw)`` exactly. ``forward``/``inverse`` return ``(y, logdet)``.
    Conditional when the net has a ``context_dim > 0`` (the nets of this module built with
    ``context_dim=F``): the ``context`` (``(N, F)`` or ``(F,)``) is then required and handed to
    the net. Otherwise the context is ignored (so conditional and unconditional couplings mix
    in one composition) and the net is called exactly as before.
    """

    def __init__(
        self,
        mask: Tensor,
        net: nn.Module,
        learn_scale: bool = False,
        ops: ModuleType | None = None,
    ) -> None:
        super().__init__()
        from dgm_ext.ops import resolve_ops

        self.register_buffer("mask", mask.float(), persistent=False)
        self.net = net
        self.ops = resolve_ops(ops)
        self.conditional = int(getattr(net, "context_dim", 0) or 0) > 0
        channels = mask.shape[0] if mask.ndim == 3 else 1
        self.scale = nn.Parameter(torch.ones(channels, 1, 1)) if learn_scale else None
        if isinstance(net, MaskedMLPCouplingNet):  # the all-transformed mask of a block
            self.register_buffer("_block_mask", torch.zeros(len(net.moved)), persistent=False)

    def _st(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if isinstance(self.net, MaskedMLPCouplingNet):
            return self._st_gathered(x, context)
        kept = x * self.mask
        args = (kept, self.mask) if x.ndim == 4 else (kept,)
        s_raw, t = self.net(*args, context=context) if self.conditional else self.net(*args)
        s = torch.tanh(s_raw)
        if self.scale is not None:
            s = self.scale * s
        return s, t

    def _st_gathered(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``s, t`` from the kept entries only, scattered to full rows (zero where kept, where
        the coupling does not use them)."""
        net = self.net
        kept = x.index_select(1, net.kept)
        s_moved, t = net(kept, context) if self.conditional else net(kept)
        s_moved = torch.tanh(s_moved)
        if self.scale is not None:
            s_moved = self.scale.reshape(()) * s_moved
        full = x.new_zeros(2, x.shape[0], x.shape[1])
        full = full.index_copy(2, net.moved, torch.stack([s_moved, t]))
        return full[0], full[1]

    def transform_block(
        self, kept: Tensor, moved: Tensor, context: Tensor | None = None, inverse: bool = False
    ) -> tuple[Tensor, Tensor]:
        """The coupling on its two halves held apart (a :class:`MaskedMLPCouplingNet` net):
        ``kept`` ``(N, K)`` and ``moved`` ``(N, D − K)``, each in the mask's index order;
        returns the new ``moved`` half and the log-det (of the inverse when ``inverse``).
        The same function as :meth:`forward`/:meth:`inverse` without gathering or
        scattering full rows (a model that keeps the halves apart runs it this way)."""
        if not isinstance(self.net, MaskedMLPCouplingNet):
            raise TypeError("transform_block needs a MaskedMLPCouplingNet coupling net")
        s, t = self.net(kept, context) if self.conditional else self.net(kept)
        s = torch.tanh(s)
        if self.scale is not None:
            s = self.scale.reshape(()) * s
        return self.ops.affine_coupling(moved, s, t, self._block_mask, inverse)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(y, log|det ∂y/∂x|)``, both directions explicit (fused ``affine_coupling``)."""
        s, t = self._st(x, context)
        return self.ops.affine_coupling(x, s, t, self.mask, False)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(x, log|det ∂x/∂y|)``: the same ``s, t`` from the kept half of ``y``."""
        s, t = self._st(y, context)
        return self.ops.affine_coupling(y, s, t, self.mask, True)
