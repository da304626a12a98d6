"""Interleaved timing of a realnvp-mnist MLP training step, gathered vs full coupling layout
(same weights, fused ops, fused Adam, batch 128): alternating rounds, medians, so that a
change of the machine's load hits both alike.

    python benchmarks/realnvp_layout_ratio.py [THREADS=2] [ROUNDS=8]
"""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_realnvp as b

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
x, noise = b._batch("mlp", "cpu")
steps = {lay: b._make_layout_step(lay, "cpu") for lay in b.LAYOUTS}
for lay in b.LAYOUTS:
    steps[lay](x, noise)
t = {lay: [] for lay in b.LAYOUTS}
for _r in range(int(sys.argv[2]) if len(sys.argv) > 2 else 8):
    for lay in b.LAYOUTS:
        t0 = time.perf_counter()
        steps[lay](x, noise)
        t[lay].append(time.perf_counter() - t0)
med = {k: statistics.median(v) for k, v in t.items()}
print(
    {k: round(v * 1000, 1) for k, v in med.items()},
    "ms; full/gathered =",
    round(med["full"] / med["gathered"], 3),
)
