"""RealNVP as one composition and class-conditional RealNVP (issue 25): the multi-scale
model's map is a ComposedTransform of couplings, squeezes and factor-outs (same function as
the recursion it replaced: against a recursion written here, state-dict keys unchanged);
conditional models' log-dets against autograd Jacobians per example, round trips with the
labels, save/load, label errors, conditioning honoured on a two-class problem, and
``train realnvp --conditional`` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from _data import require
from PIL import Image
from torch import Tensor

from dgm_ext.cli import main
from dgm_ext.data import load_mnist
from dgm_ext.flows import ComposedTransform, FactorOutTransform, SqueezeTransform
from dgm_ext.flows.coupling import squeeze, unsqueeze
from dgm_ext.flows.image import evaluate_bits_per_dim
from dgm_ext.flows.realnvp import RealNVPConfig, build_realnvp, load_realnvp, save_realnvp

pytestmark = pytest.mark.usefixtures("one_thread")


def _perturbed(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Every parameter moved off its initial value (the zero-initialised last layers would
    make a fresh coupling the identity and hide a context that is not used)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _recursion(inner, x: Tensor, i: int = 0) -> tuple[Tensor, Tensor]:
    """The multi-scale forward pass written out (Dinh et al. 2017): checkerboard couplings,
    squeeze, channel couplings, half the channels factored out, the rest to the next scale."""
    x, logdet = inner.checker[i](x)
    if i == inner.scales - 1:
        return x, logdet
    x, ld = inner.channel[i](squeeze(x))
    out, rest = x.chunk(2, dim=1)
    rest, ld_rest = _recursion(inner, rest, i + 1)
    return unsqueeze(torch.cat([out, rest], dim=1)), logdet + ld + ld_rest


@pytest.mark.parametrize("shape, scales", [((1, 8, 8), 2), ((3, 8, 8), 3)])
def test_multiscale_is_one_composition_of_the_recursion(shape, scales) -> None:
    torch.manual_seed(0)
    model = _perturbed(
        build_realnvp(arch="multiscale", image_shape=shape, scales=scales, channels=4, blocks=1)
    )
    inner = model.inner
    t = inner.transform
    assert isinstance(t, ComposedTransform)
    kinds = [type(m).__name__ for m in t]
    assert kinds == ["ComposedTransform", "SqueezeTransform", "ComposedTransform",
                     "FactorOutTransform", "InverseTransform"]  # fmt: skip
    assert isinstance(t[3], FactorOutTransform) and isinstance(t[4].inv, SqueezeTransform)
    # the composition holds the very modules of checker / channel: keys as before, once each
    keys = list(model.state_dict())
    assert all(k.startswith(("inner.checker.", "inner.channel.")) for k in keys), keys
    assert len(keys) == len(set(keys)) and "transform" not in "".join(keys)
    x = torch.rand(3, *shape)
    with torch.no_grad():
        z, ld = inner(x)
        z_want, ld_want = _recursion(inner, x)
        torch.testing.assert_close(z, z_want, rtol=0, atol=0)
        torch.testing.assert_close(ld, ld_want, rtol=1e-6, atol=1e-5)
        x_back, ld_back = inner.inverse(z)
    torch.testing.assert_close(x_back, x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ld_back, -ld, rtol=1e-5, atol=1e-4)
    moved = inner.to(torch.float64)  # .to() reaches the composition's members
    assert t[0][0].net.inp.weight.dtype == torch.float64 and moved is inner


def _jacobian_logdet(fn, x: Tensor) -> Tensor:
    jac = torch.autograd.functional.jacobian(lambda v: fn(v.view(1, *x.shape)).flatten(), x)
    return torch.linalg.slogdet(jac.reshape(x.numel(), x.numel()))[1]


@pytest.mark.parametrize("arch", ["mlp", "multiscale"])
def test_conditional_realnvp_logdets_round_trips_and_label_dependence(arch: str) -> None:
    torch.manual_seed(0)
    cfg = RealNVPConfig(arch=arch, image_shape=(1, 4, 4), couplings=2, hidden=8, scales=2,
                        channels=4, blocks=1, num_classes=3)  # fmt: skip
    model = _perturbed(build_realnvp(cfg, ops="reference").double(), 0.2)
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    labels = torch.tensor([0, 2, 1])
    c = model.context_for(labels, 3)
    torch.testing.assert_close(c, torch.eye(3, dtype=torch.float64)[labels])
    z, ld = model(x, c)
    for i in range(3):
        want = _jacobian_logdet(lambda v, i=i: model(v, c[i : i + 1])[0], x[i])
        torch.testing.assert_close(ld[i], want, rtol=1e-7, atol=1e-7)
    x_back, ld_back = model.inverse(z, c)
    torch.testing.assert_close(x_back, x, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(ld_back, -ld, rtol=1e-7, atol=1e-7)
    # the label changes the map: the same image under another label goes elsewhere
    z_other, _ = model(x, model.context_for(torch.tensor([1, 0, 2]), 3))
    assert (z_other - z).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    # log q(x | y) = log N(z) + log-det, written out
    lp = model.log_prob(x, labels)
    want = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum((1, 2, 3)) + ld
    torch.testing.assert_close(lp, want)


def test_conditional_realnvp_saves_loads_and_checks_labels(tmp_path) -> None:
    torch.manual_seed(0)
    model = _perturbed(build_realnvp(arch="mlp", image_shape=(1, 4, 4), couplings=2,
                                     hidden=8, num_classes=2))  # fmt: skip
    path = save_realnvp(model, tmp_path / "c.pt")
    loaded = load_realnvp(path)
    assert loaded.num_classes == 2 and loaded.config.num_classes == 2
    x = torch.randint(0, 256, (4, 1, 4, 4))
    noise = torch.rand(4, 1, 4, 4)
    y = torch.tensor([0, 1, 1, 0])
    torch.testing.assert_close(loaded.bits_per_dim(x, noise, y), model.bits_per_dim(x, noise, y))
    # an unconditional model's file is as before: no num_classes key
    assert "num_classes" not in build_realnvp(arch="mlp", image_shape=(1, 4, 4)).config.to_dict()
    assert model.config.to_dict()["num_classes"] == 2
    with pytest.raises(ValueError, match=r"labels: this flow is class-conditional"):
        model.bits_per_dim(x, noise)
    with pytest.raises(ValueError, match=r"labels must be 4 class indices in \[0, 2\)"):
        model.bits_per_dim(x, noise, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match=r"labels: a class-conditional flow \(num_classes=2\)"):
        evaluate_bits_per_dim(model, x)
    with pytest.raises(ValueError, match=r"a class-conditional flow .* trains on"):
        model.training_step(x)
    plain = build_realnvp(arch="mlp", image_shape=(1, 4, 4), couplings=2, hidden=8)
    with pytest.raises(ValueError, match=r"labels: this flow is not class-conditional"):
        plain.sample(2, labels=1)
    with pytest.raises(ValueError, match="num_classes must be 0"):
        RealNVPConfig(num_classes=1)
    # sampling: an int label for all, a generator makes it reproducible
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    with torch.no_grad():
        a, b = model.sample(5, labels=1, generator=g1), model.sample(5, labels=1, generator=g2)
    assert a.shape == (5, 1, 4, 4) and torch.equal(a, b)


def _two_class_levels(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` 1x4x4 images of 8-bit levels: class 0 dark (~40), class 1 bright (~215)."""
    y = torch.randint(0, 2, (n,), generator=g)
    centre = torch.where(y == 1, 215.0, 40.0).view(n, 1, 1, 1)
    x = (centre + 12.0 * torch.randn(n, 1, 4, 4, generator=g)).round().clamp(0, 255)
    return x.long(), y


def test_a_conditional_realnvp_honours_the_label() -> None:
    """Trained on dark class-0 and bright class-1 images, samples asked for class c are of
    class c (mean level on the right side of 128), and an image scores better under its
    own label. A flow that ignores its label samples both kinds for either label (~50 %)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = build_realnvp(arch="mlp", image_shape=(1, 4, 4), couplings=4, hidden=32,
                          alpha=0.05, num_classes=2)  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        x, y = _two_class_levels(64, g)
        loss = model.training_step((x, y))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    asked = torch.arange(2).repeat_interleave(200)
    with torch.no_grad():
        samples = model.sample(400, labels=asked, generator=torch.Generator().manual_seed(1))
        bright = samples.mean(dim=(1, 2, 3)) > 0.5
        x, y = _two_class_levels(400, g)
        noise = torch.rand(x.shape, generator=g)
        right = model.bits_per_dim(x, noise, y)
        wrong = model.bits_per_dim(x, noise, 1 - y)
    accuracy = float((bright.long() == asked).double().mean())
    assert accuracy >= 0.95, accuracy
    assert float((right < wrong).double().mean()) >= 0.95


@pytest.fixture
def classes_folder(tmp_path):
    """24 grey 8x8 PNG files in two class subfolders."""
    rng = np.random.default_rng(0)
    root = tmp_path / "digits"
    for cls, level in (("dark", 40), ("bright", 210)):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            a = np.clip(rng.normal(level, 10, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / cls / f"{i:02d}.png")
    return root


def test_train_realnvp_conditional_end_to_end(tmp_path, classes_folder) -> None:
    def train(out, *extra):
        argv = ["train", "realnvp", "--data", f"folder:{classes_folder}", "--couplings", "2",
                "--hidden", "16", "--epochs", "1", "--batch-size", "8", "--out", str(out),
                "--no-progress", *extra]  # fmt: skip
        assert main(argv) == 0
        return json.loads((out / "eval.json").read_text()), load_realnvp(out / "model.pt")

    res, model = train(tmp_path / "c", "--conditional")
    assert model.num_classes == 2 and model.config.image_shape == (1, 8, 8)
    assert np.isfinite(res["val"]["bpd"]) and np.isfinite(res["test"]["bpd"])
    grid = tmp_path / "c" / "figures"
    assert grid.is_dir() and any(grid.iterdir())
    _, plain = train(tmp_path / "u")
    assert plain.num_classes == 0


def test_eval_of_a_conditional_realnvp_scores_given_the_split_labels(tmp_path) -> None:
    """``dgm-ext eval`` of a class-conditional RealNVP file: bits/dim of the split given its
    labels, against the change of variables written out here with the val labels."""
    root = str(require("mnist"))
    torch.manual_seed(0)
    model = _perturbed(build_realnvp(arch="mlp", couplings=2, hidden=8, num_classes=10), 0.05)
    path = save_realnvp(model, tmp_path / "c.pt")
    assert main(["eval", str(path), "--split", "val", "--limit", "20", "--data-root", root,
                 "--json", str(tmp_path / "e.json")]) == 0  # fmt: skip
    got = json.loads((tmp_path / "e.json").read_text())["bits_per_dim"]
    val = load_mnist("val", "levels", root=root)
    x, y = val.images[:20], val.labels[:20]
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))  # eval's --seed 0
    a = model.alpha
    p = a + (1 - 2 * a) * (x + u) / 256
    logit_ld = (math.log(1 - 2 * a) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(1)
    with torch.no_grad():
        z, ld = model.inner(torch.log(p) - torch.log1p(-p), torch.eye(10)[y])
    log_px = torch.distributions.Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1) + ld + logit_ld
    bpd = -(log_px - 784 * math.log(256)) / (784 * math.log(2))
    assert got["n"] == 20
    assert got["bpd"] == pytest.approx(float(bpd.mean()), rel=1e-5)
