"""Exact resume after crashes: SIGKILL a training process twice (once resuming from an
epoch-boundary checkpoint, once from a mid-epoch one), resume in a new process and compare
the final parameters bit for bit with an uninterrupted run. The runs use the trainer's
default device (cuda:0 when CUDA is available, else the CPU); the script saves CPU copies."""

from __future__ import annotations

import json
import signal

import torch
from _train_helpers import load_state, run_toy

# 120 training examples / batch 16 -> 8 steps per epoch; 4 epochs = 32 steps. The model uses
# dropout, dynamically binarised data, numpy noise and Python `random` (all RNGs matter).
EPOCHS = 4


def _metrics_without_time(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "time_s"} for row in rows]


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    base = ["--epochs", str(EPOCHS), "--ema", "0.9"]
    ref = run_toy("--run-dir", str(tmp_path / "ref"), "--out", str(tmp_path / "ref.pt"), *base)
    assert ref.returncode == 0, ref.stderr
    ref_state = load_state(tmp_path / "ref.pt")["mlp"]

    out = tmp_path / "final.pt"
    args = ["--run-dir", str(tmp_path / "run"), "--out", str(out), *base]
    ckpt_dir = tmp_path / "run" / "mlp" / "checkpoints"  # the script trains in <run-dir>/mlp

    # crash 1 at the start of step 21 (epoch 3): only per-epoch checkpoints -> step 16
    crashed = run_toy(*args, "--kill-at-step", "21")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert not out.exists()
    ck = load_state(ckpt_dir / "last.pt")
    assert (ck["trainer"]["epoch"], ck["trainer"]["global_step"]) == (2, 16)
    assert len(ck["history"]) == 2

    # crash 2: resumes at step 16, checkpoints also every 5 steps (20, 25), dies at the start
    # of its 12th step (global step 28) -> the last checkpoint is mid-epoch 4 (batch 1 of 8)
    crashed = run_toy(*args, "--checkpoint-every", "5", "--kill-at-step", "12")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    ck = load_state(ckpt_dir / "last.pt")
    trainer_state = ck["trainer"]
    assert (trainer_state["epoch"], trainer_state["global_step"]) == (3, 25)
    assert trainer_state["batch_in_epoch"] == 1
    assert not list(ckpt_dir.glob("*.tmp"))

    resumed = run_toy(*args)
    assert resumed.returncode == 0, resumed.stderr
    state = load_state(out)["mlp"]
    assert state.keys() == ref_state.keys()
    for k in ref_state:
        assert torch.equal(state[k], ref_state[k]), k  # model and EMA weights, bit for bit
    assert _metrics_without_time(tmp_path / "run" / "mlp" / "metrics.jsonl") == (
        _metrics_without_time(tmp_path / "ref" / "mlp" / "metrics.jsonl")
    )
