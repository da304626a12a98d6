"""The Trainer's opt-in compiled step (``TrainerConfig.compile_step``): it trains like the
eager step, and its NaN guard, kept on the device, still stops at the first non-finite step
with that step's weights and never lets a checkpoint hold non-finite weights."""

from __future__ import annotations

import pytest
import torch
from _train_helpers import cfg
from torch import nn
from torch.utils.data import TensorDataset

from dgm_ext import ops
from dgm_ext.train import NonFiniteLossError, Trainer, TrainerConfig, load_checkpoint
from dgm_ext.train.compiled import skips_on_device

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.usefixtures("one_thread"),
]


class TinyVAE(nn.Module):
    """A VAE of 6 binary pixels whose loss runs through three dgm_ext ops (so they sit in
    the compiled graph); the noise comes with the batch, so eager and compiled steps see the
    same numbers."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Linear(6, 4)
        self.dec = nn.Linear(2, 6)

    def training_step(self, batch):
        x, eps = batch
        mu, logvar = self.enc(x).chunk(2, dim=-1)
        z = ops.reparameterize(mu, logvar, eps)
        rec = -ops.bernoulli_log_prob(self.dec(z), x).sum(-1)
        kl = ops.kl_normal_std(mu, logvar).sum(-1)
        return {"loss": (rec + kl).mean(), "kl": kl.mean()}


class Poisoned(TinyVAE):
    """Finite in epoch 1; from epoch 2 on, the batch holding the sample whose third column
    is NaN has a NaN loss (the hook arms a buffer, which a compiled graph reads as data)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("armed", torch.zeros(()))

    def training_step(self, batch):
        x, eps, poison = batch
        out = super().training_step((x, eps))
        out["loss"] = out["loss"] + torch.where(self.armed > 0, poison, 0.0).sum()
        return out

    def on_epoch_end(self, trainer, epoch):
        self.armed.fill_(1.0)


def vae_data(n: int = 64, nan_at: int | None = None) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(n, 6, generator=g) < 0.4).float()
    eps = torch.randn(n, 2, generator=g)
    if nan_at is None:
        return TensorDataset(x, eps)
    poison = torch.zeros(n)
    poison[nan_at] = float("nan")
    return TensorDataset(x, eps, poison)


def _fit(tmp_path, data, model=None, **kw):
    model = model if model is not None else TinyVAE()
    trainer = Trainer(model, cfg(tmp_path, **kw))
    return model, trainer, trainer.fit(data)


def test_compiled_step_trains_like_the_eager_step(tmp_path):
    data = vae_data()
    eager, _, rows_e = _fit(tmp_path / "e", data, epochs=2, grad_clip=1.0, ema_decay=0.9)
    comp, t, rows_c = _fit(
        tmp_path / "c", data, epochs=2, grad_clip=1.0, ema_decay=0.9, compile_step=True
    )
    assert t._compiled is not None and t._compiled.deferred  # the fused Adam skips on device
    for re, rc in zip(rows_e, rows_c, strict=True):
        assert rc["step"] == re["step"]
        assert rc["train_loss"] == pytest.approx(re["train_loss"], rel=1e-4)
        assert rc["train_kl"] == pytest.approx(re["train_kl"], rel=1e-4)
    for pe, pc in zip(eager.parameters(), comp.parameters(), strict=True):
        torch.testing.assert_close(pc, pe, rtol=1e-4, atol=1e-5)
    # the EMA moved once per step, as in the eager step
    ema_e = load_checkpoint(tmp_path / "e" / "run" / "checkpoints" / "last.pt")["ema"]
    ema_c = load_checkpoint(tmp_path / "c" / "run" / "checkpoints" / "last.pt")["ema"]
    torch.testing.assert_close(ema_c, ema_e, rtol=1e-4, atol=1e-5)


def _eager_failure(tmp_path) -> tuple[TensorDataset, Poisoned, NonFiniteLossError]:
    """A dataset whose NaN batch is an inner batch of epoch 2 (steps 5-7 of 4 + 4), found
    by the eager guard, with the eager model as it stood when the guard fired."""
    for nan_at in range(64):
        data, model = vae_data(nan_at=nan_at), Poisoned()
        with pytest.raises(NonFiniteLossError) as err:
            _fit(tmp_path / f"probe{nan_at}", data, model, epochs=3)
        if err.value.step in (5, 6, 7):
            return data, model, err.value
    raise AssertionError("no sample lands in an inner batch of epoch 2")


def test_nan_guard_holds_under_compile(tmp_path):
    data, eager_model, eager_err = _eager_failure(tmp_path)
    assert eager_err.epoch == 2
    model = Poisoned()
    trainer = Trainer(model, cfg(tmp_path / "c", epochs=3, log_every=1000, compile_step=True))
    with pytest.raises(
        NonFiniteLossError,
        match=rf"Non-finite loss \(nan\) at epoch 2, step {eager_err.step}; training stopped",
    ) as err:
        trainer.fit(data)
    assert (err.value.name, err.value.epoch, err.value.step) == ("loss", 2, eager_err.step)
    # Reported at the end of epoch 2 (log_every is large), after the later steps had run:
    # their updates were skipped on the device, so the weights are those before the bad step.
    assert trainer.global_step == 8
    for pe, pc in zip(eager_model.parameters(), model.parameters(), strict=True):
        assert torch.isfinite(pc).all()
        torch.testing.assert_close(pc, pe, rtol=1e-4, atol=1e-5)
    # nothing was written after the bad step: last.pt is epoch 1's, finite
    last = tmp_path / "c" / "run" / "checkpoints" / "last.pt"
    assert err.value.checkpoint == last
    ck = load_checkpoint(last)
    assert ck["trainer"]["epoch"] == 1 and ck["trainer"]["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in ck["model"].values())
    assert len((tmp_path / "c" / "run" / "metrics.jsonl").read_text().splitlines()) == 1


class EagerAdam(Poisoned):
    """An optimiser that cannot skip on the device: the compiled step checks on the host."""

    def configure_optimizers(self, config):
        return torch.optim.Adam(self.parameters(), lr=config.lr, foreach=False)


def test_optimizer_without_device_skip_is_checked_every_step(tmp_path):
    data, _, eager_err = _eager_failure(tmp_path)
    model = EagerAdam()
    trainer = Trainer(model, cfg(tmp_path / "c", epochs=3, log_every=1000, compile_step=True))
    assert not skips_on_device(trainer.optimizers[0])
    with pytest.raises(NonFiniteLossError, match=rf"epoch 2, step {eager_err.step};"):
        trainer.fit(data)
    assert trainer.global_step == eager_err.step - 1  # stopped at once, not at the epoch end


def test_compile_step_config_errors(tmp_path):
    with pytest.raises(ValueError, match="compile_mode"):
        TrainerConfig(run_dir=tmp_path, compile_mode="fastest")

    class Custom(TinyVAE):
        def train_step(self, batch, ctx):
            return {}

    with pytest.raises(ValueError, match=r"compile_step .* train_step"):
        Trainer(Custom(), cfg(tmp_path, compile_step=True))


class InfGrad(TinyVAE):
    def training_step(self, batch):
        out = super().training_step(batch)
        b = self.dec.bias
        out["loss"] = out["loss"] + torch.sqrt(b - b.detach()).sum()  # finite, gradient inf
        return out


def test_gradient_check_is_deferred_too(tmp_path):
    model = InfGrad()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(model, cfg(tmp_path, epochs=1, check_grads=True, compile_step=True))
    with pytest.raises(NonFiniteLossError, match=r"gradient norm of loss \(inf\) at epoch 1, "
                       r"step 1;") as err:  # fmt: skip
        trainer.fit(vae_data())
    assert err.value.step == 1 and trainer.global_step == 4
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.cpu(), b)  # no update was applied, not even the first


def _one_graph(model: nn.Module, batch) -> None:
    explained = torch._dynamo.explain(model.training_step)(batch)
    reasons = [str(b.reason)[:200] for b in explained.break_reasons]
    assert explained.graph_count == 1 and not reasons, reasons


@pytest.mark.parametrize(
    "kw",
    [{"arch": "mlp"}, {"arch": "conv"}, {"arch": "mlp", "flow_length": 2},
     {"arch": "mlp", "likelihood": "categorical"}],
    ids=["mlp", "conv", "flow", "categorical"],
)  # fmt: skip
def test_vae_training_step_is_one_graph(kw):
    """A graph break (a host read, an untraceable call such as importlib) splits the compiled
    step into pieces with eager glue between them: the compiled step got slower than the
    eager one while the VAE resolved its op backend with importlib inside training_step."""
    from dgm_ext.vae import build_vae

    torch.manual_seed(0)
    model = build_vae(latent_dim=4, **({} if kw["arch"] == "conv" else {"hidden": 16}), **kw)
    x = torch.randint(0, 256, (4, 1, 28, 28))
    if kw.get("likelihood") != "categorical":
        x = (x > 128).float()
    _one_graph(model, (x, None))


@pytest.mark.parametrize("arch", ["mlp", "multiscale"])
def test_realnvp_training_step_is_one_graph(arch):
    """No host read of the pixel-range check inside a compiled step (an async assertion)."""
    from dgm_ext.flows.realnvp import build_realnvp

    torch.manual_seed(0)
    kw = {"hidden": 16} if arch == "mlp" else {"scales": 2, "channels": 4, "blocks": 1}
    model = build_realnvp(arch=arch, **kw)
    _one_graph(model, (torch.randint(0, 256, (4, 1, 28, 28)), None))


def test_pixel_range_is_checked_under_compile():
    from dgm_ext.flows.image import dequantize

    f = torch.compile(dequantize, fullgraph=True)
    assert f(torch.tensor([[0, 255]]), noise=torch.zeros(1, 2)).tolist() == [[0.0, 255 / 256]]
    with pytest.raises(RuntimeError, match=r"x must lie in \[0, 255\]"):
        f(torch.tensor([[0, 256]]), noise=torch.zeros(1, 2))
