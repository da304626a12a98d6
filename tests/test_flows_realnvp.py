"""RealNVP (dgm_ext.flows.coupling / realnvp / image): masks, squeeze, couplings and whole
models against autograd Jacobians, inverse round trips, the dequantisation/logit front end
and bits/dim against an independent numpy computation, temperature-0 sampling, fused vs
reference ops, save/load, evaluation, ``reproduce realnvp-mnist --quick``, ``train realnvp``
and ``eval`` of a RealNVP file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _data import require

from dgm_ext import cli
from dgm_ext.flows.base import Flow
from dgm_ext.flows.coupling import (
    AffineCoupling,
    ConvCouplingNet,
    MLPCouplingNet,
    channel_mask,
    checkerboard_mask,
    squeeze,
    unsqueeze,
)
from dgm_ext.flows.image import (
    ImageFlow,
    bits_per_dim,
    dequantize,
    evaluate_bits_per_dim,
    logit_transform,
)
from dgm_ext.flows.realnvp import (
    MLPRealNVP,
    MultiScaleRealNVP,
    RealNVPConfig,
    build_realnvp,
    is_realnvp_file,
    load_realnvp,
    save_realnvp,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def mnist_root(monkeypatch) -> str:
    """The MNIST data root (``_data.require``: skipped, or failed under $DGM_EXT_REQUIRE_DATA,
    without it); $DGM_EXT_DATA points there too."""
    root = require("mnist")
    monkeypatch.setenv("DGM_EXT_DATA", str(root))
    return str(root)


pytestmark = pytest.mark.usefixtures("one_thread")


def _perturb(module: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Move every parameter off its initial value (zero-initialised last layers make a fresh
    coupling the identity, which would hide most mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device))
    return module


def _autograd_logdet(f, x: torch.Tensor) -> torch.Tensor:
    """log|det ∂f/∂x| of one example from the full autograd Jacobian."""
    jac = torch.autograd.functional.jacobian(lambda v: f(v.view(1, *x.shape)).flatten(), x)
    return torch.linalg.slogdet(jac.reshape(x.numel(), x.numel()))[1]


def _small_models(shape=(1, 4, 4)):
    torch.manual_seed(0)
    return {
        "mlp": MLPRealNVP(shape, couplings=4, hidden=16).double(),
        "multiscale": MultiScaleRealNVP(shape, scales=2, channels=4, blocks=1).double(),
    }


# -- masks and squeeze ------------------------------------------------------------------------
def test_checkerboard_and_channel_masks():
    m = checkerboard_mask(3, 4)
    assert m.shape == (1, 3, 4)
    assert m[0].tolist() == [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]]
    assert torch.equal(checkerboard_mask(3, 4, 1), 1 - m)
    c = channel_mask(4)
    assert c.shape == (4, 1, 1) and c.flatten().tolist() == [1, 1, 0, 0]
    assert channel_mask(4, 1).flatten().tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="channels must be even"):
        channel_mask(3)
    with pytest.raises(ValueError, match="height and width"):
        checkerboard_mask(0, 2)


def test_squeeze_is_a_permutation_and_unsqueeze_inverts_it():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float64).view(2, 3, 4, 6)
    y = squeeze(x)
    assert y.shape == (2, 12, 2, 3)
    assert torch.equal(y.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    assert torch.equal(unsqueeze(y), x)
    # each output position holds one 2x2 block of the input
    assert sorted(y[0, 0:4, 0, 0].tolist()) == [0.0, 1.0, 6.0, 7.0]
    with pytest.raises(ValueError, match="even H and W"):
        squeeze(torch.zeros(1, 1, 3, 4))


# -- couplings --------------------------------------------------------------------------------
@pytest.mark.parametrize("ops", ["fused", "reference"])
@pytest.mark.parametrize("kind", ["mlp", "checker", "channel"])
def test_coupling_logdet_matches_autograd_and_inverts(kind, ops):
    torch.manual_seed(1)
    if kind == "mlp":
        mask = checkerboard_mask(3, 4).reshape(12)
        layer = AffineCoupling(mask, MLPCouplingNet(12, 8), ops=ops)
        x = torch.randn(3, 12)
    elif kind == "checker":
        layer = AffineCoupling(checkerboard_mask(4, 4, 1), ConvCouplingNet(2, 4, 1), True, ops)
        x = torch.randn(3, 2, 4, 4)
    else:
        layer = AffineCoupling(channel_mask(4), ConvCouplingNet(4, 4, 1), True, ops)
        x = torch.randn(3, 4, 2, 2)
    layer = _perturb(layer.double(), 0.3)
    x = x.double()
    y, logdet = layer(x)
    for i in range(3):
        ref = _autograd_logdet(lambda v: layer(v)[0], x[i])
        torch.testing.assert_close(logdet[i], ref, rtol=1e-9, atol=1e-9)
    kept = layer.mask.expand_as(x) > 0
    assert torch.equal(y[kept], x[kept])
    x_back, logdet_back = layer.inverse(y)
    torch.testing.assert_close(x_back, x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logdet_back, -logdet, rtol=1e-12, atol=1e-12)


def test_mlp_coupling_log_scale_is_tanh_and_starts_at_the_identity():
    layer = AffineCoupling(torch.tensor([1.0, 0.0]), MLPCouplingNet(2, 4))
    x = torch.randn(5, 2)
    y, logdet = layer(x)
    assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(5))  # zero-initialised
    with torch.no_grad():
        layer.net.net[-1].bias.fill_(100.0)  # s_raw = 100 -> s = tanh(100) = 1
    y, logdet = layer(x)
    torch.testing.assert_close(logdet, torch.ones(5))
    torch.testing.assert_close(y[:, 1], x[:, 1] * math.e + 100.0)


# -- whole models -----------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["mlp", "multiscale"])
@pytest.mark.parametrize("shape", [(1, 4, 4), (3, 4, 4)])
def test_model_logdet_matches_autograd(arch, shape):
    flow = _perturb(_small_models(shape)[arch], 0.1)
    assert isinstance(flow, Flow) and flow.event_shape == shape
    x = torch.randn(2, *shape, dtype=torch.float64)
    z, logdet = flow(x)
    assert z.shape == x.shape
    for i in range(2):
        ref = _autograd_logdet(lambda v: flow(v)[0], x[i])
        torch.testing.assert_close(logdet[i], ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "arch,shape,kw",
    [
        ("mlp", (1, 28, 28), {"couplings": 8, "hidden": 64}),
        ("multiscale", (1, 28, 28), {"scales": 2, "channels": 8, "blocks": 1}),
        ("multiscale", (3, 32, 32), {"scales": 3, "channels": 8, "blocks": 1, "alpha": 0.05}),
    ],
)
def test_inverse_of_forward_is_the_identity_float32(arch, shape, kw, device):
    """The classic assignment's test: mean relative error < 1e-5, log-dets cancel."""
    torch.manual_seed(0)
    model = _perturb(build_realnvp(arch=arch, image_shape=shape, **kw), 0.02).to(device)
    x = dequantize(torch.randint(0, 256, (4, *shape)), noise=torch.rand(4, *shape)).to(device)
    with torch.no_grad():
        z, logdet = model(x)
        x_back, logdet_back = model.inverse(z)
    assert z.shape == x.shape and logdet.shape == (4,)
    rel = ((x_back - x).abs() / x.abs().clamp_min(1e-3)).mean()
    assert rel < 1e-5, rel
    torch.testing.assert_close(logdet + logdet_back, torch.zeros_like(logdet), atol=2e-2, rtol=0)
    assert (logdet.abs() > 100).all()  # the cancellation is not 0 + 0


def test_multiscale_factored_out_half_skips_the_later_scales():
    """Changing the input only moves the factored-out half through the first scale's
    layers: the last scale's couplings see only the kept half (the multi-scale design)."""
    torch.manual_seed(0)
    flow = _perturb(MultiScaleRealNVP((1, 4, 4), scales=2, channels=4, blocks=1).double(), 0.2)
    assert len(flow.checker) == 2 and len(flow.channel) == 1
    assert [len(c) for c in flow.checker] == [3, 4] and len(flow.channel[0]) == 3
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    z, _ = flow(x)
    with torch.no_grad():
        for p in flow.checker[1].parameters():
            p.add_(1.0)  # the last scale changes ...
    z2, _ = flow(x)
    out = squeeze(z).chunk(2, 1)[0]
    out2 = squeeze(z2).chunk(2, 1)[0]
    assert torch.equal(out, out2)  # ... the factored-out half does not
    assert not torch.allclose(squeeze(z).chunk(2, 1)[1], squeeze(z2).chunk(2, 1)[1])


@pytest.mark.parametrize("arch", ["mlp", "multiscale"])
def test_fused_and_reference_ops_agree_with_gradients(arch):
    kw = {"couplings": 4, "hidden": 16} if arch == "mlp" else {"channels": 4, "blocks": 1}
    torch.manual_seed(0)
    fused = _perturb(build_realnvp(arch=arch, ops="fused", **kw).double(), 0.05)
    ref = build_realnvp(arch=arch, ops="reference", **kw).double()
    ref.load_state_dict(fused.state_dict())
    x = torch.randint(0, 256, (3, 1, 28, 28))
    noise = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    a, b = fused.bits_per_dim(x, noise), ref.bits_per_dim(x, noise)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    a.sum().backward()
    b.sum().backward()
    for (name, p), q in zip(fused.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-12, msg=name)


# -- dequantisation, logit, bits/dim ----------------------------------------------------------
def _numpy_bpd(levels: np.ndarray, noise: np.ndarray, alpha: float) -> np.ndarray:
    """An independent computation: identity flow, so z = y = logit(alpha + (1-2a) x~)."""
    x = (levels.astype(np.float64) + noise) / 256.0
    p = alpha + (1 - 2 * alpha) * x
    y = np.log(p / (1 - p))
    d = x[0].size
    log_base = (-0.5 * y**2 - 0.5 * np.log(2 * np.pi)).reshape(len(x), -1).sum(1)
    log_jac = (np.log(1 - 2 * alpha) - np.log(p * (1 - p))).reshape(len(x), -1).sum(1)
    log_px = log_base + log_jac  # density of x~ on [0, 1]^D
    return -(log_px - d * np.log(256.0)) / (d * np.log(2.0))


@pytest.mark.parametrize(
    "arch,shape,alpha",
    [
        ("mlp", (1, 28, 28), 1e-5),
        ("multiscale", (1, 28, 28), 1e-5),
        ("multiscale", (3, 8, 8), 0.05),
    ],
)
def test_zero_initialised_bits_per_dim_equals_numpy(arch, shape, alpha):
    model = build_realnvp(
        arch=arch, image_shape=shape, hidden=32, channels=4, blocks=1, alpha=alpha
    )
    model = model.double()
    gen = torch.Generator().manual_seed(3)
    levels = torch.randint(0, 256, (5, *shape), generator=gen)
    noise = torch.rand(5, *shape, generator=gen, dtype=torch.float64)
    got = model.bits_per_dim(levels, noise)
    want = _numpy_bpd(levels.numpy(), noise.numpy(), alpha)
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-12)


def test_logit_transform_logdet_and_inverse():
    x = torch.rand(3, 1, 2, 2, dtype=torch.float64)
    y, logdet = logit_transform(x, 0.05)
    ref = torch.stack(
        [_autograd_logdet(lambda v: logit_transform(v, 0.05)[0], x[i]) for i in range(3)]
    )
    torch.testing.assert_close(logdet, ref)
    flow = build_realnvp(arch="mlp", image_shape=(1, 2, 2), hidden=4, alpha=0.05).double()
    z, ld = flow(x)
    torch.testing.assert_close(z, y)  # zero-initialised couplings: z = logit
    x_back, ld_back = flow.inverse(z)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(ld_back, -ld)


def test_dequantize_range_noise_and_errors():
    x = torch.tensor([[0, 255], [17, 128]])
    noise = torch.tensor([[0.0, 0.999], [0.5, 0.25]])
    torch.testing.assert_close(dequantize(x, noise=noise), (x + noise) / 256)
    torch.manual_seed(0)
    d = dequantize(torch.full((1000,), 3))
    assert ((d >= 3 / 256) & (d < 4 / 256)).all() and d.std() > 0
    with pytest.raises(TypeError, match="x must hold integer pixel levels"):
        dequantize(torch.rand(2, 2))
    with pytest.raises(ValueError, match=r"x must lie in \[0, 255\], got values in \[0, 256\]"):
        dequantize(torch.tensor([0, 256]))
    with pytest.raises(ValueError, match=r"x must lie in \[0, 3\]"):
        dequantize(torch.tensor([-1, 2]), levels=4)
    with pytest.raises(ValueError, match="noise must have the shape of x"):
        dequantize(x, noise=torch.zeros(3))
    assert dequantize(torch.zeros(0, 3, dtype=torch.long)).shape == (0, 3)


def test_bits_per_dim_formula_and_image_flow_errors():
    torch.testing.assert_close(bits_per_dim(torch.tensor([0.0]), 10), torch.tensor([8.0]))
    torch.testing.assert_close(
        bits_per_dim(torch.tensor([-10 * math.log(2)]), 10, levels=16), torch.tensor([5.0])
    )
    model = build_realnvp(arch="mlp", image_shape=(1, 2, 2), hidden=4)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 2, 2\)"):
        model.bits_per_dim(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="alpha must be in"):
        ImageFlow(model.inner, alpha=0.5)
    with pytest.raises(ValueError, match="levels must be an int >= 2"):
        ImageFlow(model.inner, levels=1)


@pytest.mark.parametrize("arch", ["mlp", "multiscale"])
def test_sample_at_temperature_zero_is_the_decoded_base_mean(arch):
    torch.manual_seed(0)
    model = _perturb(build_realnvp(arch=arch, hidden=16, couplings=2, channels=4, blocks=1), 0.05)
    with torch.no_grad():
        x = model.sample(3, temperature=0.0)
        mean, _ = model.inverse(torch.zeros(1, 1, 28, 28))
        warm = model.sample(3, temperature=1.0)
    assert x.shape == (3, 1, 28, 28)
    torch.testing.assert_close(x, mean.expand_as(x))
    assert not torch.allclose(warm[0], warm[1])
    imgs = model.sample_images(2, 0.7)
    assert imgs.min() >= 0 and imgs.max() <= 1


def test_training_step_lowers_bits_per_dim():
    torch.manual_seed(0)
    model = build_realnvp(arch="mlp", image_shape=(1, 28, 28), couplings=2, hidden=32)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randint(0, 256, (64, 1, 28, 28)) * (torch.rand(64, 1, 28, 28) > 0.8)
    first = None
    for _ in range(30):
        out = model.training_step((x, None))
        assert set(out) == {"loss", "bpd"} and torch.equal(out["loss"].detach(), out["bpd"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else out["bpd"].item()
    assert out["bpd"].item() < first - 1.0


# -- config, save/load, evaluation ------------------------------------------------------------
def test_config_validation():
    for kw, msg in [
        ({"arch": "glow"}, "arch must be one of"),
        ({"image_shape": (28, 28)}, "image_shape must be"),
        ({"couplings": 0}, "couplings must be >= 1"),
        ({"channels": 0}, "channels must be >= 1"),
        ({"blocks": -1}, "blocks must be >= 0"),
    ]:
        with pytest.raises(ValueError, match=msg):
            RealNVPConfig(**kw)
    with pytest.raises(ValueError, match="divisible by 2"):
        build_realnvp(arch="multiscale", image_shape=(1, 6, 6), scales=3)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = _perturb(build_realnvp(arch="multiscale", channels=4, blocks=1), 0.05)
    path = save_realnvp(model, tmp_path / "m" / "model.pt")
    assert is_realnvp_file(path) and not (tmp_path / "m" / "model.pt.tmp").exists()
    loaded = load_realnvp(path, ops="reference")
    assert loaded.config == model.config and loaded.ops.__name__ == "dgm_ext.ops.reference"
    x = torch.randint(0, 256, (2, 1, 28, 28))
    noise = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(loaded.bits_per_dim(x, noise), model.bits_per_dim(x, noise))
    torch.save({"format": "other"}, tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    assert not is_realnvp_file(tmp_path / "other.pt") and not is_realnvp_file(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="is not a RealNVP file"):
        load_realnvp(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="no RealNVP file"):
        load_realnvp(tmp_path / "missing.pt")
    with pytest.raises(TypeError, match="build_realnvp"):
        save_realnvp(ImageFlow(model.inner), tmp_path / "x.pt")


def test_evaluate_bits_per_dim_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    model = _perturb(build_realnvp(arch="mlp", couplings=2, hidden=16), 0.05)
    images = torch.randint(0, 256, (7, 1, 28, 28))
    torch.manual_seed(5)
    state = torch.get_rng_state()
    a = evaluate_bits_per_dim(model, images, batch_size=3, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    b = evaluate_bits_per_dim(model, images, batch_size=7, seed=1)
    assert a["n"] == 7 and a["bpd"] == pytest.approx(b["bpd"], rel=1e-6)
    noise = torch.rand(7, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        per = model.bits_per_dim(images, noise).double()
    assert a["bpd"] == pytest.approx(per.mean().item(), rel=1e-6)
    assert a["bpd_se"] == pytest.approx((per.std() / math.sqrt(7)).item(), rel=1e-5)
    assert evaluate_bits_per_dim(model, images, seed=2)["bpd"] != a["bpd"]
    assert evaluate_bits_per_dim(model, images, limit=2)["n"] == 2
    assert model.training  # restored
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        evaluate_bits_per_dim(model, images, batch_size=0)


def test_compiled_log_prob_matches_eager():
    torch.manual_seed(0)
    model = _perturb(build_realnvp(arch="mlp", image_shape=(1, 4, 4), couplings=2, hidden=8), 0.1)
    x = torch.rand(6, 1, 4, 4) * 0.9 + 0.05
    compiled = torch.compile(model.log_prob, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model.log_prob(x))


# -- experiment and CLI -----------------------------------------------------------------------
@torch.no_grad()
def _bpd_written_out(path: Path, levels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Per-image bits/dim of integer pixels ``levels`` under the RealNVP file ``path``, every
    term written here (in float64): the dequantisation ``x~ = (x + u) / 256`` with ``u`` drawn,
    as ``evaluate_bits_per_dim`` documents, from a CPU generator seeded by ``seed`` (float32);
    the logit ``y = logit(a + (1 - 2a) x~)`` and its log-det; the N(0, I) base; the D log 256
    scale of the 8-bit cube. The one library call is the inner flow's forward ``z, log|det|``
    (float32, the model's own dtype: float64 convolutions are ten times slower on a CPU)."""
    flow = load_realnvp(path).eval()
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(levels.shape, generator=gen, device="cpu")
    x = (levels.cpu().double() + noise.double()) / 256.0
    a = flow.config.alpha
    p = a + (1.0 - 2.0 * a) * x
    y = torch.log(p) - torch.log1p(-p)
    log_jac_logit = (math.log(1.0 - 2.0 * a) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(1)
    z, log_jac_inner = flow.inner(y.float().to(next(flow.parameters()).device))
    z, log_jac_inner = z.double().cpu(), log_jac_inner.double().cpu()
    d = levels[0].numel()
    log_base = (-0.5 * z.flatten(1) ** 2 - 0.5 * math.log(2.0 * math.pi)).sum(1)
    log_px = log_base + log_jac_inner + log_jac_logit  # density of x~ on [0, 1]^D
    return -(log_px - d * math.log(256.0)) / (d * math.log(2.0))


def _check_reported_bpd(reported: dict, path: Path, levels: torch.Tensor) -> None:
    """``reported`` (``{"bpd", "bpd_se", "n"}``) against :func:`_bpd_written_out` (seed 0)."""
    per = _bpd_written_out(path, levels)
    assert reported["n"] == len(levels)
    # float32 rounding: ~1e-8 relative on a CPU (TF32 convolutions on a GPU: <~1e-5); the
    # smallest wrong term, D log 255 for D log 256, moves bits/dim by 1e-3 relative
    assert reported["bpd"] == pytest.approx(per.mean().item(), rel=1e-4)
    assert reported["bpd_se"] == pytest.approx((per.std() / math.sqrt(len(per))).item(), rel=1e-3)


def test_reproduce_quick(tmp_path, mnist_root):
    from dgm_ext.experiments import run_experiment

    out = tmp_path / "rq"
    res = run_experiment(
        "realnvp-mnist", out=out, quick=True, data_root=mnist_root, progress=False,
        extra={"run": "mlp,multiscale"},
    )  # fmt: skip
    saved = json.loads((out / "results.json").read_text())
    for name, epochs in (("mlp", 2), ("multiscale", 1)):
        r = res["runs"][name]
        assert r["epochs"] == epochs and len(r["val_bpd_curve"]) == epochs
        assert saved["runs"][name]["test"]["bpd"] == pytest.approx(r["test"]["bpd"])
        model = load_realnvp(out / name / "model.pt")
        assert model.config.arch == name
        assert r["parameters"] == sum(p.numel() for p in model.parameters())
        from dgm_ext.data import load_mnist

        # the reported numbers, recomputed from the saved model with every term written out
        for split in ("val", "test"):
            levels = load_mnist(split, "levels", root=mnist_root).images[:500]
            _check_reported_bpd(r[split], out / name / "model.pt", levels)
        for e in sorted({0, 1, epochs}):
            assert (out / name / "figures" / f"samples-epoch-{e:04d}.png").is_file()
        for t in ("0.5", "0.7", "1"):
            assert (out / "figures" / f"{name}_samples_T{t}.png").is_file()
    assert res["runs"]["mlp"]["val"]["bpd"] < 5.0  # trained: the untrained model is at ~19
    assert json.loads((out / "mlp" / "config.json").read_text())["trainer"]["grad_clip"] == 5.0
    assert "| mlp |" in (out / "results.md").read_text()
    with pytest.raises(ValueError, match="--run must be a comma-separated subset of mlp"):
        run_experiment("realnvp-mnist", out=tmp_path / "bad", quick=True, extra={"run": "glow"})


def test_cli_train_and_eval_realnvp(tmp_path, mnist_root, capsys):
    out = tmp_path / "run"
    rc = cli.main([
        "train", "realnvp", "--out", str(out), "--hidden", "16", "--couplings", "2",
        "--epochs", "1", "--train-size", "256", "--val-size", "64", "--no-progress",
        "--data-root", mnist_root,
    ])  # fmt: skip
    assert rc == 0
    res = json.loads((out / "eval.json").read_text())
    assert res["epochs"] == 1 and res["val"]["n"] == 64 and res["test"]["n"] == 10_000
    assert json.loads((out / "realnvp_args.json").read_text())["hidden"] == 16
    assert json.loads((out / "config.json").read_text())["trainer"]["grad_clip"] == 5.0
    assert (out / "model.pt").is_file() and (out / "metrics.jsonl").is_file()
    capsys.readouterr()
    rc = cli.main([
        "eval", str(out), "--split", "val", "--limit", "50", "--data-root", mnist_root,
        "--json", str(tmp_path / "e.json"),
    ])  # fmt: skip
    assert rc == 0
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["bits_per_dim"]["n"] == 50 and ev["split"] == "val" and ev["config"]["hidden"] == 16
    from dgm_ext.data import load_mnist

    val = load_mnist("val", "levels", root=mnist_root).images
    _check_reported_bpd(ev["bits_per_dim"], out / "model.pt", val[:50])  # eval's --seed 0
    _check_reported_bpd(res["val"], out / "model.pt", val[:64])  # train's eval.json
    assert cli.main(["train", "realnvp", "--out", str(tmp_path / "x"), "--epochs", "0"]) == 2
    assert "--epochs must be >= 1" in capsys.readouterr().err
    assert cli.main(["train", "realnvp", "--out", str(tmp_path / "x"), "--alpha", "0.5"]) == 2
    assert "alpha must be in [0, 0.5)" in capsys.readouterr().err
    assert cli.main(["eval", str(out), "--dataset", "cifar10", "--data-root", mnist_root]) == 2
    assert "does not match the model's images" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["mlp", "multiscale"])
def test_parameter_gradients_match_finite_differences(arch):
    """d bits/dim / d params along a random direction, against a central difference."""
    torch.manual_seed(0)
    model = build_realnvp(
        arch=arch, image_shape=(1, 4, 4), couplings=2, hidden=8, channels=4, blocks=1
    )
    model = _perturb(model.double(), 0.2)
    x = torch.randint(0, 256, (3, 1, 4, 4))
    noise = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    params = list(model.parameters())
    direction = [torch.randn_like(p) for p in params]
    model.bits_per_dim(x, noise).sum().backward()
    analytic = sum((p.grad * d).sum() for p, d in zip(params, direction, strict=True))
    h = 1e-6
    with torch.no_grad():
        for p, d in zip(params, direction, strict=True):
            p.add_(h * d)
        up = model.bits_per_dim(x, noise).sum()
        for p, d in zip(params, direction, strict=True):
            p.sub_(2 * h * d)
        down = model.bits_per_dim(x, noise).sum()
    torch.testing.assert_close(analytic, (up - down) / (2 * h), rtol=1e-6, atol=1e-8)


def test_mlp_masks_alternate_with_their_complements():
    flow = MLPRealNVP((1, 4, 4), couplings=4, hidden=4)
    masks = [layer.mask for layer in flow.layers]
    board = checkerboard_mask(4, 4).reshape(16)
    for k, m in enumerate(masks):
        assert torch.equal(m, board if k % 2 == 0 else 1 - board)


def test_dequantize_takes_uint8_pixels():
    """uint8 is the natural dtype of 8-bit images: 0..255 are accepted (the range check once
    compared uint8 with 256, which wraps to 0, and refused every uint8 tensor)."""
    from dgm_ext.flows.image import dequantize

    x = torch.tensor([[0, 17, 255]], dtype=torch.uint8)
    noise = torch.full((1, 3), 0.5)
    torch.testing.assert_close(dequantize(x, noise=noise), (x.double() + 0.5).float() / 256)
    with pytest.raises(ValueError, match=r"x must lie in \[0, 15\], got values in \[0, 255\]"):
        dequantize(x, levels=16, noise=noise)
