"""cifar10-gan (dgm_ext.experiments.cifar10_gan): the SPEC §3 presets, the quick run through the
CLI, the errors of a full run without CIFAR-10 or without the Inception weights, RGB sample
grids, and exact resume of a spectral-norm DCGAN through the Trainer.

CIFAR-10 is not on the test machines: everything runs on small generated batches in the
python-batch format (``write_fake_cifar10``), and the quick run measures samples with a
random-weight stand-in feature network instead of Inception-v3.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from torch.nn.utils import parametrize

from dgm_ext.cli import main
from dgm_ext.data import ImageDataset, load_cifar10
from dgm_ext.experiments.cifar10_gan import (
    PRESETS,
    _find_inception_weights,
    ema_decay,
    parse_presets,
    preset_config,
    write_fake_cifar10,
)
from dgm_ext.gan import GAN
from dgm_ext.train import Trainer, TrainerConfig

# SPEC §3 "Known setups ... cifar10-gan", written out independently of the module's table:
# (loss, penalty, penalty weight, spectral norm, reference IS, reference FID).
SPEC_PRESETS = {
    "jsd-1": ("jsd-nonsaturating", None, 0.0, False, 3.483, 124.47),
    "jsd-2": ("jsd-nonsaturating", None, 0.0, True, 4.873, 40.89),
    "jsd-3": ("jsd-nonsaturating", "r1", 1.0, False, 5.424, 33.07),
    "w1-2": ("w1", None, 0.0, True, 3.642, 84.27),
    "w1-3": ("w1", "r1", 1.0, False, 5.812, 24.91),
}


def _cli(*args: str) -> int:
    return main(["reproduce", "cifar10-gan", *args, "--threads", "1", "--no-progress"])


# ------------------------------------------------------------------------------ presets
@pytest.mark.parametrize("name", list(SPEC_PRESETS))
def test_preset_builds_the_spec_configuration(name: str) -> None:
    loss, penalty, weight, sn, ref_is, ref_fid = SPEC_PRESETS[name]
    cfg = preset_config(name)
    assert (cfg.arch, cfg.width, cfg.z_dim, cfg.image_shape) == ("dcgan", 128, 100, (3, 32, 32))
    assert (cfg.loss, cfg.penalty, cfg.penalty_weight, cfg.spectral_norm) == (
        loss,
        penalty,
        weight,
        sn,
    )
    assert (cfg.lr_generator, cfg.lr_critic, cfg.betas, cfg.critic_steps) == (
        2e-4,
        4e-4,
        (0.0, 0.99),
        2,
    )
    assert (PRESETS[name].reference_is, PRESETS[name].reference_fid) == (ref_is, ref_fid)
    # the built model: spectral norm on every critic layer with weights, none elsewhere,
    # and the optimisers with the SPEC's learning rates and betas
    model = GAN(preset_config(name, width=8))
    layers = [m for m in model.critic.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert len(layers) == 8
    assert all(parametrize.is_parametrized(m, "weight") == sn for m in layers)
    assert not any(parametrize.is_parametrized(m) for m in model.generator.modules())
    opt_c, opt_g = model.configure_optimizers(None)
    assert (opt_c.param_groups[0]["lr"], opt_c.param_groups[0]["betas"]) == (4e-4, (0.0, 0.99))
    assert (opt_g.param_groups[0]["lr"], opt_g.param_groups[0]["betas"]) == (2e-4, (0.0, 0.99))


def test_presets_ema_and_run_option_parsing() -> None:
    assert parse_presets(None) == parse_presets("all") == list(SPEC_PRESETS)
    assert parse_presets("w1-3") == ["w1-3"]
    assert parse_presets("jsd-2, w1-2,jsd-2") == ["jsd-2", "w1-2"]
    for bad in ("jsd-4", "", "jsd-1,nope", "JSD-1"):
        with pytest.raises(ValueError, match="jsd-1, jsd-2, jsd-3, w1-2, w1-3"):
            parse_presets(bad)
    assert ema_decay(None) == 0.998  # SPEC: generator EMA 0.998 unless --ema says otherwise
    assert ema_decay(0.99) == 0.99
    assert ema_decay("0.9") == 0.9
    assert ema_decay(0) is None  # --ema 0 turns it off
    for bad in (1.0, -0.1, "x"):
        with pytest.raises(ValueError, match="--ema"):
            ema_decay(bad)


# ------------------------------------------------------------------------------ RGB grids
def test_save_image_grid_draws_rgb_images(tmp_path: Path) -> None:
    from PIL import Image

    from dgm_ext.plots import image_grid, save_image_grid

    red = torch.zeros(4, 3, 8, 8)
    red[:, 0] = 1.0
    grid = image_grid(red, 2)
    assert grid.shape == (2 * 10 + 2, 2 * 10 + 2, 3)
    assert np.array_equal(grid[2:10, 2:10], np.broadcast_to([1.0, 0.0, 0.0], (8, 8, 3)))
    grey = image_grid(torch.full((3, 1, 4, 4), 0.5), 1)  # unchanged for one channel
    assert grey.shape == (1 * 6 + 2, 3 * 6 + 2) and grey[2, 2] == 0.5
    path = save_image_grid(red, tmp_path / "red.png", 2, "red")
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    reddish = (pixels[:, 0] > 200) & (pixels[:, 1] < 60) & (pixels[:, 2] < 60)
    assert reddish.sum() > 100  # drawn in colour, not as a grey level of one channel


# ------------------------------------------------------------------------------ quick run
def test_quick_run_through_the_cli(tmp_path: Path, one_thread: None) -> None:
    out = tmp_path / "quick"
    assert _cli("--quick", "--run", "jsd-2", "--out", str(out)) == 0
    # the generated data went through the CIFAR-10 loader, in the python-batch format
    data = load_cifar10("train", out / "quick-data", download=False, verify=False)
    assert data.images.shape[1:] == (3, 32, 32) and len(data) >= 200

    res = json.loads((out / "results.json").read_text())
    assert res["order"] == ["jsd-2"] and res["quick"] is True and res["ema"] == 0.998
    r = res["presets"]["jsd-2"]
    assert r["epochs"] == 2
    for key in ("is", "fid", "kid", "seconds_per_epoch", "best_fid"):
        assert math.isfinite(r[key]), key
    assert r["seconds_per_epoch"] > 0
    _check_quality_numbers(out, r, res["floor"])
    assert (r["reference_is"], r["reference_fid"]) == (4.873, 40.89)
    assert r["config"] == preset_config("jsd-2", width=16).to_dict()
    assert [e["epoch"] for e in r["evaluations"]] == [1, 2]
    assert res["feature_net"]["name"] == "random-conv-stand-in"
    assert set(res["floor"]) >= {"is", "fid", "kid"}

    rows = [json.loads(line) for line in (out / "jsd-2" / "metrics.jsonl").read_text().splitlines()]
    assert [("fid" in row, "is" in row, "kid" in row) for row in rows] == [(True,) * 3] * 2
    trainer_cfg = json.loads((out / "jsd-2" / "config.json").read_text())["trainer"]
    assert trainer_cfg["ema_decay"] == 0.998 and trainer_cfg["batch_size"] == 64
    for fig in (
        "jsd-2/figures/metric_and_fid.png",
        "jsd-2/figures/samples-final.png",
        "jsd-2/figures/samples-epoch-0000.png",
        "jsd-2/figures/samples-epoch-0002.png",
        "figures/fid_over_training.png",
    ):
        assert (out / fig).is_file(), fig
    md = (out / "results.md").read_text()
    assert "| jsd-2 |" in md and "40.89" in md and "meaningless" in md


def _fid(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of two feature sets (ddof-1 covariances) through scipy's sqrtm."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # 64 test images for 64 features: a singular covariance
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def _inception_score(p: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp(E KL(p(y|x) ‖ p(y))) per chunk ``[i·N//splits, (i+1)·N//splits)``; mean, ddof-0 std."""
    n, scores = len(p), []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        py = part.mean(0)
        kl = np.where(part > 0, part * (np.log(np.where(part > 0, part, 1)) - np.log(py)), 0)
        scores.append(np.exp(kl.sum(1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def _check_quality_numbers(out: Path, r: dict, floor: dict) -> None:
    """The final IS/FID of jsd-2 (the EMA generator of generator.pt, 256 samples drawn with seed
    1, as the run's evaluation does) and the floor's (test vs training images), recomputed from
    the stand-in network's features/probabilities with numpy and scipy."""
    from dgm_ext.experiments.cifar10_gan import QUICK_N_SAMPLES, stand_in_feature_space
    from dgm_ext.gan import load_gan

    space = stand_in_feature_space(0)  # --seed 0
    train = load_cifar10("train", out / "quick-data", download=False, verify=False).images
    test = load_cifar10("test", out / "quick-data", download=False, verify=False).images
    gen = load_gan(out / "jsd-2" / "generator.pt").generator.eval()
    z = torch.randn(QUICK_N_SAMPLES, 100, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        samples = ((gen(z) + 1) / 2).clamp(0, 1)
    ref = space.extract(train)[0].numpy()
    for got, images in ((r, samples), (floor, test)):
        feats, probs = (t.numpy() for t in space.extract(images))
        fid = _fid(feats, ref)
        scale = np.trace(np.cov(ref, rowvar=False))  # FID is a difference of such traces
        assert got["fid"] == pytest.approx(fid, rel=1e-6, abs=1e-9 * scale)
        is_mean, is_std = _inception_score(probs)
        assert got["is"] == pytest.approx(is_mean, rel=1e-9)
        assert got["is_std"] == pytest.approx(is_std, rel=1e-6, abs=1e-12)


def test_unknown_run_names_the_presets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    out = tmp_path / "bad"
    assert _cli("--quick", "--run", "jsd-4", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "jsd-4" in err and all(name in err for name in SPEC_PRESETS)
    assert "Traceback" not in err
    assert not (out / "quick-data").exists()  # refused before anything was done


# ------------------------------------------------------------------------------ full run: inputs
def test_missing_cifar10_is_a_clear_error_at_the_start(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    one_thread: None,
) -> None:
    weights = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    weights.write_bytes(b"")  # only its presence matters: the data are checked first
    monkeypatch.setenv("DGM_EXT_INCEPTION_WEIGHTS", str(weights))
    monkeypatch.setenv("DGM_EXT_NO_DOWNLOAD", "1")
    empty = tmp_path / "empty-root"
    empty.mkdir()
    out = tmp_path / "run"
    assert _cli("--run", "jsd-1", "--data-root", str(empty), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for name in ("data_batch_1", "data_batch_5", "test_batch", "cifar-10-batches-py"):
        assert name in err, name
    assert str(empty / "cifar-10-batches-py") in err  # where it looked
    assert not (out / "jsd-1").exists()  # nothing trained


def test_missing_inception_weights_is_a_clear_error_at_the_start(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    one_thread: None,
) -> None:
    monkeypatch.delenv("DGM_EXT_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("DGM_EXT_NO_DOWNLOAD", "1")
    root = tmp_path / "root"
    write_fake_cifar10(root, per_batch=4, n_test=4)  # data present: only the weights lack
    out = tmp_path / "run"
    assert _cli("--run", "w1-3", "--data-root", str(root), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "DGM_EXT_INCEPTION_WEIGHTS" in err and "pt_inception-2015-12-05" in err
    assert "github.com/mseitzer/pytorch-fid/releases" in err and str(root) in err
    assert "CIFAR-10 is missing" not in err
    assert not (out / "w1-3").exists()

    # both missing: one message naming both; an unset variable vs a wrong path
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _cli("--data-root", str(empty), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "pt_inception-2015-12-05" in err and "data_batch_1" in err and "Traceback" not in err
    monkeypatch.setenv("DGM_EXT_INCEPTION_WEIGHTS", str(tmp_path / "nowhere.pth"))
    assert _cli("--data-root", str(root), "--out", str(out)) == 2
    assert str(tmp_path / "nowhere.pth") in capsys.readouterr().err


def test_weights_file_is_found_in_the_data_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DGM_EXT_INCEPTION_WEIGHTS", raising=False)
    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    path.write_bytes(b"")
    assert _find_inception_weights(str(tmp_path)) == path
    monkeypatch.setenv("DGM_EXT_INCEPTION_WEIGHTS", str(path))
    assert _find_inception_weights(None) == path


# ------------------------------------------------------------------------------ resume
def _resume_data() -> ImageDataset:
    g = torch.Generator().manual_seed(5)
    return ImageDataset(torch.rand(24, 3, 32, 32, generator=g), torch.zeros(24, dtype=torch.long))


def _sn_gan(seed: int) -> GAN:
    torch.manual_seed(seed)
    return GAN(preset_config("jsd-2", width=8))  # DCGAN, spectral norm, 2 critic steps


def _trainer(model: GAN, run_dir: Path, epochs: int) -> Trainer:
    cfg = TrainerConfig(
        run_dir=run_dir, epochs=epochs, batch_size=8, ema_decay=0.9, progress=False, device="cpu"
    )
    return Trainer(model, cfg)


def test_spectral_norm_dcgan_resumes_exactly(tmp_path: Path, one_thread: None) -> None:
    straight = _sn_gan(0)
    t_straight = _trainer(straight, tmp_path / "straight", 2)
    t_straight.fit(_resume_data())

    first = _sn_gan(0)
    _trainer(first, tmp_path / "split", 1).fit(_resume_data())
    resumed = _sn_gan(123)  # a fresh model: everything must come from the checkpoint
    t_resumed = _trainer(resumed, tmp_path / "split", 2)
    t_resumed.fit(_resume_data())

    assert t_resumed.global_step == t_straight.global_step == 6
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # spectral norm's power-iteration vectors were compared too (training updates _u from _v)
    assert any(k.endswith("_u") for k in a) and any(k.endswith("_v") for k in a)
    ema_a, ema_b = t_straight.ema.shadow, t_resumed.ema.shadow
    assert ema_a.keys() == ema_b.keys()
    for key in ema_a:
        assert torch.equal(ema_a[key], ema_b[key]), f"ema {key}"
