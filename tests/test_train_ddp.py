"""Data-parallel training with 2 processes. With torchrun: matches one process using the
same global batch, for a default-step model and a two-optimiser custom step (the script
creates the process group itself there). With ranks started like torchrun starts them
(``run_ranks``: env vars only, so the Trainer initialises and destroys the process group):
the same equivalence with EMA, exact resume after a crash, per-rank RNG streams, and a NaN
on one rank stopping every rank. With two or more visible GPUs the processes use
cuda:0 / cuda:1 and NCCL; otherwise (CPU-only, or a single GPU, which two ranks cannot
share) every run is pinned to the CPU and gloo."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from _train_helpers import (
    ON_GPUS,
    SCRIPT,
    free_port,
    load_state,
    run_ranks,
    run_toy,
    subprocess_env,
)

BACKEND_AVAILABLE = dist.is_available() and (
    dist.is_nccl_available() if ON_GPUS else dist.is_gloo_available()
)

pytestmark = pytest.mark.skipif(
    not BACKEND_AVAILABLE, reason=f"needs torch.distributed {'nccl' if ON_GPUS else 'gloo'}"
)


def test_ddp_two_ranks_match_single_process(tmp_path):
    common = ["--epochs", "3", "--num-examples", "160", "--deterministic", "--models", "mlp,two"]
    if not ON_GPUS:
        common += ["--device", "cpu"]  # the single-process run too, for a like-for-like check
    single = run_toy("--run-dir", str(tmp_path / "single"), "--out", str(tmp_path / "single.pt"),
                     "--batch-size", "16", *common)  # fmt: skip
    assert single.returncode == 0, single.stderr

    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(SCRIPT),
        "--run-dir", str(tmp_path / "ddp"), "--out", str(tmp_path / "ddp.pt"),
        "--batch-size", "8", *common,
    ]  # fmt: skip
    try:
        ddp = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"torchrun timed out: {exc.stderr}")
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr

    single_states = load_state(tmp_path / "single.pt")
    ddp_states = load_state(tmp_path / "ddp.pt")
    for kind in ("mlp", "two"):
        a, b = single_states[kind], ddp_states[kind]
        assert a.keys() == b.keys()
        for k in a:
            # Not bit-identical: DDP averages the two ranks' mean gradients, (g0 + g1) / 2,
            # whereas one process takes the mean over all 16 examples at once; the float
            # sums are rounded in a different order (observed differences ~1e-7).
            torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=f"{kind} {k}")

        # rank 0 alone wrote the run directory, with metrics averaged over both ranks
        s_dir, d_dir = tmp_path / "single" / kind, tmp_path / "ddp" / kind
        cfg = json.loads((d_dir / "config.json").read_text())
        assert cfg["world_size"] == 2 and cfg["global_batch_size"] == 16
        assert cfg["device"] == ("cuda:0" if ON_GPUS else "cpu")
        s_rows = [json.loads(l) for l in (s_dir / "metrics.jsonl").read_text().splitlines()]
        d_rows = [json.loads(l) for l in (d_dir / "metrics.jsonl").read_text().splitlines()]
        assert len(s_rows) == len(d_rows) == 3
        loss = "train_loss" if kind == "mlp" else "train_g_loss"
        assert s_rows[-1][loss] < s_rows[0][loss]  # it did train
        for s_row, d_row in zip(s_rows, d_rows, strict=True):
            assert s_row.keys() == d_row.keys()
            for key in s_row:
                if key != "time_s":
                    assert d_row[key] == pytest.approx(s_row[key], rel=1e-5, abs=1e-6), key


# --------------------------------------------- the Trainer's own process group (torchrun path)
DEVICE_ARGS = [] if ON_GPUS else ["--device", "cpu"]


def _toy_module():
    spec = importlib.util.spec_from_file_location("train_toy", SCRIPT)
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)
    return toy


def _reports(folder, kind="mlp"):
    return [json.loads((folder / f"{kind}-rank{r}.json").read_text()) for r in range(2)]


def _rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "time_s"} for row in rows]


def test_trainer_sets_up_and_destroys_process_group_ema_matches_single(tmp_path):
    """One model per job, nothing initialised before the Trainer: it must create the process
    group from the environment, average gradients, keep the EMA, and destroy the group."""
    common = ["--epochs", "2", "--num-examples", "96", "--deterministic", "--ema", "0.8",
              *DEVICE_ARGS]  # fmt: skip
    reports = tmp_path / "reports"
    reports.mkdir()
    err = run_ranks("--run-dir", str(tmp_path / "ddp"), "--out", str(tmp_path / "ddp.pt"),
                    "--batch-size", "4", "--report-dir", str(reports), *common)  # fmt: skip
    assert err is None, err
    for r, rep in enumerate(_reports(reports)):
        assert (rep["trainer_rank"], rep["world_size"]) == (r, 2)
        assert rep["process_group_after_fit"] is False, "the Trainer left its group alive"

    # the reference: one process, the same global batch, run here
    toy = _toy_module()
    single = toy.train_one(
        "mlp",
        str(tmp_path / "single" / "mlp"),
        toy.argparse.Namespace(
            kill_at_step=None, deterministic=True, num_examples=96, epochs=2, batch_size=8,
            ema=0.8, checkpoint_every=None, device="cpu" if not ON_GPUS else None,
            nan_at_step=None, nan_rank=None, report_dir=None,
        ),
    )  # fmt: skip
    ddp = load_state(tmp_path / "ddp.pt")["mlp"]
    assert single.keys() == ddp.keys() and any(k.startswith("ema.") for k in ddp)
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-5, atol=1e-6, msg=k)
    s_rows, d_rows = _rows(tmp_path / "single" / "mlp"), _rows(tmp_path / "ddp" / "mlp")
    assert len(s_rows) == len(d_rows) == 2
    for s_row, d_row in zip(s_rows, d_rows, strict=True):
        assert s_row.keys() == d_row.keys()
        for key in s_row:  # val_* are computed with the EMA weights
            assert d_row[key] == pytest.approx(s_row[key], rel=1e-5, abs=1e-6), key


def test_ddp_resume_after_kill_is_exact_with_per_rank_rng(tmp_path):
    """Kill both ranks mid-epoch, resume: weights, EMA, metrics and every rank's random draws
    equal those of an uninterrupted run; the two ranks draw different random numbers."""
    # 96 examples: 72 to train, 36 per rank, batch 6 -> 6 steps per epoch, 3 epochs = 18
    common = ["--epochs", "3", "--num-examples", "96", "--batch-size", "6", "--ema", "0.9",
              *DEVICE_ARGS]  # fmt: skip
    ref_reports, reports = tmp_path / "ref_reports", tmp_path / "reports"
    ref_reports.mkdir()
    reports.mkdir()
    err = run_ranks("--run-dir", str(tmp_path / "ref"), "--out", str(tmp_path / "ref.pt"),
                    "--report-dir", str(ref_reports), *common)  # fmt: skip
    assert err is None, err
    ref = _reports(ref_reports)
    assert len(ref[0]["draws"]) == len(ref[1]["draws"]) == 18
    for a, b in zip(ref[0]["draws"], ref[1]["draws"], strict=True):
        assert a[:2] != b[:2], "both ranks drew the same Python/numpy random numbers"
    assert [d[2] for d in ref[0]["draws"]] != [d[2] for d in ref[1]["draws"]], "same dropout"

    args = ["--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "run.pt"), *common]
    # checkpoints every 4 steps; both ranks die at the start of step 11 -> resume at step 8,
    # in the middle of epoch 2 (batch 2 of 6)
    err = run_ranks(*args, "--checkpoint-every", "4", "--kill-at-step", "11")
    assert isinstance(err, torch.multiprocessing.ProcessExitedException), err
    assert err.signal_name == "SIGKILL" or err.exit_code == -signal.SIGKILL, err
    ck = load_state(tmp_path / "run" / "mlp" / "checkpoints" / "last.pt")
    t = ck["trainer"]
    assert (t["epoch"], t["global_step"], t["batch_in_epoch"]) == (1, 8, 2)
    assert t["world_size"] == 2 and len(ck["rng"]) == 2

    err = run_ranks(*args, "--checkpoint-every", "4", "--report-dir", str(reports))
    assert err is None, err
    for r, rep in enumerate(_reports(reports)):
        assert rep["draws"] == ref[r]["draws"][8:], f"rank {r} did not get its own RNG back"
    want, got = load_state(tmp_path / "ref.pt")["mlp"], load_state(tmp_path / "run.pt")["mlp"]
    assert want.keys() == got.keys() and any(k.startswith("ema.") for k in got)
    for k in want:
        assert torch.equal(got[k], want[k]), k  # model and EMA weights, bit for bit
    # the epoch means of the resumed epoch include both ranks' steps from before the crash
    assert _rows(tmp_path / "run" / "mlp") == _rows(tmp_path / "ref" / "mlp")


def test_nan_on_one_rank_stops_every_rank(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    args = ["--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out.pt"),
            "--epochs", "2", "--num-examples", "96", "--batch-size", "6",
            "--checkpoint-every", "4", "--report-dir", str(reports), *DEVICE_ARGS]  # fmt: skip
    # rank 1's loss is NaN at step 7; rank 0's is finite (a TimeoutError here: a hang)
    err = run_ranks(*args, "--nan-at-step", "7", "--nan-rank", "1", timeout=90)
    assert isinstance(err, torch.multiprocessing.ProcessRaisedException), err
    assert "NonFiniteLossError" in str(err)
    last = tmp_path / "run" / "mlp" / "checkpoints" / "last.pt"
    for rep in _reports(reports):
        assert rep["error"] is not None, f"rank {rep['rank']} did not stop on the NaN"
        assert rep["error"].startswith(
            "Non-finite loss (nan on rank 1 of 2) at epoch 2, step 7; training stopped before "
            f"applying this step on every rank. The last good checkpoint, {last} (after epoch "
            "1, step 6)"
        ), rep["error"]
        assert rep["process_group_after_fit"] is False
    assert load_state(last)["trainer"]["global_step"] == 6
    assert not (tmp_path / "out.pt").exists()
