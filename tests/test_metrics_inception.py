"""FID Inception-v3 (dgm_ext.metrics.inception): weights layout, loading, conventions, outputs.

No real weights are used (they are never downloaded): a seeded random state dict of the
published layout stands in for them. ``tests/data/inception_pytorch_fid.npz`` holds every
pool3 feature and logit of three seeded images computed by pytorch-fid 0.3.0's own network
(``InceptionV3([3])`` around its ``fid_inception_v3``, this seeded state dict loaded strictly)
under torch 2.13.0 + torchvision 0.28.0 in a separate venv; ``tests/scripts/
make_inception_reference.py`` made it and defines the seeded weights and images used here.
On the CPU that made it, with one thread, our network reproduces the file bit for bit.
torch-fidelity 0.4.0's ``FeatureExtractorInceptionV3`` loaded the same layout strictly and
gave identical pool3 features when fed the same normalised input (checked once, earlier).
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dgm_ext.metrics.inception import (
    NUM_CLASSES,
    NUM_FEATURES,
    WEIGHTS_ENV,
    WEIGHTS_FILE_NAMES,
    FIDInceptionV3,
    InceptionWeightsError,
    fid_inception_v3,
    inception_outputs,
    load_fid_inception_weights,
)

# sha256 of "key:[shape]" lines (sorted keys) of pytorch-fid's fid_inception_v3() module, the
# module its published weights file loads into strictly.
PUBLISHED_LAYOUT_SHA256 = "cd36bcf4883935e5bc430934132957704fa70f7dfec1eeb2fcfc3288bc5075c9"
HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "data" / "inception_pytorch_fid.npz"


def _reference_script():
    """tests/scripts/make_inception_reference.py, the one definition of the seeded inputs."""
    path = HERE / "scripts" / "make_inception_reference.py"
    spec = importlib.util.spec_from_file_location("make_inception_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_REF = _reference_script()
seeded_state = _REF.seeded_state
seeded_images = _REF.seeded_images
N_IMAGES = _REF.N_IMAGES


def cheap_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Same keys and shapes, but each tensor a broadcast scalar: a file of a few kB."""
    return {k: v.new_zeros(()).expand(v.shape) for k, v in state.items()}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # The 2 CI cores are shared; one thread is several times faster than two under load.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def net() -> FIDInceptionV3:
    m = FIDInceptionV3()
    m.load_state_dict(seeded_state({k: tuple(v.shape) for k, v in m.state_dict().items()}))
    return m


@pytest.fixture(scope="module")
def weights_file(net: FIDInceptionV3, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w") / WEIGHTS_FILE_NAMES[0]
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def loaded(weights_file: Path) -> FIDInceptionV3:
    return fid_inception_v3(weights_file)


@pytest.fixture(scope="module")
def outputs(net: FIDInceptionV3, loaded: FIDInceptionV3) -> dict[str, torch.Tensor]:
    """Three forward passes of the two seeded images, shared by the tests below."""
    x = seeded_images()
    seen: list[torch.Tensor] = []
    hook = loaded.Conv2d_1a_3x3.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    with torch.no_grad():
        f0, p0 = net.features_and_probs(x)
        f1, p1 = loaded.features_and_probs(x)
        logits = loaded.logits(x)
    hook.remove()
    return {"x": x, "f0": f0, "p0": p0, "f1": f1, "p1": p1, "logits": logits, "net_in": seen[0]}


def small_file(tmp_path: Path, state: dict[str, torch.Tensor], name: str = "w.pth") -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


# --------------------------------------------------------------------------- layout
def test_layout_is_the_published_one(net: FIDInceptionV3) -> None:
    sd = net.state_dict()
    assert len(sd) == 566
    assert sum(k.endswith(".num_batches_tracked") for k in sd) == 94
    assert sum(p.numel() for p in net.parameters()) == 23_850_960
    known = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_1a_3x3.bn.running_var": (32,),
        "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "Mixed_7c.branch_pool.bn.bias": (192,),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }
    for key, shape in known.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("AuxLogits") for k in sd)
    layout = "\n".join(f"{k}:{list(v.shape)}" for k, v in sorted(sd.items()))
    assert hashlib.sha256(layout.encode()).hexdigest() == PUBLISHED_LAYOUT_SHA256
    assert net.Conv2d_1a_3x3.bn.eps == 1e-3


def test_frozen_and_always_eval(net: FIDInceptionV3) -> None:
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training
    assert not any(m.training for m in net.modules())


# --------------------------------------------------------------------------- loading
def test_roundtrip_through_file_gives_identical_outputs(
    outputs: dict[str, torch.Tensor], loaded: FIDInceptionV3, net: FIDInceptionV3,
    weights_file: Path,
) -> None:  # fmt: skip
    assert loaded.weights_path == weights_file
    got = loaded.state_dict()
    for key, value in net.state_dict().items():
        assert torch.equal(got[key], value), key
    assert torch.equal(outputs["f1"], outputs["f0"])
    assert torch.equal(outputs["p1"], outputs["p0"])


def test_missing_num_batches_tracked_is_accepted(net: FIDInceptionV3, tmp_path: Path) -> None:
    state = {k: v for k, v in cheap_copy(net.state_dict()).items() if "num_batches" not in k}
    m = fid_inception_v3(small_file(tmp_path, state))
    assert torch.equal(m.fc.weight, torch.zeros(1008, 2048))


def test_weights_path_from_environment(
    net: FIDInceptionV3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = small_file(tmp_path, cheap_copy(net.state_dict()))
    monkeypatch.setenv(WEIGHTS_ENV, str(path))
    assert fid_inception_v3().weights_path == path


def test_missing_file_says_never_downloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError) as e:
        fid_inception_v3(path)
    msg = str(e.value)
    assert str(path) in msg and "never downloads" in msg
    assert all(name in msg for name in WEIGHTS_FILE_NAMES)
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=WEIGHTS_ENV):
        fid_inception_v3()


def test_missing_key_is_reported_with_the_file(net: FIDInceptionV3, tmp_path: Path) -> None:
    state = cheap_copy(net.state_dict())
    del state["Mixed_6c.branch7x7dbl_3.conv.weight"]
    path = small_file(tmp_path, state)
    with pytest.raises(InceptionWeightsError) as e:
        fid_inception_v3(path)
    msg = str(e.value)
    assert str(path) in msg and "1 missing keys" in msg
    assert "Mixed_6c.branch7x7dbl_3.conv.weight" in msg


def test_wrong_shape_is_reported_with_the_file(net: FIDInceptionV3, tmp_path: Path) -> None:
    state = cheap_copy(net.state_dict())
    state["Mixed_5b.branch_pool.conv.weight"] = torch.zeros(64, 192, 1, 1)
    path = small_file(tmp_path, state)
    with pytest.raises(InceptionWeightsError) as e:
        load_fid_inception_weights(FIDInceptionV3(), path)
    msg = str(e.value)
    assert str(path) in msg
    assert "Mixed_5b.branch_pool.conv.weight (64, 192, 1, 1) (expected (32, 192, 1, 1))" in msg


def test_torchvision_imagenet_weights_are_recognised(net: FIDInceptionV3, tmp_path: Path) -> None:
    state = cheap_copy(net.state_dict())
    state["fc.weight"] = torch.zeros(1000, 2048)
    state["fc.bias"] = torch.zeros(1000)
    for i in range(7):
        state[f"AuxLogits.conv{i}.conv.weight"] = torch.zeros(1)
    with pytest.raises(InceptionWeightsError) as e:
        fid_inception_v3(small_file(tmp_path, state))
    msg = str(e.value)
    assert "torchvision's ImageNet" in msg and "7 unexpected keys" in msg
    assert "AuxLogits.conv0.conv.weight" in msg and "(2 more)" in msg
    assert "fc.weight (1000, 2048) (expected (1008, 2048))" in msg


def test_unreadable_or_foreign_files_are_reported(net: FIDInceptionV3, tmp_path: Path) -> None:
    path = small_file(tmp_path, [torch.zeros(1)], "list.pth")
    with pytest.raises(InceptionWeightsError, match=r"list\.pth.*not a state dict"):
        fid_inception_v3(path)
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(InceptionWeightsError, match=r"garbage\.pth.*weights_only=True"):
        fid_inception_v3(path)
    state = cheap_copy(net.state_dict())
    state["fc.bias"] = torch.full((1008,), float("nan"))
    with pytest.raises(InceptionWeightsError, match=r"non-finite values in fc\.bias"):
        fid_inception_v3(small_file(tmp_path, state))


# --------------------------------------------------------------------------- conventions
def test_input_is_resized_bilinearly_to_299_and_mapped_to_minus_one_one(
    outputs: dict[str, torch.Tensor], net: FIDInceptionV3
) -> None:
    x = outputs["x"]
    expected = 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
    assert outputs["net_in"].shape == (N_IMAGES, 3, 299, 299)
    torch.testing.assert_close(outputs["net_in"], expected, rtol=0, atol=1e-6)
    for value, mapped in ((0.0, -1.0), (0.5, 0.0), (1.0, 1.0)):
        out = net.preprocess(torch.full((1, 3, 7, 5), value))
        torch.testing.assert_close(out, torch.full((1, 3, 299, 299), mapped), rtol=0, atol=1e-6)
    big = torch.rand(1, 3, 299, 299)
    torch.testing.assert_close(net.preprocess(big), 2 * big - 1, rtol=0, atol=1e-6)
    as_uint8 = (x * 255).round().to(torch.uint8)
    torch.testing.assert_close(
        net.preprocess(as_uint8), net.preprocess(as_uint8.float() / 255), rtol=0, atol=1e-6
    )


def test_bad_inputs_are_rejected(net: FIDInceptionV3) -> None:
    with pytest.raises(ValueError, match="repeat grey images"):
        net.preprocess(torch.rand(1, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        net.preprocess(torch.rand(3, 28, 28))
    with pytest.raises(TypeError, match="floating point or uint8"):
        net.preprocess(torch.ones(1, 3, 8, 8, dtype=torch.int64))


def _block_input(channels: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(channels)
    return torch.rand((1, channels, size, size), generator=g) * 2


@pytest.mark.parametrize(
    ("block", "channels"), [("Mixed_5b", 192), ("Mixed_6c", 768), ("Mixed_7b", 1280)]
)
def test_avg_pool_branches_exclude_padding(
    net: FIDInceptionV3, block: str, channels: int
) -> None:  # fmt: skip
    m = getattr(net, block)
    x = _block_input(channels, 5)
    with torch.no_grad():
        out = m(x)
        k = m.branch_pool.conv.out_channels
        tf = m.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
        torch_default = m.branch_pool(F.avg_pool2d(x, 3, 1, 1))
    torch.testing.assert_close(out[:, -k:], tf)
    assert not torch.allclose(out[:, -k:], torch_default, atol=1e-3)


def test_last_block_pools_with_max(net: FIDInceptionV3) -> None:
    m = net.Mixed_7c
    x = _block_input(2048, 4)
    with torch.no_grad():
        out = m(x)
        expected = m.branch_pool(F.max_pool2d(x, 3, 1, 1))
        avg = m.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
    torch.testing.assert_close(out[:, -192:], expected)
    assert not torch.allclose(out[:, -192:], avg, atol=1e-3)


# --------------------------------------------------------------------------- outputs
def test_output_shapes_and_logit_conventions(
    outputs: dict[str, torch.Tensor], loaded: FIDInceptionV3
) -> None:
    f, p, logits = outputs["f1"], outputs["p1"], outputs["logits"]
    assert f.shape == (N_IMAGES, NUM_FEATURES) == (N_IMAGES, 2048)
    assert p.shape == logits.shape == (N_IMAGES, NUM_CLASSES) == (N_IMAGES, 1008)
    assert (f >= 0).all()  # pool3 averages ReLU outputs
    torch.testing.assert_close(logits, loaded.fc(f))
    torch.testing.assert_close(p.sum(1), torch.ones(N_IMAGES))
    # IS probabilities: softmax of the logits WITHOUT the bias (original IS code)
    torch.testing.assert_close(p, torch.softmax(logits - loaded.fc.bias, 1))
    assert not torch.allclose(p, torch.softmax(logits, 1), atol=1e-4)
    assert not torch.allclose(f[0], f[1])


def _assert_matches_reference(got: torch.Tensor, ref: np.ndarray, what: str) -> None:
    """``got`` equals pytorch-fid's ``ref`` up to float32 summation-order rounding.

    Not exact: the same arithmetic in another order (another thread count, or ATen's
    portable kernels instead of AVX2 ones; CI machines differ) moves the outputs by up to
    1.2e-6 here, about 2 float32 ulps of the largest value (4.7), independently of each
    entry's own size (many features are exactly 0, some logits 3e-4). So the tolerance is
    1e-5 of the largest |value| plus 1e-5 relative: 40x that spread, and 45x below the
    smallest planted bug tried (one batch norm's eps at PyTorch's 1e-5: 2e-3).
    """
    expected = torch.from_numpy(ref).double()
    scale = float(expected.abs().max())
    torch.testing.assert_close(
        got.detach().cpu().double(),
        expected,
        rtol=1e-5,
        atol=1e-5 * scale,
        msg=lambda m: f"{what}: {m}",
    )


def test_agrees_with_pytorch_fid(outputs: dict[str, torch.Tensor], net: FIDInceptionV3) -> None:
    """Every pool3 feature and logit of the seeded images equals pytorch-fid's."""
    ref = np.load(REFERENCE)
    assert ref["features"].shape == (N_IMAGES, 2048) and ref["logits"].shape == (N_IMAGES, 1008)
    # the file was made from these very weights and images
    assert str(ref["state_sha256"]) == _REF.state_sha256(net.state_dict())
    assert str(ref["images_sha256"]) == _REF.images_sha256(outputs["x"])
    _assert_matches_reference(outputs["f1"], ref["features"], "pool3 features")
    _assert_matches_reference(outputs["logits"], ref["logits"], "logits")
    # the IS probabilities follow from the reference logits less the bias (original IS code)
    unbiased = torch.from_numpy(ref["logits"]).double() - net.fc.bias.double()
    torch.testing.assert_close(
        outputs["p1"].double(), torch.softmax(unbiased, 1), rtol=1e-4, atol=1e-9
    )


def test_batched_outputs(outputs: dict[str, torch.Tensor], loaded: FIDInceptionV3) -> None:
    feats, probs = inception_outputs(loaded, outputs["x"].numpy(), batch_size=1)
    assert feats.dtype == probs.dtype == torch.float64
    torch.testing.assert_close(feats, outputs["f1"].double(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(probs, outputs["p1"].double(), rtol=1e-4, atol=1e-7)
    f0, p0 = inception_outputs(loaded, np.zeros((0, 3, 32, 32), np.float32))
    assert f0.shape == (0, 2048) and p0.shape == (0, 1008)
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        inception_outputs(loaded, torch.full((1, 3, 8, 8), -1.0))
    with pytest.raises(ValueError, match="batch_size"):
        inception_outputs(loaded, torch.zeros(1, 3, 8, 8), batch_size=0)
