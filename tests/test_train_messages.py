"""The Trainer's messages, word for word, and the behaviours mutation testing found unguarded
after the third session (docs/MUTATION.md, "Fourth session"): the full text of every error and
warning a user reads (a test that only matches a fragment lets a mangled message through), the
arguments of the early-stopping log line, the running sums a two-rank mid-epoch checkpoint
gathers from both ranks, the reseed of rank 1 when two ranks resume a one-process checkpoint,
which settings a resume reports as changed, the EMA of one of two optimisers, and small
helpers (float64 metric sums, the NaN of a metric without examples, the cleanup of a failed
atomic write)."""

from __future__ import annotations

import copy
import json
import logging
import random
import re
import sys

import pytest
import torch
from _train_helpers import Regressor, Scripted, cfg, regression_data
from test_train_ddp_inprocess import (  # noqa: F401  (rank0 is a fixture)
    BACKEND_AVAILABLE,
    DEVICE_ARGS,
    _single,
    _toy,
    rank0,
)
from torch import nn

import dgm_ext.train.checkpoint as ckpt_mod
import dgm_ext.train.connector as connector_mod
import dgm_ext.train.records as records_mod
import dgm_ext.train.trainer as trainer_mod
from dgm_ext.train import (
    NonFiniteLossError,
    Trainer,
    atomic_save,
    load_checkpoint,
    resolve_device,
    seed_everything,
)

LOGGER = "dgm_ext.train"


pytestmark = pytest.mark.usefixtures("one_thread")


def _messages(caplog, level=logging.WARNING):
    return [r.getMessage() for r in caplog.records if r.levelno == level]


# ------------------------------------------------------------------------ errors
def test_resolve_device_messages_in_full(monkeypatch):
    for var in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = (
        "to train on the CPU with the gloo backend instead, pass TrainerConfig(device='cpu') "
        "(on the command line: dgm-ext train/reproduce --device cpu)."
    )
    with pytest.raises(RuntimeError) as e:
        resolve_device("cuda:3")
    assert str(e.value) == (
        f"TrainerConfig.device='cuda:3' asks for cuda:3 but only 0 CUDA devices are visible. "
        f"T{cpu[1:]}"
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    with pytest.raises(RuntimeError) as e:
        resolve_device(None)
    assert str(e.value) == (
        "LOCAL_RANK=1, so this process would use cuda:1, but only 1 CUDA device is visible "
        "(CUDA_VISIBLE_DEVICES='5'). Start at most one process per visible GPU (torchrun "
        f"--nproc_per_node=1), or, {cpu}"
    )


def test_constructor_type_errors_name_the_type(tmp_path, monkeypatch):
    with pytest.raises(TypeError) as e:
        Trainer(object(), cfg(tmp_path))
    assert str(e.value) == "model must be a torch.nn.Module, got object"
    with pytest.raises(TypeError) as e:
        Trainer(Regressor(), {"epochs": 1})
    assert str(e.value) == "config must be a TrainerConfig, got dict"
    with pytest.raises(TypeError) as e:
        Trainer(nn.Linear(2, 2), cfg(tmp_path))
    assert str(e.value) == (
        "model Linear must define training_step(batch) -> dict with 'loss' (or a custom "
        "train_step(batch, ctx))"
    )
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the import fails
    with pytest.raises(ImportError) as e:
        Trainer(Regressor(), cfg(tmp_path, tensorboard=True))
    assert str(e.value) == (
        "TrainerConfig.tensorboard=True needs the optional 'tensorboard' package "
        "(pip install tensorboard)"
    )


def test_world_size_without_torch_distributed(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(trainer_mod.dist, "is_available", lambda: False)
    with pytest.raises(RuntimeError) as e:
        Trainer(Regressor(), cfg(tmp_path, epochs=1, device="cpu")).fit(regression_data())
    assert str(e.value) == "WORLD_SIZE > 1 but torch.distributed is not available"


class _ReturnsTensor(Regressor):
    def training_step(self, batch):
        return super().training_step(batch)["loss"]


class _NoLoss(Regressor):
    def training_step(self, batch):
        return {"mae": super().training_step(batch)["mae"]}


class _CustomReturnsList(Regressor):
    def train_step(self, batch, ctx):
        return [1.0]


class _VectorMetric(Regressor):
    def training_step(self, batch):
        out = super().training_step(batch)
        return {**out, "per_dim": torch.zeros(2)}


def test_step_result_errors_name_the_model_and_the_step(tmp_path):
    data = regression_data()
    with pytest.raises(TypeError) as e:
        Trainer(_ReturnsTensor(), cfg(tmp_path / "a", epochs=1)).fit(data)
    assert str(e.value) == (
        "_ReturnsTensor.training_step must return a dict with a scalar 'loss', got Tensor"
    )
    with pytest.raises(TypeError) as e:
        Trainer(_NoLoss(), cfg(tmp_path / "b", epochs=1)).fit(data)
    assert str(e.value) == (
        "_NoLoss.training_step must return a dict with a scalar 'loss', got dict with keys ['mae']"
    )
    with pytest.raises(TypeError) as e:
        Trainer(_CustomReturnsList(), cfg(tmp_path / "c", epochs=1)).fit(data)
    assert str(e.value) == "_CustomReturnsList.train_step must return a dict of scalars"
    with pytest.raises(ValueError) as e:
        Trainer(_VectorMetric(), cfg(tmp_path / "d", epochs=1)).fit(data)
    assert str(e.value) == (
        "training_step returned 'per_dim' with shape (2,); metrics must be scalars"
    )


class _NaNAt(Regressor):
    def __init__(self, at_call):
        super().__init__()
        self.at_call, self.calls = at_call, 0

    def training_step(self, batch):
        self.calls += 1
        out = super().training_step(batch)
        if self.calls == self.at_call:
            out["loss"] = out["loss"] * float("nan")
        return out


def test_non_finite_loss_message_of_one_process_in_full(tmp_path):
    with pytest.raises(NonFiniteLossError) as e:
        Trainer(_NaNAt(2), cfg(tmp_path, epochs=1)).fit(regression_data())
    assert str(e.value) == (
        "Non-finite loss (nan) at epoch 1, step 2; training stopped before applying this "
        "step. No checkpoint had been written yet."
    )
    last = tmp_path / "b" / "run" / "checkpoints" / "last.pt"
    with pytest.raises(NonFiniteLossError) as e:  # 4 steps per epoch: step 2 of epoch 2
        Trainer(_NaNAt(6), cfg(tmp_path / "b", epochs=2)).fit(regression_data())
    assert str(e.value) == (
        "Non-finite loss (nan) at epoch 2, step 6; training stopped before applying this "
        f"step. The last good checkpoint, {last} (after epoch 1, step 4), is untouched; "
        "rerunning resumes from it (lower the learning rate or enable grad_clip)."
    )


# -------------------------------------------------------------------- warnings, logs
def test_unreadable_last_checkpoint_warning_in_full(tmp_path, caplog):
    data = regression_data()
    Trainer(Regressor(), cfg(tmp_path, epochs=2, keep_last=2)).fit(data)
    ckdir = tmp_path / "run" / "checkpoints"
    last = ckdir / "last.pt"
    raw = last.read_bytes()
    last.write_bytes(raw[: len(raw) // 2])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        Trainer(Regressor(), cfg(tmp_path, epochs=3, keep_last=2)).fit(data)
    (msg,) = [m for m in _messages(caplog) if "unreadable" in m]
    pattern = (
        re.escape(f"{last} is unreadable (")
        + r"[A-Za-z]+(Error|Exception): .+"
        + re.escape(
            f"); resuming from {ckdir / 'epoch-0002.pt'} (epoch 2, step 8), the newest intact "
            "checkpoint. The unreadable file is kept: it is renamed to "
        )
        + r"(last\.pt\.corrupt-\d{8}-\d{6})"
        + re.escape(" before the next checkpoint is written.")
    )
    m = re.fullmatch(pattern, msg)
    assert m, msg
    assert (ckdir / m.group(2)).read_bytes() == raw[: len(raw) // 2]


def test_no_ema_state_warning_in_full(tmp_path, caplog):
    Trainer(Regressor(), cfg(tmp_path, epochs=1)).fit(regression_data())
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        Trainer(Regressor(), cfg(tmp_path, epochs=1, ema_decay=0.5)).fit(regression_data())
    assert _messages(caplog) == [
        f"{last} has no EMA state; the EMA restarts from the weights",
        f"{last} was written with different settings: ema_decay None -> 0.5: the run continues "
        "with the current ones, but not as an exact continuation of the interrupted one",
    ]


def test_early_stopping_log_line_and_its_arguments(tmp_path, caplog):
    model = Scripted([5.0, 4.0, 3.0, 3.5, 3.2, 3.1])  # best at epoch 3, then 3 bad epochs
    t = Trainer(model, cfg(tmp_path, epochs=8, patience=3, val_batch_size=64))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        t.fit(regression_data(), regression_data(8))
    (rec,) = [r for r in caplog.records if r.msg.startswith("early stopping")]
    assert rec.args == (6, "val_loss", 3, 3.0, 3)
    assert rec.getMessage() == (
        "early stopping after epoch 6: val_loss has not improved for 3 epochs (best 3 at epoch 3)"
    )


def test_resume_reports_only_the_settings_that_changed(tmp_path, caplog):
    """Resuming with the same batch_size/seed/drop_last warns about nothing; a checkpoint
    whose config lacks one of them (older, or edited) is compared on the others only."""
    data = regression_data()
    Trainer(Regressor(), cfg(tmp_path, epochs=1)).fit(data)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        Trainer(Regressor(), cfg(tmp_path, epochs=2)).fit(data)
    assert _messages(caplog) == []

    ck = load_checkpoint(last)
    del ck["config"]["seed"]
    atomic_save(ck, last)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        Trainer(Regressor(), cfg(tmp_path, epochs=3, seed=5)).fit(data)
    assert _messages(caplog) == []

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        Trainer(Regressor(), cfg(tmp_path, epochs=4, seed=5, batch_size=32)).fit(data)
    assert _messages(caplog) == [
        f"{last} was written with different settings: batch_size 16 -> 32: the run continues "
        "with the current ones, but not as an exact continuation of the interrupted one"
    ]


# ------------------------------------------------------------------- behaviours
class _TwoParts(nn.Module):
    """Two optimisers; the EMA follows part ``a`` only; even steps move ``a``, odd steps ``b``."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(()))
        self.b = nn.Parameter(torch.zeros(()))
        self.holder = nn.Module()
        self.holder.a = self.a

    def configure_optimizers(self, config):
        return [torch.optim.SGD([self.a], lr=0.1), torch.optim.SGD([self.b], lr=0.1)]

    def ema_module(self):
        return self.holder

    def train_step(self, batch, ctx):
        _, y = batch
        if ctx.global_step % 2 == 0:
            loss = ((self.a - y) ** 2).mean()
            ctx.step(ctx.optimizers[0], loss)
        else:
            loss = ((self.b - y) ** 2).mean()
            ctx.step(ctx.optimizers[1], loss)
        return {"loss": loss.detach()}


def test_ema_advances_only_after_steps_of_its_own_optimiser(tmp_path):
    t = Trainer(_TwoParts(), cfg(tmp_path, epochs=1, ema_decay=0.5))
    t.fit(regression_data())  # 4 steps: a, b, a, b
    assert t.ema.num_updates == 2


def test_without_a_monitored_metric_nothing_is_best(tmp_path):
    t = Trainer(Regressor(), cfg(tmp_path, epochs=1))
    t.fit(regression_data())  # no val_set: val_loss never exists
    assert t.best is None and t.best_epoch is None
    ck = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ck["trainer"]["best"] is None and ck["trainer"]["best_epoch"] is None
    text = (tmp_path / "run" / "config.json").read_text()
    assert text == json.dumps(json.loads(text), indent=2) + "\n"  # indented, one key a line


def test_mid_epoch_checkpoint_without_running_sums_restarts_them(tmp_path):
    """A mid-epoch checkpoint that holds no running sums (e.g. edited by hand): the resumed
    epoch averages over the batches trained after the resume."""
    data = regression_data()  # 4 batches of 16
    Trainer(Regressor(), cfg(tmp_path, epochs=1)).fit(data)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    ck = load_checkpoint(last)
    ck["trainer"].update(epoch=0, global_step=2, batch_in_epoch=2)
    ck["history"], ck["accumulator"], ck["accumulators"] = [], None, None
    atomic_save(ck, last)
    losses = []

    class Recording(Regressor):
        def training_step(self, batch):
            out = super().training_step(batch)
            losses.append(float(out["loss"].detach()))
            return out

    rows = Trainer(Recording(), cfg(tmp_path, epochs=1)).fit(data)
    assert len(losses) == 2 and rows[-1]["step"] == 4
    assert rows[-1]["train_loss"] == pytest.approx(sum(losses) / 2)


def test_accumulator_sums_in_float64_and_nan_without_examples():
    acc = records_mod.MetricAccumulator()
    acc.add({"loss": torch.tensor(0.1, dtype=torch.float32)}, 3, "training_step")
    assert acc.sums["loss"].dtype == torch.float64
    assert acc.state_dict()["sums"]["loss"].dtype == torch.float64
    empty = records_mod.MetricAccumulator()
    empty.add({"loss": torch.tensor(1.0)}, 0, "training_step")  # a metric of no example
    out = empty.reduce("train_", 1, torch.device("cpu"))
    assert list(out) == ["train_loss"] and out["train_loss"] != out["train_loss"]  # NaN


def test_failed_atomic_write_raises_the_original_error(tmp_path):
    # the temporary file was never created, so removing it fails too: that is suppressed
    with pytest.raises(FileNotFoundError):
        ckpt_mod.atomic_write_text(tmp_path / "missing" / "metrics.csv", "x\n")


# --------------------------------------------------------------- two ranks (DDP)
@pytest.mark.skipif(not BACKEND_AVAILABLE, reason="needs torch.distributed")
def test_two_ranks_resume_a_one_process_run_and_gather_both_ranks_sums(
    tmp_path,
    rank0,  # noqa: F811  (the fixture imported above)
    monkeypatch,
):
    """A one-process checkpoint resumed by two ranks: each rank reseeds with
    seed + rank + 7919 (step + 1) (rank 1 too); the mid-epoch checkpoints they then write hold
    the running sums of both ranks (rank 0's and rank 1's), gathered by rank 0."""
    toy = _toy()
    _single(toy, "mlp", tmp_path / "run" / "mlp", 6, 1, 96, deterministic=False)  # 12 steps
    saved = []
    real_save = connector_mod.atomic_save

    def spy(state, path):
        keys = ("trainer", "accumulator", "accumulators")
        saved.append(copy.deepcopy({k: state[k] for k in keys}))
        real_save(state, path)

    monkeypatch.setattr(connector_mod, "atomic_save", spy)
    reports = tmp_path / "reports"
    reports.mkdir()
    argv = ["--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out.pt"),
            "--epochs", "2", "--num-examples", "96", "--batch-size", "6",
            "--checkpoint-every", "2", "--report-dir", str(reports), *DEVICE_ARGS]  # fmt: skip
    assert rank0(argv) is None
    for rank in (0, 1):
        rep = json.loads((reports / f"mlp-rank{rank}.json").read_text())
        seed_everything(7 + rank + 7919 * (12 + 1))
        assert rep["draws"][0][0] == 1.0 + 0.01 * random.random(), rank

    # 72 examples, 2 ranks of batch 6: 6 steps in epoch 2 (steps 13-18), checkpoints after
    # steps 14 and 16 mid-epoch, then the end-of-epoch one
    mid = [s for s in saved if s["trainer"]["batch_in_epoch"]]
    assert [s["trainer"]["global_step"] for s in mid] == [14, 16]
    for s, n in zip(mid, (2, 4), strict=True):
        per_rank = s["accumulators"]
        assert len(per_rank) == 2 and all(per_rank)
        assert [r["counts"] for r in per_rank] == [{"loss": 6 * n}] * 2
        assert torch.equal(per_rank[0]["sums"]["loss"], s["accumulator"]["sums"]["loss"])
        assert not torch.equal(per_rank[0]["sums"]["loss"], per_rank[1]["sums"]["loss"])
    assert saved[-1]["accumulators"] is None and saved[-1]["trainer"]["global_step"] == 18


class _SometimesUnused(Regressor):
    """Step 1 uses both parameters, later steps only the weight: the bias then has no
    gradient, and Adam must leave it alone (a zero gradient would let momentum move it)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def training_step(self, batch):
        self.calls += 1
        x, y = batch
        out = self.lin(x).squeeze(-1) if self.calls == 1 else x @ self.lin.weight[0]
        return {"loss": ((out - y) ** 2).mean()}


def test_a_parameter_without_gradient_is_not_moved_by_adam(tmp_path):
    model = _SometimesUnused()
    biases = []

    t = Trainer(model, cfg(tmp_path, epochs=1, batch_size=32))  # 2 steps
    opt = t.optimizers[0]
    opt.register_step_post_hook(lambda o, a, k: biases.append(model.lin.bias.detach().clone()))
    t.fit(regression_data())
    assert len(biases) == 2 and torch.equal(biases[0], biases[1])
    assert model.lin.bias.grad is None
