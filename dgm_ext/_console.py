"""What dgm_ext says on the console when the user has not configured logging.

The library logs through ``logging.getLogger("dgm_ext...")``. Python shows only warnings
when no logging is configured, so a resume ("resumed from ... (epoch 3, step 1200)") or an
early stop would pass unseen from the Python API. Like PyTorch Lightning, dgm_ext therefore
attaches one stderr handler to its ``dgm_ext`` logger at INFO level; unlike a plain handler
it stays silent whenever the root logger has handlers (the application configured logging,
or pytest's log capture is active), so nothing is printed twice. Records that were already
written to the console another way (the trainer's per-epoch line under a progress bar)
carry ``extra={CONSOLE_DONE: True}`` and are skipped here.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["CONSOLE_DONE", "install"]

CONSOLE_DONE = "dgm_ext_console_done"


class _UnconfiguredOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, CONSOLE_DONE, False):
            return False
        return not logging.getLogger().hasHandlers()


class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (not the one at import: tests and tools swap
    it)."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(_UnconfiguredOnly())
        self.setFormatter(logging.Formatter("%(message)s"))

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # logging.StreamHandler.__init__ assigns it
        pass


def install() -> None:
    """Attach the console handler to the ``dgm_ext`` logger once (idempotent)."""
    logger = logging.getLogger("dgm_ext")
    if any(isinstance(h, _StderrHandler) for h in logger.handlers):
        return
    logger.addHandler(_StderrHandler())
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
