"""Several processes (``torchrun``): the device of each rank, the process group, DDP for the
default step, gradient averaging and broadcasts for models that drive their own updates."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "StepModule",
    "all_reduce_grads",
    "broadcast_from_rank0",
    "comm_device",
    "init_process_group",
    "resolve_device",
    "wrap_ddp",
]


def resolve_device(device: str | None) -> torch.device:
    """``config.device``, or ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU
    (``"cuda"`` without an index also means ``cuda:<LOCAL_RANK>``). Refuses a CUDA
    ordinal that is not visible, before any CUDA call is made with it."""
    local_rank = os.environ.get("LOCAL_RANK")
    if device is None:
        if not torch.cuda.is_available():
            return torch.device("cpu")
        dev = torch.device("cuda", int(local_rank or 0))
    else:
        dev = torch.device(device)
        if dev.type != "cuda":
            return dev
    from_rank = dev.index is None or device is None
    if dev.index is None:
        dev = torch.device("cuda", int(local_rank or 0))
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if dev.index >= count:
        if from_rank and local_rank is not None:
            what = f"LOCAL_RANK={local_rank}, so this process would use cuda:{dev.index},"
        else:
            what = f"TrainerConfig.device={device!r} asks for cuda:{dev.index}"
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        shown = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        gpus = f"{count} CUDA device is" if count == 1 else f"{count} CUDA devices are"
        cpu = (
            "to train on the CPU with the gloo backend instead, pass "
            "TrainerConfig(device='cpu') (on the command line: dgm-ext train/reproduce "
            "--device cpu)."
        )
        if count:
            cpu = (
                "Start at most one process per visible GPU (torchrun "
                f"--nproc_per_node={count}), or, {cpu}"
            )
        else:
            cpu = cpu[0].upper() + cpu[1:]
        raise RuntimeError(f"{what} but only {gpus} visible{shown}. {cpu}")
    return dev


def init_process_group(device: torch.device) -> tuple[int, int, bool]:
    """``(rank, world_size, owns)``: join the process group already initialised, or create
    one (NCCL on CUDA, gloo otherwise) when ``WORLD_SIZE > 1`` (``owns``: ours to destroy)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return dist.get_rank(), dist.get_world_size(), True
    return 0, 1, False


def comm_device(world_size: int, device: torch.device) -> torch.device:
    """Where collective buffers live: the GPU under NCCL, else the CPU."""
    if world_size > 1 and dist.get_backend() == "nccl":
        return device
    return torch.device("cpu")


class StepModule(nn.Module):
    """Routes ``forward(method, batch)`` to ``model.<method>(batch)`` so that DDP's
    gradient synchronisation (set up in ``forward``) covers ``training_step``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, method: str, batch: Any) -> Any:
        return getattr(self.model, method)(batch)


def wrap_ddp(model: nn.Module, device: torch.device, find_unused: bool) -> DistributedDataParallel:
    """``model`` in DDP, called as ``ddp("training_step", batch)``."""
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(
        StepModule(model), device_ids=ids, find_unused_parameters=find_unused
    )


def broadcast_from_rank0(tensors: Iterable[Tensor]) -> None:
    """Overwrite ``tensors`` on every rank with rank 0's (in place)."""
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t, 0)


def all_reduce_grads(params: Sequence[Tensor], world_size: int, device: torch.device) -> None:
    """Average ``.grad`` of ``params`` over ranks (one flat buffer per dtype; ``device``: where
    the buffer is reduced)."""
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for p in params:
        by_dtype.setdefault(p.dtype, []).append(p)
    for ps in by_dtype.values():
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ps]
        has = [float(p.grad is not None) for p in ps]
        flags_t = torch.tensor(has, dtype=ps[0].dtype, device=ps[0].device)
        flat = torch.cat([g.reshape(-1) for g in grads] + [flags_t]).to(device)
        dist.all_reduce(flat)
        flags = flat[-len(ps) :]
        flat = flat[: -len(ps)] / world_size
        offset = 0
        for p, f in zip(ps, flags.tolist(), strict=True):
            n = p.numel()
            if f > 0:
                p.grad = flat[offset : offset + n].view_as(p).to(p.device).clone()
            offset += n
