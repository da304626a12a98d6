"""reproduce conditional-mnist --quick: six models, sample accuracy and per-class FID/KID; the
cVAE's and the conditional RealNVP's reported accuracies recomputed from their saved models
and the shipped classifier."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _data import DATA, needs_mnist

from dgm_ext import load

pytestmark = [needs_mnist, pytest.mark.usefixtures("one_thread")]


def test_reproduce_quick(tmp_path, monkeypatch):
    from dgm_ext.experiments import run_experiment
    from dgm_ext.metrics import mnist_feature_net
    from dgm_ext.metrics.mnist_net import class_probs

    monkeypatch.setenv("DGM_EXT_DATA", str(DATA))
    out = tmp_path / "cond"
    res = run_experiment("conditional-mnist", out=out, quick=True, progress=False)
    models = res["models"]
    assert set(models) == {"cvae", "vae", "cgan", "gan", "crealnvp", "realnvp"}
    assert json.loads((out / "results.json").read_text())["samples_per_class"] == 200
    md = (out / "results.md").read_text()
    for name in models:
        assert f"| {name} |" in md
        assert len(models[name]["per_class"]) == 10
        assert sum(models[name]["class_counts"]) == 2000
    for name in ("cvae", "cgan", "crealnvp"):
        assert "accuracy" in models[name] and "accuracy" not in models[name[1:]]
    # a conditional model's per-class counts are its 200 asked-for samples per class
    assert [c["n"] for c in models["cvae"]["per_class"]] == [200] * 10

    # the cVAE's accuracy again: its saved model, 2000 decoder means of seeded z with 200
    # labels per class, labelled by the shipped classifier
    vae = load(out / "cvae" / "model.pt")
    wanted = torch.arange(10).repeat_interleave(200)
    z = torch.randn(2000, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        images = vae.sample(z=z, labels=wanted).clamp(0, 1)
    predicted = class_probs(mnist_feature_net(), images).argmax(1)
    expected = float((predicted == wanted).double().mean())
    assert models["cvae"]["accuracy"] == pytest.approx(expected, abs=1e-12)
    per = [float((predicted[wanted == c] == c).double().mean()) for c in range(10)]
    assert models["cvae"]["accuracy_per_class"] == pytest.approx(per, abs=1e-12)
    assert (out / "figures" / "cgan_samples.png").is_file()

    # the cGAN's overall IS: its samples (seeded z, sorted by class) in the experiment's seeded
    # random order, 10 contiguous splits, written out with numpy (sorted samples would give
    # each split one class, IS ~ 1)
    gan = load(out / "cgan" / "generator.pt")
    z = torch.randn(2000, gan.config.z_dim, generator=torch.Generator().manual_seed(1))
    probs = class_probs(mnist_feature_net(), gan.decode(z, labels=wanted)).double().numpy()
    probs = probs[torch.randperm(2000, generator=torch.Generator().manual_seed(2)).numpy()]
    scores = []
    for part in np.split(probs, 10):
        py = part.mean(0, keepdims=True)
        kl = np.where(part > 0, part * (np.log(np.where(part > 0, part, 1)) - np.log(py)), 0)
        scores.append(np.exp(kl.sum(1).mean()))
    assert models["cgan"]["overall"]["is"] == pytest.approx(np.mean(scores), rel=1e-6)

    # the conditional RealNVP's: base draws (seeded, 1000 at a time) through the inverse with
    # the one-hot labels as context, clamped to [0, 1]
    flow = load(out / "crealnvp" / "model.pt")
    assert flow.num_classes == 10
    g = torch.Generator().manual_seed(1)
    parts = []
    with torch.no_grad():
        for i in range(0, 2000, 1000):
            z = torch.randn(1000, 1, 28, 28, generator=g)
            x, _ = flow.inverse(z, torch.eye(10)[wanted[i : i + 1000]])
            parts.append(x.clamp(0, 1))
    predicted = class_probs(mnist_feature_net(), torch.cat(parts)).argmax(1)
    expected = float((predicted == wanted).double().mean())
    assert models["crealnvp"]["accuracy"] == pytest.approx(expected, abs=1e-12)
    assert (out / "figures" / "crealnvp_samples.png").is_file()
