"""The FID Inception-v3's CPU pooling (dgm_ext.metrics.inception._max_pool_3x3,
_avg_pool_tf): equal bit for bit to ATen's F.max_pool2d / F.avg_pool2d(count_include_pad=False),
the functions pytorch-fid runs, on odd sizes, both float dtypes, NaN and infinities; the
autograd path still gives gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dgm_ext.metrics.inception import _avg_pool_tf, _max_pool_3x3

SIZES = [(3, 3), (4, 7), (17, 17), (35, 35), (8, 5)]


def _inputs(shape, dtype):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(2, 3, *shape, generator=g, dtype=dtype) * 10
    x[0, 0, 0, 0] = float("nan")
    x[0, 1, -1, -1] = float("inf")
    x[1, 2, shape[0] // 2, 0] = float("-inf")
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SIZES)
def test_max_pool_equals_aten(shape, dtype):
    x = _inputs(shape, dtype)
    for stride, padding in ((2, 0), (1, 1), (1, 0), (3, 1)):
        want = F.max_pool2d(x, kernel_size=3, stride=stride, padding=padding)
        got = _max_pool_3x3(x, stride=stride, padding=padding)
        assert got.shape == want.shape
        assert torch.equal(got.isnan(), want.isnan())
        assert torch.equal(got.nan_to_num(0.0), want.nan_to_num(0.0)), (stride, padding)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SIZES)
def test_avg_pool_equals_aten_bit_for_bit(shape, dtype):
    x = torch.randn(2, 3, *shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    want = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
    assert torch.equal(_avg_pool_tf(x), want)
    x = _inputs(shape, dtype)  # NaN and infinities spread as in ATen
    want = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
    got = _avg_pool_tf(x)
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got.nan_to_num(0.0), want.nan_to_num(0.0))


def test_gradients_take_the_aten_path():
    x = torch.randn(1, 2, 9, 9, requires_grad=True)
    (_max_pool_3x3(x, stride=2).sum() + _avg_pool_tf(x).sum()).backward()
    y = x.detach().clone().requires_grad_(True)
    (F.max_pool2d(y, 3, 2).sum()
     + F.avg_pool2d(y, 3, 1, 1, count_include_pad=False).sum()).backward()  # fmt: skip
    assert torch.equal(x.grad, y.grad)
