"""Two-rank data parallelism with rank 0 in this process and rank 1 in a subprocess.

The other DDP tests run every rank in child processes; this file keeps rank 0 in the test
process, started the way torchrun starts it (``WORLD_SIZE``/``RANK``/``MASTER_*`` in the
environment, nothing initialised before the Trainer), so that the Trainer's distributed code
(process-group setup and teardown, DDP wrapping, the manual gradient all-reduce of a custom
step, rank 0's weight broadcast, the gathered checkpoint state, the all-reduced NaN verdict)
runs where in-process tools see it: coverage and mutation testing (docs/MUTATION.md) trace
only the test process. Rank 1 runs ``tests/scripts/train_toy.py`` with the same arguments.
With fewer than two GPUs both ranks use the CPU and gloo; with two or more, cuda:0/cuda:1
and NCCL."""

from __future__ import annotations

import importlib.util
import json
import logging
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from _train_helpers import ON_GPUS, SCRIPT, free_port, subprocess_env

from dgm_ext.train import NonFiniteLossError, Trainer, TrainerConfig, seed_everything

BACKEND_AVAILABLE = dist.is_available() and (
    dist.is_nccl_available() if ON_GPUS else dist.is_gloo_available()
)
pytestmark = pytest.mark.skipif(
    not BACKEND_AVAILABLE, reason=f"needs torch.distributed {'nccl' if ON_GPUS else 'gloo'}"
)
DEVICE_ARGS = [] if ON_GPUS else ["--device", "cpu"]
TESTS = Path(__file__).resolve().parent
RANK1 = (
    "import sys; sys.path.insert(0, {tests!r}); import _train_helpers as h; "
    "h._toy_rank(1, 2, {port}, {argv!r})"
)


def _toy():
    spec = importlib.util.spec_from_file_location("train_toy_inprocess", SCRIPT)
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)
    return toy


@pytest.fixture
def rank0(monkeypatch):
    """``run(argv)``: rank 1 of a 2-rank job in a subprocess, rank 0 here; returns rank 0's
    exception (or None) and checks that rank 1 ended (with ``rank1_ok`` as its success)."""
    n_threads = torch.get_num_threads()

    def run(argv: list[str], rank1_ok: bool = True, timeout: float = 120):
        port = free_port()
        code = RANK1.format(tests=str(TESTS), port=port, argv=list(argv))
        child = subprocess.Popen(
            [sys.executable, "-c", code],
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # fmt: skip
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
        error = None
        try:
            _toy().main(list(argv))
        except Exception as exc:
            error = exc
        finally:
            for k in env:
                monkeypatch.delenv(k)
            try:
                _, err = child.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                _, err = child.communicate()
                pytest.fail(f"rank 1 still running after {timeout} s (a hang?): {err[-2000:]}")
            if dist.is_initialized():  # only if rank 0 failed before the Trainer's teardown
                dist.destroy_process_group()
        assert (child.returncode == 0) == rank1_ok, f"rank 1 exit {child.returncode}: {err}"
        return error

    yield run
    torch.set_num_threads(n_threads)


def _single(toy, kind, run_dir, batch_size, epochs, num_examples, ema=None, **kw):
    args = toy.argparse.Namespace(
        kill_at_step=None, deterministic=True, num_examples=num_examples, epochs=epochs,
        batch_size=batch_size, ema=ema, checkpoint_every=None,
        device="cpu" if not ON_GPUS else None, nan_at_step=None, nan_rank=None,
        report_dir=None,
    )  # fmt: skip
    vars(args).update(kw)
    return toy.train_one(kind, str(run_dir), args)


def _rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "time_s"} for row in rows]


def _assert_states_close(got, want):
    assert got.keys() == want.keys()
    for k in want:
        # not bit-identical: DDP averages the two ranks' mean gradients
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize(("kind", "ema"), [("mlp", 0.8), ("two", None)])
def test_rank0_here_matches_single_process(tmp_path, rank0, kind, ema):
    """The default step (DDP wrapper, EMA) and a two-optimiser custom step (manual gradient
    all-reduce, rank 0's weights broadcast first) match one process with the global batch."""
    reports = tmp_path / "reports"
    reports.mkdir()
    argv = ["--run-dir", str(tmp_path / "ddp"), "--out", str(tmp_path / "ddp.pt"),
            "--models", kind, "--epochs", "2", "--num-examples", "96", "--batch-size", "4",
            "--deterministic", "--rank-init", "--report-dir", str(reports),
            *DEVICE_ARGS]  # fmt: skip
    if ema is not None:
        argv += ["--ema", str(ema)]
    assert rank0(argv) is None
    assert not dist.is_initialized(), "the Trainer left its process group alive"
    reps = [json.loads((reports / f"{kind}-rank{r}.json").read_text()) for r in range(2)]
    assert [(r["trainer_rank"], r["world_size"]) for r in reps] == [(0, 2), (1, 2)]
    assert reps[0]["state_checksum"] == reps[1]["state_checksum"], "ranks ended apart"

    toy = _toy()
    want = _single(toy, kind, tmp_path / "single" / kind, 8, 2, 96, ema=ema)
    got = torch.load(tmp_path / "ddp.pt", weights_only=True)[kind]
    _assert_states_close(got, want)
    assert any(k.startswith("ema.") for k in got) == (ema is not None)
    d_dir = tmp_path / "ddp" / kind
    cfg = json.loads((d_dir / "config.json").read_text())
    assert (cfg["world_size"], cfg["global_batch_size"]) == (2, 8)
    s_rows, d_rows = _rows(tmp_path / "single" / kind), _rows(d_dir)
    assert len(s_rows) == len(d_rows) == 2
    for s_row, d_row in zip(s_rows, d_rows, strict=True):
        assert s_row.keys() == d_row.keys()
        for key in s_row:  # epoch means over both ranks' examples
            assert d_row[key] == pytest.approx(s_row[key], rel=1e-5, abs=1e-6), key
    ck = torch.load(d_dir / "checkpoints" / "last.pt", weights_only=True)
    assert ck["trainer"]["world_size"] == 2 and len(ck["rng"]) == 2
    assert not torch.equal(ck["rng"][0]["torch"], ck["rng"][1]["torch"]), "one RNG stream"


def test_rank0_here_nan_on_rank1_stops_both(tmp_path, rank0):
    last = tmp_path / "run" / "mlp" / "checkpoints" / "last.pt"
    argv = ["--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out.pt"),
            "--epochs", "2", "--num-examples", "96", "--batch-size", "6",
            "--checkpoint-every", "4", "--nan-at-step", "7", "--nan-rank", "1",
            *DEVICE_ARGS]  # fmt: skip
    err = rank0(argv, rank1_ok=False)
    assert isinstance(err, NonFiniteLossError), err
    assert str(err) == (
        "Non-finite loss (nan on rank 1 of 2) at epoch 2, step 7; training stopped before "
        f"applying this step on every rank. The last good checkpoint, {last} (after epoch 1, "
        "step 6), is untouched; rerunning resumes from it (lower the learning rate or enable "
        "grad_clip)."
    )
    assert (err.epoch, err.step, err.checkpoint) == (2, 7, last)
    assert torch.load(last, weights_only=True)["trainer"]["global_step"] == 6
    assert not (tmp_path / "out.pt").exists()


def test_resume_of_a_two_rank_mid_epoch_checkpoint_in_one_process(tmp_path, rank0, caplog):
    """A 2-rank checkpoint written mid-epoch, resumed by one process: the RNG is reseeded
    (seed + rank + 7919 (step + 1)) with a warning, and the running sums of both ranks are
    merged, so the epoch mean is the mean over every example of the epoch."""
    argv = [
        "--run-dir",
        str(tmp_path / "run"),
        "--out",
        str(tmp_path / "out.pt"),
        "--epochs",
        "1",
        "--num-examples",
        "96",
        "--batch-size",
        "6",
        *DEVICE_ARGS,
    ]
    assert rank0(argv) is None
    ck_path = tmp_path / "run" / "mlp" / "checkpoints" / "last.pt"
    ck = torch.load(ck_path, weights_only=True)
    assert ck["trainer"]["world_size"] == 2 and ck["trainer"]["global_step"] == 6
    # make it a checkpoint taken after step 4 of epoch 1, holding both ranks' running sums:
    # rank 0 saw 24 examples with mean loss 2, rank 1 24 with mean loss 4
    ck["trainer"].update(epoch=0, global_step=4, batch_in_epoch=4)
    ck["history"] = []
    ck["accumulators"] = [
        {"sums": {"loss": torch.tensor(2.0 * 24, dtype=torch.float64)}, "counts": {"loss": 24}},
        {"sums": {"loss": torch.tensor(4.0 * 24, dtype=torch.float64)}, "counts": {"loss": 24}},
    ]
    ck["accumulator"] = ck["accumulators"][0]
    torch.save(ck, ck_path)

    toy = _toy()

    class Recording(toy.NoisyMLP):
        def training_step(self, batch):
            out = super().training_step(batch)
            self.losses.append(float(out["loss"].detach()) * len(batch[0]))
            return out

    model = Recording(None, stochastic=True)
    model.losses = []
    train_set, _ = toy.make_data(96, "dynamic")
    cfg = TrainerConfig(run_dir=tmp_path / "run" / "mlp", epochs=1, batch_size=12, lr=1e-2,
                        seed=7, progress=False, device="cpu")  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="dgm_ext.train"):
        rows = Trainer(model, cfg).fit(train_set)
    messages = [r.getMessage() for r in caplog.records]
    assert any("was written by 2 processes, now 1: RNG streams are reseeded" in m
               for m in messages), messages  # fmt: skip
    # 72 training examples in batches of 12: 2 steps (24 examples) were left after step 4
    assert len(model.draws) == 2 and rows[-1]["step"] == 6
    seed_everything(7 + 0 + 7919 * (4 + 1))
    assert model.draws[0][0] == 1.0 + 0.01 * random.random()
    assert rows[-1]["train_loss"] == pytest.approx((2.0 * 24 + 4.0 * 24 + sum(model.losses)) / 72)
