"""Unit tests of dgm_ext.train.ema and dgm_ext.train.checkpoint (in-process, CPU, fast).

They pin the contracts that only the subprocess resume tests exercised before (EMA state
round trip), the failure paths of the atomic writers, ``weights_only`` loading and the RNG
helpers; see docs/MUTATION.md for the mutants they were written against.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import dgm_ext.train.checkpoint as ckpt
from dgm_ext.train import ModelEMA


def _net() -> nn.Module:
    torch.manual_seed(0)
    # a float parameter set plus BatchNorm's integer buffer (copied, not averaged)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------ ModelEMA
@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_ema_rejects_decay_outside_open_unit_interval(decay):
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\)"):
        ModelEMA(_net(), decay)


def test_ema_accepts_decay_just_inside_bounds():
    for decay in (1e-12, 1.0 - 1e-12):
        assert ModelEMA(_net(), decay).decay == decay


def test_ema_state_dict_keys_and_weights_only_round_trip(tmp_path):
    src_net = _net()
    src = ModelEMA(src_net, 0.9)
    for _ in range(3):
        with torch.no_grad():
            for p in src_net.parameters():
                p.add_(1.0)
        src_net[1].num_batches_tracked += 1
        src.update()
    state = src.state_dict()
    assert set(state) == {"decay", "num_updates", "shadow"}
    assert set(state["shadow"]) == set(src_net.state_dict())

    # through a weights_only checkpoint, as the trainer stores it
    ckpt.atomic_save({"ema": state}, tmp_path / "ema.pt")
    loaded = ckpt.load_checkpoint(tmp_path / "ema.pt")["ema"]

    dst = ModelEMA(_net(), 0.5)
    shadow_before = dict(dst.shadow)
    dst.load_state_dict(loaded)
    assert dst.decay == 0.9 and isinstance(dst.decay, float)
    assert dst.num_updates == 3 and isinstance(dst.num_updates, int)
    for k, v in src.shadow.items():
        assert dst.shadow[k] is shadow_before[k]  # copied in place, same tensors
        assert torch.equal(dst.shadow[k], v), k
    assert int(dst.shadow["1.num_batches_tracked"]) == 3
    # a copy, not an alias of the loaded tensors
    with torch.no_grad():
        loaded["shadow"]["0.weight"].add_(100.0)
    assert torch.equal(dst.shadow["0.weight"], src.shadow["0.weight"])
    # and the restored average is what copy_to applies
    target = _net()
    dst.copy_to(target)
    for k, v in target.state_dict().items():
        assert torch.equal(v, src.shadow[k]), k


def test_ema_load_state_dict_accepts_plain_numbers():
    """decay/num_updates are normalised to float/int (e.g. a tensor or an int decay)."""
    ema = ModelEMA(_net(), 0.5)
    state = ema.state_dict()
    ema.load_state_dict({**state, "decay": torch.tensor(0.25), "num_updates": torch.tensor(7)})
    assert ema.decay == 0.25 and type(ema.decay) is float
    assert ema.num_updates == 7 and type(ema.num_updates) is int


@pytest.mark.parametrize("change", ["extra", "missing"])
def test_ema_load_state_dict_rejects_mismatched_keys(change):
    ema = ModelEMA(_net(), 0.5)
    state = ema.state_dict()
    shadow = dict(state["shadow"])
    if change == "extra":
        shadow["extra.weight"] = torch.zeros(1)
        bad = "extra.weight"
    else:
        del shadow["0.bias"]
        bad = "0.bias"
    before = {k: v.clone() for k, v in ema.shadow.items()}
    with pytest.raises(ValueError, match=rf"does not match the module: keys \['{bad}'\]"):
        ema.load_state_dict({"decay": 0.75, "num_updates": 9, "shadow": shadow})
    # nothing was changed by the refused state
    assert ema.decay == 0.5 and ema.num_updates == 0
    for k, v in before.items():
        assert torch.equal(ema.shadow[k], v)


# ------------------------------------------------------------------------------ atomic_save
def test_atomic_save_creates_nested_folders(tmp_path):
    path = tmp_path / "a" / "b" / "c" / "ck.pt"
    ckpt.atomic_save({"x": torch.arange(3)}, path)
    assert torch.equal(ckpt.load_checkpoint(path)["x"], torch.arange(3))
    assert _files(path.parent) == ["ck.pt"]


def _record_replace(monkeypatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        calls.append((os.fspath(src), os.fspath(dst)))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(ckpt.os, "replace", replace)
    return calls


def test_atomic_save_and_copy_write_the_temp_file_beside_the_target(tmp_path, monkeypatch):
    """The temp file must live in the target's folder: os.replace is only atomic within one
    filesystem (a temp file in /tmp would fail with EXDEV, or not be atomic)."""
    calls = _record_replace(monkeypatch)
    folder = tmp_path / "run"
    ckpt.atomic_save({"a": 1}, folder / "last.pt")
    ckpt.atomic_copy(folder / "last.pt", folder / "best.pt")
    assert [Path(d) for _, d in calls] == [folder / "last.pt", folder / "best.pt"]
    for src, _ in calls:
        assert Path(src).parent == folder
    assert _files(folder) == ["best.pt", "last.pt"]  # no temp file left behind
    assert ckpt.load_checkpoint(folder / "best.pt") == {"a": 1}


def test_atomic_save_failure_keeps_previous_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.atomic_save({"v": torch.tensor(1)}, path)
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # a partial/complete temp file exists now
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        ckpt.atomic_save({"v": torch.tensor(2)}, path)
    assert _files(tmp_path) == ["last.pt"]
    assert int(ckpt.load_checkpoint(path)["v"]) == 1


def test_atomic_save_interrupt_removes_temp(tmp_path, monkeypatch):
    """BaseException too (Ctrl-C while writing)."""

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ckpt.atomic_save({"v": 1}, tmp_path / "x.pt")
    assert _files(tmp_path) == []


def test_atomic_save_failed_cleanup_still_raises_the_original_error(tmp_path, monkeypatch):
    """If the temp file cannot be removed either, the write error (not the cleanup's) is what
    the caller sees."""

    def failing_save(obj, f, *args, **kwargs):
        raise RuntimeError("write failed")

    def failing_unlink(p, *args, **kwargs):
        raise PermissionError(13, "Permission denied", os.fspath(p))

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    monkeypatch.setattr(ckpt.os, "unlink", failing_unlink)
    with pytest.raises(RuntimeError, match="write failed"):
        ckpt.atomic_save({"v": 1}, tmp_path / "x.pt")


# ------------------------------------------------------------------------------ atomic_copy
def test_atomic_copy_copies_bytes_exactly(tmp_path):
    src = tmp_path / "src.bin"
    data = os.urandom(3 * (1 << 20) + 12345)  # several copy buffers
    src.write_bytes(data)
    ckpt.atomic_copy(src, tmp_path / "dst.bin")
    assert (tmp_path / "dst.bin").read_bytes() == data
    assert _files(tmp_path) == ["dst.bin", "src.bin"]


def test_atomic_copy_failure_keeps_previous_file_and_removes_temp(tmp_path, monkeypatch):
    src, dst = tmp_path / "src.pt", tmp_path / "dst.pt"
    src.write_bytes(b"new contents")
    dst.write_bytes(b"old contents")

    def failing_copy(inp, out, *args, **kwargs):
        out.write(inp.read(3))
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(ckpt.shutil, "copyfileobj", failing_copy)
    with pytest.raises(OSError, match="Input/output error"):
        ckpt.atomic_copy(src, dst)
    assert dst.read_bytes() == b"old contents"
    assert _files(tmp_path) == ["dst.pt", "src.pt"]


def test_atomic_copy_missing_source_leaves_no_temp(tmp_path):
    dst = tmp_path / "dst.pt"
    dst.write_bytes(b"old")
    with pytest.raises(FileNotFoundError):
        ckpt.atomic_copy(tmp_path / "missing.pt", dst)
    assert _files(tmp_path) == ["dst.pt"]
    assert dst.read_bytes() == b"old"


def test_atomic_copy_failed_cleanup_still_raises_the_original_error(tmp_path, monkeypatch):
    def failing_unlink(p, *args, **kwargs):
        raise PermissionError(13, "Permission denied", os.fspath(p))

    monkeypatch.setattr(ckpt.os, "unlink", failing_unlink)
    with pytest.raises(FileNotFoundError):
        ckpt.atomic_copy(tmp_path / "missing.pt", tmp_path / "dst.pt")


def test_directory_fsync_failure_is_ignored(tmp_path, monkeypatch):
    """Filesystems that cannot open/fsync a directory: the rename is done, no error."""
    folder = tmp_path / "run"
    folder.mkdir()
    real_open = os.open

    def no_dir_open(p, flags, *args, **kwargs):
        if Path(p) == folder:
            raise PermissionError(13, "Permission denied", os.fspath(p))
        return real_open(p, flags, *args, **kwargs)

    monkeypatch.setattr(ckpt.os, "open", no_dir_open)
    ckpt.atomic_save({"a": 1}, folder / "x.pt")
    ckpt.atomic_copy(folder / "x.pt", folder / "y.pt")
    assert _files(folder) == ["x.pt", "y.pt"]


# ------------------------------------------------------------------------------ load_checkpoint
class _Arbitrary:
    """A class a weights_only load must refuse to instantiate."""

    def __init__(self, v: int) -> None:
        self.v = v


def test_load_checkpoint_refuses_arbitrary_objects(tmp_path, monkeypatch):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": _Arbitrary(1)}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        ckpt.load_checkpoint(path)
    # even where the environment asks torch.load to default to full unpickling
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        ckpt.load_checkpoint(path)


def test_load_checkpoint_honours_map_location(tmp_path):
    path = tmp_path / "ck.pt"
    torch.save({"w": torch.ones(2)}, path)
    assert ckpt.load_checkpoint(path)["w"].device.type == "cpu"
    out = ckpt.load_checkpoint(path, map_location="meta")
    assert out["w"].device.type == "meta" and out["w"].shape == (2,)


def test_load_checkpoint_rejects_non_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match=r"list\.pt: not a dgm_ext checkpoint \(got list\)"):
        ckpt.load_checkpoint(path)


# ------------------------------------------------------------------------------ seeding
def _draws() -> tuple:
    return (
        [random.random() for _ in range(3)],
        np.random.rand(3).tolist(),  # noqa: NPY002
        torch.rand(3).tolist(),
    )


@pytest.mark.parametrize("seed", [0, 1234, 2**32 + 7, 2**40 + 1])
def test_seed_everything_makes_all_rngs_reproducible(seed):
    ckpt.seed_everything(seed)
    first = _draws()
    random.seed(999)
    np.random.seed(999)  # noqa: NPY002
    torch.manual_seed(999)
    ckpt.seed_everything(seed)
    assert _draws() == first


def test_seed_everything_seeds_each_library_from_the_seed():
    ckpt.seed_everything(5)
    r5, n5, t5 = _draws()
    ckpt.seed_everything(6)
    r6, n6, t6 = _draws()
    assert r5 != r6 and n5 != n6 and t5 != t6
    random.seed(5)
    np.random.seed(5)  # noqa: NPY002
    torch.manual_seed(5)
    assert _draws() == (r5, n5, t5)


# ---------------------------------------------------------------------- RNG state, CUDA part
def _fake_cuda(monkeypatch, *, available, initialized=True, count=0, states=()):
    calls: list[list[torch.Tensor]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: initialized)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(states))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: calls.append(list(s)))
    return calls


def test_get_rng_state_cuda_part(monkeypatch):
    states = [torch.arange(4, dtype=torch.uint8), torch.arange(4, 8, dtype=torch.uint8)]
    _fake_cuda(monkeypatch, available=False, states=states)
    assert ckpt.get_rng_state()["cuda"] == []
    # CUDA present but never initialised: do not initialise it just to read its state
    _fake_cuda(monkeypatch, available=True, initialized=False, count=2, states=states)
    assert ckpt.get_rng_state()["cuda"] == []
    _fake_cuda(monkeypatch, available=True, initialized=True, count=2, states=states)
    got = ckpt.get_rng_state()["cuda"]
    assert isinstance(got, list) and len(got) == 2
    assert all(torch.equal(a, b) for a, b in zip(got, states, strict=True))


def test_set_rng_state_cuda_part(monkeypatch):
    base = ckpt.get_rng_state()
    states = [torch.arange(4, dtype=torch.uint8), torch.arange(4, 8, dtype=torch.uint8)]

    calls = _fake_cuda(monkeypatch, available=True, count=2)
    ckpt.set_rng_state({**base, "cuda": states})
    assert len(calls) == 1 and all(
        torch.equal(a, b) and a.device.type == "cpu" for a, b in zip(calls[0], states, strict=True)
    )
    # a different number of devices than when saved: the CUDA states are left alone
    calls = _fake_cuda(monkeypatch, available=True, count=1)
    ckpt.set_rng_state({**base, "cuda": states})
    assert calls == []
    # no CUDA now
    calls = _fake_cuda(monkeypatch, available=False, count=1)
    ckpt.set_rng_state({**base, "cuda": states[:1]})
    assert calls == []
    # saved without CUDA (empty list or an older checkpoint without the key)
    calls = _fake_cuda(monkeypatch, available=True, count=0)
    ckpt.set_rng_state({**base, "cuda": []})
    ckpt.set_rng_state({k: v for k, v in base.items() if k != "cuda"})
    assert calls == []


def test_rng_state_round_trip_restores_python_numpy_torch(tmp_path):
    ckpt.seed_everything(3)
    _draws()
    np.random.randn(1)  # noqa: NPY002 -- leaves a cached gaussian in numpy's state
    random.gauss(0, 1)
    ckpt.atomic_save(ckpt.get_rng_state(), tmp_path / "rng.pt")
    expected = (_draws(), np.random.randn(3).tolist(), random.gauss(0, 1))  # noqa: NPY002
    ckpt.seed_everything(99)
    ckpt.set_rng_state(ckpt.load_checkpoint(tmp_path / "rng.pt"))
    assert (_draws(), np.random.randn(3).tolist(), random.gauss(0, 1)) == expected  # noqa: NPY002


# ----------------------------------------------------------------- TrainerConfig
def _config(**kw):
    from dgm_ext.train import TrainerConfig

    return TrainerConfig(run_dir="r", **kw)


@pytest.mark.parametrize(
    "kw",
    [
        {"epochs": 0},
        {"epochs": None, "max_steps": 0},
        {"num_workers": 0},
        {"keep_last": 0},
        {"betas": (0.0, 0.0)},
        {"lr": 1e-12},
        {"ema_decay": 1e-9},
        {"ema_decay": 1 - 1e-9},
        {"val_batch_size": None, "patience": None, "checkpoint_every": None},
    ],
)
def test_trainer_config_accepts_boundary_values(kw):
    cfg = _config(**kw)
    for k, v in kw.items():
        assert getattr(cfg, k) == v


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"epochs": -1}, r"TrainerConfig\.epochs must be an int >= 0, got -1"),
        ({"epochs": None, "max_steps": -1}, r"TrainerConfig\.max_steps must be an int >= 0"),
        ({"batch_size": 0}, r"TrainerConfig\.batch_size must be an int >= 1, got 0"),
        ({"batch_size": None}, r"TrainerConfig\.batch_size must be an int >= 1, got None"),
        ({"batch_size": True}, r"TrainerConfig\.batch_size must be an int >= 1, got True"),
        ({"batch_size": 1.5}, r"TrainerConfig\.batch_size must be an int >= 1, got 1\.5"),
        ({"log_every": None}, r"TrainerConfig\.log_every must be an int >= 1, got None"),
        ({"num_workers": None}, r"TrainerConfig\.num_workers must be an int >= 0, got None"),
        ({"keep_last": None}, r"TrainerConfig\.keep_last must be an int >= 0, got None"),
        (
            {"epochs": None},
            r"^TrainerConfig\.epochs and TrainerConfig\.max_steps cannot both "
            r"be None$",
        ),
        ({"lr": 0.0}, r"TrainerConfig\.lr must be a finite number > 0, got 0\.0"),
        ({"weight_decay": -1.0}, r"^TrainerConfig\.weight_decay must be >= 0, got -1\.0$"),
        ({"betas": (1.0, 0.5)}, r"TrainerConfig\.betas must be two numbers in \[0, 1\)"),
        ({"betas": (0.5, 1.0)}, r"TrainerConfig\.betas must be two numbers in \[0, 1\)"),
        ({"betas": (-0.1, 0.5)}, r"TrainerConfig\.betas"),
        ({"ema_decay": 0.0}, r"TrainerConfig\.ema_decay must be in \(0, 1\), got 0\.0"),
        ({"ema_decay": 1.0}, r"TrainerConfig\.ema_decay must be in \(0, 1\), got 1\.0"),
        ({"min_delta": -0.5}, r"^TrainerConfig\.min_delta must be >= 0, got -0\.5$"),
        ({"extra": [1]}, r"^TrainerConfig\.extra must be a dict, got list$"),
    ],
)
def test_trainer_config_rejects_bad_values_naming_them(kw, message):
    with pytest.raises(ValueError, match=message):
        _config(**kw)


def test_trainer_config_to_dict_is_json_friendly():
    import json

    out = _config(betas=(0.5, 0.9)).to_dict()
    assert out["run_dir"] == "r" and isinstance(out["run_dir"], str)
    assert out["betas"] == [0.5, 0.9]
    assert json.loads(json.dumps(out)) == out


# -- fused Adam ---------------------------------------------------------------------------
def _adam_run(opt_factory, steps: int = 20) -> list[Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = opt_factory(net.parameters())
    x, y = torch.randn(32, 3), torch.randn(32, 2)
    for _ in range(steps):
        loss = ((net(x) - y) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in net.parameters()]


def test_build_optimizer_is_fused_by_default_and_matches_the_default_adam(tmp_path):
    from dgm_ext.train import TrainerConfig, build_optimizer

    cfg = TrainerConfig(run_dir=tmp_path, lr=1e-2)
    opt = build_optimizer(_net().parameters(), cfg)
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["fused"] is True
    off = TrainerConfig(run_dir=tmp_path, lr=1e-2, fused_optimizer=False)
    assert not build_optimizer(_net().parameters(), off).defaults["fused"]
    adamw = TrainerConfig(run_dir=tmp_path, optimizer="adamw", weight_decay=0.1)
    opt = build_optimizer(_net().parameters(), adamw)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True
    assert opt.defaults["weight_decay"] == 0.1
    # one step agrees to rounding; 20 steps stay within the drift rounding differences cause
    for steps, atol in ((1, 1e-7), (20, 1e-5)):
        fused = _adam_run(lambda p: build_optimizer(p, cfg), steps)
        plain = _adam_run(lambda p: torch.optim.Adam(p, lr=1e-2), steps)
        for a, b in zip(fused, plain, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=atol)
    # an explicit choice of implementation is respected
    assert not build_optimizer(_net().parameters(), cfg, foreach=True).defaults["fused"]


def test_make_adam_param_groups_generators_and_unsupported_devices():
    from dgm_ext.train import make_adam

    net = _net()
    groups = [
        {"params": (p for p in net[0].parameters()), "lr": 0.1},
        {"params": net[1].parameters()},
    ]
    opt = make_adam(groups, lr=1e-3)
    assert opt.defaults["fused"] is True
    assert [len(g["params"]) for g in opt.param_groups] == [2, 2]
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[1]["lr"] == 1e-3
    meta = nn.Linear(2, 2, device="meta")
    assert not make_adam(meta.parameters(), lr=1e-3).defaults["fused"]  # falls back
    assert not make_adam(_net().parameters(), fused=False, lr=1e-3).defaults["fused"]


def test_resume_of_an_unfused_run_with_the_fused_optimizer(tmp_path):
    from dgm_ext.train import Trainer, TrainerConfig

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _net()

        def training_step(self, batch):
            (x,) = batch
            return {"loss": (self.net(x) ** 2).mean()}

    data = torch.utils.data.TensorDataset(torch.randn(64, 3))
    torch.manual_seed(0)
    model = Toy()
    cfg = dict(run_dir=tmp_path / "r", batch_size=16, progress=False, device="cpu")
    Trainer(model, TrainerConfig(epochs=1, fused_optimizer=False, **cfg)).fit(data)
    trainer = Trainer(model, TrainerConfig(epochs=2, **cfg))
    rows = trainer.fit(data)
    assert trainer.optimizers[0].defaults["fused"] is True
    assert len(rows) == 2 and all(np.isfinite(r["train_loss"]) for r in rows)
    assert int(trainer.optimizers[0].state[model.net[0].weight]["step"]) == 8


def test_gan_optimizers_are_fused_unless_the_config_says_no(tmp_path):
    from dgm_ext.gan import GAN, GANConfig
    from dgm_ext.train import TrainerConfig

    gan = GAN(GANConfig(arch="mlp"))
    opts = gan.configure_optimizers(TrainerConfig(run_dir=tmp_path))
    assert [o.defaults["fused"] for o in opts] == [True, True]
    assert [o.defaults["lr"] for o in opts] == [gan.config.lr_critic, gan.config.lr_generator]
    opts = gan.configure_optimizers(TrainerConfig(run_dir=tmp_path, fused_optimizer=False))
    assert not any(o.defaults["fused"] for o in opts)
