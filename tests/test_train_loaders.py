"""The Trainer on a user's DataLoader, IterableDataset or iterable of batches
(dgm_ext.train.loaders): the batches as given, one pass per epoch, exact mid-epoch resume
for an epoch-determined order, set_epoch each epoch, and what needs a length refused."""

from __future__ import annotations

import pytest
import torch
from _train_helpers import Regressor, cfg, regression_data
from torch.utils.data import DataLoader, IterableDataset

from dgm_ext.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def _plain_adam_loop(model: Regressor, batches: list, epochs: int, lr: float) -> None:
    """What a user would write: Adam over the given batches, in order, ``epochs`` times."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        for x, y in batches:
            opt.zero_grad()
            ((model.lin(x).squeeze(-1) - y) ** 2).mean().backward()
            opt.step()


def test_dataloader_batches_are_used_as_given(tmp_path):
    data = regression_data(40)
    loader = DataLoader(data, batch_size=8, shuffle=False)  # 5 batches, in order
    model = Regressor()
    hist = Trainer(model, cfg(tmp_path, epochs=3, lr=1e-2)).fit(loader)
    assert [r["step"] for r in hist] == [5, 10, 15]
    expected = Regressor()
    _plain_adam_loop(expected, [(x, y) for x, y in loader], 3, 1e-2)
    for a, b in zip(model.parameters(), expected.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class Stream(IterableDataset):
    """n examples, one at a time (an IterableDataset of examples, without a length)."""

    def __init__(self, n: int) -> None:
        self.data = regression_data(n)

    def __iter__(self):
        for i in range(len(self.data)):
            yield self.data[i]


def test_iterable_dataset_is_batched_with_the_config_batch_size(tmp_path):
    model = Regressor()
    hist = Trainer(model, cfg(tmp_path, epochs=2, batch_size=16, lr=1e-2)).fit(Stream(40))
    assert [r["step"] for r in hist] == [3, 6]  # 16 + 16 + 8 per pass
    expected = Regressor()
    data = regression_data(40)
    batches = [data[i : i + 16] for i in range(0, 40, 16)]
    _plain_adam_loop(expected, batches, 2, 1e-2)
    for a, b in zip(model.parameters(), expected.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class CrashAt(Regressor):
    def __init__(self, at: int | None) -> None:
        super().__init__()
        self.calls, self.at = 0, at

    def training_step(self, batch):
        self.calls += 1
        if self.calls == self.at:
            raise RuntimeError("crash")
        return super().training_step(batch)


def test_mid_epoch_resume_skips_the_batches_already_trained(tmp_path):
    loader = DataLoader(regression_data(48), batch_size=8, shuffle=False)  # 6 per epoch
    full = CrashAt(None)
    Trainer(full, cfg(tmp_path / "full", epochs=2, checkpoint_every=2)).fit(loader)
    crashed = CrashAt(10)  # epoch 2, batch 4: the last checkpoint is at step 8 (batch 2)
    with pytest.raises(RuntimeError, match="crash"):
        Trainer(crashed, cfg(tmp_path / "part", epochs=2, checkpoint_every=2)).fit(loader)
    resumed = CrashAt(None)
    t = Trainer(resumed, cfg(tmp_path / "part", epochs=2, checkpoint_every=2))
    t.fit(loader)
    assert resumed.calls == 4 and t.global_step == 12  # batches 3..6 of epoch 2
    for a, b in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


class EpochSampler(torch.utils.data.Sampler):
    """A sampler whose order depends on the epoch (as DistributedSampler's)."""

    def __init__(self, n: int) -> None:
        self.n, self.epochs = n, []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.epochs[-1])
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def test_set_epoch_is_called_every_epoch(tmp_path):
    sampler = EpochSampler(32)
    loader = DataLoader(regression_data(32), batch_size=16, sampler=sampler)
    Trainer(Regressor(), cfg(tmp_path, epochs=3)).fit(loader)
    assert sampler.epochs == [0, 1, 2]


def test_what_needs_a_length_is_refused(tmp_path):
    with pytest.raises(ValueError, match="accumulate_grad_batches > 1 needs a train_set"):
        Trainer(Regressor(), cfg(tmp_path, accumulate_grad_batches=2)).fit(Stream(8))
    with pytest.raises(ValueError, match=r"set TrainerConfig\.max_steps"):
        Trainer(Regressor(), cfg(tmp_path, lr_schedule="cosine")).fit(Stream(8))
    with pytest.raises(TypeError, match="train_set must be a map-style Dataset, a DataLoader"):
        Trainer(Regressor(), cfg(tmp_path)).fit(5)
    with pytest.raises(TypeError, match="val_set must be"):
        Trainer(Regressor(), cfg(tmp_path)).fit(regression_data(), 3.0)
    with pytest.raises(ValueError, match="yielded no batch"):
        Trainer(Regressor(), cfg(tmp_path / "empty")).fit(Stream(0))


def test_validation_on_a_dataloader(tmp_path):
    val = DataLoader(regression_data(24, seed=1), batch_size=5)
    model = Regressor()
    (row,) = Trainer(model, cfg(tmp_path, epochs=1)).fit(regression_data(), val)
    x, y = regression_data(24, seed=1).tensors
    with torch.no_grad():
        err = model.lin(x).squeeze(-1) - y
    assert row["val_loss"] == pytest.approx(float((err**2).mean()), rel=1e-5)
