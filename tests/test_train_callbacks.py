"""Trainer callbacks: hook order and arguments, numbers joining the metrics row, and a
callback's state resumed exactly after an interruption."""

from __future__ import annotations

import logging

import pytest
import torch
from _train_helpers import InterruptAt, Regressor, cfg, regression_data

from dgm_ext.train import Callback, LambdaCallback, Trainer, load_checkpoint


class Recorder(Callback):
    """Records every hook call; keeps a running tensor state (the sum of train losses)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.total = torch.zeros((), dtype=torch.float64)
        self.epochs_seen: list[int] = []

    def on_fit_start(self, trainer):
        self.calls.append(("fit_start", trainer.epoch, trainer.global_step))

    def on_validation_end(self, trainer, metrics):
        self.calls.append(("validation_end", trainer.epoch, sorted(metrics)))

    def on_epoch_end(self, trainer, row):
        self.calls.append(("epoch_end", trainer.epoch, row["epoch"], sorted(row)))
        self.total += row["train_loss"]
        self.epochs_seen.append(int(row["epoch"]))
        return {"cb_total": float(self.total)}

    def on_fit_end(self, trainer):
        self.calls.append(("fit_end", trainer.epoch, trainer.global_step))

    def state_dict(self):
        return {"total": self.total.clone(), "epochs_seen": list(self.epochs_seen)}

    def load_state_dict(self, state):
        self.total = state["total"].clone()
        self.epochs_seen = list(state["epochs_seen"])


def test_hooks_are_called_in_order_with_the_epoch_row(tmp_path):
    rec = Recorder()
    hist = Trainer(Regressor(), cfg(tmp_path, epochs=2), callbacks=[rec]).fit(
        regression_data(), regression_data(16, seed=1)
    )
    row_keys = ["epoch", "step", "train_loss", "train_mae", "val_loss", "val_mae"]
    assert rec.calls == [
        ("fit_start", 0, 0),
        ("validation_end", 0, ["val_loss", "val_mae"]),
        ("epoch_end", 0, 1, sorted(row_keys)),
        ("validation_end", 1, ["val_loss", "val_mae"]),
        ("epoch_end", 1, 2, sorted(row_keys)),
        ("fit_end", 2, 8),
    ]
    # the returned number joins the row, the metric files and the history
    assert [r["cb_total"] for r in hist] == pytest.approx(
        [hist[0]["train_loss"], hist[0]["train_loss"] + hist[1]["train_loss"]]
    )
    assert "cb_total" in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]


def test_a_callbacks_state_resumes_exactly(tmp_path):
    data = regression_data()  # 4 steps per epoch
    full = Recorder()
    Trainer(Regressor(), cfg(tmp_path / "full", epochs=4), callbacks=[full]).fit(data)

    first = Recorder()
    with pytest.raises(KeyboardInterrupt):
        Trainer(InterruptAt(11), cfg(tmp_path, epochs=4), callbacks=[first]).fit(data)
    assert first.epochs_seen == [1, 2]
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["callbacks"]
    assert saved["Recorder"]["epochs_seen"] == [1, 2]

    again = Recorder()  # a new process: the state comes from the checkpoint only
    Trainer(Regressor(), cfg(tmp_path, epochs=4), callbacks=[again]).fit(data)
    assert again.epochs_seen == full.epochs_seen == [1, 2, 3, 4]
    assert torch.equal(again.total, full.total)
    assert again.calls[0] == ("fit_start", 2, 8)  # restored before the first hook


def test_callbacks_are_checked_and_a_missing_state_is_reported(tmp_path, caplog):
    with pytest.raises(TypeError, match=r"dgm_ext\.train\.Callback instances"):
        Trainer(Regressor(), cfg(tmp_path, epochs=1), callbacks=[object()])
    with pytest.raises(ValueError, match="two callbacks share a state_key"):
        Trainer(Regressor(), cfg(tmp_path, epochs=1), callbacks=[Recorder(), Recorder()])
    named = [LambdaCallback(lambda t, r: None, name=n) for n in ("a", "b")]
    Trainer(Regressor(), cfg(tmp_path, epochs=1), callbacks=named).fit(regression_data())
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert load_checkpoint(last)["callbacks"] == {"a": {}, "b": {}}
    with caplog.at_level(logging.WARNING, logger="dgm_ext.train"):
        Trainer(Regressor(), cfg(tmp_path, epochs=2), callbacks=[Recorder()]).fit(regression_data())
    assert f"{last} holds no state of callback Recorder; it starts afresh" in caplog.text
