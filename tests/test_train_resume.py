"""Resume. Exact resume after crashes: SIGKILL a training process twice (once resuming from an
epoch-boundary checkpoint, once from a mid-epoch one), resume in a new process and compare
the final parameters bit for bit with an uninterrupted run. The runs use the trainer's
default device (cuda:0 when CUDA is available, else the CPU); the script saves CPU copies.

In process: early-stopping state across a resume, ``resume=False``, checkpoints that cannot
be resumed (unknown format, optimiser count), a checkpoint without EMA, a checkpoint written
by a different number of processes, and a corrupt ``last.pt`` (fallback or clear error)."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from _train_helpers import Regressor, Scripted, cfg, load_state, regression_data, run_toy

from dgm_ext.train import Trainer, atomic_save, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


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


# ---------------------------------------------------------------------- in process
def _params(model):
    return [p.detach().cpu().clone() for p in model.parameters()]


def _files(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_early_stopping_state_survives_a_resume(tmp_path):
    # best at epoch 3, then 3 bad epochs (4, 5, 6): patience 3 stops after epoch 6, whether or
    # not the run is interrupted after epoch 4
    script = [5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 1.0, 0.5]
    data, val = regression_data(), regression_data(8)
    kw = {"patience": 3, "val_batch_size": 64}
    Trainer(Scripted(script[:4]), cfg(tmp_path, epochs=4, **kw)).fit(data, val)
    ckdir = tmp_path / "run" / "checkpoints"
    best = (ckdir / "best.pt").read_bytes()
    assert load_checkpoint(ckdir / "best.pt")["trainer"]["epoch"] == 3

    t = Trainer(Scripted(script[4:]), cfg(tmp_path, epochs=8, **kw))
    hist = t.fit(data, val)
    assert len(hist) == 6 and t.stopped_early
    assert (t.best, t.best_epoch, t.bad_epochs) == (3.0, 3, 3)
    assert (ckdir / "best.pt").read_bytes() == best  # epoch 5 (3.2) is no improvement on 3.0


def test_resume_false_starts_fresh_and_moves_the_earlier_run_aside(tmp_path, caplog):
    data = regression_data()
    Trainer(Regressor(), cfg(tmp_path, epochs=3, keep_last=2, checkpoint_every=3)).fit(data)
    run = tmp_path / "run"
    earlier = _files(run)
    assert "checkpoints/epoch-0003.pt" in earlier and "metrics.jsonl" in earlier

    model = Regressor()
    t = Trainer(model, cfg(tmp_path, epochs=1, resume=False))
    with caplog.at_level("WARNING", logger="dgm_ext.train"):
        hist = t.fit(data)
    assert len(hist) == 1 and t.global_step == 4  # from scratch, not from epoch 3
    fresh = Regressor()
    Trainer(fresh, cfg(tmp_path / "fresh", epochs=1)).fit(data)
    for a, b in zip(_params(model), _params(fresh), strict=True):
        assert torch.equal(a, b)
    (old,) = run.glob("old-*")  # nothing deleted: the earlier run is kept, byte for byte
    assert _files(old) == earlier
    assert f"moved to {old}" in caplog.text and "nothing was deleted" in caplog.text
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.pt"]  # no stale files
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert t.fit(data) == hist  # the same Trainer again: nothing to do, nothing moved
    assert len(list(run.glob("old-*"))) == 1


def test_unknown_checkpoint_format_is_refused(tmp_path):
    Trainer(Regressor(), cfg(tmp_path, epochs=1)).fit(regression_data())
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    ck = load_checkpoint(last)
    ck["format"] = "dgm_ext.train/0"
    atomic_save(ck, last)
    with pytest.raises(ValueError, match=r"unknown checkpoint format 'dgm_ext.train/0'") as e:
        Trainer(Regressor(), cfg(tmp_path, epochs=2)).fit(regression_data())
    assert str(last) in str(e.value) and "resume=False" in str(e.value)


def test_optimiser_count_mismatch_is_refused_before_anything_changes(tmp_path):
    Trainer(Regressor(), cfg(tmp_path, epochs=1)).fit(regression_data())

    class TwoOpt(Regressor):
        def configure_optimizers(self, config):
            return [torch.optim.SGD([self.lin.weight], 0.1), torch.optim.SGD([self.lin.bias], 0.1)]

        def train_step(self, batch, ctx):
            raise AssertionError("must not train")

    model = TwoOpt()
    init = _params(model)
    with pytest.raises(ValueError, match=r"run holds a run of a different model: .*last\.pt "
                                         r"holds 1 optimiser states but this model configures 2"
                                         r"\. Train it in a new run_dir"):  # fmt: skip
        Trainer(model, cfg(tmp_path, epochs=2)).fit(regression_data())
    for a, b in zip(_params(model), init, strict=True):
        assert torch.equal(a, b)  # the model was not half-loaded


def test_checkpoint_without_ema_resumed_with_ema(tmp_path, caplog):
    Trainer(Regressor(), cfg(tmp_path, epochs=2)).fit(regression_data())
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    saved = load_checkpoint(last)["model"]
    t = Trainer(Regressor(), cfg(tmp_path, epochs=2, ema_decay=0.5))
    with caplog.at_level("WARNING", logger="dgm_ext.train"):
        t.fit(regression_data())  # finished: resumes, nothing left to train
    assert f"{last} has no EMA state; the EMA restarts from the weights" in caplog.text
    assert t.ema.num_updates == 0 and t.ema.shadow.keys() == saved.keys()
    for k, v in saved.items():  # the restored weights, not the freshly initialised ones
        assert torch.equal(t.ema.shadow[k].cpu(), v), k
    # and it trains on with the EMA
    t = Trainer(Regressor(), cfg(tmp_path, epochs=3, ema_decay=0.5))
    t.fit(regression_data())
    assert t.ema.num_updates == 4 and load_checkpoint(last)["ema"]["num_updates"] == 4


class StopAt(Regressor):
    """Raises KeyboardInterrupt at the start of training step ``at`` (a crash in process);
    logs the mean of each batch's first input column (its epoch mean is that of the data,
    whatever the order)."""

    def __init__(self, at=None):
        super().__init__()
        self.at, self.calls = at, 0

    def training_step(self, batch):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        out = super().training_step(batch)
        out["x0"] = batch[0][:, 0].mean()
        return out


def test_resume_with_a_different_world_size(tmp_path, caplog):
    """A mid-epoch checkpoint written by 2 processes, resumed by 1: RNGs reseeded (warning),
    the epoch means still count the running sums of both ranks."""
    data = regression_data()  # 4 steps of 16 per epoch
    with pytest.raises(KeyboardInterrupt):
        Trainer(StopAt(at=4), cfg(tmp_path, epochs=2, checkpoint_every=3)).fit(data)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    ck = load_checkpoint(last)
    assert (ck["trainer"]["global_step"], ck["trainer"]["batch_in_epoch"]) == (3, 3)
    # as if two ranks had written it, each having seen the same 48 examples
    (acc,) = ck["accumulators"]
    ck["accumulators"], ck["rng"] = [acc, acc], [ck["rng"][0], ck["rng"][0]]
    ck["trainer"]["world_size"] = 2
    atomic_save(ck, last)

    t = Trainer(StopAt(), cfg(tmp_path, epochs=2))
    with caplog.at_level("WARNING", logger="dgm_ext.train"):
        hist = t.fit(data)
    assert f"{last} was written by 2 processes, now 1: RNG streams are reseeded" in caplog.text
    assert [r["step"] for r in hist] == [4, 8]
    x0 = data.tensors[0][:, 0].double()
    seen = float(acc["sums"]["x0"])  # sum over the 48 examples of the 3 steps before the stop
    assert acc["counts"]["x0"] == 48
    want = (2 * seen + (float(x0.sum()) - seen)) / (2 * 48 + 16)
    assert hist[0]["train_x0"] == pytest.approx(want, abs=1e-7)  # float32 batch means
    assert hist[1]["train_x0"] == pytest.approx(float(x0.mean()), abs=1e-7)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path.read_bytes()


def test_corrupt_last_checkpoint_resumes_from_the_newest_intact_one(tmp_path, caplog):
    data, val = regression_data(), regression_data(16)
    ref = Regressor()
    Trainer(ref, cfg(tmp_path / "ref", epochs=4)).fit(data, val)

    Trainer(Regressor(), cfg(tmp_path, epochs=3, keep_last=2)).fit(data, val)
    ckdir = tmp_path / "run" / "checkpoints"
    assert load_checkpoint(ckdir / "best.pt")["trainer"]["epoch"] == 3
    last = ckdir / "last.pt"
    corrupt = _truncate(last)  # e.g. a full disk, or a copy that stopped half way
    _truncate(ckdir / "epoch-0003.pt")
    # left: epoch-0002.pt (step 8) and best.pt (epoch 3, step 12): the newest is best.pt
    model = Regressor()
    t = Trainer(model, cfg(tmp_path, epochs=4, keep_last=2))
    with caplog.at_level("WARNING", logger="dgm_ext.train"):
        hist = t.fit(data, val)
    (aside,) = ckdir.glob("last.pt.corrupt-*")
    assert aside.read_bytes() == corrupt  # kept, byte for byte
    msg = caplog.text
    assert f"{last} is unreadable (" in msg
    assert f"resuming from {ckdir / 'best.pt'} (epoch 3, step 12)" in msg and aside.name in msg
    assert len(hist) == 4 and load_checkpoint(last)["trainer"]["epoch"] == 4
    for a, b in zip(_params(model), _params(ref), strict=True):
        assert torch.equal(a, b)  # as if nothing had happened


def test_corrupt_last_checkpoint_without_fallback_is_a_clear_error(tmp_path):
    data = regression_data()
    Trainer(Regressor(), cfg(tmp_path, epochs=1)).fit(data, data)
    ckdir = tmp_path / "run" / "checkpoints"
    last = ckdir / "last.pt"
    corrupt = _truncate(last)
    best = _truncate(ckdir / "best.pt")
    with pytest.raises(RuntimeError) as e:
        Trainer(Regressor(), cfg(tmp_path, epochs=2)).fit(data, data)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"cannot resume: {last} is unreadable (")
    assert "best.pt (unreadable: " in msg
    assert "resume=False" in msg and "another run_dir" in msg
    assert last.read_bytes() == corrupt and (ckdir / "best.pt").read_bytes() == best
    assert sorted(p.name for p in ckdir.iterdir()) == ["best.pt", "last.pt"]
    # the way out the message gives
    Trainer(Regressor(), cfg(tmp_path, epochs=1, resume=False)).fit(data, data)
    (old,) = (tmp_path / "run").glob("old-*")
    assert (old / "checkpoints" / "last.pt").read_bytes() == corrupt
    assert load_checkpoint(last)["trainer"]["epoch"] == 1
