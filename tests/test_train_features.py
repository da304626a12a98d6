"""Trainer features of issue 23: learning-rate schedules (exact on resume), gradient
accumulation (the mean gradient of the window), mixed precision (bf16 autocast with the fused
ops in float32; fp16 with a GradScaler whose state resumes)."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from _train_helpers import Regressor, cfg, regression_data
from torch import nn

from dgm_ext import ops
from dgm_ext.ops import reference
from dgm_ext.train import Trainer, load_checkpoint
from dgm_ext.train.checkpoint import atomic_save

pytestmark = pytest.mark.usefixtures("one_thread")


class LrLog(Regressor):
    """Records the learning rate in force at every training batch."""

    def __init__(self, stop_at: int | None = None) -> None:
        super().__init__()
        self.lrs: list[float] = []
        self.trainer: Trainer | None = None
        self.stop_at = stop_at

    def training_step(self, batch):
        if self.stop_at is not None and len(self.lrs) == self.stop_at:
            raise KeyboardInterrupt
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return super().training_step(batch)


def _fit(tmp_path, model, **kw):
    t = Trainer(model, cfg(tmp_path, **kw))
    model.trainer = t
    return t, t.fit(regression_data())


def test_cosine_with_warmup_follows_the_closed_form(tmp_path):
    m = LrLog()
    _fit(tmp_path, m, epochs=3, lr=1e-2, lr_schedule="cosine", warmup_steps=3, lr_min_ratio=0.1)
    total, warm = 12, 3  # 4 steps per epoch
    want = []
    for s in range(total):
        if s < warm:
            want.append(1e-2 * (s + 1) / warm)
        else:
            p = (s - warm) / (total - warm)
            want.append(1e-2 * (0.1 + 0.9 * (1 + math.cos(math.pi * p)) / 2))
    assert m.lrs == pytest.approx(want, rel=1e-12)


def test_step_schedule_matches_torch_steplr(tmp_path):
    m = LrLog()
    _fit(tmp_path, m, epochs=3, lr=1e-2, lr_schedule="step", lr_step_size=5, lr_gamma=0.5)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(()))], lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    want = []
    for _ in range(12):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert m.lrs == pytest.approx(want, rel=1e-12)


def test_a_schedule_resumes_exactly_and_a_resume_reports_no_change(tmp_path, caplog):
    kw = dict(epochs=3, lr=1e-2, lr_schedule="cosine", warmup_steps=2, checkpoint_every=3)
    full = LrLog()
    _fit(tmp_path / "full", full, **kw)
    first = LrLog(stop_at=7)  # interrupted in epoch 2; the last checkpoint is at step 6
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, first, **kw)
    again = LrLog()
    with caplog.at_level(logging.WARNING, logger="dgm_ext.train"):
        t, _ = _fit(tmp_path, again, **kw)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert first.lrs[:6] + again.lrs == full.lrs
    for a, b in zip(t.model.parameters(), full.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_changed_schedule_is_reported_on_resume(tmp_path, caplog):
    _fit(tmp_path, LrLog(), epochs=1, lr_schedule="cosine")
    with caplog.at_level(logging.WARNING, logger="dgm_ext.train"):
        _fit(tmp_path, LrLog(), epochs=2, lr_schedule="step", lr_step_size=2)
    assert "lr_schedule cosine -> step, lr_step_size None -> 2" in caplog.text


def _weights(model):
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(("n", "batch", "accumulate"), [(64, 16, 2), (80, 16, 3)])
def test_accumulation_equals_the_larger_batch(tmp_path, n, batch, accumulate):
    """k batches of b accumulated = one batch of k*b, also for the epoch's short last window
    (80 = 48 + 32 with b = 16, k = 3): the window's gradient is the mean over its examples."""
    data = regression_data(n)
    big = Regressor()
    tb = Trainer(big, cfg(tmp_path / "big", epochs=2, batch_size=batch * accumulate))
    hist_b = tb.fit(data)
    acc = Regressor()
    ta = Trainer(acc, cfg(tmp_path / "acc", epochs=2, batch_size=batch,
                           accumulate_grad_batches=accumulate))  # fmt: skip
    hist_a = ta.fit(data)
    assert ta.global_step == tb.global_step == 2 * math.ceil(n / (batch * accumulate))
    for a, b in zip(_weights(acc), _weights(big), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert [r["train_loss"] for r in hist_a] == pytest.approx(
        [r["train_loss"] for r in hist_b], rel=1e-5
    )


def test_accumulation_and_fp16_are_refused_for_custom_steps(tmp_path):
    class Custom(Regressor):
        def train_step(self, batch, ctx):
            return {}

    for kw in ({"accumulate_grad_batches": 2}, {"precision": "16"}):
        with pytest.raises(ValueError, match="need the default step"):
            Trainer(Custom(), cfg(tmp_path, epochs=1, **kw))


def test_fused_ops_run_in_float32_under_autocast():
    """Inside torch.autocast (bf16 and fp16) a Linear's half output goes into the ops as
    float32: the result is float32 and equals the float32 reference on the upcast inputs."""
    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(8, 12))
    for dtype in (torch.bfloat16, torch.float16):
        lin = nn.Linear(6, 12)
        h = torch.randn(8, 6)
        with torch.autocast("cpu", dtype=dtype):
            logits = lin(h)
            assert logits.dtype == dtype
            got = ops.bernoulli_log_prob(logits, x)
            mu = lin(h)[:, :4]
            kl = ops.kl_normal_std(mu, mu)
        assert got.dtype == kl.dtype == torch.float32
        torch.testing.assert_close(got, reference.bernoulli_log_prob(logits.float(), x))
        torch.testing.assert_close(kl, reference.kl_normal_std(mu.float(), mu.float()))
        with torch.autocast("cpu", dtype=dtype):  # float64 is not lowered
            assert ops.kl_normal_std(mu.double(), mu.double()).dtype == torch.float64


def test_bf16_trains_a_vae_with_the_fused_ops(tmp_path):
    from dgm_ext.data import ImageDataset
    from dgm_ext.vae import build_vae

    torch.manual_seed(0)
    images = torch.bernoulli(torch.rand(64, 1, 28, 28))
    data = ImageDataset(images, torch.zeros(64, dtype=torch.long), "static")
    rows = {}
    for precision in ("32", "bf16"):
        torch.manual_seed(0)
        vae = build_vae(arch="mlp", latent_dim=4, hidden=32)
        rows[precision] = Trainer(
            vae, cfg(tmp_path / precision, epochs=2, precision=precision)
        ).fit(data)
    for r32, r16 in zip(rows["32"], rows["bf16"], strict=True):
        assert math.isfinite(r16["train_loss"])
        assert r16["train_loss"] == pytest.approx(r32["train_loss"], rel=0.02)


def test_fp16_grad_scaler_state_is_checkpointed_and_restored(tmp_path):
    first = Trainer(Regressor(), cfg(tmp_path, epochs=1, precision="16"))
    first.fit(regression_data())
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    ck = load_checkpoint(last)
    assert ck["scaler"]["scale"] == first._scaler.get_scale()
    ck["scaler"]["scale"] = 1024.0  # as after more overflows
    atomic_save(ck, last)
    t = Trainer(Regressor(), cfg(tmp_path, epochs=1, precision="16"))
    t.fit(regression_data())  # finished: nothing trains, the state comes back
    assert t._scaler.get_scale() == 1024.0
