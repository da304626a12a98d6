"""What the Trainer tells a user who reruns or interrupts a training (issue 22/21): the resume
is announced, every changed training setting is named and the current one is in force, a
different model in the same run_dir is refused in one line before anything changes, Ctrl-C
reports where training stood, and an interrupt inside a checkpoint write loses nothing."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
from _train_helpers import InterruptAt, Regressor, cfg, regression_data, subprocess_env
from torch import nn

import dgm_ext.train.checkpoint as ckpt_mod
from dgm_ext.train import (
    ModelMismatchError,
    Trainer,
    TrainingInterrupted,
    load_checkpoint,
)

LOGGER = "dgm_ext.train"


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_resume_is_announced(tmp_path, caplog):
    Trainer(Regressor(), cfg(tmp_path, epochs=1)).fit(regression_data())
    with caplog.at_level(logging.INFO, logger=LOGGER):
        Trainer(Regressor(), cfg(tmp_path, epochs=2)).fit(regression_data())
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    infos = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resumed")]
    assert infos == [f"resumed from {last} (epoch 1, step 4)"]


def test_changed_lr_and_grad_clip_are_named_and_the_new_values_are_in_force(tmp_path, caplog):
    """The RealNVP result was resumed with a changed grad_clip: such a change must be reported.
    lr: load_state_dict would silently bring back the checkpoint's 1e-3."""
    data = regression_data()
    Trainer(Regressor(), cfg(tmp_path, epochs=1, lr=1e-3)).fit(data)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    t = Trainer(Regressor(), cfg(tmp_path, epochs=2, lr=1e-2, grad_clip=5.0))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        hist = t.fit(data)
    assert _warnings(caplog) == [
        f"{last} was written with different settings: lr 0.001 -> 0.01, grad_clip None -> 5: "
        "the run continues with the current ones, but not as an exact continuation of the "
        "interrupted one"
    ]
    assert t.optimizers[0].param_groups[0]["lr"] == 1e-2
    assert [r["lr"] for r in hist] == [1e-3, 1e-2]  # epoch 2 trained at the new rate
    assert load_checkpoint(last)["optimizers"][0]["param_groups"][0]["lr"] == 1e-2


class _SGDRegressor(Regressor):
    """Configures its own optimiser (as GANs do), so TrainerConfig.lr is not what it uses."""

    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr

    def configure_optimizers(self, config):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.5)


def test_a_changed_optimiser_setting_of_the_model_is_named_and_in_force(tmp_path, caplog):
    data = regression_data()
    Trainer(_SGDRegressor(0.1), cfg(tmp_path, epochs=1)).fit(data)
    t = Trainer(_SGDRegressor(0.05), cfg(tmp_path, epochs=2))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        t.fit(data)
    (msg,) = _warnings(caplog)
    assert "was written with different settings: optimizer 0 lr 0.1 -> 0.05: the run" in msg
    group = t.optimizers[0].param_groups[0]
    assert (group["lr"], group["momentum"]) == (0.05, 0.5)
    assert t.optimizers[0].state  # the momentum buffers still came from the checkpoint


class _Wide(Regressor):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(5, 1)


def test_a_different_model_in_the_run_dir_is_refused_in_one_line(tmp_path):
    Trainer(Regressor(), cfg(tmp_path, epochs=1)).fit(regression_data())
    run, last = tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.pt"
    before = last.read_bytes()
    model = _Wide()
    init = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ModelMismatchError) as e:
        Trainer(model, cfg(tmp_path, epochs=2)).fit(regression_data())
    assert str(e.value) == (
        f"{run} holds a run of a different model: lin.weight is 1x3 in the checkpoint, 1x5 "
        f"here ({last}). Train this model in a new run_dir (--out), or pass resume=False "
        "(--fresh) to move the earlier run aside and start over."
    )
    assert isinstance(e.value, ValueError)  # the CLI's one-line error path
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), init, strict=True))
    assert last.read_bytes() == before

    class Renamed(Regressor):
        def __init__(self) -> None:
            super().__init__()
            self.head = self.lin
            del self.lin

    with pytest.raises(ModelMismatchError, match=r"head\.weight is missing from the checkpoint "
                                                 r"\(and 3 more differences\)"):  # fmt: skip
        Trainer(Renamed(), cfg(tmp_path, epochs=2)).fit(regression_data())


def test_ctrl_c_reports_where_training_stood_and_the_checkpoint_to_resume(tmp_path):
    data = regression_data()  # 4 steps per epoch
    with pytest.raises(TrainingInterrupted) as e:
        Trainer(InterruptAt(7), cfg(tmp_path, epochs=3)).fit(data)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert isinstance(e.value, KeyboardInterrupt)
    assert (e.value.epoch, e.value.step, e.value.batch_in_epoch) == (1, 6, 2)
    assert str(e.value) == (
        f"interrupted in epoch 2 after 2 of its batches (step 6); the last checkpoint is {last} "
        "(epoch 1, step 4); rerun the same command (or fit() with the same run_dir) to resume "
        "from it"
    )
    first = r"^interrupted in epoch 1 after 1 of its batches \(step 1\); no checkpoint was "
    with pytest.raises(TrainingInterrupted, match=first + "written yet; rerunning starts over$"):
        Trainer(InterruptAt(2), cfg(tmp_path / "b", epochs=3)).fit(data)


def test_an_interrupt_inside_a_checkpoint_write_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch
):
    """Ctrl-C while last.pt is being written (half the bytes on disk): the previous last.pt is
    intact, no temporary file is left, and the rerun resumes from it to the same weights as an
    uninterrupted run."""
    data = regression_data()
    full = Regressor()
    Trainer(full, cfg(tmp_path / "full", epochs=3)).fit(data)

    Trainer(Regressor(), cfg(tmp_path, epochs=1)).fit(data)
    ckdir = tmp_path / "run" / "checkpoints"
    before = (ckdir / "last.pt").read_bytes()
    real_save = torch.save

    def half_then_interrupt(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        f.seek(0)
        f.truncate(f.tell() // 2 + 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod.torch, "save", half_then_interrupt)
    with pytest.raises(TrainingInterrupted, match=r"^interrupted after epoch 2 \(step 8\); the "
                                                  r"last checkpoint is .*last\.pt \(epoch 1, "
                                                  r"step 4\)"):  # fmt: skip
        Trainer(Regressor(), cfg(tmp_path, epochs=3)).fit(data)
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    assert (ckdir / "last.pt").read_bytes() == before
    assert sorted(p.name for p in ckdir.iterdir()) == ["best.pt", "last.pt"] or sorted(
        p.name for p in ckdir.iterdir()
    ) == ["last.pt"]
    resumed = Regressor()
    Trainer(resumed, cfg(tmp_path, epochs=3)).fit(data)
    for a, b in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_messages_reach_the_console_without_logging_configured(tmp_path):
    """From a plain Python script (no logging set up): the resume and the changed setting are
    printed on stderr, once each; with stderr a file, no progress-bar redraws."""
    script = textwrap.dedent(
        f"""
        import torch
        from torch import nn
        from torch.utils.data import TensorDataset
        from dgm_ext.train import Trainer, TrainerConfig

        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(3, 1)
            def training_step(self, batch):
                x, y = batch
                return {{"loss": ((self.lin(x).squeeze(-1) - y) ** 2).mean()}}

        data = TensorDataset(torch.randn(64, 3), torch.randn(64))
        for epochs, lr in ((1, 1e-3), (2, 2e-3)):
            c = TrainerConfig(run_dir={str(tmp_path / "run")!r}, epochs=epochs, lr=lr,
                              batch_size=4, log_every=1)
            Trainer(M(), c).fit(data)
        """
    )
    err_file = tmp_path / "stderr.txt"
    with open(err_file, "w") as err:
        proc = subprocess.run(
            [sys.executable, "-c", script],
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=120,
        )
    err_text = err_file.read_text()
    assert proc.returncode == 0, err_text
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    lines = err_text.splitlines()
    assert lines.count(f"resumed from {last} (epoch 1, step 16)") == 1
    assert sum("different settings: lr 0.001 -> 0.002" in line for line in lines) == 1
    assert "it/s" not in err_text and "\r" not in err_text  # no bar redraws in the file
    # one summary line per epoch on stdout (progress on), not repeated on stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()] == ["epoch=1", "epoch=2"]
    assert not any(line.startswith("epoch=") for line in lines)


class _ConfiguredRegressor(Regressor):
    """A model with a ``config.to_dict()``, as the library's VAE, GAN and RealNVP have."""

    def __init__(self, **settings) -> None:
        super().__init__()
        self.config = SimpleNamespace(to_dict=lambda: dict(settings))


def test_changed_model_settings_are_named_on_resume(tmp_path, caplog):
    """A change of the model's own settings that keeps its parameter shapes (a GAN's loss,
    a VAE's binarisation) used to resume without a word."""
    data = regression_data()
    first = _ConfiguredRegressor(loss="jsd", penalty=None, hidden=[8, 8])
    Trainer(first, cfg(tmp_path, epochs=1)).fit(data)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert load_checkpoint(last)["model_config"] == {"loss": "jsd", "penalty": None,
                                                     "hidden": [8, 8]}  # fmt: skip
    again = _ConfiguredRegressor(loss="hinge", penalty="r1", hidden=(8, 8), extra=1)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        Trainer(again, cfg(tmp_path, epochs=2, lr=1e-2)).fit(data)
    assert _warnings(caplog) == [
        f"{last} was written with different settings: model.loss jsd -> hinge, model.penalty "
        "None -> r1, model.extra None -> 1, lr 0.001 -> 0.01: the run continues with the "
        "current ones, but not as an exact continuation of the interrupted one"
    ]
    caplog.clear()
    same = _ConfiguredRegressor(loss="hinge", penalty="r1", hidden=[8, 8], extra=1)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        Trainer(same, cfg(tmp_path, epochs=3, lr=1e-2)).fit(data)
    assert _warnings(caplog) == []  # tuples and lists alike; nothing changed


def test_a_model_config_that_is_not_plain_is_not_recorded(tmp_path):
    model = _ConfiguredRegressor(act=torch.nn.ReLU())  # not readable with weights_only=True
    Trainer(model, cfg(tmp_path, epochs=1)).fit(regression_data())
    ck = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ck["model_config"] is None
