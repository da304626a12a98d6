"""The multi-threaded CPU kernel path: every op, forward and backward, at shapes that span
several parallel chunks, against the pure-PyTorch reference, at 2 threads.

The CPU kernels split rows over threads with ``at::parallel_for``: the row-wise ops (and the
coupling) in tasks of ``row_grain(cols) = 32768 / cols`` rows (csrc/cpu/row_loops.h), the
categorical in ``32768 / (cols * K)`` rows, the planar forward in tiles of 16 x (4 x SIMD
width) rows and the planar backward in blocks of 1024 rows (csrc/cpu/planar_cpu.cpp), the
per-row planar op in items of (block of 256 samples, parameter row) (planar_rows_cpu.cpp). The
other op tests fit in one chunk; here the row counts are several chunks and not multiples of
the chunk sizes, and the parameters broadcast over batch dims, so a chunk that starts in the
middle of a broadcast batch must find its offsets (RowCursor) right.
"""

from __future__ import annotations

import pytest
import torch
from _helpers import OP_NAMES, Sample, as_tuple, checkerboard, grads_of, public, ref

DTYPES = [torch.float32, torch.float64]
_TOL = {torch.float32: 1e-4, torch.float64: 1e-10}


@pytest.fixture
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _row_grain(cols: int) -> int:
    return max(1, 32768 // max(cols, 1))


def _samples(name: str, dtype) -> list[Sample]:
    g = torch.Generator().manual_seed(17)

    def rn(*shape, scale=1.0, shift=0.0):
        t = torch.randn(shape, generator=g, dtype=torch.float64) * scale + shift
        return t.to(dtype).requires_grad_()

    def ru(*shape, lo=0.0, hi=1.0):
        t = torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo
        return t.to(dtype).requires_grad_()

    # Row ops: D = 24 columns -> 1365 rows per task; (3, 1031) = 3093 rows = 2.3 tasks, and
    # the (1, 1031, D) / (D,) parameters broadcast over the leading batch dim, so a chunk
    # boundary (row 1546 at 2 threads) falls inside the second batch entry.
    d = 24
    shape, bshape = (3, 1031, d), (1, 1031, d)
    assert shape[0] * shape[1] > 2 * _row_grain(d)
    if name == "bernoulli_log_prob":
        return [
            Sample("rows", (rn(*shape, scale=2.0), ru(*bshape))),
            Sample("rows_bcast_first", (rn(d, scale=2.0), ru(*shape))),
        ]
    if name == "gaussian_log_prob":
        return [
            Sample("rows", (rn(*shape), rn(*bshape), rn(d, scale=0.5))),
            Sample("rows_D1", (rn(*shape), rn(3, 1031, 1), rn(1, 1031, 1, scale=0.5))),
        ]
    if name == "beta_log_prob":
        return [
            Sample(
                "rows",
                (ru(*shape, lo=0.05, hi=0.95), ru(*bshape, lo=0.5, hi=3), ru(d, lo=0.5, hi=3)),
            )
        ]
    if name == "kl_normal_std":
        return [Sample("rows", (rn(*shape), rn(*bshape, scale=0.5)))]
    if name == "kl_normal":
        return [
            Sample(
                "rows",
                (rn(*shape), rn(*bshape, scale=0.5), rn(d), rn(3, 1, d, scale=0.5)),
            )
        ]
    if name == "reparameterize":
        return [Sample("rows", (rn(*bshape), rn(d, scale=0.5), rn(*shape)))]
    if name == "categorical_log_prob":
        # cols * K = 12 * 10 -> 273 rows per task; 2 x 401 = 802 rows, logits broadcast over
        # the leading batch dim.
        k, dd = 10, 12
        assert 2 * 401 > 2 * _row_grain(dd * k)
        x = torch.randint(0, k, (2, 401, dd), generator=g)
        return [Sample("rows", (rn(1, 401, dd, k, scale=3.0), x))]
    if name == "affine_coupling":
        # (N, C, H, W) = (70, 2, 8, 8): 128 columns -> 256 rows per task if rows are images;
        # s shared over the batch, t over channels, checkerboard mask.
        n = 1037
        assert n > 2 * _row_grain(2 * 8 * 8)
        mask = checkerboard(8, 8, dtype=dtype)
        return [
            Sample(
                f"images_{'rev' if rev else 'fwd'}",
                (rn(n, 2, 8, 8), rn(1, 2, 8, 8, scale=0.5), rn(n, 1, 8, 8), mask, rev),
            )
            for rev in (False, True)
        ]
    if name == "planar_flow":
        # 3077 rows: several forward tiles-of-tiles and 4 backward blocks of 1024 (ragged).
        return [
            Sample(
                "rows", (rn(3077, 5), rn(3, 5, scale=0.3), rn(3, 5, scale=0.3), rn(3, scale=0.3))
            )
        ]
    if name == "planar_flow_rows":
        # (2, 300) = 600 samples of 5 rows: three reduction blocks of 256 samples (the last
        # ragged) per parameter row, 15 work items over the threads, block sums added after;
        # and 3001 rows of one sample: one block, ~3 tasks of 1024 items.
        return [
            Sample(
                "samples",
                (
                    rn(2, 300, 5, 7),
                    rn(5, 3, 7, scale=0.3),
                    rn(5, 3, 7, scale=0.3),
                    rn(5, 3, scale=0.3),
                ),
            ),
            Sample(
                "rows",
                (
                    rn(3001, 8),
                    rn(3001, 4, 8, scale=0.3),
                    rn(3001, 4, 8, scale=0.3),
                    rn(3001, 4, scale=0.3),
                ),
            ),
        ]
    raise KeyError(name)


@pytest.mark.usefixtures("two_threads")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", OP_NAMES)
def test_multichunk_matches_reference_two_threads(name, dtype):
    assert torch.get_num_threads() == 2
    tol = {"rtol": _TOL[dtype], "atol": _TOL[dtype]}
    for s in _samples(name, dtype):
        outs, grads = grads_of(public(name), s)
        ref_s = s.detached(dtype=torch.float64)  # float64 reference
        exp_outs, exp_grads = grads_of(ref(name), ref_s)
        for o, e in zip(outs, as_tuple(exp_outs), strict=True):
            assert o.dtype == dtype
            # forward sums over a row: scale the tolerance by the row length
            torch.testing.assert_close(
                o.double(),
                e,
                rtol=tol["rtol"],
                atol=tol["atol"] * 50,
                msg=lambda m, s=s: f"{s} out: {m}",
            )
        assert len(grads) == len(exp_grads)
        for i, (gr, e) in enumerate(zip(grads, exp_grads, strict=True)):
            assert gr.shape == e.shape
            # broadcast parameters sum up to ~3000 rows of gradients
            torch.testing.assert_close(
                gr.double(),
                e,
                rtol=tol["rtol"] * 10,
                atol=tol["atol"] * 500,
                msg=lambda m, s=s, i=i: f"{s} grad{i}: {m}",
            )
