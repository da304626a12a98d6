"""Trainer behaviours that mutation testing found unguarded (docs/MUTATION.md): a custom EMA
of the wrong type, the order of the fallback among several checkpoints, the epoch time over
mid-epoch checkpoints, empty cells in metrics.csv, the progress bar's arguments, and the
helpers that shorten errors and pick unused names."""

from __future__ import annotations

import csv
import re
import time

import pytest
import torch
from _train_helpers import Regressor, cfg, regression_data
from torch import nn

import dgm_ext.train.records as records_mod
import dgm_ext.train.resume as resume_mod
from dgm_ext.train import Trainer, atomic_save, load_checkpoint


def test_configure_ema_must_return_a_model_ema(tmp_path):
    class WrongEMA(Regressor):
        def configure_ema(self, decay):
            return nn.Linear(1, 1)

    with pytest.raises(TypeError) as e:
        Trainer(WrongEMA(), cfg(tmp_path, epochs=1, ema_decay=0.9))
    assert str(e.value) == "WrongEMA.configure_ema must return a ModelEMA, got Linear"


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_fallback_takes_the_newest_intact_epoch_file_skipping_bad_ones(tmp_path, caplog):
    """last.pt, epoch-0004.pt and best.pt unreadable, epoch-0003.pt of another format: the
    newest usable one is epoch-0002.pt (not epoch-0001.pt), found by reading past the bad
    files newest first."""
    data, val = regression_data(), regression_data(16)
    Trainer(Regressor(), cfg(tmp_path, epochs=4, keep_last=4)).fit(data, val)
    ckdir = tmp_path / "run" / "checkpoints"
    for name in ("last.pt", "epoch-0004.pt", "best.pt"):
        _truncate(ckdir / name)
    atomic_save({"format": "other", "trainer": {}}, ckdir / "epoch-0003.pt")
    t = Trainer(Regressor(), cfg(tmp_path, epochs=5, keep_last=4))
    with caplog.at_level("WARNING", logger="dgm_ext.train"):
        hist = t.fit(data, val)
    assert f"resuming from {ckdir / 'epoch-0002.pt'} (epoch 2, step 8)" in caplog.text
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4, 5] and t.global_step == 20

    # nothing usable at all: the error lists every candidate, newest first, with its reason
    ckdir2 = tmp_path / "b" / "run" / "checkpoints"
    Trainer(Regressor(), cfg(tmp_path / "b", epochs=2, keep_last=2)).fit(data, val)
    for name in ("last.pt", "epoch-0002.pt", "best.pt"):
        _truncate(ckdir2 / name)
    atomic_save({"format": "other"}, ckdir2 / "epoch-0001.pt")
    with pytest.raises(RuntimeError) as e:
        Trainer(Regressor(), cfg(tmp_path / "b", epochs=3)).fit(data, val)
    msg = str(e.value)
    assert "epoch-0002.pt (unreadable: " in msg
    assert "epoch-0001.pt (unknown format 'other')" in msg and "best.pt (unreadable: " in msg
    assert msg.index("epoch-0002.pt") < msg.index("epoch-0001.pt") < msg.index("best.pt")


class Slow(Regressor):
    def training_step(self, batch):
        time.sleep(0.03)
        return super().training_step(batch)


def test_epoch_time_counts_the_steps_before_a_mid_epoch_checkpoint(tmp_path):
    # 64 examples, batch 16: 4 steps of >= 30 ms, a checkpoint after each of the first 3
    rows = Trainer(Slow(), cfg(tmp_path, epochs=1, checkpoint_every=1)).fit(regression_data())
    assert rows[0]["time_s"] >= 4 * 0.03


def test_metrics_csv_leaves_a_metric_missing_from_a_row_empty(tmp_path):
    class Late(Regressor):
        def on_epoch_end(self, trainer, epoch):
            return {"late": 1.5} if epoch == 1 else None

    Trainer(Late(), cfg(tmp_path, epochs=2)).fit(regression_data())
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["late"] == "" and float(rows[1]["late"]) == 1.5


def test_progress_bar_arguments(tmp_path, monkeypatch):
    bars = []

    class Bar:
        def __init__(self, **kw):
            bars.append(kw)

        def update(self, n):
            pass

        def set_postfix(self, *a, **k):
            pass

        def close(self):
            pass

        write = staticmethod(lambda text: None)

    monkeypatch.setattr(records_mod, "tqdm", Bar)
    monkeypatch.setattr(records_mod, "is_terminal", lambda stream: True)
    Trainer(Regressor(), cfg(tmp_path, epochs=2, progress=True)).fit(regression_data())
    assert bars == [
        dict(total=4, initial=0, desc=f"epoch {e}/2", disable=False, leave=False,
             dynamic_ncols=True)
        for e in (1, 2)
    ]  # fmt: skip
    bars.clear()
    Trainer(Regressor(), cfg(tmp_path / "q", epochs=None, max_steps=2, progress=False)).fit(
        regression_data()
    )
    assert bars == [dict(total=4, initial=0, desc="epoch 1", disable=True, leave=False,
                         dynamic_ncols=True)]  # fmt: skip


class Crash(Regressor):
    """Raises at its third training step (after a mid-epoch checkpoint of step 2)."""

    calls = 0

    def training_step(self, batch):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("crash")
        return super().training_step(batch)


def test_resumed_mid_epoch_bar_starts_at_the_batch_reached(tmp_path, monkeypatch):
    data = regression_data()
    with pytest.raises(RuntimeError, match="crash"):
        Trainer(Crash(), cfg(tmp_path, epochs=1, checkpoint_every=1)).fit(data)
    ck = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ck["trainer"]["batch_in_epoch"] == 2
    bars = []

    class Bar:
        def __init__(self, **kw):
            bars.append(kw)

        update = set_postfix = close = lambda self, *a, **k: None

    monkeypatch.setattr(records_mod, "tqdm", Bar)
    Trainer(Regressor(), cfg(tmp_path, epochs=1)).fit(data)
    assert bars[0]["initial"] == 2 and bars[0]["total"] == 4


@pytest.mark.parametrize(
    ("exc", "want"),
    [
        (ValueError("bad\nsecond line"), "ValueError: bad"),
        (KeyError(), "KeyError"),
        (OSError("x" * 186), "OSError: " + "x" * 186),  # exactly 195 characters: kept
        (OSError("x" * 191), "OSError: " + "x" * 191),  # exactly 200 characters: kept
        (OSError("x" * 192), "OSError: " + "x" * 188 + "..."),  # 201: cut to 200
    ],
)
def test_short_error(exc, want):
    got = resume_mod.short_error(exc)
    assert got == want and len(got) <= 200


def test_unused_path(tmp_path):
    p = tmp_path / "old"
    assert resume_mod.unused_path(p) == p
    p.mkdir()
    assert resume_mod.unused_path(p) == tmp_path / "old-2"
    (tmp_path / "old-2").write_text("")
    assert resume_mod.unused_path(p) == tmp_path / "old-3"


def test_progress_bar_shows_the_loss_or_the_first_metric(tmp_path, monkeypatch):
    postfixes = []

    class Bar:
        def __init__(self, **kw):
            pass

        def set_postfix(self, *args, **kw):
            postfixes.append((args, kw))

        update = close = lambda self, *a, **k: None

    class NoLoss(nn.Module):
        """A custom step whose metrics have no 'loss' key."""

        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 1)

        def train_step(self, batch, ctx):
            x, y = batch
            err = self.lin(x).squeeze(-1) - y
            mse = (err**2).mean()
            ctx.step(ctx.optimizers[0], mse)
            return {"mse": mse.detach(), "mae": 2.5}

    class LossSecond(Regressor):
        def training_step(self, batch):
            out = super().training_step(batch)
            return {"mae": out["mae"], "loss": out["loss"]}

    monkeypatch.setattr(records_mod, "tqdm", Bar)
    Trainer(LossSecond(), cfg(tmp_path, epochs=1, log_every=2)).fit(regression_data())
    assert len(postfixes) == 2  # steps 2 and 4
    for args, kw in postfixes:
        assert kw == {"refresh": False} and list(args[0]) == ["loss"]
        assert float(args[0]["loss"]) > 0
    postfixes.clear()
    Trainer(NoLoss(), cfg(tmp_path / "n", epochs=1, log_every=4)).fit(regression_data())
    ((args, kw),) = postfixes
    assert list(args[0]) == ["mse"] and kw == {"refresh": False}


def test_resume_false_moves_every_earlier_file_including_tensorboard(tmp_path, caplog):
    pytest.importorskip("tensorboard")
    data = regression_data()
    Trainer(Regressor(), cfg(tmp_path, epochs=1, tensorboard=True)).fit(data)
    run = tmp_path / "run"
    with caplog.at_level("WARNING", logger="dgm_ext.train"):
        Trainer(Regressor(), cfg(tmp_path, epochs=1, resume=False)).fit(data)
    (old,) = run.glob("old-*")
    assert re.fullmatch(r"old-\d{8}-\d{6}", old.name), old.name
    assert sorted(p.name for p in old.iterdir()) == [
        "checkpoints", "config.json", "metrics.csv", "metrics.jsonl", "tb"
    ]  # fmt: skip
    assert not (run / "tb").exists()
    assert (
        f"resume=False: {run} held an earlier run; its checkpoints, metrics.jsonl, metrics.csv, "
        f"config.json, tb were moved to {old} (nothing was deleted) and training starts from "
        "scratch"
    ) in caplog.text


def test_batch_size_of_each_batch_layout():
    bs = records_mod.batch_size_of
    x = torch.zeros(5, 3)
    assert bs(x) == 5 and bs(torch.tensor(2.0)) == 1
    assert bs((x, x[:, 0])) == 5 and bs([x]) == 5 and bs({"x": x, "y": x}) == 5
    assert bs({}) == 1 and bs([]) == 1 and bs("text") == 1 and bs(None) == 1


def test_dict_batches_are_weighted_by_their_size(tmp_path):
    class DictData(torch.utils.data.Dataset):
        def __init__(self, base):
            self.base = base

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            x, y = self.base[i]
            return {"x": x, "y": y}

    class DictRegressor(Regressor):
        def training_step(self, batch):
            return super().training_step((batch["x"], batch["y"]))

    data = regression_data(40)  # batches of 16, 16, 8: the epoch mean is size-weighted
    rows = Trainer(DictRegressor(), cfg(tmp_path / "d", epochs=1)).fit(DictData(data))
    ref = Trainer(Regressor(), cfg(tmp_path / "t", epochs=1)).fit(data)
    assert rows[0]["train_loss"] == pytest.approx(ref[0]["train_loss"], rel=1e-12)


def test_mid_epoch_resume_keeps_the_epoch_means_of_the_steps_before(tmp_path):
    data = regression_data()
    ref = Trainer(Regressor(), cfg(tmp_path / "ref", epochs=1)).fit(data)
    model = Crash()
    with pytest.raises(RuntimeError, match="crash"):
        Trainer(model, cfg(tmp_path, epochs=1, checkpoint_every=1)).fit(data)
    rows = Trainer(Regressor(), cfg(tmp_path, epochs=1)).fit(data)
    assert rows[0]["train_loss"] == pytest.approx(ref[0]["train_loss"], rel=1e-12)
    assert rows[0]["train_mae"] == pytest.approx(ref[0]["train_mae"], rel=1e-12)


def test_resume_restores_ema_and_early_stop_and_warns_on_a_changed_seed(tmp_path, caplog):
    from _train_helpers import Scripted

    data, val = regression_data(), regression_data(8)
    first = Trainer(Regressor(), cfg(tmp_path, epochs=2, ema_decay=0.9))
    first.fit(data)
    shadow = {k: v.clone() for k, v in first.ema.shadow.items()}
    again = Trainer(Regressor(), cfg(tmp_path, epochs=2, ema_decay=0.9))
    again.fit(data)  # resumes a finished run: nothing to train, the EMA comes back
    assert shadow.keys() == again.ema.shadow.keys()
    assert all(torch.equal(again.ema.shadow[k], v) for k, v in shadow.items())

    # a run that stopped early stays stopped when resumed with more epochs
    kw = {"patience": 1, "val_batch_size": 64}
    Trainer(Scripted([1.0, 2.0]), cfg(tmp_path / "s", epochs=4, **kw)).fit(data, val)
    t = Trainer(Scripted([0.5, 0.5]), cfg(tmp_path / "s", epochs=4, **kw))
    assert len(t.fit(data, val)) == 2 and t.stopped_early

    with caplog.at_level("WARNING", logger="dgm_ext.train"):
        Trainer(Regressor(), cfg(tmp_path, epochs=3, seed=8)).fit(data)
    assert "was written with different settings: seed 0 -> 8, ema_decay 0.9 -> None: the run" in (
        caplog.text
    )
