"""dgm_ext: deep generative models on fused C++/CUDA PyTorch custom operators."""

from __future__ import annotations

import torch  # noqa: F401  (loads libtorch before the extension)

from dgm_ext import _console, _extension

_C = _extension.load(__name__, list(__path__))

from dgm_ext import ops  # noqa: E402  (registers fake kernels on the loaded extension)
from dgm_ext.networks import register_network  # noqa: E402  (users' networks in models)
from dgm_ext.persistence import load  # noqa: E402  (any model file -> its model)

_console.install()

__version__ = "0.1.0"


def build_info() -> dict:
    """Build information of the compiled extension.

    Keys: ``torch_version`` (torch built against), ``cuda`` and ``cuda_archs``, ``openmp``,
    ``cpu_isa_compiled`` and ``cpu_isa`` (the kernel set chosen for this processor),
    ``num_threads``, ``cxx_standard``.
    """
    return dict(_C.build_info())


__all__ = ["__version__", "build_info", "load", "ops", "register_network"]
