"""The Trainer's settings on the command line (issue 23): --grad-clip for every family, lr
schedules, accumulation, precision; recorded in config.json; bad values refused in one line
before anything is created; --conditional for GANs."""

from __future__ import annotations

import json
import logging

import pytest
from _data import needs_mnist

from dgm_ext.cli import main
from dgm_ext.persistence import read

TINY_VAE = ["--latent-dim", "4", "--hidden", "32", "--epochs", "1", "--batch-size", "32",
            "--train-size", "64", "--val-size", "32", "--threads", "1"]  # fmt: skip
TINY_GAN = ["--epochs", "1", "--batch-size", "32", "--train-size", "64", "--z-dim", "8",
            "--threads", "1", "--no-progress", "--n", "32"]  # fmt: skip


def _trainer(run) -> dict:
    return json.loads((run / "config.json").read_text())["trainer"]


@needs_mnist
def test_train_vae_records_the_trainer_options(tmp_path, data_env):
    run = tmp_path / "v"
    argv = ["train", "vae", "--out", str(run), *TINY_VAE, "--no-progress", "--grad-clip", "2.5",
            "--lr-schedule", "cosine", "--warmup-steps", "1", "--lr-min-ratio", "0.1",
            "--accumulate-grad-batches", "2", "--precision", "bf16"]  # fmt: skip
    assert main(argv) == 0
    t = _trainer(run)
    assert (t["grad_clip"], t["lr_schedule"], t["warmup_steps"], t["lr_min_ratio"]) == (
        2.5,
        "cosine",
        1,
        0.1,
    )
    assert (t["accumulate_grad_batches"], t["precision"]) == (2, "bf16")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # 2 batches of 32 accumulated: one optimisation step; its lr is the warm-up's first value
    assert rows[0]["step"] == 1 and rows[0]["lr"] == pytest.approx(1e-3)


@needs_mnist
def test_train_gan_conditional_with_grad_clip(tmp_path, data_env):
    run = tmp_path / "g"
    assert main(["train", "gan", "--out", str(run), *TINY_GAN, "--conditional",
                 "--grad-clip", "1", "--precision", "bf16"]) == 0  # fmt: skip
    assert _trainer(run)["grad_clip"] == 1.0
    mf = read(run / "generator.pt")
    assert mf.kind == "gan" and mf.blob["config"]["num_classes"] == 10
    gan = mf.load()
    assert gan.sample(4, labels=3).shape == (4, 1, 28, 28)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "vae", "--lr-gamma", "2"], "--lr-gamma must be in (0, 1]"),
        (["train", "vae", "--lr-schedule", "step"], "--lr-schedule='step' needs lr_step_size"),
        (["train", "vae", "--grad-clip", "-1"], "--grad-clip must be a finite number >= 0"),
        (["train", "realnvp", "--accumulate-grad-batches", "0"],
         "--accumulate-grad-batches must be an int >= 1"),
        (["train", "gan", "--precision", "16"], "need the Trainer's default step"),
    ],
)  # fmt: skip
def test_bad_trainer_options_are_one_line_and_create_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    assert main([*argv, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dgm-ext: error: ") and message in err and "\n" not in err
    assert not out.exists()


@needs_mnist
def test_a_changed_model_setting_is_named_when_the_run_resumes(tmp_path, data_env, caplog):
    """`train gan --out g` then `--loss hinge` into the same run used to continue with the
    other loss after only "resuming run ...", and gan_args.json then misdescribed epoch 1."""
    run = tmp_path / "g"
    assert main(["train", "gan", "--out", str(run), *TINY_GAN]) == 0
    argv = ["train", "gan", "--out", str(run), *TINY_GAN, "--loss", "hinge"]
    argv[argv.index("--epochs") + 1] = "2"
    with caplog.at_level(logging.WARNING, logger="dgm_ext.train"):
        assert main(argv) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "was written with different settings: model.loss jsd-nonsaturating -> hinge" in w
        for w in warned
    ), warned
