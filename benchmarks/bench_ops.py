"""pytest-benchmark timings of every op: dgm_ext vs the reference in eager mode and under
torch.compile, forward and forward+backward, same process and inputs, on every device
(the CPU, and CUDA when torch sees a GPU; select one with ``-k cpu`` / ``-k cuda``).

    pytest benchmarks/bench_ops.py --benchmark-json=benchmarks/ops.json
    python benchmarks/report.py benchmarks/ops.json      # ratio and GB/s tables per device

On CUDA a timed round is ``CUDA_CALLS`` back-to-back calls followed by
``torch.cuda.synchronize`` (report.py divides by ``extra_info["calls_per_round"]``).
DGM_EXT_BENCH_QUICK=1 shrinks every size (CI smoke run).
"""

from __future__ import annotations

import pytest
import torch
from cases import (
    CASES,
    DEVICES,
    QUICK,
    TRAINING_CASES,
    calls_per_round,
    device_name,
    floor_bytes,
    runner,
)

import dgm_ext

PROVIDERS = ["dgm_ext", "eager", "compile"]
MODES = ["fwd_bwd"] if QUICK else ["fwd", "fwd_bwd"]


def _group(name: str, device: str) -> str:
    if device == "cpu":
        return name
    return f"{name} | {device}, {calls_per_round(device)} calls/round"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("device", DEVICES)
def test_op(benchmark, device, case, provider, mode):
    if device == "cuda" and provider == "dgm_ext" and not dgm_ext.build_info()["cuda"]:
        pytest.skip("dgm_ext was built without CUDA kernels")
    if QUICK and provider == "compile" and case in TRAINING_CASES:
        pytest.skip("smoke run: the training-size cases' references compile like the others")
    torch.manual_seed(0)
    run = runner(case, provider, mode, device)
    for _ in range(2):  # warm-up (and compilation for the compile provider)
        run()
    benchmark.group = _group(f"{case.name} | {mode}", device)
    benchmark.extra_info.update(
        case=case.name,
        provider=provider,
        mode=mode,
        device=device,
        device_name=device_name(device),
        calls_per_round=calls_per_round(device),
        quick=QUICK,
        floor_bytes=floor_bytes(case, mode),
    )
    # A training-size call takes ~0.1-0.5 ms, less than the 4 ms scheduler tick of this VM:
    # a round of one call is either untouched or delayed by a whole tick, and the median of
    # 30 such rounds swung 0.65-1.8x between runs. A round of 50 calls averages over ticks.
    iterations = 50 if case in TRAINING_CASES and not QUICK else 1
    benchmark.extra_info["iterations"] = iterations
    benchmark.pedantic(run, rounds=3 if QUICK else 30, iterations=iterations, warmup_rounds=1)


@pytest.mark.parametrize("device", DEVICES)
def test_copy_bandwidth(benchmark, device):
    """Copy bandwidth of each device (read + write of a large float32 tensor): the memory floor
    the report compares every provider on that device against. On CUDA a device-to-device
    copy of 1 GiB (well beyond the L2 cache), synchronised."""
    if device == "cuda":
        n = (16 << 20) if QUICK else (256 << 20)  # float32 elements: 64 MiB / 1 GiB
    else:
        n = (1 << 20) if QUICK else (64 << 20)  # float32 elements: 4 MiB / 256 MiB
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    calls = calls_per_round(device)
    if device == "cuda":
        dev = torch.device(device)

        def run() -> None:
            for _ in range(calls):
                dst.copy_(src)
            torch.cuda.synchronize(dev)

    else:

        def run() -> None:
            dst.copy_(src)

    benchmark.group = _group("copy", device)
    benchmark.extra_info.update(
        case="copy",
        provider="copy",
        mode="copy",
        device=device,
        device_name=device_name(device),
        calls_per_round=calls,
        bytes=2 * 4 * n,
    )
    benchmark.pedantic(run, rounds=3 if QUICK else 15, iterations=1, warmup_rounds=1)
