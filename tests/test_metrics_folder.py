"""Streaming image folders (dgm_ext.metrics.folder, folder_features): what users evaluate.

Every expected image is decoded here with Pillow directly and converted / resized with plain
numpy or ``F.interpolate`` (pytorch-fid's resize), never through the code under test. The
feature network is a seeded linear map of the resized images, so features can be recomputed.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dgm_ext.metrics import evaluate as ev
from dgm_ext.metrics.features import folder_features
from dgm_ext.metrics.folder import (
    FolderStream,
    SkippedImageWarning,
    iter_folder,
    list_images,
    peek_image,
)

SIZE = (16, 16)


def linear_space(channels: int, size=SIZE, ident: str | None = None) -> ev.FeatureSpace:
    """Features: a seeded linear map of the (channels, *size) input; probs: a softmax."""
    g = torch.Generator().manual_seed(7)
    d = channels * size[0] * size[1]
    w = torch.randn(d, 6, generator=g, dtype=torch.float64)
    v = torch.randn(d, 4, generator=g, dtype=torch.float64)

    def extract(x):
        assert x.shape[1:] == (channels, *size), x.shape
        flat = x.reshape(x.shape[0], -1).double()
        return flat @ w, torch.softmax(flat @ v, 1)

    return ev.FeatureSpace("linear", "map", 6, extract, channels=channels, input_size=size,
                           ident=ident)  # fmt: skip


def rng_image(rng, shape) -> np.ndarray:
    return rng.integers(0, 256, shape, dtype=np.uint8)


def expected(arr: np.ndarray, channels: int, size=SIZE) -> torch.Tensor:
    """(C, *size) float in [0, 1]: grey repeated / colour to PIL luma, then F.interpolate."""
    if arr.ndim == 2:
        a = np.repeat(arr[None], 3, 0) if channels == 3 else arr[None]
    elif channels == 3:
        a = arr.transpose(2, 0, 1)
    else:
        a = np.asarray(Image.fromarray(arr).convert("L"))[None]
    x = torch.from_numpy(a.astype(np.float32) / 255.0)[None]
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x[0]


@pytest.fixture
def mixed(tmp_path):
    """A folder with subfolders, grey and RGB PNG files of different sizes, other files."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    (root / "sub" / "deeper").mkdir(parents=True)
    arrays = {
        "a.png": rng_image(rng, (16, 16)),  # grey, the network's size
        "b.PNG": rng_image(rng, (20, 12, 3)),  # RGB, another size, upper-case suffix
        "sub/c.png": rng_image(rng, (9, 9)),  # grey, small
        "sub/deeper/d.png": rng_image(rng, (16, 16, 3)),
        "sub/e.webp": None,  # lossless WebP, below
    }
    for name, arr in arrays.items():
        if arr is not None:
            Image.fromarray(arr).save(root / name)
    webp = rng_image(rng, (16, 16, 3))
    Image.fromarray(webp).save(root / "sub/e.webp", lossless=True)
    arrays["sub/e.webp"] = webp
    (root / "notes.txt").write_text("not an image")
    return root, arrays


def test_listing_is_recursive_sorted_and_filtered(mixed):
    root, arrays = mixed
    names = [p.relative_to(root).as_posix() for p in list_images(root)]
    assert names == sorted(arrays)  # subfolders included, .txt left out
    assert peek_image(root) == (1, 16, 16)  # "a.png" first: grey 16x16
    with pytest.raises(ValueError, match="holds no"):
        (root / "empty").mkdir()
        list_images(root / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(root / "nope")


@pytest.mark.parametrize("channels", [3, 1])
def test_mixed_sizes_and_channels_are_converted_and_resized(mixed, channels):
    root, arrays = mixed
    files = list_images(root)
    stream = FolderStream(files)
    batches = list(
        iter_folder(files, stream, channels=channels, size=SIZE, batch_size=2, workers=0)
    )
    got = torch.cat([b.float() / 255 if b.dtype == torch.uint8 else b for b in batches])
    got = torch.cat([F.interpolate(g[None], size=SIZE, mode="bilinear")[0][None]
                     if g.shape[-2:] != SIZE else g[None] for g in got])  # fmt: skip
    want = torch.stack([expected(arrays[p.relative_to(root).as_posix()], channels) for p in files])
    assert got.shape == (5, channels, *SIZE)
    torch.testing.assert_close(got, want, atol=2e-6, rtol=0)
    assert stream.skipped == []


def test_folder_features_match_direct_computation(mixed):
    root, arrays = mixed
    space = linear_space(3)
    fs = folder_features(root, space, batch_size=3, workers=0, cache=False)
    files = list_images(root)
    x = torch.stack([expected(arrays[p.relative_to(root).as_posix()], 3) for p in files])
    f, p = space.extract(x)
    assert fs.n == fs.n_available == 5 and fs.skipped == []
    torch.testing.assert_close(fs.features, f, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(fs.probs, p, atol=1e-9, rtol=1e-9)
    # --n: the first files in sorted order, the number that exist still known
    fs3 = folder_features(root, space, n=3, batch_size=2, workers=0, cache=False)
    assert fs3.n == 3 and fs3.n_available == 5
    torch.testing.assert_close(fs3.features, f[:3], atol=1e-9, rtol=1e-9)


def test_workers_give_the_same_batches(mixed):
    root, _ = mixed
    files = list_images(root)
    runs = []
    for workers in (0, 2):
        stream = FolderStream(files)
        runs.append(list(iter_folder(files, stream, channels=3, size=SIZE, batch_size=2,
                                     workers=workers)))  # fmt: skip
    assert len(runs[0]) == len(runs[1]) == 3
    for a, b in zip(*runs, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_broken_files_are_skipped_named_and_counted(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "imgs"
    root.mkdir()
    good = [rng_image(rng, (16, 16, 3)) for _ in range(4)]
    for i, a in enumerate(good):
        Image.fromarray(a).save(root / f"{i}.png")
    full = (root / "0.png").read_bytes()
    (root / "1b_truncated.png").write_bytes(full[: len(full) // 2])
    (root / "2b_garbage.jpg").write_bytes(b"this is not a JPEG file at all" * 10)
    space = linear_space(3)
    with pytest.warns(SkippedImageWarning, match=r"skipped 2 of 6") as rec:
        fs = folder_features(root, space, batch_size=4, workers=0, cache=False)
    message = str(rec[0].message)
    assert "1b_truncated.png" in message and "2b_garbage.jpg" in message
    assert fs.n == 4 and fs.n_available == 6 and len(fs.skipped) == 2
    x = torch.stack([expected(a, 3) for a in good])
    torch.testing.assert_close(fs.features, space.extract(x)[0], atol=1e-9, rtol=1e-9)


def test_decompression_bomb_limit_is_honoured(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    root = tmp_path / "imgs"
    root.mkdir()
    Image.fromarray(rng_image(rng, (16, 16, 3))).save(root / "small.png")
    Image.fromarray(rng_image(rng, (64, 64, 3))).save(root / "zbig.png")
    # Pillow refuses images over twice MAX_IMAGE_PIXELS (here 2 * 1000 < 64 * 64) before
    # decoding them: that file is skipped, the small one (256 pixels) evaluated
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.warns(SkippedImageWarning, match=r"zbig\.png \(DecompressionBombError"):
        fs = folder_features(root, linear_space(3), workers=0, cache=False)
    assert fs.n == 1 and [p for p, _ in fs.skipped] == [str(root / "zbig.png")]


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    a16 = np.array([[0, 257 * 100, 65535, 257 * 7]] * 4, dtype=np.uint16)
    Image.fromarray(a16).save(root / "x.png")
    files = list_images(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing skipped
        (grey,) = list(iter_folder(files, FolderStream(files), channels=1, size=None))
        (rgb,) = list(iter_folder(files, FolderStream(files), channels=3, size=None))
    assert grey.dtype == rgb.dtype == torch.uint8
    want = (a16 // 257).astype(np.uint8)  # exact: every value here is a multiple of 257
    np.testing.assert_array_equal(grey[0, 0].numpy(), want)
    for c in range(3):
        np.testing.assert_array_equal(rgb[0, c].numpy(), want)


def test_inception_feature_space_reads_the_weights_file(tmp_path):
    """The Inception space: RGB 299x299 input, float32 features, its file's sha256 as ident,
    the same features as the network itself (seeded weights of the published layout)."""
    import hashlib

    from test_metrics_inception import seeded_state

    from dgm_ext.metrics.inception import FIDInceptionV3

    net = FIDInceptionV3()
    net.load_state_dict(seeded_state({k: tuple(v.shape) for k, v in net.state_dict().items()}))
    path = tmp_path / "w.pth"
    torch.save(net.state_dict(), path)
    space = ev.inception_feature_space(path)
    assert (space.channels, space.input_size, space.feature_dtype) == (3, (299, 299), torch.float32)
    assert space.ident == f"fid-inception-v3:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0))
    f, p = space.extract(x)
    with torch.no_grad():
        want_f, want_p = net.features_and_probs(x)
    torch.testing.assert_close(f.float(), want_f, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(p.float(), want_p, rtol=1e-4, atol=1e-7)
