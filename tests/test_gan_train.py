"""GAN training through dgm_ext.train.Trainer: the critic/generator schedule, the generator
EMA, NaN guard, save/load, exact resume after SIGKILL, and DDP (gloo on the CPU)."""

from __future__ import annotations

import json
import signal

import pytest
import torch
import torch.nn.functional as F
from _train_helpers import ON_GPUS, load_state, run_ranks, run_toy

from dgm_ext.data import ImageDataset
from dgm_ext.gan import GAN, GANConfig, GeneratorEMA, load_gan, save_gan
from dgm_ext.train import NonFiniteLossError, Trainer, TrainerConfig

DEVICE_ARGS = [] if ON_GPUS else ["--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n: int = 48) -> ImageDataset:
    g = torch.Generator().manual_seed(3)
    return ImageDataset(torch.rand(n, 1, 4, 4, generator=g), torch.zeros(n, dtype=torch.long))


def _gan(**kw) -> GAN:
    torch.manual_seed(0)
    return GAN(GANConfig(image_shape=(1, 4, 4), **kw))


def _cfg(tmp_path, **kw) -> TrainerConfig:
    kw.setdefault("device", "cpu")
    return TrainerConfig(run_dir=tmp_path / "run", batch_size=8, progress=False, **kw)


# ------------------------------------------------------------------ schedule and EMA
@pytest.mark.parametrize("critic_steps", [1, 3])
def test_generator_steps_once_per_critic_steps_and_ema_follows_it(tmp_path, critic_steps):
    model = _gan(critic_steps=critic_steps, penalty="gp", penalty_weight=1.0)
    trainer = Trainer(model, _cfg(tmp_path, epochs=2, ema_decay=0.9))
    jsd_per_step = _record_jsd_from_critic_logits(model)
    rows = trainer.fit(_data())  # 6 batches per epoch: an epoch is one critic pass
    assert trainer.global_step == 12
    opt_c, opt_g = trainer.optimizers
    critic_updates = opt_c.state[next(model.critic.parameters())]["step"]
    generator_updates = opt_g.state[next(model.generator.parameters())]["step"]
    assert int(critic_updates) == 12
    assert int(generator_updates) == 12 // critic_steps
    assert isinstance(trainer.ema, GeneratorEMA)
    assert trainer.ema.num_updates == 12 // critic_steps  # once per generator step
    assert all(p.requires_grad for p in model.critic.parameters())
    assert {"train_critic_loss", "train_generator_loss", "train_jsd", "train_penalty"} <= set(
        rows[0]
    )
    # the logged metric is the epoch mean of ½(E log σ(C(x)) + E log(1 - σ(C(G(z))))) + log 2
    # over the critic steps, each from the logits the critic gave on that step's batches
    assert [e for e, _ in jsd_per_step] == [0] * 6 + [1] * 6
    for row in rows:
        want = sum(v for e, v in jsd_per_step if e == row["epoch"] - 1) / 6
        assert row["train_jsd"] == pytest.approx(want, rel=1e-6, abs=1e-7)


def _record_jsd_from_critic_logits(model: GAN) -> list[tuple[int, float]]:
    """Wrap ``model.train_step`` so that each step appends (epoch, JSD estimate) computed here
    from the critic's outputs on the step's real and fake batches (its first two calls)."""
    seen: list[torch.Tensor] = []
    model.critic.register_forward_hook(lambda m, args, out: seen.append(out.detach().double()))
    step, log2 = model.train_step, torch.log(torch.tensor(2.0, dtype=torch.float64))
    per_step: list[tuple[int, float]] = []

    def train_step(batch, ctx):
        seen.clear()
        out = step(batch, ctx)
        real, fake = seen[0], seen[1]
        jsd = 0.5 * (F.logsigmoid(real).mean() + F.logsigmoid(-fake).mean()) + log2
        per_step.append((ctx.epoch, float(jsd)))
        return out

    model.train_step = train_step
    return per_step


def test_first_generator_step_follows_critic_steps_critic_steps(tmp_path):
    model = _gan(critic_steps=3)
    trainer = Trainer(model, _cfg(tmp_path, epochs=None, max_steps=2))
    trainer.fit(_data())
    assert not trainer.optimizers[1].state  # two critic steps, no generator step yet
    trainer.config.max_steps = 3
    trainer.fit(_data())
    assert int(trainer.optimizers[1].state[next(model.generator.parameters())]["step"]) == 1


def test_ema_copies_batchnorm_buffers_and_averages_weights(tmp_path):
    model = _gan(critic_steps=1)
    trainer = Trainer(model, _cfg(tmp_path, epochs=1, ema_decay=0.5))
    start = {k: v.clone() for k, v in model.generator.state_dict().items()}
    trainer.fit(_data(16))  # two generator steps
    ema, live = trainer.ema.shadow, model.generator.state_dict()
    bn = [k for k in live if "running_mean" in k]
    assert bn and all(torch.equal(ema[k], live[k]) for k in bn)
    assert not torch.equal(ema["net.0.weight"], live["net.0.weight"])  # averaged, not copied
    assert not torch.equal(ema["net.0.weight"], start["net.0.weight"])


def test_generator_step_uses_the_updated_critic(tmp_path):
    """The generator's loss is computed after the critic's step: with a critic learning rate
    large enough to change its outputs, replaying the step against the *old* critic gives
    another generator gradient."""
    model = _gan(lr_critic=0.5)
    model.critic.net[3].p = model.critic.net[6].p = 0.0  # no dropout: reproducible replays
    trainer = Trainer(model, _cfg(tmp_path, epochs=1, max_steps=1))
    old_critic = {k: v.clone() for k, v in model.critic.state_dict().items()}
    torch.manual_seed(11)
    seen = {}

    def spy(module, args, output):
        seen["critic_bias"] = module.bias.detach().clone()

    handle = model.critic.net[-1].register_forward_hook(spy)
    batch = (_data(8).images,)
    out = model.train_step(batch, trainer._ctx)
    handle.remove()
    assert "generator_loss" in out
    assert not torch.equal(seen["critic_bias"], old_critic["net.7.bias"])
    assert torch.equal(seen["critic_bias"], model.critic.net[-1].bias)


def test_non_finite_critic_loss_stops_with_its_name(tmp_path):
    model = _gan()
    with torch.no_grad():
        model.critic.net[-1].bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="critic loss"):
        Trainer(model, _cfg(tmp_path, epochs=1)).fit(_data(16))
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"GANConfig\.loss"):
        GANConfig(loss="kl")
    with pytest.raises(ValueError, match="penalty_weight"):
        GANConfig(penalty="r1")
    with pytest.raises(ValueError, match=r"GANConfig\.critic_steps"):
        GANConfig(critic_steps=0)
    GANConfig(arch="dcgan", image_shape=(1, 28, 28))  # any square size with a factor 2
    for bad in ((3, 30, 31), (3, 15, 15), (28, 28)):
        with pytest.raises(ValueError, match="image_shape"):
            GANConfig(arch="dcgan", image_shape=bad)
    for bad in (1, -1, True):
        with pytest.raises(ValueError, match=r"GANConfig\.num_classes"):
            GANConfig(num_classes=bad)


def test_save_load_roundtrip_with_and_without_ema(tmp_path):
    model = _gan(loss="w1", penalty="r1", penalty_weight=0.5)
    trainer = Trainer(model, _cfg(tmp_path, epochs=1, ema_decay=0.5))
    trainer.fit(_data(16))
    z = torch.randn(5, 100)
    loaded = load_gan(save_gan(model, tmp_path / "live.pt"))
    assert loaded.config == model.config and not loaded.generator.training
    assert torch.equal(loaded.decode(z), model.decode(z))
    ema_file = load_gan(save_gan(model, tmp_path / "ema.pt", ema=trainer.ema))
    with trainer.ema.applied():
        expected = model.decode(z)
    assert torch.equal(ema_file.decode(z), expected)
    assert not torch.equal(expected, model.decode(z))
    assert model.generator.training  # decode restores the mode
    with pytest.raises(ValueError, match="not a dgm_ext GAN file"):
        torch.save({"x": 1}, tmp_path / "other.pt")
        load_gan(tmp_path / "other.pt")


def test_sample_is_in_unit_range_and_seeded():
    model = _gan()
    a = model.sample(7, generator=torch.Generator().manual_seed(1), batch_size=3)
    b = model.sample(7, generator=torch.Generator().manual_seed(1))
    c = model.sample(7, generator=torch.Generator().manual_seed(1))
    assert a.shape == (7, 1, 4, 4) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(b, c)
    torch.testing.assert_close(a, b)  # the same codes; only the GEMM blocking differs


# ----------------------------------------------------------------- crash and resume
def test_gan_sigkill_then_resume_is_bit_identical(tmp_path):
    """The real MLP GAN (dropout, BatchNorm, R1, 2 critic steps, EMA): killed mid-epoch after a
    step checkpoint and resumed, it ends with the uninterrupted run's weights, optimiser-
    driven EMA and metrics, bit for bit."""
    base = ["--models", "gan", "--epochs", "3", "--ema", "0.9", "--num-examples", "128"]
    ref = run_toy("--run-dir", str(tmp_path / "ref"), "--out", str(tmp_path / "ref.pt"), *base)
    assert ref.returncode == 0, ref.stderr
    args = ["--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out.pt"), *base]
    # 96 training examples / 16 = 6 steps per epoch; checkpoints at steps 6, 9, 12; dies at 14
    crashed = run_toy(*args, "--checkpoint-every", "9", "--kill-at-step", "14")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    ck = load_state(tmp_path / "run" / "gan" / "checkpoints" / "last.pt")
    assert (ck["trainer"]["epoch"], ck["trainer"]["global_step"]) == (2, 12)
    crashed = run_toy(*args, "--checkpoint-every", "5", "--kill-at-step", "4")  # 15, dies at 16
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    ck = load_state(tmp_path / "run" / "gan" / "checkpoints" / "last.pt")
    assert (ck["trainer"]["global_step"], ck["trainer"]["batch_in_epoch"]) == (15, 3)
    resumed = run_toy(*args)
    assert resumed.returncode == 0, resumed.stderr
    want, got = load_state(tmp_path / "ref.pt")["gan"], load_state(tmp_path / "out.pt")["gan"]
    assert want.keys() == got.keys() and any(k.startswith("ema.") for k in got)
    for k in want:
        assert torch.equal(got[k], want[k]), k

    def rows(d):
        lines = (d / "gan" / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(r).items() if k != "time_s"} for r in lines]

    assert rows(tmp_path / "run") == rows(tmp_path / "ref")


def test_gan_ddp_two_ranks_trainer_owned_group(tmp_path):
    """Two ranks started like torchrun: the trainer sets up and destroys the process group,
    gradients of both optimisers are averaged, rank 0's BatchNorm buffers are broadcast
    before each step (plain BatchNorm: SyncBatchNorm needs GPUs), so both ranks end with
    the same weights; the per-epoch metrics are written once."""
    reports = tmp_path / "reports"
    reports.mkdir()
    err = run_ranks("--models", "gan", "--run-dir", str(tmp_path / "ddp"), "--out",
                    str(tmp_path / "ddp.pt"), "--epochs", "2", "--num-examples", "64",
                    "--batch-size", "8", "--ema", "0.9", "--report-dir", str(reports),
                    *DEVICE_ARGS)  # fmt: skip
    assert err is None, err
    reps = [json.loads((reports / f"gan-rank{r}.json").read_text()) for r in range(2)]
    for r, rep in enumerate(reps):
        assert (rep["trainer_rank"], rep["world_size"]) == (r, 2)
        assert rep["process_group_after_fit"] is False
    # buffers are broadcast at the start of each step, so compare the parameters only
    model = load_state(tmp_path / "ddp.pt")["gan"]
    keys = [k for k in model if not k.startswith("ema.")]
    sums = zip(keys, reps[0]["state_checksum"], reps[1]["state_checksum"], strict=True)
    params = [(k, a, b) for k, a, b in sums if "running" not in k and "num_batches" not in k]
    assert len(params) > 10
    assert all(a == b for _, a, b in params), params
    lines = (tmp_path / "ddp" / "gan" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in lines] == [3, 6]  # 48 examples / (2 ranks × 8)


def test_sync_batchnorm_option(tmp_path, monkeypatch):
    """The generator's BatchNorm layers become SyncBatchNorm; a single process trains with them
    (plain BatchNorm behaviour); a multi-process CPU run is refused with a clear message."""
    import dgm_ext.gan.gan as gan_module

    model = _gan(sync_batchnorm=True)
    kinds = {type(m) for m in model.generator.modules()}
    assert torch.nn.SyncBatchNorm in kinds and torch.nn.BatchNorm1d not in kinds
    plain = _gan()
    plain.load_state_dict(model.state_dict())
    Trainer(model, _cfg(tmp_path / "a", epochs=1)).fit(_data(16))
    Trainer(plain, _cfg(tmp_path / "b", epochs=1)).fit(_data(16))
    for (k, a), b in zip(model.state_dict().items(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)
    monkeypatch.setattr(gan_module, "_distributed", lambda: True)
    with pytest.raises(ValueError, match="sync_batchnorm=True needs CUDA"):
        Trainer(_gan(sync_batchnorm=True), _cfg(tmp_path / "c", epochs=1)).fit(_data(16))
