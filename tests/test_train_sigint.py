"""Ctrl-C while a checkpoint is committed (dgm_ext.train.guard.sigint_deferred): the SIGINT
waits until last.pt is renamed into place and recorded, so the report names it (CI once saw
"no checkpoint was written yet" beside a good last.pt: the signal landed in between)."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch
from _train_helpers import Regressor, cfg, regression_data

import dgm_ext.train.connector as connector
from dgm_ext.train import Trainer, TrainingInterrupted
from dgm_ext.train.guard import sigint_deferred

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(
        not hasattr(signal, "pthread_sigmask")
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
        reason="needs POSIX signal masks and Python's own SIGINT handler",
    ),
]


def test_sigint_is_delivered_after_the_block():
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with sigint_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # a SIGINT delivered here would raise before the append
            reached.append(True)
        time.sleep(0.05)
    assert reached == [True]


def test_sigint_right_after_the_rename_names_the_checkpoint(tmp_path, monkeypatch):
    real = connector.atomic_save
    calls = {"n": 0}

    def save_then_sigint(state, path):
        real(state, path)
        calls["n"] += 1
        if calls["n"] == 2:  # epoch 2's last.pt is in place: Ctrl-C now
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)

    monkeypatch.setattr(connector, "atomic_save", save_then_sigint)
    trainer = Trainer(Regressor(), cfg(tmp_path, epochs=5))
    with pytest.raises(TrainingInterrupted) as err:
        trainer.fit(regression_data())
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert err.value.checkpoint == (last, 2, 8)
    assert f"the last checkpoint is {last} (epoch 2, step 8)" in str(err.value)
    assert torch.load(last, weights_only=True)["trainer"]["epoch"] == 2
