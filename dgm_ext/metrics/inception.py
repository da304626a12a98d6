"""Inception-v3 as FID defines it: the feature network for FID, KID and IS on RGB images.

This is the network of the original TensorFlow FID/IS code (the 2015-12-05 Inception graph),
as pytorch-fid and torch-fidelity port it to PyTorch: 1008 logits, 2048-d ``pool3`` features,
images resized bilinearly to 299x299 and scaled to [-1, 1]. Its weights are **loaded from a
local file that the user names; they are never downloaded**.

Weights file
    The standard FID weights converted to PyTorch: pytorch-fid's
    ``pt_inception-2015-12-05-6726825d.pth`` or torch-fidelity's
    ``weights-inception-2015-12-05-6726825d.pth``. Both projects load their file strictly into
    modules with the same parameter names and shapes, which this module reproduces exactly
    (torchvision's ``Inception3`` names without ``AuxLogits``: ``Conv2d_1a_3x3.conv.weight``
    (32, 3, 3, 3), ..., ``Mixed_7c.branch_pool.bn.running_var`` (192,), ``fc.weight``
    (1008, 2048), ``fc.bias`` (1008,); 94 conv + batch-norm units, 566 entries with the
    batch-norm ``num_batches_tracked`` counters, which may be absent from the file). Pass the
    path to :func:`fid_inception_v3`, or set ``$DGM_EXT_INCEPTION_WEIGHTS``.

How FID's Inception differs from torchvision's ``Inception3``
    * 1008 output classes (the TF graph's), no auxiliary classifier, no ``transform_input``.
    * The average-pool branches of the ``Mixed_5*`` (A), ``Mixed_6b..e`` (C) and ``Mixed_7b``
      (E) blocks use ``count_include_pad=False``: TensorFlow's "SAME" average pool divides by
      the number of in-image pixels, not by 9.
    * ``Mixed_7c``'s pool branch is a 3x3 **max** pool (stride 1, padding 1), not an average
      pool: a quirk of the 2015 graph that FID inherits.
    * Batch norm with eps 1e-3, always in eval mode (the stored statistics).

Input convention (the same as the library's MNIST feature network)
    Images in [0, 1], shape ``(N, 3, H, W)``, float (uint8 0..255 is divided by 255). Inside,
    they are resized to 299x299 with ``F.interpolate(mode="bilinear", align_corners=False)``
    (skipped when already 299x299, where it is the identity) and mapped to [-1, 1] by
    ``2x - 1``, exactly as pytorch-fid does. torch-fidelity instead resizes uint8 images with a
    re-implementation of TensorFlow 1.x's bilinear resize and maps with ``(x - 128) / 128``;
    for images that are not 299x299 the two resizes differ slightly, so FIDs are comparable
    with pytorch-fid's to the last digits and with torch-fidelity's/TF's only approximately.
    GAN samples in [-1, 1] must be mapped with ``(x + 1) / 2`` first.

Outputs
    ``features(x)``: (N, 2048) ``pool3`` (global average of ``Mixed_7c``), for FID and KID.
    ``logits(x)``: (N, 1008), ``pool3 @ fc.weight.T + fc.bias``. ``probs(x)``: (N, 1008)
    softmax of the logits **without** the bias, as the original Inception Score code (and
    torch-fidelity's ``logits_unbiased``) computes them; for IS.

Why the network is written here instead of taken from a library
    pytorch-fid and torch-fidelity were the candidates for an optional ``metrics`` extra.
    Both require ``torchvision`` (pytorch-fid's ``inception.py`` and torch-fidelity's package
    ``__init__`` import it at import time). Checked in a throwaway venv with torch 2.13.0+cpu:
    ``pip install torch-fidelity`` replaced torch 2.13.0+cpu by torch 2.14.1 plus the CUDA
    runtime wheels (and torchvision 0.29.1); with torch pinned it picked torchvision 0.28.0,
    which fails to import beside the CPU torch ("operator torchvision::nms does not exist"),
    so ``import torch_fidelity`` failed; installed with ``--no-deps`` both packages fail to
    import ("No module named 'torchvision'"). An extra that replaces the user's torch, or does
    not import beside it, is worse than ~200 lines of plain ``torch.nn`` whose state-dict
    layout is pinned by tests to the published files' layout, so there is no extra.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "INPUT_SIZE",
    "NUM_CLASSES",
    "NUM_FEATURES",
    "WEIGHTS_ENV",
    "WEIGHTS_FILE_NAMES",
    "FIDInceptionV3",
    "InceptionWeightsError",
    "fid_inception_v3",
    "inception_outputs",
    "load_fid_inception_weights",
]

INPUT_SIZE = 299
NUM_FEATURES = 2048
NUM_CLASSES = 1008
WEIGHTS_ENV = "DGM_EXT_INCEPTION_WEIGHTS"
WEIGHTS_FILE_NAMES = (
    "pt_inception-2015-12-05-6726825d.pth",  # pytorch-fid
    "weights-inception-2015-12-05-6726825d.pth",  # torch-fidelity
)
_BN_EPS = 1e-3
_SHOW = 5  # how many offending keys an error message lists


class InceptionWeightsError(ValueError):
    """A weights file that is not an FID Inception-v3 state dict (the message names the file)."""


# --------------------------------------------------------------------------- network
class _ConvBN(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3), ReLU: submodules ``conv`` and ``bn``."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], **kw: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


# Pooling. ATen's CPU kernels for NCHW pooling loop over one output element at a time: in
# an FID pass (batches of 10, one thread) the five 3x3 max pools took 12 % and the eight
# average pools 10 % of the time. On the CPU without autograd they are computed here from
# strided views instead, with results equal bit for bit to ATen's (and so to pytorch-fid's):
# a maximum is exact in any order, and the average pool adds the same float terms in
# ATen's order (row-major over the window, from 0, in the input's dtype) and divides by the
# same count. Elsewhere (CUDA, gradients, other dtypes) the ATen functions run.
def _fast_pool(x: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and x.dim() == 4
        and not (x.requires_grad and torch.is_grad_enabled())
    )


def _max_pool_3x3(x: torch.Tensor, stride: int, padding: int = 0) -> torch.Tensor:
    """``F.max_pool2d(x, 3, stride, padding)``: rows, then columns, of ``torch.maximum``."""
    h, w = x.shape[-2] + 2 * padding, x.shape[-1] + 2 * padding
    if not _fast_pool(x) or min(h, w) < 3:
        return F.max_pool2d(x, kernel_size=3, stride=stride, padding=padding)
    if padding:  # a padded position never wins (NaN still propagates, as in ATen)
        x = F.pad(x, (padding,) * 4, value=float("-inf"))
    span_h = stride * ((h - 3) // stride) + 1  # rows of window starts, strided
    span_w = stride * ((w - 3) // stride) + 1
    r = torch.maximum(x[..., 0:span_h:stride, :], x[..., 1 : 1 + span_h : stride, :])
    torch.maximum(r, x[..., 2 : 2 + span_h : stride, :], out=r)
    c = torch.maximum(r[..., 0:span_w:stride], r[..., 1 : 1 + span_w : stride])
    return torch.maximum(c, r[..., 2 : 2 + span_w : stride], out=c)


def _avg_pool_tf(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 "SAME" average pool as TensorFlow computes it (padding not counted):
    ``F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)``."""
    if not _fast_pool(x):
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1))  # adding a padded 0 leaves ATen's partial sums unchanged
    s = p[..., 0:h, 0:w] + p[..., 0:h, 1 : w + 1]
    for i, j in ((0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)):
        s.add_(p[..., i : i + h, j : j + w])

    def counted(n: int) -> torch.Tensor:  # in-image rows (columns) of each window
        i = torch.arange(n, device=x.device)
        return (i + 1).clamp(max=n - 1) - (i - 1).clamp(min=0) + 1

    return s.div_((counted(h)[:, None] * counted(w)[None, :]).to(x.dtype))


class _MixedA(nn.Module):
    """``Mixed_5b/5c/5d`` (35x35): 1x1 | 1x1→5x5 | 1x1→3x3→3x3 | TF avg pool→1x1."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 64, 1)
        self.branch5x5_1 = _ConvBN(cin, 48, 1)
        self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([a, b, c, d], 1)


class _MixedB(nn.Module):
    """``Mixed_6a`` (35→17): 3x3/2 | 1x1→3x3→3x3/2 | max pool 3x3/2."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = _ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        c = _max_pool_3x3(x, stride=2)
        return torch.cat([a, b, c], 1)


class _MixedC(nn.Module):
    """``Mixed_6b..6e`` (17x17): factorised 7x7 branches and a TF avg-pool branch."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 192, 1)
        self.branch7x7_1 = _ConvBN(cin, c7, 1)
        self.branch7x7_2 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = self.branch7x7dbl_1(x)
        for layer in (
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            c = layer(c)
        d = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([a, b, c, d], 1)


class _MixedD(nn.Module):
    """``Mixed_7a`` (17→8): 1x1→3x3/2 | 1x1→1x7→7x1→3x3/2 | max pool 3x3/2."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = _ConvBN(cin, 192, 1)
        self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b = layer(b)
        c = _max_pool_3x3(x, stride=2)
        return torch.cat([a, b, c], 1)


class _MixedE(nn.Module):
    """``Mixed_7b`` (pool="avg", TF avg pool) and ``Mixed_7c`` (pool="max") at 8x8."""

    def __init__(self, cin: int, pool: Literal["avg", "max"]) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = _ConvBN(cin, 320, 1)
        self.branch3x3_1 = _ConvBN(cin, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], 1)
        if self.pool == "avg":
            p = _avg_pool_tf(x)
        else:  # the 2015 graph's Mixed_7c uses a max pool here
            p = _max_pool_3x3(x, stride=1, padding=1)
        d = self.branch_pool(p)
        return torch.cat([a, b, c, d], 1)


class FIDInceptionV3(nn.Module):
    """FID's Inception-v3 (see the module docstring), frozen and always in eval mode.

    The constructor builds the network with PyTorch's default random initialisation; use
    :func:`fid_inception_v3` to get it with the standard weights. Methods take images in
    [0, 1] of shape ``(N, 3, H, W)`` (float, or uint8 0..255) on any device; they are moved
    to the network's device and dtype, resized to 299x299 and mapped to [-1, 1] inside.
    Gradients flow to the input when it requires them (the parameters never do).
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b = _MixedA(192, pool_features=32)
        self.Mixed_5c = _MixedA(256, pool_features=64)
        self.Mixed_5d = _MixedA(288, pool_features=64)
        self.Mixed_6a = _MixedB(288)
        self.Mixed_6b = _MixedC(768, c7=128)
        self.Mixed_6c = _MixedC(768, c7=160)
        self.Mixed_6d = _MixedC(768, c7=160)
        self.Mixed_6e = _MixedC(768, c7=192)
        self.Mixed_7a = _MixedD(768)
        self.Mixed_7b = _MixedE(1280, pool="avg")
        self.Mixed_7c = _MixedE(2048, pool="max")
        self.fc = nn.Linear(NUM_FEATURES, NUM_CLASSES)
        self.weights_path: Path | None = None  # set by fid_inception_v3
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FIDInceptionV3:
        """Ignore ``mode``: the network stays in eval mode (batch norm uses stored statistics)."""
        return super().train(False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] ``(N, 3, H, W)`` → the network's input: 299x299 in [-1, 1]."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"expected RGB images of shape (N, 3, H, W), got {tuple(x.shape)}"
                + ("; repeat grey images to 3 channels first" if x.dim() == 4 else "")
            )
        w = self.fc.weight
        if x.dtype == torch.uint8:
            x = x.to(w.device, w.dtype) / 255.0
        elif x.is_floating_point():
            x = x.to(w.device, w.dtype)
        else:
            raise TypeError(f"images must be floating point or uint8, got {x.dtype}")
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            size = (INPUT_SIZE, INPUT_SIZE)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return 2.0 * x - 1.0

    def _pool3(self, x: torch.Tensor) -> torch.Tensor:
        """Network input (already preprocessed) → (N, 2048) ``pool3``."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = _max_pool_3x3(x, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = _max_pool_3x3(x, stride=2)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2048) ``pool3`` features (for FID and KID) of images in [0, 1]."""
        return self._pool3(self.preprocess(x))

    def logits(self, x: torch.Tensor, *, bias: bool = True) -> torch.Tensor:
        """(N, 1008) logits ``pool3 @ fc.weight.T (+ fc.bias)`` of images in [0, 1]."""
        return self._logits(self.features(x), bias)

    def _logits(self, pool3: torch.Tensor, bias: bool) -> torch.Tensor:
        return F.linear(pool3, self.fc.weight, self.fc.bias if bias else None)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1008) class probabilities for the Inception Score: softmax of the logits
        without the bias, as the original IS code and torch-fidelity compute them."""
        return torch.softmax(self.logits(x, bias=False), dim=-1)

    def features_and_probs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features(x), probs(x))`` from a single pass through the network."""
        pool3 = self.features(x)
        return pool3, torch.softmax(self._logits(pool3, bias=False), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`logits` (with the bias)."""
        return self.logits(x)


# --------------------------------------------------------------------------- weights
def _resolve_path(weights_path: str | os.PathLike[str] | None) -> Path:
    how_to_get = (
        "dgm_ext never downloads them: get the standard FID Inception weights file once, "
        f"pytorch-fid's {WEIGHTS_FILE_NAMES[0]!r} or torch-fidelity's "
        f"{WEIGHTS_FILE_NAMES[1]!r} (the same layout; from those projects' releases), and "
        f"pass its path as weights_path or set ${WEIGHTS_ENV}"
    )
    if weights_path is None:
        env = os.environ.get(WEIGHTS_ENV, "")
        if not env:
            raise FileNotFoundError(
                f"no FID Inception-v3 weights file given (weights_path=None and ${WEIGHTS_ENV} "
                f"is unset); {how_to_get}"
            )
        weights_path = env
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"FID Inception-v3 weights file not found: '{path}'"
            + (" (a directory)" if path.is_dir() else "")
            + f"; {how_to_get}"
        )
    return path


def _examples(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def load_fid_inception_weights(
    net: FIDInceptionV3, weights_path: str | os.PathLike[str]
) -> FIDInceptionV3:
    """Load a weights file into ``net`` strictly (names, shapes, finiteness) and return it.

    The file is read with ``torch.load(map_location="cpu", weights_only=True)``; it must be a
    state dict with exactly ``net``'s keys and shapes, except that the batch-norm
    ``num_batches_tracked`` counters (unused in eval mode) may be absent. Raises
    ``FileNotFoundError`` for a missing file and :class:`InceptionWeightsError` (a
    ``ValueError``) naming the file and listing a few missing, unexpected or mis-shaped keys.
    """
    path = _resolve_path(weights_path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InceptionWeightsError(
            f"'{path}' could not be read as a PyTorch state dict with "
            f"torch.load(weights_only=True): {type(e).__name__}: {e}"
        ) from e
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise InceptionWeightsError(
            f"'{path}' is not a state dict (a mapping of parameter names to tensors), got "
            f"{type(obj).__name__}"
        )
    expected = net.state_dict()
    state = dict(obj)
    for key, value in expected.items():  # counters of batch norm: absent from some files
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = value.clone()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mis_shaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_examples(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_examples(unexpected)}")
        if mis_shaped:
            parts.append(f"{len(mis_shaped)} wrong shapes: {_examples(mis_shaped)}")
        hint = ""
        fc = state.get("fc.weight")
        if "AuxLogits.fc.weight" in state or (fc is not None and fc.shape[0] == 1000):
            hint = (
                " (this looks like torchvision's ImageNet Inception-v3, not the FID weights: "
                f"use {WEIGHTS_FILE_NAMES[0]!r} or {WEIGHTS_FILE_NAMES[1]!r})"
            )
        raise InceptionWeightsError(
            f"'{path}' is not an FID Inception-v3 state dict{hint}: " + "; ".join(parts)
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise InceptionWeightsError(f"'{path}' has non-finite values in {_examples(bad)}")
    net.load_state_dict(state, strict=True)
    net.weights_path = path
    return net


def fid_inception_v3(
    weights_path: str | os.PathLike[str] | None = None,
    *,
    device: torch.device | str | None = None,
) -> FIDInceptionV3:
    """FID's Inception-v3 with the standard weights read from a local file.

    Args:
        weights_path: the weights file (pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``
            or torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``); ``None`` reads
            the path from ``$DGM_EXT_INCEPTION_WEIGHTS``. Never downloaded.
        device: where to put the network (default: the CPU).

    Returns:
        A frozen :class:`FIDInceptionV3` in eval mode (``weights_path`` attribute set).

    Raises:
        FileNotFoundError: no path given, or no file there.
        InceptionWeightsError: the file is not a state dict of this network's layout.
    """
    path = _resolve_path(weights_path)
    net = load_fid_inception_weights(FIDInceptionV3(), path)
    return net.to(device) if device is not None else net


# --------------------------------------------------------------------------- batched passes
def _batches(
    net: FIDInceptionV3, images: Any, batch_size: int, check_range: bool
) -> Iterator[torch.Tensor]:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a tensor or numpy array, got {type(images).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected RGB images of shape (N, 3, H, W), got {tuple(images.shape)}")
    if check_range and images.is_floating_point() and images.numel():
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f"images must be in [0, 1] (got values in [{lo:.3g}, {hi:.3g}]); map samples "
                "in [-1, 1] with (x + 1) / 2, or pass check_range=False"
            )
    for i in range(0, images.shape[0], batch_size):
        yield images[i : i + batch_size]


def inception_outputs(
    net: FIDInceptionV3,
    images: torch.Tensor | np.ndarray,
    batch_size: int = 50,
    *,
    check_range: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features, probs)`` of ``images`` in one pass, in batches, without gradients.

    Args:
        net: from :func:`fid_inception_v3`, on any device (batches are moved there).
        images: ``(N, 3, H, W)``, float in [0, 1] or uint8 0..255; tensor or numpy array.
        batch_size: images per forward pass.
        check_range: raise ``ValueError`` when float images leave [0, 1] (by more than 1e-3).

    Returns:
        ``(N, 2048)`` features and ``(N, 1008)`` IS probabilities, float64 CPU tensors.
    """
    feats, probs = [], []
    with torch.no_grad():
        for x in _batches(net, images, batch_size, check_range):
            f, p = net.features_and_probs(x)
            feats.append(f.double().cpu())
            probs.append(p.double().cpu())
    if not feats:
        empty = torch.empty(0, dtype=torch.float64)
        return empty.reshape(0, NUM_FEATURES), empty.reshape(0, NUM_CLASSES)
    return torch.cat(feats), torch.cat(probs)
