"""Helpers for the trainer tests: tiny in-process models, and running training in
subprocesses (tests/scripts/train_toy.py, alone or as several ranks)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import TensorDataset

from dgm_ext.train import TrainerConfig

SCRIPT = Path(__file__).resolve().parent / "scripts" / "train_toy.py"


def subprocess_env() -> dict[str, str]:
    """Environment for child processes: the same import path as this interpreter (so they
    import the same dgm_ext), one thread, no downloads, loopback only."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["OMP_NUM_THREADS"] = "1"
    env["DGM_EXT_NO_DOWNLOAD"] = "1"
    env["MASTER_ADDR"] = "127.0.0.1"
    env["GLOO_SOCKET_IFNAME"] = env.get("GLOO_SOCKET_IFNAME", "lo")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(k, None)
    return env


def run_toy(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run tests/scripts/train_toy.py in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Two or more visible GPUs: ranks use cuda:<rank> and NCCL; otherwise the CPU and gloo.
ON_GPUS = torch.cuda.is_available() and torch.cuda.device_count() >= 2


def _toy_rank(rank: int, world_size: int, port: int, argv: list[str]) -> None:
    """One rank of :func:`run_ranks`: the environment torchrun would set, then the toy
    script's ``main`` (nothing initialises a process group before the Trainer does)."""
    os.environ.update(
        WORLD_SIZE=str(world_size), RANK=str(rank), LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        OMP_NUM_THREADS="1", DGM_EXT_NO_DOWNLOAD="1",
    )  # fmt: skip
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    spec = importlib.util.spec_from_file_location("train_toy", SCRIPT)
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)
    toy.main(argv)


def start_method() -> str:
    """How :func:`run_ranks` starts ranks: ``fork`` (fast: torch is already imported) unless
    they use GPUs or this process has initialised CUDA (CUDA does not survive a fork)."""
    if ON_GPUS or torch.cuda.is_initialized():
        return "spawn"
    return "fork"


def _warm_up() -> None:
    """Import here what every rank would otherwise import lazily on its first optimiser
    step (torch._dynamo, sympy: seconds), so that forked ranks do not each pay for it."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([p])
    p.sum().backward()
    opt.step()


def run_ranks(*argv: str, nprocs: int = 2, timeout: float = 120) -> BaseException | None:
    """Run ``train_toy.main(argv)`` as ``nprocs`` ranks of one job, started the way torchrun
    starts them (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``/``MASTER_*`` in the environment), so the
    Trainer sets the process group up and tears it down itself.

    The ranks are forked from this interpreter or spawned (see :func:`start_method`).
    Returns ``None`` when every rank succeeded, else the error ``torch.multiprocessing``
    reports for the first rank that failed (``ProcessRaisedException`` with its traceback,
    or ``ProcessExitedException`` with its exit code/signal; the other ranks are then
    terminated). Raises ``TimeoutError`` (after killing the ranks) when they have not
    finished within ``timeout`` seconds: a hang.
    """
    method = start_method()
    if method == "fork":
        _warm_up()
    ctx = mp.start_processes(
        _toy_rank,
        args=(nprocs, free_port(), list(argv)),
        nprocs=nprocs,
        join=False,
        start_method=method,
    )
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{nprocs} ranks of train_toy.py {' '.join(argv)} still "
                                   f"running after {timeout} s (a hang?)")  # fmt: skip
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
        return exc
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
            p.join(5)
    return None


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A file saved by train_toy.py (or a checkpoint), with every tensor on the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


# ----------------------------------------------------------- in-process tiny models
def regression_data(n: int = 64, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return TensorDataset(x, x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1)


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 1)

    def training_step(self, batch):
        x, y = batch
        err = self.lin(x).squeeze(-1) - y
        return {"loss": (err**2).mean(), "mae": err.abs().mean()}


class Scripted(Regressor):
    """Validation loss follows a script, one value per epoch."""

    def __init__(self, script) -> None:
        super().__init__()
        self.script, self.calls = list(script), 0

    def validation_step(self, batch):
        self.calls += 1
        return {"loss": torch.tensor(self.script[self.calls - 1])}


class InterruptAt(Regressor):
    """Raises KeyboardInterrupt (Ctrl-C) at the start of its ``at``-th training step."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def training_step(self, batch):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().training_step(batch)


def cfg(tmp_path: Path, **kw) -> TrainerConfig:
    """A TrainerConfig writing to ``tmp_path / "run"`` (no progress bars, batch 16)."""
    kw.setdefault("progress", False)
    kw.setdefault("batch_size", 16)
    return TrainerConfig(run_dir=tmp_path / "run", **kw)
