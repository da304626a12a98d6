"""Inception features per second: dgm_ext's FID Inception-v3 vs pytorch-fid's own network.

    pytest benchmarks/bench_inception.py --benchmark-json=benchmarks/inception.json
    python benchmarks/repeats.py run1.json run2.json run3.json   # three runs: same-run ratios

Needs ``pytorch_fid`` (with torchvision) in the same environment as dgm_ext; skipped without
it (the main venv and CI do not have it). benchmarks/RESULTS.md ("Inception features")
describes the separate venv the numbers come from.

Both networks carry the **same weights**: the seeded random state dict of the published
layout that ``tests/scripts/make_inception_reference.py`` defines (``seeded_state``; the real
weights are never downloaded). pytorch-fid 0.3.0's ``InceptionV3([3])`` is built as that
script builds it: its ``fid_inception_v3()`` with ``load_state_dict_from_url`` replaced by the
seeded state dict, loaded strictly. dgm_ext reads the same state dict from a ``.pth`` file
with :func:`~dgm_ext.metrics.inception.fid_inception_v3`, as users load the real file.

Each round turns the same ``N_IMAGES`` images (float32 in [0, 1], seeded) into pool3
features, in batches of ``BATCH``; both sides resize them to 299x299 (bilinear,
``align_corners=False``) and map them to [-1, 1] inside, so a round includes the resize:

* ``dgm_ext``: :func:`~dgm_ext.metrics.inception.inception_outputs` (what ``dgm-ext eval`` and
  ``inception_feature_space`` run, batches of 10 on the CPU): per batch the network up to
  pool3, plus the (N, 1008) IS probabilities (fc without bias, softmax) and float64 copies
  of both; returns ``(features, probs)``.
* ``pytorch-fid``: ``model(batch)[0]`` per batch, squeezed to (N, 2048) and moved to the CPU
  as pytorch-fid's ``get_activations`` does (less its file loading and numpy copy), then
  concatenated. No probabilities: pytorch-fid computes none.

Groups: input size (32x32 as CIFAR-10 samples, 299x299 already at the network's size) and
torch threads (1 and 2, set with ``torch.set_num_threads`` for the test and restored). Before
timing, the first test of each group checks that the two sides' pool3 features of all images
agree to float tolerance (``extra_info["bit_identical"]`` records whether they are equal bit
for bit). Each test: one warm-up round, then ``ROUNDS`` timed rounds.

DGM_EXT_BENCH_QUICK=1 shrinks to 4 images, batch 2, 2 rounds (smoke run).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from dgm_ext.metrics.inception import FIDInceptionV3, fid_inception_v3, inception_outputs

QUICK = os.environ.get("DGM_EXT_BENCH_QUICK", "0") not in ("", "0")
N_IMAGES = 4 if QUICK else 50
BATCH = 2 if QUICK else 10  # inception_feature_space's batch on the CPU
ROUNDS = 2 if QUICK else 3
SIZES = (32, 299)
THREADS = (1, 2)
PROVIDERS = ("dgm_ext", "pytorch-fid")
REFERENCE_SCRIPT = (
    Path(__file__).resolve().parent.parent / "tests" / "scripts" / "make_inception_reference.py"
)

if importlib.util.find_spec("pytorch_fid") is None:
    pytest.skip("pytorch_fid is not installed", allow_module_level=True)


def _reference_script():
    """tests/scripts/make_inception_reference.py: the seeded weights and torchvision schemas."""
    spec = importlib.util.spec_from_file_location("make_inception_reference", REFERENCE_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_REF = _reference_script()


def _prepare_torchvision() -> None:
    """Let ``import torchvision`` succeed beside a torch its compiled ops do not load with.

    torchvision loads its ``_C`` library with ``torch.ops.load_library`` and then registers
    fake kernels for ``torchvision::nms`` / ``qnms``, which fails when the library did not
    load (torchvision 0.28.0 beside the CPU build of torch 2.13.0). Try the same load here;
    when it fails, define the two schemas as the reference script does. Inception uses none
    of torchvision's compiled ops.
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or "torchvision" in sys.modules:
        return
    libs = [p for d in spec.submodule_search_locations or [] for p in Path(d).glob("_C.*so")]
    try:
        for lib in libs:
            torch.ops.load_library(str(lib))
        if libs:
            return
    except (ImportError, OSError):
        pass
    _REF._define_torchvision_schemas()


_prepare_torchvision()
pfid = pytest.importorskip("pytorch_fid.inception")
import pytorch_fid  # noqa: E402  (after torchvision's schemas)


def build_networks() -> tuple[torch.nn.Module, FIDInceptionV3]:
    """(pytorch-fid's model, dgm_ext's network loaded from a file of the same state dict)."""
    theirs, _, state = _REF.seeded_pytorch_fid(pfid)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pt_inception-seeded.pth"
        torch.save(state, path)
        ours = fid_inception_v3(path)
    return theirs, ours


@pytest.fixture(scope="module")
def networks() -> tuple[torch.nn.Module, FIDInceptionV3]:
    return build_networks()


def _images(size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(size)
    return torch.rand((N_IMAGES, 3, size, size), generator=g)


def _pytorch_fid_features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """pytorch-fid's ``get_activations`` loop on a tensor (no file loading, no numpy copy)."""
    out = []
    with torch.no_grad():
        for i in range(0, images.shape[0], BATCH):
            pred = model(images[i : i + BATCH])[0]
            out.append(pred.squeeze(3).squeeze(2).cpu())
    return torch.cat(out)


_CHECKED: dict[tuple[int, int], bool] = {}  # (size, threads) -> features equal bit for bit


def _check(theirs, ours, images: torch.Tensor) -> bool:
    """Both sides' pool3 features of ``images`` agree; returns whether they are bit-equal."""
    key = (images.shape[-1], torch.get_num_threads())
    if key not in _CHECKED:
        ref = _pytorch_fid_features(theirs, images)
        got = inception_outputs(ours, images, batch_size=BATCH)[0]
        assert got.shape == ref.shape == (N_IMAGES, 2048)
        # the same network on the same input: equal up to float32 rounding (bit for bit with
        # one thread on the CPU that made tests/data/inception_pytorch_fid.npz)
        torch.testing.assert_close(got, ref.double(), rtol=1e-5, atol=1e-5)
        _CHECKED[key] = torch.equal(got.float(), ref)
    return _CHECKED[key]


def _runner(provider: str, theirs, ours, images) -> Callable[[], torch.Tensor]:
    if provider == "dgm_ext":
        return lambda: inception_outputs(ours, images, batch_size=BATCH)[0]
    return lambda: _pytorch_fid_features(theirs, images)


@pytest.fixture
def threads(request) -> Iterator[int]:
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("threads", THREADS, indirect=True, ids=lambda t: f"{t}thread")
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}px")
def test_inception_features(benchmark, networks, size: int, threads: int, provider: str) -> None:
    theirs, ours = networks
    images = _images(size)
    bit_identical = _check(theirs, ours, images)
    benchmark.group = f"inception pool3 | {N_IMAGES} images {size}x{size}, batch {BATCH}, "
    benchmark.group += f"{threads} thread{'s' if threads > 1 else ''}"
    benchmark.extra_info.update(
        suite="inception", provider=provider, device="cpu", threads=threads, size=size,
        images=N_IMAGES, batch=BATCH, quick=QUICK, bit_identical=bit_identical,
        pytorch_fid=pytorch_fid.__version__, torch=torch.__version__,
    )  # fmt: skip
    out = benchmark.pedantic(_runner(provider, theirs, ours, images), rounds=ROUNDS,
                             warmup_rounds=1)  # fmt: skip
    assert out.shape == (N_IMAGES, 2048)
    median = benchmark.stats.stats.median
    benchmark.extra_info["features_per_s"] = N_IMAGES / median
