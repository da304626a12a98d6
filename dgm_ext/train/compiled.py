"""The Trainer's opt-in compiled training step (``TrainerConfig.compile_step``).

The model's ``training_step`` (forward and loss, with the dgm_ext ops inside the graph) is
compiled by ``torch.compile``; AOTAutograd compiles its backward with it, and with
``compile_mode="reduce-overhead"`` both run as CUDA graphs on a GPU. Clipping and the
optimiser step stay eager: the fused Adam/AdamW kernel is already one pass over all
parameters.

The NaN guard without a host synchronisation
--------------------------------------------
The eager step reads ``bool(~isfinite(loss))`` on the host before every backward, which
stalls a GPU pipeline once per step. Here the test stays on the device: a sticky flag is
raised at the first non-finite loss (or gradient norm, with ``check_grads``) and handed to
the fused optimiser as ``found_inf``, which then skips the update (the mechanism
``GradScaler`` uses), for that step and every later one. The host reads the flag only where
it synchronises anyway (every ``log_every`` steps, before each checkpoint, at the end of
each epoch) and raises the same :class:`~dgm_ext.train.NonFiniteLossError` the eager step
raises, naming the first bad step and value. The weights are those from before that step,
and nothing is written after it, so no checkpoint ever holds non-finite weights.

An optimiser that cannot skip on the device (anything but torch's fused Adam/AdamW, e.g.
one a model's ``configure_optimizers`` builds itself) gets the eager guard: one host read
per step, before the backward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["COMPILE_MODES", "CompiledStep", "skips_on_device"]

# torch.compile's modes; None is its default mode
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """True when ``optimizer.step()`` honours a ``found_inf`` tensor (skips the update where
    it is 1 without a host read): torch's Adam and AdamW with ``fused=True``."""
    return isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)) and all(
        g.get("fused") for g in optimizer.param_groups
    )


class CompiledStep:
    """One optimisation step of a model with ``training_step`` and one optimiser.

    ``__call__(batch, step)`` returns the model's output dict. ``check()`` raises through
    ``raise_non_finite(name, value, step)`` if any step since the start was non-finite.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        mode: str | None,
        grad_clip: float | None,
        check_grads: bool,
        device: torch.device,
        check_now: Callable[[Tensor, str], None],
        raise_non_finite: Callable[[str, float, int], None],
    ) -> None:
        self._forward = torch.compile(model.training_step, mode=mode, dynamic=False)
        self.optimizer = optimizer
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.grad_clip = grad_clip
        self.check_grads = check_grads
        self.deferred = skips_on_device(optimizer)
        self._check_now = check_now
        self._raise = raise_non_finite
        # sticky device-side record of the first non-finite step (float32 flag: found_inf's
        # dtype); what = 0 for the loss, 1 for the gradient norm
        self.flag = torch.zeros((), dtype=torch.float32, device=device)
        self.first_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.first_value = torch.zeros((), dtype=torch.float64, device=device)
        self.first_what = torch.zeros((), dtype=torch.int64, device=device)

    def _record(self, value: Tensor, step: int, what: int) -> None:
        bad = ~torch.isfinite(value.detach()).all()
        newly = bad & (self.flag == 0)
        self.first_step = torch.where(newly, step, self.first_step)
        self.first_value = torch.where(
            newly, value.detach().reshape(-1)[0].to(torch.float64), self.first_value
        )
        self.first_what = torch.where(newly, what, self.first_what)
        self.flag = torch.maximum(self.flag, bad.to(torch.float32))

    def __call__(self, batch: Any, step: int) -> Mapping[str, Tensor]:
        out = self._forward(batch)
        if not isinstance(out, Mapping) or "loss" not in out:
            return out  # the trainer names the contract violation
        loss = out["loss"]
        if self.deferred:
            self._record(loss, step, 0)
        else:
            self._check_now(loss, "loss")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None or self.check_grads:
            max_norm = self.grad_clip if self.grad_clip is not None else math.inf
            norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
            if self.check_grads:
                if self.deferred:
                    self._record(norm, step, 1)
                else:
                    self._check_now(norm, "gradient norm of loss")
        if self.deferred:
            self.optimizer.found_inf = self.flag  # type: ignore[attr-defined]
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf  # type: ignore[attr-defined]
        else:
            self.optimizer.step()
        return out

    def check(self) -> None:
        """Raise (through ``raise_non_finite``) if a step so far was non-finite: one host
        read of the flag."""
        if self.deferred and bool(self.flag):
            what = "loss" if int(self.first_what) == 0 else "gradient norm of loss"
            self._raise(what, float(self.first_value), int(self.first_step))
