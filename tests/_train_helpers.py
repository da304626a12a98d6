"""Helpers for the trainer tests that run training in subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

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


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A file saved by train_toy.py (or a checkpoint), with every tensor on the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)
