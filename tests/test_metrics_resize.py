"""The three resize conventions (dgm_ext.metrics.resize) against references written here:
pytorch-fid's bilinear (half-pixel centres, PyTorch's clamping) and TensorFlow 1.x's bilinear
(``align_corners=False``, ``half_pixel_centers=False``) as numpy loops, clean-fid's PIL bicubic
with Pillow called directly; and through a folder, end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dgm_ext.metrics import evaluate as ev
from dgm_ext.metrics.features import folder_features
from dgm_ext.metrics.resize import resize_images, to_channels


def bilinear_np(img: np.ndarray, oh: int, ow: int, half_pixel: bool) -> np.ndarray:
    """One channel (H, W) float32 -> (oh, ow). half_pixel: PyTorch align_corners=False
    (src = (dst + 0.5) * in/out - 0.5, clamped at 0); else TF 1.x (src = dst * in/out)."""
    h, w = img.shape
    out = np.empty((oh, ow), np.float64)

    def src(d, n_in, n_out):
        s = n_in / n_out
        if half_pixel:
            v = max((d + 0.5) * s - 0.5, 0.0)
        else:
            v = float(np.float32(d) * np.float32(s))  # TF computes in float32
        i0 = int(np.floor(v))
        return i0, min(i0 + 1, n_in - 1), v - i0

    for y in range(oh):
        y0, y1, ly = src(y, h, oh)
        for x in range(ow):
            x0, x1, lx = src(x, w, ow)
            top = img[y0, x0] + (img[y0, x1] - img[y0, x0]) * lx
            bottom = img[y1, x0] + (img[y1, x1] - img[y1, x0]) * lx
            out[y, x] = top + (bottom - top) * ly
    return out


def rand_uint8(seed, shape):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


SHAPES = [((2, 3, 20, 20), (16, 16)), ((1, 1, 12, 9), (31, 40)), ((1, 3, 32, 32), (299, 299))]


@pytest.mark.parametrize(("shape", "size"), SHAPES)
def test_pytorch_fid_and_tf_bilinear(shape, size):
    a = rand_uint8(sum(shape), shape)
    x = torch.from_numpy(a)
    for method, half in (("pytorch-fid", True), ("tf", False)):
        got = resize_images(x, size, method).numpy()
        assert got.dtype == np.float32 and got.shape == (*shape[:2], *size)
        f = a.astype(np.float32) / 255.0
        want = np.stack([np.stack([bilinear_np(f[i, c], *size, half) for c in range(shape[1])])
                         for i in range(shape[0])])  # fmt: skip
        np.testing.assert_allclose(got, want, atol=2e-6, rtol=0, err_msg=method)
    # the two conventions differ (by far more than rounding) whenever the size changes
    diff = resize_images(x, size, "tf") - resize_images(x, size, "pytorch-fid")
    assert diff.abs().max() > 1e-2


def test_tf_keeps_source_pixels_on_integer_upscaling():
    a = torch.from_numpy(rand_uint8(1, (1, 1, 5, 7)))
    up = resize_images(a, (10, 14), "tf")
    torch.testing.assert_close(up[..., ::2, ::2], a.float() / 255, atol=0, rtol=0)


@pytest.mark.parametrize(("shape", "size"), SHAPES[:2])
def test_clean_is_pil_bicubic_per_channel(shape, size):
    a = rand_uint8(7 + sum(shape), shape)
    got = resize_images(torch.from_numpy(a), size, "clean").numpy()
    want = np.empty_like(got)
    for i in range(shape[0]):
        for c in range(shape[1]):
            im = Image.fromarray(a[i, c].astype(np.float32))  # mode "F", as clean-fid
            r = np.asarray(im.resize((size[1], size[0]), resample=Image.BICUBIC))
            want[i, c] = np.clip(r, 0, 255) / np.float32(255)
    np.testing.assert_array_equal(got, want)
    # float input in [0, 1] goes through the same 0..255 values
    f = torch.from_numpy(a.astype(np.float32) / 255)
    np.testing.assert_allclose(resize_images(f, size, "clean").numpy(), want, atol=1e-6)


def test_same_size_is_identity_and_channels():
    a = torch.from_numpy(rand_uint8(2, (2, 3, 8, 8)))
    for method in ("pytorch-fid", "tf", "clean"):
        torch.testing.assert_close(resize_images(a, (8, 8), method), a.float() / 255)
    grey = to_channels(a, 1)
    want = (a.double() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1) / 255
    torch.testing.assert_close(grey[:, 0].double(), want, atol=1e-6, rtol=0)
    assert torch.equal(to_channels(a[:, :1], 3), a[:, :1].expand(-1, 3, -1, -1))
    with pytest.raises(ValueError, match="resize must be one of"):
        resize_images(a, (4, 4), "bicubic")


@pytest.mark.parametrize("method", ["pytorch-fid", "tf", "clean"])
def test_folder_uses_the_convention(tmp_path, method):
    arrays = [rand_uint8(10 + i, (20, 20, 3)) for i in range(3)]
    for i, arr in enumerate(arrays):
        Image.fromarray(arr).save(tmp_path / f"{i}.png")
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3 * 16 * 16, 4, generator=g, dtype=torch.float64)

    def extract(x):
        flat = x.reshape(x.shape[0], -1).double()
        return flat @ w, None

    space = ev.FeatureSpace("lin", "map", 4, extract, channels=3, input_size=(16, 16))
    fs = folder_features(tmp_path, space, resize=method, workers=0, cache=False)
    x = np.stack([a.transpose(2, 0, 1) for a in arrays])
    if method == "clean":
        ref = np.stack(
            [
                [
                    np.clip(
                        np.asarray(
                            Image.fromarray(c.astype(np.float32)).resize(
                                (16, 16), resample=Image.BICUBIC
                            )
                        ),
                        0,
                        255,
                    )
                    / 255
                    for c in img
                ]
                for img in x
            ]
        )
    else:
        f = x.astype(np.float32) / 255
        ref = np.stack([[bilinear_np(c, 16, 16, method == "pytorch-fid") for c in img]
                        for img in f])  # fmt: skip
    want = torch.from_numpy(ref).reshape(3, -1).double() @ w
    torch.testing.assert_close(fs.features, want, atol=1e-5, rtol=1e-6)
