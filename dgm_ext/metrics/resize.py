"""Resizing images to a feature network's input: the three conventions FID tools use.

FIDs computed with different resizes are different numbers (clean-fid, Parmar et al. 2022,
measures differences of several FID points at low resolution); every result names its
convention, and a number is comparable only with published numbers of the same one:

``pytorch-fid`` (default)
    ``F.interpolate(mode="bilinear", align_corners=False)`` on float images in [0, 1], no
    antialiasing: pytorch-fid's ``InceptionV3(resize_input=True)`` and this library's
    :class:`~dgm_ext.metrics.inception.FIDInceptionV3`. Comparable with pytorch-fid and most
    papers that used it (FID on CIFAR-10 in GAN papers since about 2019).
``tf``
    TensorFlow 1.x ``tf.image.resize_bilinear`` (``align_corners=False``, no half-pixel
    centres: source pixel ``dst * in / out``), the resize of the original TTUR FID code and
    of torch-fidelity (which re-implements it). Comparable with torch-fidelity and numbers
    from the original TensorFlow code. torch-fidelity also maps uint8 values with
    ``(x - 128) / 128`` instead of ``2 x / 255 - 1``; that shift of 0.4 % of a grey level is
    not reproduced here.
``clean``
    PIL's bicubic resize with antialiasing, one float32 (``"F"``) image per channel, clipped to
    [0, 255]: clean-fid's ``mode="clean"``. Comparable with clean-fid's "clean" numbers.

Images are ``(N, C, H, W)``: uint8 0..255 or float in [0, 1]; the result is float32 in [0, 1]
(for ``clean`` exactly clean-fid's values divided by 255).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["RESIZE_METHODS", "check_resize", "resize_images", "to_channels"]

RESIZE_METHODS = ("pytorch-fid", "tf", "clean")
# ITU-R 601-2 luma, the weights of PIL's convert("L"): a colour image goes to a grey network
# with the same numbers whether it came from a file or from a tensor.
_LUMA = (0.299, 0.587, 0.114)


def check_resize(method: str) -> str:
    """``method`` if it names a convention of :data:`RESIZE_METHODS`, else ``ValueError``."""
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_METHODS)}, got {method!r}")
    return method


def to_channels(x: Tensor, channels: int | None) -> Tensor:
    """``x`` (N, C, H, W) with ``channels`` channels: grey repeated to RGB, RGB to grey with
    PIL's luma weights; unchanged when ``channels`` is None or already equal."""
    c = x.shape[1]
    if channels is None or c == channels:
        return x
    if c == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1)
    if c == 3 and channels == 1:
        w = torch.tensor(_LUMA, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        scale = 1.0 / 255.0 if x.dtype == torch.uint8 else 1.0
        return (x.float() * w).sum(1, keepdim=True) * scale
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels")


def _as_float01(x: Tensor) -> Tensor:
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not x.is_floating_point():
        raise TypeError(f"images must be floating point or uint8, got {x.dtype}")
    return x.float()


def _tf1_bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    """TF 1.x ``resize_bilinear`` (align_corners=False, half_pixel_centers=False), float32."""
    h, w = x.shape[-2:]
    oh, ow = size

    def axis(inp: int, out: int) -> tuple[Tensor, Tensor, Tensor]:
        # TF computes the source coordinate in float32 as dst * (in / out)
        scale = torch.tensor(inp / out, dtype=torch.float32)
        src = torch.arange(out, dtype=torch.float32) * scale
        lo = torch.floor(src).to(torch.long)
        hi = torch.clamp(lo + 1, max=inp - 1)
        return lo, hi, src - lo.to(torch.float32)

    y0, y1, ly = (t.to(x.device) for t in axis(h, oh))
    x0, x1, lx = (t.to(x.device) for t in axis(w, ow))
    top, bottom = x[:, :, y0, :], x[:, :, y1, :]
    lx = lx.view(1, 1, 1, ow)
    top = top[..., x0] + (top[..., x1] - top[..., x0]) * lx
    bottom = bottom[..., x0] + (bottom[..., x1] - bottom[..., x0]) * lx
    return top + (bottom - top) * ly.view(1, 1, oh, 1)


def _pil_bicubic(x255: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """clean-fid's resize: each channel a PIL "F" image, BICUBIC (antialiased), clipped."""
    from PIL import Image

    n, c, _, _ = x255.shape
    out = np.empty((n, c, *size), dtype=np.float32)
    for i in range(n):
        for j in range(c):
            img = Image.fromarray(x255[i, j])
            out[i, j] = np.asarray(img.resize((size[1], size[0]), resample=Image.BICUBIC))
    return np.clip(out, 0.0, 255.0)


def resize_images(x: Tensor, size: tuple[int, int], method: str = "pytorch-fid") -> Tensor:
    """``x`` (N, C, H, W), uint8 or float in [0, 1], resized to ``size`` = (height, width) with
    the convention ``method`` (see the module docstring); float32 in [0, 1]. Images already of
    that size are only converted (every convention is the identity there)."""
    check_resize(method)
    if x.dim() != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return _as_float01(x)
    if method == "pytorch-fid":
        return F.interpolate(_as_float01(x), size=size, mode="bilinear", align_corners=False)
    if method == "tf":
        return _tf1_bilinear(_as_float01(x), size)
    # clean-fid resizes the 0..255 values of uint8 images
    x255 = x.float() if x.dtype == torch.uint8 else _as_float01(x) * 255.0
    out = _pil_bicubic(np.ascontiguousarray(x255.cpu().numpy()), size)
    return torch.from_numpy(out).div_(255.0).to(x.device)
