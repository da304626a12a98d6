"""The persistence contract (issue 23): every model file carries a format tag, its config and
weights, loads with ``weights_only=True``, is written atomically, and ``dgm_ext.load`` returns
the model whatever its family after one load; files of earlier versions keep loading.

The legacy files under ``tests/data/legacy`` were written, and their expected outputs computed,
by the code before the contract (``tests/data/legacy/make_legacy_files.py``, commit 1b241a5):
the VAE file there has no format tag.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

import dgm_ext
from dgm_ext import persistence
from dgm_ext.flows import PlanarFitConfig, PlanarFlow, fit_planar, load_planar, save_planar
from dgm_ext.flows.image import ImageFlow
from dgm_ext.flows.realnvp import build_realnvp, load_realnvp, save_realnvp
from dgm_ext.gan import GAN, GANConfig, load_gan, save_gan
from dgm_ext.gan.ema import GeneratorEMA
from dgm_ext.vae import VAE, build_vae, load_vae, save_vae

LEGACY = Path(__file__).resolve().parent / "data" / "legacy"
FAMILIES = ["vae", "gan", "realnvp", "planar"]
TAGS = {
    "vae": "dgm_ext.vae/1",
    "gan": "dgm_ext.gan/1",
    "realnvp": "dgm_ext.realnvp/1",
    "planar": "dgm_ext.flows.planar/1",
}
TYPES = {"vae": VAE, "gan": GAN, "realnvp": ImageFlow, "planar": PlanarFlow}
LOADERS = {
    "vae": load_vae,
    "gan": load_gan,
    "realnvp": load_realnvp,
    "planar": lambda p: load_planar(p).flow,
}
# the fused CPU kernels may round differently on another processor's instruction set
CLOSE = {"rtol": 1e-5, "atol": 1e-6}


def _perturb(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))


def _outputs(family: str, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Deterministic outputs of a model of ``family`` on fixed inputs."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        if family == "vae":
            x = torch.rand(2, 1, 28, 28, generator=g)
            mu, logvar, h = model.encode(x)
            z0 = torch.randn(3, 2, 2, generator=g)
            zk, ld = model.flow(z0, h, model.ops)
            return {"mu": mu, "logvar": logvar, "decode": model.decode(z0[0]), "z": zk, "ld": ld}
        if family == "gan":
            z, x = torch.randn(2, 2, generator=g), torch.rand(1, 1, 32, 32, generator=g)
            return {"decode": model.decode(z), "critic": model.critic(x * 2 - 1)}
        if family == "realnvp":
            z, ld = model(torch.rand(5, 1, 2, 2, generator=g) * 0.9 + 0.05)
            return {"z": z, "ld": ld}
        x, ld = model.inverse(torch.randn(4, 2, generator=g))
        return {"x": x, "ld": ld}


def _save(family: str, folder: Path, seed: int = 0) -> tuple[Path, torch.nn.Module]:
    """A small model of ``family`` (off its initialisation, by ``seed``) saved by the family's
    saver, and the model whose outputs the loaded one must give (the GAN: with its EMA
    generator)."""
    torch.manual_seed(0)
    path = folder / f"{family}.pt"
    if family == "vae":
        model = build_vae(arch="mlp", latent_dim=2, hidden=3, flow_length=2)
        _perturb(model, 1 + seed)
        save_vae(model, path)
        return path, model
    if family == "gan":
        model = GAN(GANConfig(arch="dcgan", z_dim=2, image_shape=(1, 32, 32), width=2))
        ema = GeneratorEMA(model.generator, 0.9)
        _perturb(model, 2 + seed)  # the live generator moves away from the EMA's
        save_gan(model, path, ema=ema)
        expected = GAN(model.config)
        expected.generator = ema.averaged_module()
        expected.critic.load_state_dict(model.critic.state_dict())
        return path, expected.eval()
    if family == "realnvp":
        model = build_realnvp(arch="mlp", image_shape=(1, 2, 2), couplings=2, hidden=3)
        _perturb(model, 3 + seed)
        save_realnvp(model, path)
        return path, model
    fit = fit_planar(PlanarFitConfig(mode="kl", target="u2", k=2, steps=3, log_every=1))
    _perturb(fit.flow, 4 + seed)
    save_planar(fit, path, note="a note")
    return path, fit.flow


def _assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], **tol) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if tol:
            torch.testing.assert_close(a[k], b[k], **tol, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------ the contract


@pytest.mark.parametrize("family", FAMILIES)
def test_a_saved_file_holds_tag_config_and_weights_and_loads_safely(tmp_path, family):
    path, _ = _save(family, tmp_path)
    blob = torch.load(path, map_location="cpu", weights_only=True)  # torch itself, safely
    assert blob["format"] == TAGS[family]
    assert isinstance(blob["config"], dict) and blob["config"]
    weights = [v for v in blob.values() if isinstance(v, dict) and v is not blob["config"]]
    assert any(isinstance(t, torch.Tensor) for w in weights for t in w.values())
    # no temporary file of the atomic writer is left beside it
    assert sorted(os.listdir(tmp_path)) == [path.name]


@pytest.mark.parametrize("family", FAMILIES)
def test_dgm_ext_load_returns_each_familys_model_with_identical_outputs(tmp_path, family):
    path, model = _save(family, tmp_path)
    expected = _outputs(family, model)
    loaded = dgm_ext.load(path)
    assert type(loaded) is TYPES[family]
    _assert_equal(_outputs(family, loaded), expected)
    _assert_equal(_outputs(family, LOADERS[family](path)), expected)  # the family's loader too


def test_dgm_ext_load_reads_the_file_once(tmp_path, monkeypatch):
    path, _ = _save("realnvp", tmp_path)
    calls = []
    real = torch.load

    def counting(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    dgm_ext.load(path)
    assert calls == [True]


def test_read_gives_kind_blob_and_model_from_one_load(tmp_path, monkeypatch):
    """What ``dgm-ext eval`` uses: the kind to dispatch on, the dict (a checkpoint's weights)
    and the model, all from one ``torch.load``."""
    files = {f: _save(f, tmp_path)[0] for f in FAMILIES}
    checkpoint = tmp_path / "last.pt"
    torch.save({"format": "dgm_ext.train/1", "model": {"w": torch.zeros(2)}}, checkpoint)
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(1) or real(*a, **k))
    for family, path in files.items():
        calls.clear()
        mf = persistence.read(path)
        assert mf.kind == family and mf.tag == TAGS[family] and mf.blob["format"] == TAGS[family]
        assert type(mf.load()) is TYPES[family]
        assert len(calls) == 1
    mf = persistence.read(checkpoint)
    assert mf.kind == "checkpoint" and torch.equal(mf.blob["model"]["w"], torch.zeros(2))
    assert persistence.read(LEGACY / "vae.pt").kind == "vae"


def test_the_vae_file_was_untagged_before_the_contract():
    """The premise of the legacy test below: these files are the old layouts."""
    blobs = {f: torch.load(LEGACY / f"{f}.pt", weights_only=True) for f in FAMILIES}
    assert "format" not in blobs["vae"] and set(blobs["vae"]) == {"config", "state_dict"}
    assert all(blobs[f]["format"] == TAGS[f] for f in ("gan", "realnvp", "planar"))


@pytest.mark.parametrize("family", FAMILIES)
def test_files_of_the_previous_version_load_with_identical_outputs(family):
    expected = torch.load(LEGACY / "expected.pt", weights_only=True)[family]
    path = LEGACY / f"{family}.pt"
    for model in (dgm_ext.load(path), LOADERS[family](path)):
        assert type(model) is TYPES[family]
        g = expected
        with torch.no_grad():
            if family == "vae":
                mu, logvar, h = model.encode(g["x"])
                zk, ld = model.flow(g["z0"], h, model.ops)
                got = {"mu": mu, "logvar": logvar, "decode": model.decode(g["z"])}
                got |= {"flow_z": zk, "flow_logdet": ld}
            elif family == "gan":
                got = {"decode": model.decode(g["z"]), "critic": model.critic(g["x"])}
            elif family == "realnvp":
                z, ld = model(g["x"])
                got = {"z": z, "logdet": ld}
            else:
                x, ld = model.inverse(g["z"])
                got = {"x": x, "logdet": ld}
        _assert_equal(got, {k: expected[k] for k in got}, **CLOSE)


def test_an_old_vae_file_saved_again_gets_the_tag(tmp_path):
    model = load_vae(LEGACY / "vae.pt")
    path = save_vae(model, tmp_path / "again.pt")
    blob = torch.load(path, weights_only=True)
    assert blob["format"] == TAGS["vae"]
    assert blob["config"] == torch.load(LEGACY / "vae.pt", weights_only=True)["config"]


# ------------------------------------------------------------------------------ refusals

_RAN: list[str] = []


def _record(tag: str) -> str:
    _RAN.append(tag)
    return tag


class _Payload:
    """Unpickling it calls ``_record``: code that a safe load must never run."""

    def __reduce__(self):
        return (_record, ("unpickled",))


def test_a_file_with_python_objects_is_refused_without_running_them(tmp_path):
    path, _ = _save("vae", tmp_path)
    blob = torch.load(path, weights_only=True)
    blob["payload"] = _Payload()
    torch.save(blob, path)
    _RAN.clear()
    for load in (dgm_ext.load, load_vae):
        with pytest.raises(ValueError, match="weights_only=True") as info:
            load(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert _RAN == []


def test_a_trainer_checkpoint_is_named_and_refused(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"format": "dgm_ext.train/1", "model": {"w": torch.zeros(2)}}, path)
    with pytest.raises(ValueError, match=r"is a dgm_ext training checkpoint .*not a model file"):
        dgm_ext.load(path)


@pytest.mark.parametrize(
    ("blob", "says"),
    [
        ({"format": "dgm_ext.gan/2", "config": {}}, "format 'dgm_ext.gan/2', which this version"),
        ({"weights": torch.zeros(3)}, "a PyTorch file that is not a dgm_ext model"),
        ({"format": "dgm_ext.gan/1", "config": {}, "generator": {}}, "damaged .*no critic"),
    ],
)
def test_other_dicts_are_refused_in_one_line(tmp_path, blob, says):
    path = tmp_path / "x.pt"
    torch.save(blob, path)
    with pytest.raises(ValueError, match=says) as info:
        dgm_ext.load(path)
    assert "\n" not in str(info.value)


def test_a_missing_file_and_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        dgm_ext.load(tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="is a folder"):
        dgm_ext.load(tmp_path)


# ------------------------------------------------------------------------------ the writer


def test_values_a_safe_load_cannot_read_are_refused_before_writing(tmp_path):
    fit = fit_planar(PlanarFitConfig(mode="kl", target="u1", k=1, steps=1))
    for bad in (Path("somewhere"), np.float64(1.5), {1.5: "float key"}, {"s": {1, 2}}):
        with pytest.raises(TypeError, match=r"weights_only=True|not a str or int"):
            save_planar(fit, tmp_path / "fit.pt", extra=bad)
        assert not (tmp_path / "fit.pt").exists()
    cfg = GANConfig(arch="dcgan", image_shape=(1, 32, 32), width=2, extra={"lr": np.float32(0.1)})
    with pytest.raises(TypeError, match=r"\['extra'\]\['lr'\] is a float32"):
        save_gan(GAN(cfg), tmp_path / "gan.pt")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("family", FAMILIES)
def test_a_failed_save_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch, family):
    path, _ = _save(family, tmp_path)
    before = path.read_bytes()
    real = torch.save

    def save_then_fail(obj, f, *args, **kwargs):
        real(obj, f, *args, **kwargs)  # the bytes are written, then the disk "fills up"
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(OSError, match="No space"):
        _save(family, tmp_path, seed=10)  # another model: other bytes
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [path.name]


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_model_files_and_checkpoints_get_the_mode_open_would_give(tmp_path):
    """mkstemp makes 0600 files; a model or checkpoint must be as readable as any file the
    user writes (0666 less the umask), not private to its writer."""
    from dgm_ext.train import atomic_save

    old = os.umask(0o022)
    try:
        atomic_save({"a": 1}, tmp_path / "a.pt")
        os.umask(0o077)
        atomic_save({"a": 1}, tmp_path / "b.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.pt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.pt").stat().st_mode) == 0o600
