"""Ctrl-C and a non-finite loss on the command line: one line on stderr (no traceback), exit
status 130 / 1, and the same command resumes from the last checkpoint."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import torch
from _data import DATA, needs_mnist
from _train_helpers import subprocess_env

from dgm_ext.cli import main
from dgm_ext.vae import model as vae_model

TINY = ["--latent-dim", "4", "--hidden", "32", "--batch-size", "32", "--train-size", "64",
        "--val-size", "32", "--threads", "1", "--no-progress"]  # fmt: skip


@needs_mnist
def test_ctrl_c_in_training_is_one_line_and_the_same_command_resumes(
    tmp_path, monkeypatch, capsys, data_env
):
    out = tmp_path / "run"
    argv = ["train", "vae", "--out", str(out), "--epochs", "3", *TINY]
    real = vae_model.VAE.training_step
    calls = {"n": 0}

    def interrupt_in_epoch_2(self, batch):
        calls["n"] += 1
        if calls["n"] == 4:  # 2 batches per epoch: the first batch of epoch 2 ran
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(vae_model.VAE, "training_step", interrupt_in_epoch_2)
    assert main(argv) == 130
    err = capsys.readouterr().err
    last = out / "checkpoints" / "last.pt"
    assert err.splitlines()[-1] == (
        f"dgm-ext: interrupted in epoch 2 after 1 of its batches (step 3); the last checkpoint "
        f"is {last} (epoch 1, step 2); rerun the same command (or fit() with the same run_dir) "
        "to resume from it"
    )
    assert "Traceback" not in err
    monkeypatch.setattr(vae_model.VAE, "training_step", real)
    assert main(argv) == 0
    assert f"resuming run in {out} from epoch 1" in capsys.readouterr().out
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3


@needs_mnist
def test_a_non_finite_loss_is_one_line_with_status_1(tmp_path, monkeypatch, capsys, data_env):
    def nan_loss(self, batch):
        return {"loss": torch.tensor(float("nan"), requires_grad=True)}

    monkeypatch.setattr(vae_model.VAE, "training_step", nan_loss)
    assert main(["train", "vae", "--out", str(tmp_path / "run"), "--epochs", "1", *TINY]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("dgm-ext: error: Non-finite loss (nan) at epoch 1")
    assert "Traceback" not in err


@needs_mnist
def test_sigint_to_a_training_process(tmp_path):
    """A real SIGINT, as Ctrl-C in a terminal sends: status 130, one line, checkpoint intact."""
    out = tmp_path / "run"
    env = subprocess_env()
    env["DGM_EXT_DATA"] = str(DATA)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dgm_ext", "train", "vae", "--out", str(out), "--epochs", "500",
         *TINY],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    last = out / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert last.is_file(), proc.communicate(timeout=60)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1].startswith("dgm-ext: interrupted ")
    assert "rerun the same command" in stderr.splitlines()[-1]
    torch.load(last, weights_only=True)  # the checkpoint it names is intact
