"""``reproduce families-mnist``: the VAE, GAN and RealNVP side by side (quick run, option
parsing, and the reported numbers recomputed from the saved models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dgm_ext.experiments import families_mnist as fm

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_parse_paths_defaults_and_errors():
    paths = fm._parse_paths(None)
    assert paths == {k: Path(v) for k, v in fm.DEFAULTS.items()}
    got = fm._parse_paths("gan=a/g.pt, realnvp=b/m.pt")
    assert got["gan"] == Path("a/g.pt") and got["realnvp"] == Path("b/m.pt")
    assert got["vae"] == Path(fm.DEFAULTS["vae"])
    for bad in ("glow=x.pt", "vae", "vae=", "vae=x.pt,,"):
        with pytest.raises(ValueError, match="FAMILY=PATH"):
            fm._parse_paths(bad)


def test_seconds_per_epoch_reads_the_runs_log(tmp_path):
    rows = [
        {"epoch": 1, "time_s": 10.0, "grid_s": 1.0},
        {"epoch": 2, "time_s": 30.0, "eval_s": 2.0},
        {"epoch": 3, "time_s": 20.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert fm._seconds_per_epoch(tmp_path / "model.pt") == (20.0, 3)
    sec, n = fm._seconds_per_epoch(tmp_path / "elsewhere" / "model.pt")
    assert n == 0 and sec != sec  # nan


@pytest.mark.skipif(not (DATA / "mnist").is_dir(), reason=f"MNIST files not found under {DATA}")
def test_reproduce_quick(tmp_path, monkeypatch):
    from dgm_ext.experiments import run_experiment
    from dgm_ext.experiments.gan_common import SampleQuality
    from dgm_ext.experiments.gan_mnist import QUICK_CLASSIFIER
    from dgm_ext.metrics import mnist_feature_space

    monkeypatch.setenv("DGM_EXT_DATA", str(DATA))
    threads = torch.get_num_threads()
    out = tmp_path / "fam"
    try:
        res = run_experiment("families-mnist", out=out, quick=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    fam = res["families"]
    assert set(fam) == {"vae", "gan", "realnvp"}
    assert "nats" in fam["vae"]["likelihood"] and "bits/dim" in fam["realnvp"]["likelihood"]
    assert fam["gan"]["likelihood"].startswith("—")
    for name in fam:
        assert fam[name]["epochs"] == 1 and fam[name]["fid"] > 0
        assert (out / "figures" / f"{name}_samples.png").is_file()
    assert res["floor"]["fid"] < min(f["fid"] for f in fam.values())
    md = (out / "results.md").read_text()
    assert "| realnvp |" in md and "floor: training images" in md
    assert json.loads((out / "results.json").read_text())["n_samples"] == 500
    # the RealNVP row, recomputed from its saved model with the same seed and classifier
    from dgm_ext.data import load_mnist

    images, model = fm._samples("realnvp", out / "quick-models/realnvp/model.pt", 500, 0, "fused")
    assert fam["realnvp"]["parameters"] == sum(p.numel() for p in model.parameters())
    space = mnist_feature_space("mnist", root=str(DATA), train_config=QUICK_CLASSIFIER)
    test = load_mnist("test", "grey", root=str(DATA)).images[:500]
    again = SampleQuality(space, test, 500).measure(images)
    assert again["fid"] == pytest.approx(fam["realnvp"]["fid"], rel=1e-6)


def test_command_comes_from_the_experiment_config(tmp_path):
    run = tmp_path / "gan-run"
    (run / "train").mkdir(parents=True)
    exp = {"name": "gan-mnist", "out": str(run), "epochs": 25, "seed": 3, "extra": {}}
    (run / "config.json").write_text(json.dumps(exp))
    (run / "train" / "config.json").write_text(json.dumps({"run_dir": "x", "epochs": 25}))
    got = fm._command("gan", run / "train" / "generator.pt")
    assert got == "dgm-ext reproduce gan-mnist --epochs 25 --seed 3 --out gan-run (its train/)"
    exp = {"name": "realnvp-mnist", "out": "x", "epochs": None, "extra": {"run": "mlp"}}
    (run / "train" / "config.json").write_text(json.dumps(exp))
    got = fm._command("realnvp", run / "train" / "model.pt")
    assert got == "dgm-ext reproduce realnvp-mnist --run mlp --out train"
    (run / "train" / "config.json").write_text("{not json")
    (run / "config.json").unlink()
    assert fm._command("vae", run / "train" / "model.pt") == fm.COMMANDS["vae"]
