"""Image flows on 8-bit pixels: uniform dequantisation, the logit transform and bits/dim.

Every image flow of the library is an :class:`ImageFlow`: a flow ``f`` on ℝ^D (the
"inner" flow, e.g. a RealNVP) behind a fixed logit transform. For integer pixels
``x ∈ {0, …, L−1}^D`` (``L = levels = 256``):

1. dequantise: ``x̃ = (x + u) / L`` with ``u ~ U[0, 1)^D``, so ``x̃ ∈ [0, 1)^D``;
2. logit: ``p = α + (1 − 2α) x̃``, ``y = log p − log(1 − p)`` (α keeps ``p`` away from 0
   and 1: 1e-5 for MNIST, 0.05 for RGB in Dinh et al.);
3. the inner flow: ``z = f(y)``, base ``N(0, I)``.

The density of ``x̃`` on the unit cube is
``log p(x̃) = log N(f(y)) + log|det ∂f/∂y| + Σ_d [log(1 − 2α) − log p_d − log(1 − p_d)]``
(the last sum is the logit's log-det), and the density of ``x + u`` on ``[0, L)^D`` is
``p(x̃) / L^D`` (the dequantisation's scale). So, with every Jacobian term counted,

    bits/dim = −( log p(x̃) − D·log L ) / (D · log 2),

an upper bound (in expectation over ``u``) on the discrete model's ``−log₂ P(x) / D``.
``forward``/``inverse`` of :class:`ImageFlow` map ``x̃ ∈ [0, 1]^D`` ↔ ``z`` and include the
logit's log-det, so ``log_prob``/``sample``/``sample_and_log_prob`` of the :class:`Flow` API
work on dequantised images; :meth:`ImageFlow.bits_per_dim` takes integer pixels. The logit
step is a :class:`LogitTransform` (``ImageFlow.logit``), usable in any composition.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from dgm_ext.flows.base import Flow, Transform, check_sample_args, standard_normal_log_prob
from dgm_ext.labels import batch_labels, check_labels, one_hot, sampling_labels

__all__ = [
    "ImageFlow",
    "LogitTransform",
    "bits_per_dim",
    "dequantize",
    "evaluate_bits_per_dim",
    "logit_inverse",
    "logit_transform",
]

_LN2 = math.log(2.0)


def dequantize(x: Tensor, levels: int = 256, noise: Tensor | None = None) -> Tensor:
    """``(x + u) / levels`` for integer pixels ``x`` in ``[0, levels)``; ``u ~ U[0, 1)`` drawn
    from torch's RNG unless ``noise`` (same shape as ``x``) is given. Float result in [0, 1)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(
            f"x must hold integer pixel levels (uint8/int64, 0..{levels - 1}), got {x.dtype}; "
            "scale grey levels in [0, 1] by the number of levels and round them first"
        )
    # uint8 compared with 256 would wrap the bound to 0: compare in a wider integer type
    wide = x.to(torch.int32) if x.dtype in (torch.uint8, torch.int8) else x
    in_range = ((wide >= 0) & (wide < levels)).all()
    if torch.compiler.is_compiling():
        # no host read inside a compiled step: checked where the values are (on a GPU, a
        # device-side assertion)
        torch._assert_async(in_range, f"dequantize: x must lie in [0, {levels - 1}]")
    elif not bool(in_range):  # one host read per batch
        raise ValueError(
            f"x must lie in [0, {levels - 1}], got values in [{int(x.min())}, {int(x.max())}]"
        )
    if noise is None:
        noise = torch.rand(x.shape, device=x.device)
    elif noise.shape != x.shape:
        raise ValueError(
            f"noise must have the shape of x {tuple(x.shape)}, got {tuple(noise.shape)}"
        )
    return (x.to(noise.dtype) + noise) / levels


def logit_transform(x: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """``y = logit(α + (1 − 2α) x)`` and its log-det per example (sum over all but dim 0)."""
    p = alpha + (1.0 - 2.0 * alpha) * x
    log_p, log_1mp = torch.log(p), torch.log1p(-p)
    logdet = (math.log1p(-2.0 * alpha) - log_p - log_1mp).flatten(1).sum(1)
    return log_p - log_1mp, logdet


def logit_inverse(y: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """The inverse of :func:`logit_transform`, ``x = (sigmoid(y) − α) / (1 − 2α)``, and its
    log-det per example."""
    # dx/dy = p (1 − p) / (1 − 2α), with log p = −softplus(−y), log(1 − p) = −softplus(y)
    logdet = (
        -torch.nn.functional.softplus(-y)
        - torch.nn.functional.softplus(y)
        - math.log1p(-2.0 * alpha)
    )
    x = (torch.sigmoid(y) - alpha) / (1.0 - 2.0 * alpha)
    return x, logdet.flatten(1).sum(1)


class LogitTransform(Transform):
    """The dequantisation/logit front end of the image flows as a :class:`Transform`:
    ``y = logit(α + (1 − 2α) x̃)`` on dequantised pixels ``x̃ ∈ [0, 1]`` (see
    :func:`dequantize`), with the log-det ``Σ [log(1 − 2α) − log p − log(1 − p)]``; the
    inverse is the scaled sigmoid. The context is ignored."""

    def __init__(self, alpha: float = 1e-5) -> None:
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        self.alpha = float(alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return logit_transform(x, self.alpha)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return logit_inverse(y, self.alpha)


def bits_per_dim(log_px: Tensor, dims: int, levels: int = 256) -> Tensor:
    """bits/dim on the ``levels`` scale from ``log p(x̃)`` (nats, density on [0, 1]^D)."""
    return -(log_px - dims * math.log(levels)) / (dims * _LN2)


class ImageFlow(Flow):
    """A flow on dequantised images: logit transform (``alpha``) then ``inner`` (see the module
    docstring). ``forward(x̃)``/``inverse(z)`` work on ``x̃ ∈ [0, 1]^D`` of shape
    ``(N, *inner.event_shape)``; :meth:`bits_per_dim` on integer pixels.

    It also follows the Trainer's model contract: :meth:`training_step` takes a batch
    ``(levels, labels)`` (the ``levels`` variant of :func:`dgm_ext.data.load_mnist`),
    dequantises it with fresh noise and returns the mean bits/dim as ``loss`` and ``bpd``.

    ``num_classes`` K >= 2 makes the flow class-conditional: the labels, one-hot, are the
    context of the inner flow (built with ``context_dim=K``), so it models ``p(x | y)``;
    training reads them from the batch, :meth:`log_prob`, :meth:`bits_per_dim` and
    :meth:`sample` take ``labels``.
    """

    def __init__(
        self, inner: Flow, alpha: float = 1e-5, levels: int = 256, num_classes: int = 0
    ) -> None:
        super().__init__(inner.event_shape)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
        if num_classes == 1:
            raise ValueError("num_classes must be 0 (unconditional) or >= 2, got 1")
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ValueError(f"levels must be an int >= 2, got {levels!r}")
        self.inner = inner
        self.logit = LogitTransform(alpha)
        self.levels = levels
        self.num_classes = num_classes
        self.dims = math.prod(self.event_shape)

    @property
    def alpha(self) -> float:
        """α of the logit transform."""
        return self.logit.alpha

    @property
    def ops(self) -> Any:
        """The op backend of the inner flow (``dgm_ext.ops`` or its reference)."""
        return getattr(self.inner, "ops", None)

    # -- labels (class-conditional flows) ----------------------------------------------------
    def context_for(self, labels: int | Tensor | None, n: int) -> Tensor | None:
        """The inner flow's context for ``n`` examples of ``labels``: one-hot ``(n, K)`` rows
        for a class-conditional flow (labels required; an int: that class for all), ``None``
        for an unconditional one (labels refused); see :func:`dgm_ext.labels.check_labels`."""
        device, dtype = self._like()
        y = check_labels(labels, n, self.num_classes, device, "flow")
        return None if y is None else one_hot(y, self.num_classes, dtype)

    # -- the two directions ----------------------------------------------------------------
    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Dequantised images ``x̃`` → base: ``(z, log|det ∂z/∂x̃|)`` (logit + inner flow;
        ``context``, e.g. :meth:`context_for`, goes to the inner flow)."""
        y, logdet_logit = self.logit(x)
        z, logdet = self.inner(y) if context is None else self.inner(y, context)
        return z, logdet + logdet_logit

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Base → dequantised images: ``(x̃, log|det ∂x̃/∂z|)``."""
        y, logdet = self.inner.inverse(z) if context is None else self.inner.inverse(z, context)
        x, logdet_sigmoid = self.logit.inverse(y)
        return x, logdet + logdet_sigmoid

    def log_prob(self, x: Tensor, labels: int | Tensor | None = None) -> Tensor:
        """``log q(x̃)`` per example in nats (``log q(x̃ | y)`` of a class-conditional flow,
        which needs the ``labels``)."""
        self.check_input(x)
        z, logdet = self.forward(x, self.context_for(labels, x.shape[0]))
        return standard_normal_log_prob(z) + logdet

    def bits_per_dim(
        self, x: Tensor, noise: Tensor | None = None, labels: int | Tensor | None = None
    ) -> Tensor:
        """bits/dim per example of integer pixels ``x`` (shape ``(N, *event_shape)``), with
        uniform dequantisation noise (drawn unless ``noise`` is given); a class-conditional
        flow needs the images' ``labels``."""
        if isinstance(x, Tensor) and tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"x must have shape (N, {', '.join(map(str, self.event_shape))}), "
                f"got {tuple(x.shape)}"
            )
        device, dtype = self._like()
        x = x.to(device)
        if noise is None:
            noise = torch.rand(x.shape, device=device, dtype=dtype)
        x_tilde = dequantize(x, self.levels, noise.to(device, dtype))
        return bits_per_dim(self.log_prob(x_tilde, labels), self.dims, self.levels)

    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        labels: int | Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n`` dequantised images ``inverse(z)``, ``z ~ N(0, T² I)`` (drawn from
        ``generator`` when given). A class-conditional flow draws images of ``labels``
        (``None``: uniform over the classes, from ``generator``; an int: that class; or one
        label per image)."""
        device, dtype = self._like()
        if generator is None:
            z = self.base_sample(n, temperature)
        else:
            check_sample_args(n, temperature)
            z = torch.randn(n, *self.event_shape, generator=generator, device=generator.device)
            z = z.to(device, dtype) * temperature
        y = sampling_labels(n, labels, self.num_classes, device, "flow", generator)
        context = None if y is None else one_hot(y, self.num_classes, dtype)
        x, _ = self.inverse(z, context)
        return x

    def sample_images(
        self, n: int, temperature: float = 1.0, labels: int | Tensor | None = None
    ) -> Tensor:
        """``n`` samples as images in [0, 1] (clamped), shape ``(n, *event_shape)``."""
        return self.sample(n, temperature, labels).clamp(0.0, 1.0)

    def training_step(self, batch: Any) -> dict[str, Tensor]:
        """Mean bits/dim of the batch's pixels (fresh dequantisation noise): ``loss`` = ``bpd``."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        y = batch_labels(batch, x.shape[0], self.num_classes, self._like()[0], "flow")
        bpd = self.bits_per_dim(x, labels=y).mean()
        return {"loss": bpd, "bpd": bpd.detach()}


@torch.no_grad()
def evaluate_bits_per_dim(
    model: ImageFlow,
    images: Tensor,
    batch_size: int = 500,
    seed: int = 0,
    limit: int | None = None,
    labels: Tensor | None = None,
) -> dict[str, float]:
    """Mean bits/dim (± standard error over examples) of integer-pixel ``images`` under
    ``model``, in eval mode, with dequantisation noise from a generator seeded by ``seed`` (so
    the number is reproducible and independent of the global RNG). A class-conditional flow
    is scored on ``-log₂ p(x | y)`` and needs the images' ``labels``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if model.num_classes and labels is None:
        raise ValueError(
            f"labels: a class-conditional flow (num_classes={model.num_classes}) is scored on "
            "bits/dim given the labels; pass the images' labels"
        )
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"labels: {len(labels)} labels for {len(images)} images")
    if limit is not None:
        images = images[:limit]
        labels = None if labels is None else labels[:limit]
    if images.shape[0] == 0:
        raise ValueError("images: nothing to evaluate (0 images)")
    was_training = model.training
    model.eval()
    _, dtype = model._like()
    gen = torch.Generator().manual_seed(seed)
    values = []
    try:
        for i in range(0, images.shape[0], batch_size):
            x = images[i : i + batch_size]
            noise = torch.rand(x.shape, generator=gen, dtype=dtype)
            y = None if labels is None else labels[i : i + batch_size]
            values.append(model.bits_per_dim(x, noise, y).double().cpu())
    finally:
        model.train(was_training)
    v = torch.cat(values)
    se = float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")
    return {"bpd": float(v.mean()), "bpd_se": se, "n": int(v.numel())}
