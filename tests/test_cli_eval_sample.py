"""`dgm-ext eval A B` (folders, data splits, models, statistics files; --n, --resize, cache,
precision/recall) and `dgm-ext sample`.

The feature networks are replaced by a seeded linear map of the resized images (the real
networks have their own tests), so every number is recomputed here from the images, decoded
with Pillow and resized with ``F.interpolate``, and the metric formulas of scipy / numpy.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _data import DATA, needs_mnist
from PIL import Image
from scipy import linalg

from dgm_ext import cli
from dgm_ext.metrics import evaluate as ev
from dgm_ext.metrics import save_stats

SIZE = (16, 16)
EXTRACTED: list[int] = []  # images each call of a linear space's extract saw


def linear_space(channels: int, size=SIZE, ident: str | None = "linear-test") -> ev.FeatureSpace:
    g = torch.Generator().manual_seed(11)
    d = channels * size[0] * size[1]
    w = torch.randn(d, 5, generator=g, dtype=torch.float64)
    v = torch.randn(d, 4, generator=g, dtype=torch.float64)

    def extract(x):
        assert x.shape[1:] == (channels, *size), x.shape
        EXTRACTED.append(x.shape[0])
        flat = x.reshape(x.shape[0], -1).double()
        return flat @ w, torch.softmax(flat @ v, 1)

    return ev.FeatureSpace(f"linear-{channels}", "map", 5, extract, channels=channels,
                           input_size=size, ident=ident)  # fmt: skip


@pytest.fixture
def spaces(monkeypatch, tmp_path):
    calls = []

    def mnist_space(dataset="mnist", **kw):
        calls.append(("mnist", dataset, kw.get("device")))
        return linear_space(1, (28, 28))

    def inception_space(weights=None, device=None):
        calls.append(("inception", weights, device))
        return linear_space(3)

    monkeypatch.setattr(ev, "mnist_feature_space", mnist_space)
    monkeypatch.setattr(ev, "inception_feature_space", inception_space)
    monkeypatch.setenv("DGM_EXT_CACHE", str(tmp_path / "cache"))
    return calls


def run(argv, tmp_path, capsys, code=0):
    out = tmp_path / "res.json"
    if out.exists():
        out.unlink()
    assert cli.main([*argv, "--json", str(out)] if argv[0] == "eval" else argv) == code
    captured = capsys.readouterr()
    res = json.loads(out.read_text()) if code == 0 and argv[0] == "eval" else None
    return res, captured.err


def write_folder(folder, arrays):
    folder.mkdir(parents=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i:03d}.png")
    return folder


def rgb_arrays(seed, n, shape=(20, 20, 3)):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


def feats_of(arrays, channels=3, size=SIZE):
    """Features recomputed from the arrays: [0, 1], grey repeated, F.interpolate."""
    xs = []
    for a in arrays:
        t = torch.from_numpy(a.astype(np.float32) / 255.0)
        t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
        if t.shape[0] != channels:
            t = t.expand(channels, -1, -1)
        if tuple(t.shape[-2:]) != size:
            t = F.interpolate(t[None], size=size, mode="bilinear", align_corners=False)[0]
        xs.append(t)
    return linear_space(channels, size).extract(torch.stack(xs))


def fid_scipy(fa, fb):
    fa, fb = np.asarray(fa, np.float64), np.asarray(fb, np.float64)
    m1, m2 = fa.mean(0), fb.mean(0)
    s1, s2 = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_two_folders(spaces, tmp_path, capsys):
    a_arr, b_arr = rgb_arrays(0, 14), rgb_arrays(1, 12, (16, 24, 3))
    a = write_folder(tmp_path / "a", a_arr)
    b = write_folder(tmp_path / "b" / "nested", b_arr).parent  # B's images in a subfolder
    argv = ["eval", str(a), str(b), "--workers", "0", "--kid-subset-size", "6",
            "--inception-weights", "w.pth", "--device", "cpu"]  # fmt: skip
    res, err = run(argv, tmp_path, capsys)
    fa, pa = feats_of(a_arr)
    fb, _ = feats_of(b_arr)
    assert spaces == [("inception", "w.pth", "cpu")]
    assert res["source"] == str(a) and res["reference"] == str(b)
    assert (res["n"], res["n_ref"], res["resize"]) == (14, 12, "pytorch-fid")
    assert res["fid"] == pytest.approx(fid_scipy(fa, fb), rel=1e-6)
    assert "notes" not in res and "using" not in err
    # IS of A from its probabilities, splits of 10 as the original code
    p = pa.numpy()
    scores = []
    for i in range(10):
        part = p[i * 14 // 10 : (i + 1) * 14 // 10]
        kl = (part * (np.log(part) - np.log(part.mean(0, keepdims=True)))).sum(1)
        scores.append(np.exp(kl.mean()))
    assert res["is_mean"] == pytest.approx(np.mean(scores), rel=1e-9)
    assert res["kid_subset_size"] == 6 and np.isfinite(res["kid_mean"])


def test_n_limits_each_side_and_says_so(spaces, tmp_path, capsys):
    a_arr, b_arr = rgb_arrays(2, 10), rgb_arrays(3, 6)
    a = write_folder(tmp_path / "a", a_arr)
    b = write_folder(tmp_path / "b", b_arr)
    res, err = run(["eval", str(a), str(b), "--n", "7", "--metrics", "fid", "--workers", "0"],
                   tmp_path, capsys)  # fmt: skip
    assert "using 7 of the 10 images of" in err and str(a) in err
    assert "of the 6 images" not in err  # B has fewer than 7: all of it, no message
    assert res["notes"] == [f"using 7 of the 10 images of {a} (--n 7)"]
    assert (res["n"], res["n_ref"]) == (7, 6)
    fa, _ = feats_of(a_arr[:7])
    fb, _ = feats_of(b_arr)
    assert res["fid"] == pytest.approx(fid_scipy(fa, fb), rel=1e-6)


@needs_mnist
def test_folder_against_split_and_split_message(spaces, tmp_path, capsys):
    from dgm_ext.data import load_mnist

    test = load_mnist("test", "grey", root=DATA, download=False).images
    grey = [(x[0].numpy() * 255).round().astype(np.uint8) for x in test[:20]]
    a = write_folder(tmp_path / "digits", grey)
    res, err = run(["eval", str(a), "mnist:test", "--n", "30", "--metrics", "fid",
                    "--workers", "0"], tmp_path, capsys)  # fmt: skip
    assert spaces[0][:2] == ("mnist", "mnist")  # grey 28x28 + an MNIST split: the classifier
    assert "using 30 of the 10000 images of mnist:test" in err
    fa, _ = feats_of(grey, channels=1, size=(28, 28))
    fb, _ = linear_space(1, (28, 28)).extract(test[:30])
    assert res["fid"] == pytest.approx(fid_scipy(fa, fb), rel=1e-6)


def test_statistics_files(spaces, tmp_path, capsys):
    a_arr = rgb_arrays(4, 9)
    a = write_folder(tmp_path / "a", a_arr)
    rng = np.random.default_rng(5)
    fb = rng.normal(size=(40, 5))
    ref = tmp_path / "ref.npz"
    save_stats(ref, fb.mean(0), np.cov(fb, rowvar=False))
    res, _ = run(["eval", str(a), str(ref), "--metrics", "fid", "--workers", "0",
                  "--save-stats", str(tmp_path / "a.npz")], tmp_path, capsys)  # fmt: skip
    fa, _ = feats_of(a_arr)
    m1, s1, m2, s2 = fa.numpy().mean(0), np.cov(fa.numpy(), rowvar=False), fb.mean(0), None
    s2 = np.cov(fb, rowvar=False)
    want = float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real))
    assert res["fid"] == pytest.approx(want, rel=1e-6) and res["ref_stats"] == str(ref)
    # two statistics files: FID without a network, either order
    res2, _ = run(["eval", str(tmp_path / "a.npz"), str(ref), "--metrics", "fid"],
                  tmp_path, capsys)  # fmt: skip
    assert res2["fid"] == pytest.approx(want, rel=1e-6)
    res3, _ = run(["eval", str(ref), str(a), "--metrics", "fid", "--workers", "0"],
                  tmp_path, capsys)  # fmt: skip
    assert res3["fid"] == pytest.approx(want, rel=1e-6) and res3["source"] == str(a)
    # KID needs features, which a statistics file does not hold: one line, status 2
    _, err = run(["eval", str(a), str(ref), "--metrics", "fid,kid", "--workers", "0"],
                 tmp_path, capsys, code=2)  # fmt: skip
    assert "kid" in err and "statistics file" in err and "Traceback" not in err


def test_resize_is_recorded_and_used(spaces, tmp_path, capsys):
    a = write_folder(tmp_path / "a", rgb_arrays(6, 8))
    b = write_folder(tmp_path / "b", rgb_arrays(7, 8))
    fids = {}
    for method in ("pytorch-fid", "tf", "clean"):
        res, _ = run(["eval", str(a), str(b), "--metrics", "fid", "--resize", method,
                      "--workers", "0"], tmp_path, capsys)  # fmt: skip
        assert res["resize"] == method
        fids[method] = res["fid"]
    assert len(set(fids.values())) == 3  # 20x20 -> 16x16: three different resizes


def test_prdc_against_brute_force(spaces, tmp_path, capsys):
    from test_metrics_prdc import brute_prdc

    a_arr, b_arr = rgb_arrays(8, 15), rgb_arrays(9, 13)
    a = write_folder(tmp_path / "a", a_arr)
    b = write_folder(tmp_path / "b", b_arr)
    res, _ = run(["eval", str(a), str(b), "--metrics", "prdc", "--nearest-k", "2",
                  "--workers", "0"], tmp_path, capsys)  # fmt: skip
    fa, _ = feats_of(a_arr)
    fb, _ = feats_of(b_arr)
    want = brute_prdc(fb.tolist(), fa.tolist(), 2)  # B is the real set
    for name, value in want.items():
        assert res[name] == pytest.approx(value, abs=1e-12), name
    assert res["nearest_k"] == 2 and "fid" not in res


def test_reference_features_are_cached_by_content(spaces, tmp_path, capsys):
    b_arr = rgb_arrays(10, 12)
    b = write_folder(tmp_path / "b", b_arr)
    a1 = write_folder(tmp_path / "a1", rgb_arrays(11, 8))
    a2 = write_folder(tmp_path / "a2", rgb_arrays(12, 9))
    args = ["--metrics", "fid,kid", "--kid-subset-size", "5", "--workers", "0"]
    EXTRACTED.clear()
    first, _ = run(["eval", str(a1), str(b), *args], tmp_path, capsys)
    assert sum(EXTRACTED) == 8 + 12 and "cached_ref" not in first
    EXTRACTED.clear()
    second, _ = run(["eval", str(a2), str(b), *args], tmp_path, capsys)
    assert sum(EXTRACTED) == 9 and second["cached_ref"] is True  # only the new images
    fa, _ = feats_of(rgb_arrays(12, 9))
    fb, _ = feats_of(b_arr)
    assert second["fid"] == pytest.approx(fid_scipy(fa, fb), rel=1e-6)
    assert np.isfinite(second["kid_mean"])  # KID from the cached reference features
    # a changed file (new pixels, new size and mtime): the reference is computed again
    b_arr[3] = rgb_arrays(13, 1, (18, 18, 3))[0]
    Image.fromarray(b_arr[3]).save(b / "003.png")
    os.utime(b / "003.png", ns=(1_000_000_000, 1_000_000_000))
    EXTRACTED.clear()
    third, _ = run(["eval", str(a2), str(b), *args], tmp_path, capsys)
    assert "cached_ref" not in third and third["cached"] is True and sum(EXTRACTED) == 12
    fb, _ = feats_of(b_arr)
    assert third["fid"] == pytest.approx(fid_scipy(fa, fb), rel=1e-6)
    # the resize convention is part of the key; --no-cache neither reads nor writes
    EXTRACTED.clear()
    run(["eval", str(a2), str(b), *args, "--resize", "tf"], tmp_path, capsys)
    assert sum(EXTRACTED) == 9 + 12
    EXTRACTED.clear()
    fourth, _ = run(["eval", str(a2), str(b), *args, "--no-cache"], tmp_path, capsys)
    assert sum(EXTRACTED) == 9 + 12 and fourth["fid"] == pytest.approx(third["fid"], rel=1e-12)
    # B was cached as a reference, without class probabilities: as A with IS it is computed
    # again (and cached with them), as A without IS it is read back
    EXTRACTED.clear()
    fifth, _ = run(["eval", str(b), str(a2), "--metrics", "fid", "--workers", "0"],
                   tmp_path, capsys)  # fmt: skip
    assert sum(EXTRACTED) == 0 and fifth["cached"] and fifth["cached_ref"]
    sixth, _ = run(["eval", str(b), str(a2), "--metrics", "is", "--workers", "0"],
                   tmp_path, capsys)  # fmt: skip
    assert sum(EXTRACTED) == 12 and "cached" not in sixth and np.isfinite(sixth["is_mean"])


def test_tensor_features_cache_is_keyed_by_content(tmp_path):
    from dgm_ext.metrics.features import tensor_features

    space = linear_space(3)
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    kw = {"cache": True, "cache_dir": tmp_path}
    EXTRACTED.clear()
    f1 = tensor_features(x, space, **kw)
    f2 = tensor_features(x.clone(), space, **kw)
    assert sum(EXTRACTED) == 6 and f2.cached and torch.equal(f1.features, f2.features)
    y = x.clone()
    y[2, 1, 5, 5] += 0.25  # one pixel of one image
    f3 = tensor_features(y, space, **kw)
    assert not f3.cached and sum(EXTRACTED) == 12
    want, _ = space.extract(y)
    torch.testing.assert_close(f3.features, want)
    other = linear_space(3, ident="another-network")
    assert not tensor_features(x, other, **kw).cached  # the network is part of the key


def test_blocked_statistics_and_kid_from_float32_features():
    from dgm_ext.metrics.features import FeatureSet, compare, feature_statistics_blocked

    rng = np.random.default_rng(14)
    fa = rng.normal(size=(23, 4)).astype(np.float32)
    fb = (rng.normal(size=(23, 4)) + 0.3).astype(np.float32)
    mu, sigma = feature_statistics_blocked(torch.from_numpy(fa), block=5)
    np.testing.assert_allclose(mu, fa.astype(np.float64).mean(0), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(sigma, np.cov(fa.astype(np.float64), rowvar=False), rtol=1e-12)
    a = FeatureSet(torch.from_numpy(fa), None, "a")
    b = FeatureSet(torch.from_numpy(fb), None, "b")
    res = compare(a, b, ["kid", "fid"], kid_subsets=1, kid_subset_size=23)
    # one subset of all rows: the unbiased MMD^2 of the whole sets, cubic kernel
    x, y = fa.astype(np.float64), fb.astype(np.float64)
    k = lambda u, v: (u @ v.T / 4 + 1) ** 3  # noqa: E731
    n = 23
    mmd = ((k(x, x).sum() - np.trace(k(x, x))) / (n * (n - 1))
           + (k(y, y).sum() - np.trace(k(y, y))) / (n * (n - 1)) - 2 * k(x, y).mean())  # fmt: skip
    assert res["kid_mean"] == pytest.approx(mmd, rel=1e-10) and res["kid_std"] == 0.0
    assert res["fid"] == pytest.approx(fid_scipy(x, y), rel=1e-6)


# --------------------------------------------------------------------------- dgm-ext sample
def _models(tmp_path):
    from dgm_ext.flows import PlanarFitConfig, fit_planar, save_planar
    from dgm_ext.flows.realnvp import build_realnvp, save_realnvp
    from dgm_ext.gan import GAN, GANConfig, save_gan
    from dgm_ext.vae import build_vae, save_vae

    torch.manual_seed(0)
    return {
        "vae": save_vae(build_vae(arch="mlp", latent_dim=2, hidden=16), tmp_path / "vae.pt"),
        "gan": save_gan(GAN(GANConfig(image_shape=(3, 8, 8))), tmp_path / "gan" / "generator.pt"),
        "realnvp": save_realnvp(
            build_realnvp(arch="mlp", couplings=2, hidden=16), tmp_path / "realnvp.pt"
        ),
        "planar": save_planar(
            fit_planar(PlanarFitConfig("ml", "arcs", 2, steps=2, log_every=1)),
            tmp_path / "planar" / "flow.pt",
        ),
    }


def test_sample_writes_pngs_npz_and_csv(tmp_path, capsys):
    from dgm_ext.gan import load_gan

    models = _models(tmp_path)
    shapes = {"vae": (1, 28, 28), "gan": (3, 8, 8), "realnvp": (1, 28, 28)}
    for kind, path in models.items():
        source = path.parent if kind in ("gan", "planar") else path  # run folders too
        out = tmp_path / f"out-{kind}"
        assert cli.main(["sample", str(source), "--n", "5", "--out", str(out), "--seed", "3"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["kind"] == kind and info["n"] == 5
        assert json.loads((out / "sample.json").read_text()) == info
        if kind == "planar":
            pts = np.loadtxt(out / "samples.csv", delimiter=",", skiprows=1)
            assert (out / "samples.csv").read_text().splitlines()[0] == "x,y"
            assert pts.shape == (5, 2) and np.isfinite(pts).all()
            np.testing.assert_allclose(np.load(out / "samples.npz")["points"], pts, rtol=1e-15)
            continue
        images = np.load(out / "samples.npz")["images"]
        assert images.shape == (5, *shapes[kind]) and images.dtype == np.float32
        assert images.min() >= 0 and images.max() <= 1
        pngs = sorted(out.glob("*.png"))
        assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(5)]
        for p, img in zip(pngs, images, strict=True):
            a = np.asarray(Image.open(p))
            a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
            np.testing.assert_array_equal(a, np.round(img * 255).astype(np.uint8))
    # the GAN's samples are its generator's images of z ~ N(0, I) drawn after the seed
    gan = load_gan(models["gan"])
    torch.manual_seed(3)
    want = gan.decode(torch.randn(5, gan.config.z_dim)).numpy()
    got = np.load(tmp_path / "out-gan" / "samples.npz")["images"]
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_sample_temperature_and_refusals(tmp_path, capsys):
    models = _models(tmp_path)
    for kind in ("vae", "gan", "realnvp", "planar"):
        out = tmp_path / f"t0-{kind}"
        argv = ["sample", str(models[kind]), "--n", "4", "--out", str(out), "--temperature", "0"]
        assert cli.main(argv) == 0
        capsys.readouterr()
        data = np.load(out / "samples.npz")
        x = data["points"] if kind == "planar" else data["images"]
        assert np.ptp(x, axis=0).max() == 0  # z = 0 for every sample: one image / point
    assert cli.main(["sample", str(models["vae"]), "--n", "2", "--out", str(out)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    for bad in (["--n", "0"], ["--n", "2", "--temperature", "-1"]):
        argv = ["sample", str(models["vae"]), *bad, "--out", str(tmp_path / "x")]
        assert cli.main(argv) == 2
        assert "must be" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_model_against_folder(spaces, tmp_path, capsys):
    from dgm_ext.gan import load_gan

    models = _models(tmp_path)
    b_arr = rgb_arrays(15, 10, (8, 8, 3))
    b = write_folder(tmp_path / "real", b_arr)
    res, _ = run(["eval", str(models["gan"].parent), str(b), "--n", "12", "--seed", "4",
                  "--metrics", "fid", "--workers", "0"], tmp_path, capsys)  # fmt: skip
    gan = load_gan(models["gan"])
    torch.manual_seed(4)
    samples = gan.decode(torch.randn(12, gan.config.z_dim))
    x = F.interpolate(samples, size=SIZE, mode="bilinear", align_corners=False)
    fa, _ = linear_space(3).extract(x)
    fb, _ = feats_of(b_arr)
    assert (res["n"], res["n_ref"]) == (12, 10) and "12 samples, seed 4" in res["source"]
    assert res["fid"] == pytest.approx(fid_scipy(fa, fb), rel=1e-6)


def test_bad_options_are_refused_before_reading(spaces, tmp_path, capsys):
    a = write_folder(tmp_path / "a", rgb_arrays(16, 3))
    for bad, msg in ((["--workers", "-1"], "--workers must be >= 0"),
                     (["--nearest-k", "0"], "--nearest-k must be >= 1"),
                     (["--n", "1"], "--n must be >= 2"),
                     (["--metrics", "fid,lpips"], "subset of")):  # fmt: skip
        _, err = run(["eval", str(a), str(a), *bad], tmp_path, capsys, code=2)
        assert msg in err and "Traceback" not in err
    assert spaces == []  # refused before any network was built
    _, err = run(["eval", str(a), str(tmp_path / "nope")], tmp_path, capsys, code=2)
    assert "nope: no such file or folder" in err


def test_sample_label_of_conditional_models(tmp_path, capsys):
    """``sample --label C``: a class-conditional GAN, VAE or RealNVP draws class C only; an
    unconditional model or a class out of range is one line, and nothing is written."""
    from dgm_ext.flows.realnvp import build_realnvp, save_realnvp
    from dgm_ext.gan import GAN, GANConfig, save_gan
    from dgm_ext.vae import build_vae, save_vae

    torch.manual_seed(0)
    gan = GAN(GANConfig(arch="mlp", image_shape=(1, 8, 8), z_dim=4, num_classes=3))
    vae = build_vae(arch="mlp", latent_dim=2, hidden=8, image_shape=(1, 8, 8), num_classes=3)
    flow = build_realnvp(arch="mlp", image_shape=(1, 4, 4), couplings=2, hidden=8, num_classes=3)
    with torch.no_grad():  # zero-initialised last layers would hide an ignored label
        for p in [*gan.parameters(), *vae.parameters(), *flow.parameters()]:
            p.add_(0.3 * torch.randn_like(p))
    files = {"gan": save_gan(gan, tmp_path / "g.pt"), "vae": save_vae(vae, tmp_path / "v.pt"),
             "realnvp": save_realnvp(flow, tmp_path / "f.pt")}  # fmt: skip
    for kind, path in files.items():
        got = {}
        for label in (1, 2):
            out = tmp_path / f"{kind}-{label}"
            argv = ["sample", str(path), "--n", "6", "--out", str(out), "--label", str(label)]
            assert cli.main(argv) == 0
            capsys.readouterr()
            assert json.loads((out / "sample.json").read_text())["label"] == label
            got[label] = np.load(out / "samples.npz")["images"]
        # the same seed, another class: other images; and the label is the one asked for
        assert np.abs(got[1] - got[2]).max() > 1e-3
        torch.manual_seed(0)  # sample's default --seed
        gan_z = gan.sample_z(6) if kind == "gan" else None
        with torch.no_grad():
            if kind == "gan":
                want = gan.decode(gan_z, labels=torch.full((6,), 2))
            elif kind == "vae":
                want = vae.sample(z=torch.randn(6, 2), labels=2).clamp(0, 1)
            else:
                z = torch.randn(6, 1, 4, 4)
                want = flow.inverse(z, torch.eye(3)[torch.full((6,), 2)])[0].clamp(0, 1)
        np.testing.assert_allclose(got[2], want.numpy(), atol=1e-6)
    plain = build_vae(arch="mlp", latent_dim=2, hidden=8, image_shape=(1, 8, 8))
    cases = [(save_vae(plain, tmp_path / "p.pt"), "1", "the model is not class-conditional"),
             (files["gan"], "3", "--label must be a class in [0, 3), got 3")]  # fmt: skip
    for path, label, message in cases:
        out = tmp_path / "bad"
        assert cli.main(["sample", str(path), "--n", "2", "--out", str(out), "--label", label]) == 2
        assert message in capsys.readouterr().err and not out.exists()
