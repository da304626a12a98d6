"""Peak resident memory of evaluating folders of images (issue 24: 50 000 32x32 images < 2 GB).

    python benchmarks/bench_metrics_folder.py            # the full run: 50 000 vs 50 000 images
    DGM_EXT_BENCH_QUICK=1 pytest benchmarks/bench_metrics_folder.py   # CI smoke run: 100

Writes synthetic 32x32 RGB PNG files (seeded noise, ``A`` and ``B``) to a temporary folder and
runs, each in a fresh Python subprocess that reports its own peak RSS (``VmHWM``; Linux's
``ru_maxrss`` would also count the pytest process it was forked from) and that
of its largest decoding worker (``RUSAGE_CHILDREN``; a forked worker's RSS counts the pages it
shares with the main process), while this process samples the peak PSS of the whole tree
(main + workers, shared pages counted once):

* ``pipeline`` -- ``folder_features(A)``, ``folder_features(B)`` (2 workers, batch 50, every
  image resized to 299x299 with the pytorch-fid convention, as for Inception) and
  ``compare(..., fid, kid, is)``, with a stand-in network of Inception's interface: 3x299x299
  in, 2048 float32 features and 1008 probabilities out, but cheap (average pool + two linear
  maps), so the 100 000 images run in minutes on a CPU. Everything the pipeline keeps (decoded
  and resized batches, features, probabilities, the float64 blocks of the metrics) is real.
* ``inception`` -- the real FID Inception-v3 architecture (random weights: the cost does not
  depend on them) on one batch of 50 images on the CPU: its weights and activations come on
  top of the pipeline's peak when the network runs on the CPU (on a GPU they are GPU memory).
  Not in the smoke run (20 s of CPU).
* ``baseline`` -- ``import torch, dgm_ext.metrics``: the floor every process pays.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from cases import QUICK

N_IMAGES = 100 if QUICK else 50_000
KID_SUBSETS = 5 if QUICK else 100  # the smoke run checks the plumbing, not KID's cost
MODES = ("pipeline",) if QUICK else ("baseline", "pipeline", "inception")
LIMIT_MB = 2048.0
_ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, resource, sys, time
import torch
import torch.nn.functional as F
from dgm_ext.metrics import evaluate as ev
from dgm_ext.metrics.features import compare, folder_features

mode, a, b = sys.argv[1:4]
workers, subsets = int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(1)
out = {"mode": mode}
t0 = time.perf_counter()
if mode == "pipeline":
    g = torch.Generator().manual_seed(0)
    w1 = torch.randn(3 * 23 * 23, 2048, generator=g) / 40
    w2 = torch.randn(2048, 1008, generator=g) / 45

    def extract(x):  # Inception's interface: 3x299x299 -> 2048 features, 1008 probabilities
        assert x.shape[1:] == (3, 299, 299)
        f = torch.relu(F.avg_pool2d(x, 13).flatten(1) @ w1)
        return f, torch.softmax(f @ w2, 1)

    space = ev.FeatureSpace("stand-in", "pool", 2048, extract, channels=3,
                            input_size=(299, 299), feature_dtype=torch.float32)
    fa = folder_features(a, space, workers=workers, batch_size=50, cache=False)
    fb = folder_features(b, space, workers=workers, batch_size=50, cache=False, probs=False)
    out.update(compare(fa, fb, ("fid", "kid", "is"), kid_subsets=subsets))
    out["n"], out["n_ref"] = fa.n, fb.n
elif mode == "inception":
    from dgm_ext.metrics.inception import FIDInceptionV3, inception_outputs
    net = FIDInceptionV3()
    x = torch.rand(50, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    inception_outputs(net, x, batch_size=10)  # inception_feature_space's passes on the CPU
out["seconds"] = time.perf_counter() - t0
try:  # this process's own peak: ru_maxrss also counts the forked parent's pages before exec
    with open("/proc/self/status", encoding="ascii") as f:
        hwm = next(line for line in f if line.startswith("VmHWM:"))
    out["peak_rss_mb"] = int(hwm.split()[1]) / 1024
except (OSError, StopIteration):
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["worker_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps(out))
"""


def write_pngs(folder: Path, n: int, seed: int) -> None:
    """``n`` seeded-noise 32x32 RGB PNG files in ``folder`` (subfolders of 1000)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        sub = folder / f"{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(sub / f"{i}.png")


def _tree_pss_mb(pid: int) -> float:
    """Proportional set size (shared pages split between their users) of ``pid`` and its
    descendants, from /proc/*/smaps_rollup; 0 where unreadable (not Linux, process gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total / 1024


def run_child(mode: str, a: Path, b: Path, workers: int = 2, subsets: int = KID_SUBSETS) -> dict:
    """One measurement in a fresh interpreter: its own peak RSS, its largest worker's, and the
    peak PSS of the process tree (main + decoding workers), sampled every 0.5 s."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-c", _CHILD, mode, str(a), str(b), str(workers), str(subsets)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, text=True, env=env, cwd=_ROOT)
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, _tree_pss_mb(proc.pid))
            time.sleep(0.5)  # smaps_rollup of a large process is not free to read
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{mode} child failed:\n{err.read()[-3000:]}")
        report = json.loads(out.read().strip().splitlines()[-1])
    report["tree_peak_pss_mb"] = peak
    return report


def measure(n: int = N_IMAGES, workers: int = 2, modes: tuple[str, ...] = MODES) -> dict:
    """Write 2 x ``n`` PNG files, run the children ``modes``, return their reports."""
    with tempfile.TemporaryDirectory(prefix="dgm_ext_bench_folder_") as tmp:
        a, b = Path(tmp) / "a", Path(tmp) / "b"
        t0 = time.perf_counter()
        write_pngs(a, n, 0)
        write_pngs(b, n, 1)
        written = time.perf_counter() - t0
        reports = {m: run_child(m, a, b, workers) for m in modes}
    reports["write_seconds"] = written
    reports["n"] = n
    return reports


def test_folder_eval_memory() -> None:
    """The pipeline's peak RSS stays under 2 GB (QUICK: 300 images, a smoke run)."""
    rep = measure()
    pipe = rep["pipeline"]
    print(json.dumps(rep, indent=2))
    assert pipe["n"] == pipe["n_ref"] == N_IMAGES
    assert np.isfinite(pipe["fid"]) and np.isfinite(pipe["kid_mean"])
    assert pipe["peak_rss_mb"] < LIMIT_MB, pipe
    assert pipe["tree_peak_pss_mb"] < LIMIT_MB, pipe


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    print(json.dumps(measure(n), indent=2))
