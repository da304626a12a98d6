"""pytest-benchmark timings of every op: dgm_ext vs the reference in eager mode and under
torch.compile, forward and forward+backward, same process and inputs.

    pytest benchmarks/bench_ops.py --benchmark-json=benchmarks/ops.json
    python benchmarks/report.py benchmarks/ops.json      # ratio table

DGM_EXT_BENCH_QUICK=1 shrinks every size (CI smoke run).
"""

from __future__ import annotations

import pytest
import torch
from cases import CASES, QUICK, floor_bytes, runner

PROVIDERS = ["dgm_ext", "eager", "compile"]
MODES = ["fwd_bwd"] if QUICK else ["fwd", "fwd_bwd"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_op(benchmark, case, provider, mode):
    torch.manual_seed(0)
    run = runner(case, provider, mode)
    for _ in range(2):  # warm-up (and compilation for the compile provider)
        run()
    benchmark.group = f"{case.name} | {mode}"
    benchmark.extra_info.update(
        case=case.name,
        provider=provider,
        mode=mode,
        quick=QUICK,
        floor_bytes=floor_bytes(case, mode),
    )
    benchmark.pedantic(run, rounds=3 if QUICK else 30, iterations=1, warmup_rounds=1)


def test_copy_bandwidth(benchmark):
    """Device copy bandwidth: the memory floor the ratio table compares against."""
    n = (1 << 20) if QUICK else (64 << 20)  # float32 elements: 4 MiB / 256 MiB
    src = torch.randn(n)
    dst = torch.empty_like(src)
    benchmark.group = "copy"
    benchmark.extra_info.update(case="copy", provider="copy", mode="copy", bytes=2 * 4 * n)
    benchmark.pedantic(
        lambda: dst.copy_(src), rounds=3 if QUICK else 15, iterations=1, warmup_rounds=1
    )
