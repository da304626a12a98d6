"""dgm_ext.metrics behaviours that mutation testing (tools/mutation.sh, docs/MUTATION.md) found
untested or checked only by fragment: every argument error of the Fréchet distance, the
Inception Score, KID and the feature checks, compared whole (the message names the argument,
its shape or value, and the rule); and, for the evaluation modules (features, evaluate, folder,
prdc, resize), the feature cache, FID / IS / precision / coverage against numpy, scipy and PIL,
resizing conventions, devices and the memory bounds the docstrings promise. Each test was run
against the mutant it targets (docs/MUTATION.md: MUTANT_UNDER_TEST=<name> in the mutants/ copy)
and fails there."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from dgm_ext.metrics import frechet, scores, stats

EYE2 = np.eye(2)
FEATS = np.arange(12.0).reshape(4, 3) ** 1.5


def _message(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as err:
        fn(*args, **kwargs)
    return str(err.value)


def test_trace_sqrt_product_messages() -> None:
    tsp = frechet.trace_sqrt_product
    assert _message(tsp, np.ones(3), EYE2) == "sigma1 must be a square 2-D matrix, got shape (3,)"
    assert (
        _message(tsp, EYE2, np.ones((2, 3)))
        == "sigma2 must be a square 2-D matrix, got shape (2, 3)"
    )
    assert _message(tsp, EYE2, np.eye(3)) == "sigma1 (2, 2) and sigma2 (3, 3) differ in shape"
    assert _message(tsp, EYE2, np.array([[1.0, np.nan], [0, 1]])) == "sigma2 contains NaN or Inf"
    asym = np.array([[1.0, 0.5], [0.0, 1.0]])
    assert _message(tsp, asym, EYE2) == (
        "sigma1 is not symmetric (max |sigma1 - sigma1.T| = 0.5, max |sigma1| = 1); "
        "it must be a covariance matrix"
    )
    indefinite = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues -1 and 3
    assert _message(tsp, EYE2, indefinite) == (
        "sigma2 is not positive semi-definite: smallest eigenvalue -1, largest 3; "
        "it must be a covariance matrix"
    )


def test_frechet_distance_messages() -> None:
    fd = frechet.frechet_distance_from_stats
    assert _message(fd, [np.inf, 0], EYE2, [0, 0], EYE2) == "mu1 contains NaN or Inf"
    assert _message(fd, [0, 0], EYE2, [0, np.nan], EYE2) == "mu2 contains NaN or Inf"
    assert _message(fd, np.zeros((2, 1)), EYE2, [0, 0], EYE2) == (
        "mu1 must be 1-D (features,), got shape (2, 1)"
    )
    assert _message(fd, [0, 0], EYE2, [0, 0], np.eye(3)) == (
        "sigma2 must have shape (2, 2) to match mu of shape (2,), got (3, 3)"
    )
    assert _message(fd, [0, 0, 0], np.eye(3), [0, 0], EYE2) == (
        "the two statistics have different feature widths: mu1 (3,), mu2 (2,)"
    )
    assert _message(frechet.frechet_distance, (np.zeros(3),), FEATS) == (
        "features_a as a tuple must be (mu, sigma), got 1 items"
    )
    assert _message(frechet.frechet_distance, FEATS, FEATS[:, :2]) == (
        "features_a and features_b have different feature widths: 3 and 2"
    )


def test_feature_checks_name_the_argument() -> None:
    ff = frechet.frechet_distance
    assert _message(ff, np.zeros(4), FEATS) == (
        "features_a must be 2-D (samples, features), got shape (4,)"
    )
    assert _message(ff, FEATS, FEATS[:1]) == (
        "features_b needs at least 2 samples for a covariance, got 1"
    )
    assert _message(ff, np.zeros((3, 0)), FEATS) == (
        "features_a has no feature columns (shape (3, 0))"
    )
    bad = FEATS.copy()
    bad[1, 1] = np.inf
    assert _message(ff, FEATS, bad) == "features_b contains NaN or Inf"
    assert _message(ff, torch.zeros(3, 2, dtype=torch.complex64), FEATS) == (
        "features_a must be real, got a complex tensor (torch.complex64)"
    )
    assert _message(stats.check_features, np.array([["a"]]), "x") == (
        "x must be a real numeric array, got dtype <U1"
    )
    assert _message(stats.feature_statistics, np.zeros(3)) == (
        "features must be 2-D (samples, features), got shape (3,)"
    )


def test_inception_score_messages() -> None:
    p = np.full((4, 2), 0.5)
    assert _message(scores.inception_score, p[0]) == (
        "probs must be 2-D (samples, classes), got shape (2,)"
    )
    for splits in (0, 1.0, True):
        assert _message(scores.inception_score, p, splits) == (
            f"splits must be a positive integer, got {splits!r}"
        )
    assert _message(scores.inception_score, p, 5) == "probs has 4 rows, fewer than splits=5"
    assert _message(scores.inception_score, np.array([["a", "b"]])) == (
        "probs must be a real numeric array, got dtype <U1"
    )
    assert _message(scores.inception_score, np.zeros((4, 0)), 2) == "probs has no class columns"
    q = p.copy()
    q[2, 0] = np.nan
    assert _message(scores.inception_score, q, 2) == "probs contains NaN or Inf"
    q[2] = [1.25, -0.25]
    assert _message(scores.inception_score, q, 2) == "probs must be non-negative (min -0.25)"
    q[2] = [0.9, 0.3]
    assert _message(scores.inception_score, q, 2) == (
        f"probs rows must sum to 1 (within {scores.PROBS_SUM_ATOL}): row 2 sums to 1.2; "
        "pass softmax probabilities, not logits"
    )


def test_kid_messages() -> None:
    kid = scores.kernel_inception_distance
    assert _message(kid, FEATS, FEATS[:, :2]) == (
        "features_a and features_b have different feature widths: 3 and 2"
    )
    for value in (0, 2.0, False):
        assert _message(kid, FEATS, FEATS, subsets=value, subset_size=2) == (
            f"subsets must be a positive integer, got {value!r}"
        )
        assert _message(kid, FEATS, FEATS, subsets=1, subset_size=value) == (
            f"subset_size must be a positive integer, got {value!r}"
        )
    assert _message(kid, FEATS, FEATS, subsets=1, subset_size=1) == (
        "subset_size must be at least 2, got 1"
    )
    assert _message(scores.kid_subset_indices, 5, 3, 1, 4) == (
        "subset_size=4 exceeds min(n_a, n_b)=3"
    )


def test_inception_head_probabilities_drop_the_bias() -> None:
    """IS probabilities are softmax(pool3 @ W.T) without the fc bias (as the original IS code
    and torch-fidelity); logits keep it unless told otherwise."""
    from dgm_ext.metrics.inception import FIDInceptionV3

    torch.manual_seed(0)
    net = FIDInceptionV3().eval()
    with torch.no_grad():
        net.fc.bias.copy_(torch.randn_like(net.fc.bias) * 5)  # a bias that shows
        x = torch.rand(1, 3, 32, 32)  # one image: each call is a full Inception pass
        pool3 = net.features(x).double()
        w, b = net.fc.weight.double(), net.fc.bias.double()
        want = torch.softmax(pool3 @ w.T, dim=-1)
        torch.testing.assert_close(net.probs(x).double(), want, rtol=1e-4, atol=1e-7)
        feats, probs = net.features_and_probs(x)
        torch.testing.assert_close(probs.double(), want, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(feats.double(), pool3)
        torch.testing.assert_close(net.logits(x).double(), pool3 @ w.T + b, rtol=1e-4, atol=1e-4)


def test_psd_tolerance_is_relative_to_the_largest_eigenvalue() -> None:
    """A covariance may have eigenvalues below 0 by at most 1e-5 × its largest one."""
    tsp = frechet.trace_sqrt_product
    # −1 ≥ −1e-5 · 1e6: accepted; Tr √(Σ₁ I) = √1e6 (the negative direction dropped)
    assert tsp(np.diag([1e6, -1.0]), EYE2) == pytest.approx(1e3, rel=1e-12)
    # −1e-5 < −1e-5 · 0.01: refused, however small in absolute terms
    assert _message(tsp, np.diag([0.01, -1e-5]), EYE2) == (
        "sigma1 is not positive semi-definite: smallest eigenvalue -1e-05, largest 0.01; "
        "it must be a covariance matrix"
    )


def test_negative_frechet_distance_within_round_off_is_zero() -> None:
    """Σ = diag(1e4, −1e-5) for both: exactly FD = 2·Tr Σ − 2·Tr √(Σ Σ) = −2e-5 (√ of the
    negative direction is dropped), inside the round-off bound F·√(F·ε)·s/2 ≈ 4.2e-4 with
    s = 2·Tr Σ: returned as 0. With −1e-2 instead, −0.02 is beyond it and raises."""
    mu = np.zeros(2)
    sigma = np.diag([1e4, -1e-5])
    assert frechet.frechet_distance_from_stats(mu, sigma, mu, sigma) == 0.0
    bad = np.diag([1e4, -1e-2])
    with pytest.raises(ArithmeticError, match=r"^Fréchet distance came out negative \(-0\.02\)"):
        frechet.frechet_distance_from_stats(mu, bad, mu, bad)


def test_stats_checks_name_sigma() -> None:
    fd = frechet.frechet_distance_from_stats
    assert _message(fd, [0.0], [["a"]], [0.0], [[1.0]]) == (
        "sigma1 must be a real numeric array, got dtype <U1"
    )


def test_inception_outputs_argument_errors() -> None:
    """Checked before the network runs (so no network is needed here)."""
    from dgm_ext.metrics.inception import inception_outputs

    with pytest.raises(TypeError) as err:
        inception_outputs(None, [[0.0]])
    assert str(err.value) == "images must be a tensor or numpy array, got list"
    assert _message(inception_outputs, None, torch.zeros(2, 1, 8, 8)) == (
        "expected RGB images of shape (N, 3, H, W), got (2, 1, 8, 8)"
    )
    assert _message(inception_outputs, None, np.zeros((2, 3, 8))) == (
        "expected RGB images of shape (N, 3, H, W), got (2, 3, 8)"
    )
    assert _message(inception_outputs, None, torch.zeros(2, 3, 8, 8), 0) == (
        "batch_size must be >= 1, got 0"
    )
    assert _message(inception_outputs, None, torch.full((1, 3, 2, 2), -1.0)) == (
        "images must be in [0, 1] (got values in [-1, -1]); map samples in [-1, 1] with "
        "(x + 1) / 2, or pass check_range=False"
    )


def test_mnist_classifier_config_bounds() -> None:
    """Width, epochs and batch size of 1 and a 1×1 kernel are the smallest settings; below
    them each is refused naming the setting."""
    from dgm_ext.metrics.mnist_net import TrainConfig

    cfg = TrainConfig(width=1, epochs=1, batch_size=1, kernel=1)
    assert (cfg.width, cfg.epochs, cfg.batch_size, cfg.kernel) == (1, 1, 1, 1)
    for name in ("width", "epochs", "batch_size"):
        assert _message(TrainConfig, **{name: 0}) == f"{name} must be >= 1, got 0"
    for kernel in (0, 4):
        assert _message(TrainConfig, kernel=kernel) == (
            f"kernel must be a positive odd int, got {kernel}"
        )


# --------------------------------------------------------------------------- evaluation modules
# (features.py, evaluate.py, folder.py, prdc.py, resize.py and the cache / weights messages):
# the survivors of the issue-21 sample, docs/MUTATION.md "dgm_ext/metrics". The feature network
# is a seeded linear map written here, so every feature, statistic and score is recomputed in
# the test with numpy / scipy / PIL.


def _counting_space(
    channels: int | None = 1,
    size: tuple[int, int] | None = None,
    ident: str | None = "linear-test",
    device: str | None = None,
):
    """A FeatureSpace whose ``extract`` is a seeded linear map (features, 3 columns) and a
    softmax of another (probabilities, 4 classes) of the flattened input; ``calls`` counts the
    images it was given, ``devices`` the device of each batch."""
    from dgm_ext.metrics.evaluate import FeatureSpace

    calls: list[int] = []
    devices: list[str] = []
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def weights(d: int) -> tuple[torch.Tensor, torch.Tensor]:
        if d not in cache:
            g = torch.Generator().manual_seed(d)
            cache[d] = (torch.randn(d, 3, generator=g, dtype=torch.float64),
                        torch.randn(d, 4, generator=g, dtype=torch.float64))  # fmt: skip
        return cache[d]

    def extract(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(int(x.shape[0]))
        devices.append(x.device.type)
        if x.device.type == "meta":  # no values there: the device is what is checked
            return torch.zeros(x.shape[0], 3, dtype=torch.float64), torch.full(
                (x.shape[0], 4), 0.25, dtype=torch.float64
            )
        flat = x.reshape(x.shape[0], -1).double()
        w, v = weights(flat.shape[1])
        return flat @ w, torch.softmax(flat @ v, 1)

    space = FeatureSpace("linear", "map", 3, extract, channels=channels, input_size=size,
                         ident=ident, device=device)  # fmt: skip
    return space, calls, devices, weights


def _features_np(x: np.ndarray, weights) -> tuple[np.ndarray, np.ndarray]:
    """The counting space's outputs computed in numpy."""
    flat = x.reshape(x.shape[0], -1).astype(np.float64)
    w, v = (t.numpy() for t in weights(flat.shape[1]))
    z = flat @ v
    e = np.exp(z - z.max(1, keepdims=True))
    return flat @ w, e / e.sum(1, keepdims=True)


def _fid_np(fa: np.ndarray, fb: np.ndarray) -> float:
    import scipy.linalg

    s1, s2 = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    d = fa.mean(0) - fb.mean(0)
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _is_np(p: np.ndarray) -> float:
    py = p.mean(0, keepdims=True)
    return float(np.exp((p * (np.log(p) - np.log(py))).sum(1).mean()))


def _save_grey_pngs(folder, arrays) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        Image.fromarray(a).save(folder / name)


def test_sample_quality_fid_reference_and_record(tmp_path) -> None:
    """FID against reference images (scipy's sqrtm), the resize convention recorded, the
    images' own statistics written (numpy mean / cov); FID with neither reference images nor
    statistics refused before any image is read."""
    from dgm_ext.metrics.evaluate import sample_quality

    space, calls, _, weights = _counting_space(channels=None, size=None)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(30, 1, 4, 4, generator=g, dtype=torch.float64)
    ref = torch.rand(25, 1, 4, 4, generator=g, dtype=torch.float64) ** 2
    with pytest.raises(ValueError) as err:
        sample_quality(x, space, metrics=["fid"])
    assert str(err.value) == "FID needs reference images or reference statistics (ref_stats)"
    assert calls == []
    stats_file = tmp_path / "own.npz"
    out = sample_quality(x, space, ref, metrics=["fid"], resize="tf", save_stats_to=stats_file)
    fa, _ = _features_np(x.numpy(), weights)
    fb, _ = _features_np(ref.numpy(), weights)
    assert out["fid"] == pytest.approx(_fid_np(fa, fb), rel=1e-9)
    assert (out["n"], out["n_ref"], out["resize"], out["feature_net"]) == (30, 25, "tf", "linear")
    with np.load(stats_file) as f:
        np.testing.assert_allclose(f["mu"], fa.mean(0), rtol=1e-12)
        np.testing.assert_allclose(f["sigma"], np.cov(fa, rowvar=False), rtol=1e-10)


def test_sample_quality_is_alone_reads_no_reference() -> None:
    """IS needs no reference: given one, its images are not passed through the network."""
    from dgm_ext.metrics.evaluate import sample_quality

    space, calls, _, weights = _counting_space(channels=None, size=None)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(12, 1, 3, 3, generator=g, dtype=torch.float64) * 4
    ref = torch.rand(9, 1, 3, 3, generator=g, dtype=torch.float64)
    out = sample_quality(x, space, ref, metrics=["is"], is_splits=1)
    assert sum(calls) == 12 and "n_ref" not in out
    _, p = _features_np(x.numpy(), weights)
    assert out["is_mean"] == pytest.approx(_is_np(p), rel=1e-12) and out["is_std"] == 0.0


def test_load_image_folder_resizes_with_the_convention(tmp_path) -> None:
    """``size`` resizes uniform batches (here with F.interpolate, pytorch-fid's resize) and
    mixed-size batches with the chosen convention (here clean: PIL bicubic on float32, clipped,
    written here with PIL)."""
    import torch.nn.functional as F
    from PIL import Image

    from dgm_ext.metrics.evaluate import load_image_folder

    rng = np.random.default_rng(5)
    same = {"a.png": rng.integers(0, 256, (8, 8), dtype=np.uint8),
            "b.png": rng.integers(0, 256, (8, 8), dtype=np.uint8)}  # fmt: skip
    _save_grey_pngs(tmp_path / "same", same)
    got = load_image_folder(tmp_path / "same", channels=1, size=(4, 4))
    x = torch.from_numpy(np.stack([same["a.png"], same["b.png"]])[:, None] / 255.0).float()
    want = F.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False)
    assert got.shape == (2, 1, 4, 4)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)

    mixed = {"a.png": same["a.png"], "b.png": rng.integers(0, 256, (12, 12), dtype=np.uint8)}
    _save_grey_pngs(tmp_path / "mixed", mixed)
    got = load_image_folder(tmp_path / "mixed", channels=1, size=(8, 8), resize="clean")
    big = Image.fromarray(mixed["b.png"].astype(np.float32), mode="F")
    b = np.clip(np.asarray(big.resize((8, 8), resample=Image.BICUBIC)), 0, 255) / 255.0
    want = np.stack([mixed["a.png"] / 255.0, b])[:, None]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6, rtol=0)


def test_prepare_moves_batches_to_the_device_except_for_clean() -> None:
    """Batches go to the space's device before resizing, except for ``clean`` (PIL, on the
    CPU); on the ``meta`` device a CPU resize would fail."""
    from dgm_ext.metrics.features import tensor_features

    x = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    for resize, where in (("pytorch-fid", "meta"), ("tf", "meta"), ("clean", "cpu")):
        space, _, devices, _ = _counting_space(size=(4, 4), ident=None, device="meta")
        fs = tensor_features(x, space, resize=resize)
        assert devices == [where], resize
        assert fs.features.shape == (2, 3) and fs.features.device.type == "cpu"


def test_to_channels_keeps_the_device() -> None:
    from dgm_ext.metrics.resize import to_channels

    grey = to_channels(torch.zeros(2, 3, 4, 4, device="meta"), 1)
    assert grey.shape == (2, 1, 4, 4) and grey.device.type == "meta"
    rgb = torch.tensor([10, 200, 40], dtype=torch.uint8).view(1, 3, 1, 1)
    luma = (0.299 * 10 + 0.587 * 200 + 0.114 * 40) / 255  # PIL's convert("L") weights
    assert to_channels(rgb, 1).item() == pytest.approx(luma)


def test_features_cache_path_layout(tmp_path) -> None:
    from dgm_ext.metrics.features import features_cache_path

    key = "0123456789abcdef" * 4
    assert features_cache_path(key, tmp_path) == (
        tmp_path / "metrics" / "features" / "0123456789abcdef0123456789abcdef.pt"
    )


def test_tensor_features_cache_round_trip(tmp_path, monkeypatch) -> None:
    """A second call with the same images reads the cache file (no extraction), with the same
    features and probabilities; a cache of another format version is left where it is (the
    format is part of the key) and the features are computed again."""
    # dgm_ext.metrics.features is also the name of a function the package exports
    feat = importlib.import_module("dgm_ext.metrics.features")

    space, calls, _, weights = _counting_space(channels=None)
    x = torch.rand(7, 1, 2, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    kw = {"cache": True, "cache_dir": tmp_path, "batch_size": 3}
    first = feat.tensor_features(x, space, **kw)
    assert sum(calls) == 7 and not first.cached
    again = feat.tensor_features(x, space, **kw)
    assert sum(calls) == 7 and again.cached
    f, p = _features_np(x.numpy(), weights)
    np.testing.assert_allclose(again.features.numpy(), f, rtol=1e-12)
    np.testing.assert_allclose(again.probs.numpy(), p, rtol=1e-12)
    files = sorted((tmp_path / "metrics" / "features").iterdir())
    assert len(files) == 1
    before = files[0].read_bytes()
    monkeypatch.setattr(feat, "FORMAT", "dgm_ext.metrics.features/999")
    other = feat.tensor_features(x, space, **kw)
    assert sum(calls) == 14 and not other.cached
    files2 = sorted((tmp_path / "metrics" / "features").iterdir())
    assert len(files2) == 2 and files[0].read_bytes() == before


def test_folder_features_cache_keeps_skipped_files_and_probs(tmp_path) -> None:
    """A folder with an undecodable file: the probabilities of the decoded images are kept
    (numpy), and the cached result still lists (and warns about) the skipped file."""
    from dgm_ext.metrics.features import folder_features
    from dgm_ext.metrics.folder import SkippedImageWarning

    rng = np.random.default_rng(4)
    good = {f"{i}.png": rng.integers(0, 256, (4, 4), dtype=np.uint8) for i in range(3)}
    root = tmp_path / "imgs"
    _save_grey_pngs(root, good)
    (root / "1b.png").write_bytes(b"not a png")
    space, calls, _, weights = _counting_space(channels=1, size=(4, 4))
    kw = {"workers": 0, "cache_dir": tmp_path / "cache", "batch_size": 2}
    with pytest.warns(SkippedImageWarning, match=r"skipped 1 of 4 .*1b\.png"):
        first = folder_features(root, space, **kw)
    with pytest.warns(SkippedImageWarning, match=r"skipped 1 of 4 .*1b\.png"):
        again = folder_features(root, space, **kw)
    assert sum(calls) == 3 and again.cached
    assert again.skipped == first.skipped
    assert [p for p, _ in first.skipped] == [str(root / "1b.png")]
    x = np.stack([good[k] for k in ("0.png", "1.png", "2.png")])[:, None] / 255.0
    f, p = _features_np(x, weights)
    for fs in (first, again):
        np.testing.assert_allclose(fs.features.numpy(), f, rtol=1e-6)
        np.testing.assert_allclose(fs.probs.numpy(), p, rtol=1e-6)


def test_feature_and_batch_messages() -> None:
    from dgm_ext.metrics.features import feature_statistics_blocked, tensor_features

    space = _counting_space()[0]
    assert _message(tensor_features, torch.zeros(2, 1, 2, 2), space, batch_size=0) == (
        "batch_size must be >= 1, got 0"
    )
    assert _message(feature_statistics_blocked, torch.zeros(5)) == (
        "features need shape (N >= 2, F), got (5,)"
    )
    assert _message(feature_statistics_blocked, torch.zeros(1, 3)) == (
        "features need shape (N >= 2, F), got (1, 3)"
    )


def _brute_precision_coverage(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    d = np.sqrt(((real[:, None, :] - fake[None, :, :]) ** 2).sum(-1))  # (n, m)
    dr = np.sqrt(((real[:, None, :] - real[None, :, :]) ** 2).sum(-1))
    radius = np.sort(dr, axis=1)[:, k]  # column 0 is the point itself
    precision = float((d <= radius[:, None]).any(0).mean())
    coverage = float((d.min(1) < radius).mean())
    return precision, coverage


def test_compare_prdc_and_its_reference() -> None:
    from dgm_ext.metrics.features import FeatureSet, compare

    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(30, 3)), rng.normal(size=(25, 3)) * 1.4 + 0.3
    a = FeatureSet(torch.from_numpy(fake), None, "a")
    b = FeatureSet(torch.from_numpy(real), None, "b")
    out = compare(a, b, ["precision", "coverage"], nearest_k=2)
    precision, coverage = _brute_precision_coverage(real, fake, 2)
    assert out == {"precision": precision, "coverage": coverage, "nearest_k": 2}
    assert 0 < precision < 1 and 0 < coverage < 1
    assert _message(compare, a, None, ["density"]) == (
        "precision/recall/density/coverage need reference features"
    )


def test_prdc_shape_messages_and_blocks(monkeypatch) -> None:
    """Shape errors name the argument; distances are computed ``block`` rows at a time for the
    radii of both sets (the memory bound of the module docstring)."""
    prdc_mod = importlib.import_module("dgm_ext.metrics.prdc")  # `metrics.prdc` is a function

    x = np.ones((6, 2))
    assert _message(prdc_mod.prdc, x, np.zeros(3)) == (
        "fake must be 2-D (samples, features), got shape (3,)"
    )
    assert _message(prdc_mod.prdc, np.zeros((0, 2)), x) == (
        "real must be 2-D (samples, features), got shape (0, 2)"
    )
    assert _message(prdc_mod.knn_radii, np.zeros((4, 0))) == (
        "features must be 2-D (samples, features), got shape (4, 0)"
    )
    rows: list[int] = []
    real_distances = prdc_mod._distances

    def spy(a, b, b_sq):
        rows.append(int(a.shape[0]))
        return real_distances(a, b, b_sq)

    monkeypatch.setattr(prdc_mod, "_distances", spy)
    rng = np.random.default_rng(7)
    real, fake = rng.normal(size=(30, 3)), rng.normal(size=(25, 3))
    res = prdc_mod.prdc(real, fake, k=2, block=7)
    assert max(rows) == 7 and sum(rows) == 30 + 25 + 30  # radii of real, of fake; the pairs
    assert (res["precision"], res["coverage"]) == _brute_precision_coverage(real, fake, 2)


def test_skipped_files_warning_counts_beyond_five() -> None:
    """Five skipped files are all named; a sixth is counted as "and 1 more"."""
    from pathlib import Path

    from dgm_ext.metrics.folder import FolderStream, SkippedImageWarning

    files = [Path(f"{i}.png") for i in range(8)]
    named = "; ".join(f"{i}.png (bad)" for i in range(5))
    for n, tail in ((5, ""), (6, "; and 1 more")):
        stream = FolderStream(files, [(f"{i}.png", "bad") for i in range(n)])
        with pytest.warns(SkippedImageWarning) as rec:
            stream.warn()
        assert str(rec[0].message) == (
            f"skipped {n} of 8 image files that could not be decoded: {named}{tail}"
        )


def test_iter_folder_workers_hold_two_batches(monkeypatch) -> None:
    """Each decoding worker holds at most two batches in flight (iter_folder's docstring):
    the loader is built with prefetch_factor 2 (None without workers, as DataLoader needs)."""
    from dgm_ext.metrics import folder

    seen: list[dict] = []

    def loader(ds, **kw):
        seen.append(kw)
        return []

    monkeypatch.setattr(folder, "DataLoader", loader)
    for workers in (3, 0):
        assert list(folder.iter_folder([], folder.FolderStream([]), channels=1, size=None,
                                       workers=workers)) == []  # fmt: skip
    assert [(kw["num_workers"], kw["prefetch_factor"]) for kw in seen] == [(3, 2), (0, None)]


def test_weights_path_messages(tmp_path) -> None:
    """A directory given as the weights file is called one; torchvision's checkpoint is
    recognised by its AuxLogits head alone (fc here has FID's 1008 rows)."""
    from dgm_ext.metrics.inception import (
        FIDInceptionV3,
        fid_inception_v3,
        load_fid_inception_weights,
    )

    how = (
        "dgm_ext never downloads them: get the standard FID Inception weights file once, "
        "pytorch-fid's 'pt_inception-2015-12-05-6726825d.pth' or torch-fidelity's "
        "'weights-inception-2015-12-05-6726825d.pth' (the same layout; from those projects' "
        "releases), and pass its path as weights_path or set $DGM_EXT_INCEPTION_WEIGHTS"
    )
    with pytest.raises(FileNotFoundError) as err:
        fid_inception_v3(tmp_path)
    assert str(err.value) == (
        f"FID Inception-v3 weights file not found: '{tmp_path}' (a directory); {how}"
    )
    with pytest.raises(FileNotFoundError) as err:
        fid_inception_v3(tmp_path / "none.pth")
    missing = tmp_path / "none.pth"
    assert str(err.value) == f"FID Inception-v3 weights file not found: '{missing}'; {how}"
    net = FIDInceptionV3()
    state = net.state_dict()
    state["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    path = tmp_path / "tv.pth"
    torch.save(state, path)
    assert _message(load_fid_inception_weights, net, path) == (
        f"'{path}' is not an FID Inception-v3 state dict (this looks like torchvision's ImageNet "
        "Inception-v3, not the FID weights: use 'pt_inception-2015-12-05-6726825d.pth' or "
        "'weights-inception-2015-12-05-6726825d.pth'): 1 unexpected keys: AuxLogits.fc.weight"
    )


def test_safe_load_names_what_it_found(tmp_path) -> None:
    from dgm_ext.metrics.cache import safe_load

    path = tmp_path / "list.pt"
    torch.save([1, 2], path)
    res = safe_load(path)
    assert (res.status, res.reason) == ("corrupt", "expected a dict, got list")
