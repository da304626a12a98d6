"""Unit tests of dgm_ext.train (in-process, tiny models)."""

from __future__ import annotations

import csv
import json
import math
import sys
import types

import pytest
import torch
from _train_helpers import Regressor, Scripted, cfg, regression_data
from torch import nn
from torch.utils.data import TensorDataset

import dgm_ext.train.checkpoint as ckpt_mod
import dgm_ext.train.records as records_mod
from dgm_ext.data import ImageDataset
from dgm_ext.train import (
    ModelEMA,
    NonFiniteLossError,
    Trainer,
    TrainerConfig,
    atomic_save,
    build_optimizer,
    get_rng_state,
    load_checkpoint,
    set_rng_state,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("field", "value"),
    [("batch_size", 0), ("optimizer", "sgd"), ("lr", -1.0), ("patience", 0),
     ("ema_decay", 1.0), ("grad_clip", 0.0), ("monitor_mode", "best"), ("betas", (0.9, 1.5))],
)  # fmt: skip
def test_config_errors_name_the_field(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        TrainerConfig(run_dir=tmp_path, **{field: value})


def test_config_needs_epochs_or_steps(tmp_path):
    with pytest.raises(ValueError, match=r"epochs and TrainerConfig\.max_steps"):
        TrainerConfig(run_dir=tmp_path, epochs=None, max_steps=None)


def test_model_contract_errors(tmp_path):
    with pytest.raises(TypeError, match="training_step"):
        Trainer(nn.Linear(2, 2), cfg(tmp_path))

    class NoLoss(Regressor):
        def training_step(self, batch):
            return {"mae": super().training_step(batch)["mae"]}

    with pytest.raises(TypeError, match="'loss'"):
        Trainer(NoLoss(), cfg(tmp_path, epochs=1)).fit(regression_data())


def test_adam_and_adamw(tmp_path):
    t = Trainer(Regressor(), cfg(tmp_path, optimizer="adamw", weight_decay=0.1, lr=3e-3))
    (opt,) = t.optimizers
    assert type(opt) is torch.optim.AdamW
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[0]["lr"] == 3e-3
    t = Trainer(Regressor(), cfg(tmp_path, betas=(0.5, 0.9)))
    assert type(t.optimizers[0]) is torch.optim.Adam
    assert t.optimizers[0].param_groups[0]["betas"] == (0.5, 0.9)


# ------------------------------------------------------------------------ device
@pytest.fixture
def fake_one_gpu(monkeypatch):
    """A machine with one visible CUDA device, as far as the trainer can tell (no real CUDA
    call may happen: the checks must come first). Returns a function setting LOCAL_RANK."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for var in ("LOCAL_RANK", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)

    def set_local_rank(rank):
        monkeypatch.setenv("LOCAL_RANK", str(rank))

    return set_local_rank


def test_more_local_ranks_than_gpus_is_refused_with_cpu_advice(tmp_path, fake_one_gpu):
    fake_one_gpu(1)  # e.g. torchrun --nproc_per_node=2 on a one-GPU machine, rank 1
    msg = (
        r"LOCAL_RANK=1, so this process would use cuda:1, but only 1 CUDA device is visible\. "
        r"Start at most one process per visible GPU \(torchrun --nproc_per_node=1\), or, to "
        r"train on the CPU with the gloo backend instead, pass TrainerConfig\(device='cpu'\)"
    )
    with pytest.raises(RuntimeError, match=msg):
        Trainer(Regressor(), cfg(tmp_path))
    with pytest.raises(RuntimeError, match=msg):  # "cuda" without an index: cuda:LOCAL_RANK
        Trainer(Regressor(), cfg(tmp_path, device="cuda"))
    with pytest.raises(RuntimeError, match=r"device='cuda:3' asks for cuda:3 but only 1 CUDA"):
        Trainer(Regressor(), cfg(tmp_path, device="cuda:3"))
    t = Trainer(Regressor(), cfg(tmp_path, device="cpu"))  # the advice works
    assert t.device == torch.device("cpu")


def test_device_follows_local_rank(fake_one_gpu, monkeypatch):
    assert Trainer._resolve_device(None) == torch.device("cuda", 0)  # no LOCAL_RANK
    fake_one_gpu(0)
    assert Trainer._resolve_device(None) == torch.device("cuda", 0)
    assert Trainer._resolve_device("cuda") == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    fake_one_gpu(1)
    assert Trainer._resolve_device(None) == torch.device("cuda", 1)
    assert Trainer._resolve_device("cuda:0") == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert Trainer._resolve_device(None) == torch.device("cpu")
    with pytest.raises(RuntimeError, match=r"only 0 CUDA devices are visible\. To train on"):
        Trainer._resolve_device("cuda")


# ----------------------------------------------------------------- metrics and files
def test_metrics_files_config_and_progress(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(records_mod, "is_terminal", lambda stream: True)  # a console
    data = regression_data()
    t = Trainer(Regressor(), cfg(tmp_path, epochs=3, progress=True, extra={"note": "x"}))
    hist = t.fit(data, regression_data(32, seed=1))
    run = tmp_path / "run"
    assert len(hist) == 3 and [r["epoch"] for r in hist] == [1, 2, 3]
    assert [r["step"] for r in hist] == [4, 8, 12]  # 64 examples / batch 16
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == hist
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    for row in rows:
        for key in ("train_loss", "train_mae", "val_loss", "val_mae", "lr", "time_s"):
            assert float(row[key]) >= 0, key
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    conf = json.loads((run / "config.json").read_text())
    assert conf["trainer"]["epochs"] == 3 and conf["trainer"]["extra"] == {"note": "x"}
    assert conf["model"]["parameters"] == 4 and conf["world_size"] == 1
    captured = capsys.readouterr()
    assert "epoch 3/3" in captured.err  # the tqdm bar
    assert "train_loss=" in captured.out  # the per-epoch summary line


def test_progress_into_a_file_is_one_line_per_epoch(tmp_path, capsys):
    """stderr redirected to a file (not a terminal, as under pytest): no progress bar, whose
    every redraw would be a line of the log; the per-epoch summary line only."""
    data = regression_data(256)  # 16 batches of 16, log_every 1: many bar refreshes
    t = Trainer(Regressor(), cfg(tmp_path, epochs=3, progress=True, log_every=1))
    t.fit(data)
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert [line.split()[0] for line in lines] == ["epoch=1", "epoch=2", "epoch=3"]


def test_epoch_means_are_weighted_by_batch_size(tmp_path):
    class Echo(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def training_step(self, batch):
            (x,) = batch
            return {"loss": self.w * 0 + x.mean(), "n": torch.tensor(float(len(x)))}

    x = torch.arange(10.0)  # batches of 4, 4, 2 (unshuffled order does not matter for the mean)
    t = Trainer(Echo(), cfg(tmp_path, epochs=1, batch_size=4))
    (row,) = t.fit(TensorDataset(x), TensorDataset(x[:3]))
    assert row["train_loss"] == pytest.approx(4.5)  # the mean over examples, not over batches
    assert row["train_n"] == pytest.approx((4 * 4 + 4 * 4 + 2 * 2) / 10)
    assert row["val_loss"] == pytest.approx(1.0)  # no validation_step: training_step, no grad


def test_max_steps(tmp_path):
    t = Trainer(Regressor(), cfg(tmp_path, epochs=None, max_steps=10))
    hist = t.fit(regression_data())  # 4 steps per epoch
    assert t.global_step == 10
    assert [r["step"] for r in hist] == [4, 8, 10]  # the partial third epoch is closed
    t = Trainer(Regressor(), cfg(tmp_path / "b", epochs=2, max_steps=100))
    assert [r["step"] for r in t.fit(regression_data())] == [4, 8]  # epochs come first


def test_resume_in_process_matches_uninterrupted(tmp_path):
    full = Regressor()
    Trainer(full, cfg(tmp_path / "full", epochs=4, checkpoint_every=3)).fit(regression_data())
    part = Regressor()
    Trainer(part, cfg(tmp_path / "part", epochs=2)).fit(regression_data())
    resumed = Regressor()  # fresh weights, overwritten by the checkpoint
    t = Trainer(resumed, cfg(tmp_path / "part", epochs=4))
    hist = t.fit(regression_data())
    assert len(hist) == 4 and t.global_step == 16
    for a, b in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    # a finished run resumes to "nothing to do"
    assert Trainer(Regressor(), cfg(tmp_path / "part", epochs=4)).fit(regression_data()) == hist


def test_resume_with_changed_batch_size_warns(tmp_path, caplog):
    Trainer(Regressor(), cfg(tmp_path, epochs=1)).fit(regression_data())
    with caplog.at_level("WARNING", logger="dgm_ext.train"):
        Trainer(Regressor(), cfg(tmp_path, epochs=2, batch_size=8)).fit(regression_data())
    assert "different settings: batch_size 16 -> 8: the run continues" in caplog.text


def test_custom_step_model_without_eval_method_rejects_val_set(tmp_path):
    class OnlyCustom(TwoOptimisers):
        pass

    with pytest.raises(TypeError, match="val_set"):
        Trainer(OnlyCustom(), cfg(tmp_path, epochs=1)).fit(regression_data(), regression_data())


# ---------------------------------------------------------------- early stopping
@pytest.mark.parametrize("mode", ["min", "max"])
def test_early_stopping_stops_at_the_right_epoch(tmp_path, mode):
    script = [5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 1.0, 0.5]  # best at epoch 3, then 3 bad epochs
    sign = 1 if mode == "min" else -1
    model = Scripted([sign * v for v in script])
    t = Trainer(model, cfg(tmp_path, epochs=8, patience=3, monitor_mode=mode, val_batch_size=64))
    hist = t.fit(regression_data(), regression_data(8))
    assert len(hist) == 6 and t.stopped_early
    assert t.best_epoch == 3 and t.best == sign * 3.0
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best["trainer"]["epoch"] == 3 and best["history"][-1]["val_loss"] == sign * 3.0
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["trainer"]["epoch"] == 6 and last["trainer"]["stopped_early"]
    # the improvement must exceed min_delta to count
    t = Trainer(Scripted([3.0, 2.95, 2.9, 1.0]), cfg(tmp_path / "d", epochs=4, patience=2,
                                                     min_delta=0.2))  # fmt: skip
    assert len(t.fit(regression_data(), regression_data(8))) == 3


def test_patience_needs_the_monitored_metric(tmp_path):
    with pytest.raises(ValueError, match="val_loss"):
        Trainer(Regressor(), cfg(tmp_path, epochs=2, patience=1)).fit(regression_data())


# ----------------------------------------------------------------------- NaN guard
class BlowsUp(Regressor):
    def __init__(self, at_call):
        super().__init__()
        self.at_call, self.calls, self.after_epoch1 = at_call, 0, None

    def training_step(self, batch):
        self.calls += 1
        out = super().training_step(batch)
        if self.calls >= self.at_call:
            out["loss"] = out["loss"] * float("nan")
        return out

    def on_epoch_end(self, trainer, epoch):
        if epoch == 0:
            self.after_epoch1 = {k: v.clone() for k, v in self.state_dict().items()}
        return {"hook_value": 1.5}


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    model = BlowsUp(at_call=7)  # step 3 of epoch 2
    t = Trainer(model, cfg(tmp_path, epochs=5))
    with pytest.raises(
        NonFiniteLossError, match=r"Non-finite loss \(nan\) at epoch 2, step 7"
    ) as e:
        t.fit(regression_data())
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert str(last) in str(e.value) and e.value.checkpoint == last and e.value.epoch == 2
    ck = load_checkpoint(last)
    assert ck["trainer"]["epoch"] == 1 and ck["trainer"]["global_step"] == 4
    for k, v in model.after_epoch1.items():  # on the trainer's device; ck is loaded on the CPU
        assert torch.equal(ck["model"][k], v.cpu())
    assert ck["history"][0]["hook_value"] == 1.5
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bad step not applied
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1


def test_nan_before_any_checkpoint_and_gradient_check(tmp_path):
    with pytest.raises(NonFiniteLossError, match="No checkpoint had been written yet"):
        Trainer(BlowsUp(at_call=2), cfg(tmp_path, epochs=1)).fit(regression_data())

    class InfGrad(Regressor):
        def training_step(self, batch):
            out = super().training_step(batch)
            w = self.lin.bias
            out["loss"] = out["loss"] + torch.sqrt(w - w.detach()).sum()  # finite, grad inf
            return out

    # unchecked, the infinite gradient is applied and the loss guard fires one step later
    with pytest.raises(NonFiniteLossError, match=r"loss .* at epoch 1, step 2") as e:
        Trainer(InfGrad(), cfg(tmp_path / "a", epochs=1)).fit(regression_data())
    assert e.value.name == "loss"
    with pytest.raises(NonFiniteLossError, match=r"gradient norm of loss .* step 1") as e:
        Trainer(InfGrad(), cfg(tmp_path / "b", epochs=1, check_grads=True)).fit(regression_data())
    assert e.value.step == 1


class SGDRegressor(Regressor):
    """Plain SGD with lr 1: a step moves the weights by exactly minus the (clipped) gradient."""

    def configure_optimizers(self, config):
        return torch.optim.SGD(self.parameters(), lr=1.0)


@pytest.mark.parametrize("custom_step", [False, True])
def test_grad_clip_limits_the_global_gradient_norm(tmp_path, custom_step):
    data = regression_data(16)  # one batch of 16: the gradient does not depend on the order

    class Model(SGDRegressor):
        if custom_step:

            def train_step(self, batch, ctx):
                out = self.training_step(batch)
                ctx.step(ctx.optimizers[0], out["loss"])
                return {"loss": out["loss"].detach()}

    probe = Model()
    probe.training_step(data[:])["loss"].backward()
    raw = torch.cat([p.grad.reshape(-1) for p in probe.parameters()]).norm().item()
    assert raw > 1.0  # well above the clip threshold below

    for clip, expected in ((0.25, 0.25), (None, raw)):
        model = Model()
        before = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
        Trainer(model, cfg(tmp_path / f"clip{clip}", epochs=1, grad_clip=clip)).fit(data)
        after = torch.cat([p.detach().reshape(-1).cpu() for p in model.parameters()])
        assert (after - before).norm().item() == pytest.approx(expected, rel=1e-5), clip


class ScriptedMetrics(Regressor):
    """validation_step returns, per epoch, the next entry of a script of metric dicts."""

    def __init__(self, script):
        super().__init__()
        self.script, self.calls = script, 0

    def validation_step(self, batch):
        self.calls += 1
        return {k: torch.tensor(v) for k, v in self.script[self.calls - 1].items()}


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_validation_loss_stops_training(tmp_path, bad):
    model = ScriptedMetrics([{"loss": 2.0}, {"loss": bad}, {"loss": 1.0}])
    t = Trainer(model, cfg(tmp_path, epochs=3, val_batch_size=64))
    with pytest.raises(
        NonFiniteLossError, match=rf"Non-finite validation loss \({bad}\) at epoch 2"
    ):
        t.fit(regression_data(), regression_data(8))
    ckdir = tmp_path / "run" / "checkpoints"
    for name in ("last.pt", "best.pt"):  # the bad epoch was not recorded
        assert load_checkpoint(ckdir / name)["trainer"]["epoch"] == 1, name
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1


def test_non_finite_monitored_metric_stops_training(tmp_path):
    script = [
        {"loss": 2.0, "acc": 0.5},
        {"loss": 1.5, "acc": float("nan")},
        {"loss": 1.0, "acc": 0.9},
    ]
    t = Trainer(
        ScriptedMetrics(script),
        cfg(
            tmp_path, epochs=3, monitor="val_acc", monitor_mode="max", patience=2, val_batch_size=64
        ),
    )
    with pytest.raises(NonFiniteLossError, match=r"Non-finite val_acc \(nan\) at epoch 2") as e:
        t.fit(regression_data(), regression_data(8))
    assert e.value.name == "val_acc"
    assert t.best == 0.5 and t.best_epoch == 1 and t.bad_epochs == 0


def test_drop_last(tmp_path):
    class Sizes(Regressor):
        def __init__(self):
            super().__init__()
            self.sizes = []

        def training_step(self, batch):
            self.sizes.append(len(batch[0]))
            return super().training_step(batch)

    data = regression_data(70)  # 4 full batches of 16 and one of 6
    for drop_last, sizes in ((False, [16, 16, 16, 16, 6]), (True, [16, 16, 16, 16])):
        model = Sizes()
        hist = Trainer(model, cfg(tmp_path / str(drop_last), epochs=2, drop_last=drop_last)).fit(
            data
        )
        assert model.sizes == sizes * 2, drop_last
        assert [r["step"] for r in hist] == [len(sizes), 2 * len(sizes)]
    with pytest.raises(ValueError, match=r"no batch per process .*drop_last True"):
        Trainer(Sizes(), cfg(tmp_path / "tiny", epochs=1, drop_last=True)).fit(regression_data(8))


# ------------------------------------------------------------------- checkpoints
def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    atomic_save({"x": torch.ones(3)}, target)
    before = target.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"x": torch.zeros(3)}, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_failed_checkpoint_write_during_training_keeps_previous(tmp_path, monkeypatch):
    Trainer(Regressor(), cfg(tmp_path, epochs=1)).fit(regression_data())
    ckdir = tmp_path / "run" / "checkpoints"
    before = (ckdir / "last.pt").read_bytes()
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        real_save({"half": torch.ones(100)}, f)
        raise OSError("simulated crash while writing")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="simulated crash"):
        Trainer(Regressor(), cfg(tmp_path, epochs=2)).fit(regression_data())
    assert (ckdir / "last.pt").read_bytes() == before
    assert not [p for p in ckdir.iterdir() if p.name not in ("last.pt", "best.pt")]
    assert load_checkpoint(ckdir / "last.pt")["trainer"]["epoch"] == 1


def test_checkpoints_load_with_weights_only_and_keep_last(tmp_path):
    model = Regressor()
    t = Trainer(model, cfg(tmp_path, epochs=3, ema_decay=0.5, keep_last=2))
    t.fit(regression_data(), regression_data(16))
    ckdir = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckdir.iterdir()) == [
        "best.pt", "epoch-0002.pt", "epoch-0003.pt", "last.pt"
    ]  # fmt: skip
    ck = torch.load(ckdir / "last.pt", map_location="cpu", weights_only=True)  # no pickles
    assert ck["format"] == "dgm_ext.train/1"
    assert ck["trainer"]["epoch"] == 3 and ck["trainer"]["global_step"] == 12
    for k, v in model.state_dict().items():
        assert torch.equal(ck["model"][k], v.cpu())
    assert ck["optimizers"][0]["state"][0]["step"] == 12
    assert ck["ema"]["num_updates"] == 12 and ck["ema"]["decay"] == 0.5
    assert isinstance(ck["rng"][0]["torch"], torch.Tensor) and len(ck["history"]) == 3


def test_rng_state_roundtrip_through_weights_only(tmp_path):
    import random

    import numpy as np

    state = get_rng_state()
    atomic_save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1]) and got[2] == expected[2]


# ---------------------------------------------------------------------------- EMA
class Setter(nn.Module):
    """train_step sets w := step number, so the EMA has a closed form."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def configure_optimizers(self, config):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_step(self, batch, ctx):
        with torch.no_grad():
            self.w.fill_(ctx.global_step + 1)
        # a no-op update (lr 0): the EMA advances after steps whose optimisers stepped
        ctx.step(ctx.optimizers[0], (self.w * 0.0).sum())
        return {"w": self.w.mean()}

    def validation_step(self, batch):
        return {"loss": self.w.mean()}


def test_ema_closed_form_and_used_for_validation(tmp_path):
    d = 0.8
    t = Trainer(Setter(), cfg(tmp_path, epochs=3, batch_size=16, ema_decay=d))
    hist = t.fit(regression_data(48), regression_data(4))  # 3 steps per epoch
    for row in hist:
        n = row["step"]
        # s_0 = w_0 = 0, s_k = d s_{k-1} + (1 - d) k  =>  s_n = (n - (n + 1) d + d^(n+1)) / (1 - d)
        closed = (n - (n + 1) * d + d ** (n + 1)) / (1 - d)
        assert row["val_loss"] == pytest.approx(closed, rel=1e-12)
        assert row["train_w"] == pytest.approx(n - 1)  # mean of n-2, n-1, n
    restored = torch.full((2,), 9.0, dtype=torch.float64, device=t.device)
    assert torch.equal(t.model.w, restored)  # the weights, not the EMA, after validation


def test_model_ema_unit():
    lin = nn.Linear(2, 1)
    ema = ModelEMA(lin, 0.5)
    start = lin.weight.detach().clone()
    with torch.no_grad():
        lin.weight.add_(2.0)
    ema.update()
    torch.testing.assert_close(ema.shadow["weight"], start + 1.0)
    with ema.applied():
        torch.testing.assert_close(lin.weight, start + 1.0)
    torch.testing.assert_close(lin.weight, start + 2.0)
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(lin, 1.5)


# ------------------------------------------------------------ custom steps (GAN-like)
class TwoOptimisers(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(()))
        self.b = nn.Parameter(torch.zeros(()))

    def configure_optimizers(self, config):
        return [
            build_optimizer([self.a], config, lr=0.1),
            torch.optim.SGD([self.b], lr=0.05),
        ]

    def train_step(self, batch, ctx):
        opt_a, opt_b = ctx.optimizers
        loss_a = (self.a - 3.0) ** 2 + 0.0 * self.b  # b gets a zero grad from this loss
        ctx.step(opt_a, loss_a, name="loss_a")
        loss_b = (self.b + 2.0 + 0.1 * self.a.detach()) ** 2
        ctx.step(opt_b, loss_b, name="loss_b")
        return {"loss_a": loss_a.detach(), "loss_b": loss_b.detach()}

    def ema_module(self):
        return self  # explicit (the default is the whole model too)


def test_two_optimiser_custom_step(tmp_path):
    model = TwoOptimisers()
    t = Trainer(model, cfg(tmp_path, epochs=10, batch_size=8))
    hist = t.fit(regression_data(64))  # 8 steps per epoch, 80 steps
    assert model.a.item() == pytest.approx(3.0, abs=0.05)
    assert model.b.item() == pytest.approx(-2.3, abs=0.05)
    assert hist[-1]["train_loss_a"] < hist[0]["train_loss_a"]
    assert hist[-1]["lr"] == 0.1 and hist[-1]["lr_1"] == 0.05
    assert t.optimizers[0].state[model.a]["step"] == 80
    ck = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert len(ck["optimizers"]) == 2

    class NoStep(Regressor):
        def configure_optimizers(self, config):
            return [torch.optim.SGD([self.lin.weight], 0.1), torch.optim.SGD([self.lin.bias], 0.1)]

    with pytest.raises(TypeError, match="train_step"):
        Trainer(NoStep(), cfg(tmp_path))


def test_trains_on_image_dataset_with_dynamic_binarisation(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(64, 1, 4, 4, generator=g)
    ds = ImageDataset(images, (images.mean((1, 2, 3)) > 0.5).long(), variant="dynamic")

    class Clf(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(16, 2)

        def training_step(self, batch):
            x, y = batch
            assert set(x.unique().tolist()) <= {0.0, 1.0}
            return {"loss": nn.functional.cross_entropy(self.lin(x.flatten(1)), y)}

    hist = Trainer(Clf(), cfg(tmp_path, epochs=2)).fit(ds, ds)
    assert len(hist) == 2 and "val_loss" in hist[0]


# -------------------------------------------------------------------- TensorBoard
try:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
except ImportError:  # optional dependency (CI installs it)
    EventAccumulator = None


@pytest.mark.skipif(
    EventAccumulator is None,
    reason="tensorboard is not importable (pip install tensorboard; CI installs it)",
)
def test_tensorboard_event_files_match_metrics(tmp_path):
    """The real SummaryWriter: read the event files back; every epoch scalar has the value
    and epoch of metrics.jsonl, step scalars come every log_every steps."""
    t = Trainer(Regressor(), cfg(tmp_path, epochs=3, tensorboard=True, log_every=3))
    hist = t.fit(regression_data(), regression_data(16))  # 4 steps per epoch
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == hist and len(rows) == 3
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1
    ea = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})  # 0: keep them all
    ea.Reload()
    keys = [k for k in rows[0] if k != "epoch"]
    assert {"train_loss", "train_mae", "val_loss", "val_mae", "lr", "step", "time_s"} <= set(keys)
    assert set(ea.Tags()["scalars"]) == {f"epoch/{k}" for k in keys} | {"step/train_loss"}
    for k in keys:
        events = ea.Scalars(f"epoch/{k}")
        assert [e.step for e in events] == [1, 2, 3], k
        for e, row in zip(events, rows, strict=True):
            assert e.value == pytest.approx(row[k], rel=1e-6), k  # stored as float32
    steps = ea.Scalars("step/train_loss")
    assert [e.step for e in steps] == [3, 6, 9, 12]
    assert all(math.isfinite(e.value) and e.value > 0 for e in steps)


def test_tensorboard_calls_with_a_recording_writer(tmp_path, monkeypatch):
    """The trainer's TensorBoard logging, against a stand-in SummaryWriter (works whether or
    not tensorboard is installed)."""
    calls = []

    class RecordingWriter:
        def __init__(self, log_dir):
            calls.append(("init", log_dir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, float(value), int(step)))

        def flush(self):
            pass

        def close(self):
            calls.append(("close",))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = RecordingWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    t = Trainer(Regressor(), cfg(tmp_path, epochs=2, tensorboard=True, log_every=2))
    hist = t.fit(regression_data(), regression_data(16))
    assert calls[0] == ("init", str(tmp_path / "run" / "tb")) and calls[-1] == ("close",)
    assert [c[2] for c in calls if c[0] == "step/train_loss"] == [2, 4, 6, 8]
    for row in hist:
        for key in ("train_loss", "val_loss", "time_s"):
            assert (f"epoch/{key}", row[key], row["epoch"]) in calls


def test_tensorboard_missing_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ImportError, match="pip install tensorboard"):
        Trainer(Regressor(), cfg(tmp_path, tensorboard=True))
