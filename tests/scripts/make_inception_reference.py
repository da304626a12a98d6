"""Provenance of ``tests/data/inception_pytorch_fid.npz``: pytorch-fid's Inception outputs.

Not run by the suite. ``tests/test_metrics_inception.py`` compares every pool3 feature and
logit of dgm_ext's FID Inception-v3 with the ones stored here, which come from pytorch-fid's
own network (never from dgm_ext) with a seeded random state dict of the published layout
(the real weights are never downloaded). The seeded weights and images are defined once,
here; the test imports :func:`seeded_state` and :func:`seeded_images` from this file, so both
sides use the same inputs (the file also stores their sha256, which the test checks).

How the stored file was made (a throwaway venv outside the repository; pytorch-fid is no
dependency of dgm_ext, see ``dgm_ext/metrics/inception.py``)::

    python3 -m venv /tmp/fidvenv
    /tmp/fidvenv/bin/pip install torch==2.13.0 torchvision==0.28.0 pytorch-fid numpy scipy
    /tmp/fidvenv/bin/python tests/scripts/make_inception_reference.py  # writes the file

torchvision 0.28.0's compiled ops do not load beside the CPU build of torch 2.13.0
("operator torchvision::nms does not exist" while importing its fake-kernel
registrations), so :func:`_define_torchvision_schemas` defines the two operator schemas that
torchvision registers fake kernels for with ``torch.library`` before importing it. Nothing
of those ops runs: Inception uses only torch.nn layers.

What is computed: ``InceptionV3([3])`` (pytorch-fid 0.3.0, ``resize_input=True``,
``normalize_input=True``: bilinear resize to 299x299 with ``align_corners=False``, then
``2x - 1``) around its ``fid_inception_v3()``, with :func:`seeded_state` loaded strictly in
place of the downloaded file (``load_state_dict_from_url`` is replaced; the state dict's
shapes are read from the very module pytorch-fid builds). Stored, float32 exactly as
produced, for the images of :func:`seeded_images`: ``features`` (N, 2048), the pool3 output
of ``InceptionV3``; ``logits`` (N, 1008), torchvision's ``Inception3.forward`` of the same
module on pytorch-fid's preprocessed input (an independent path through the network that
ends in ``fc``); plus ``state_sha256``, ``images_sha256`` and the versions used. Computed with
one torch thread.
"""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

import numpy as np
import torch

N_IMAGES = 3
OUT = Path(__file__).resolve().parent.parent / "data" / "inception_pytorch_fid.npz"
_LIBS: list[torch.library.Library] = []


def seeded_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """A deterministic random state dict whose activations stay O(1) through the network."""
    out: dict[str, torch.Tensor] = {}
    for i, key in enumerate(sorted(shapes)):
        shape = tuple(shapes[key])
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0, dtype=torch.long)
            continue
        g = torch.Generator().manual_seed(1000 + i)
        # unit-variance uniform noise: torch.rand draws the same bits on every CPU, while
        # torch.randn's vectorised Box-Muller rounds differently per ATen CPU capability
        r = math.sqrt(3.0) * (2.0 * torch.rand(shape, generator=g) - 1.0)
        if key.endswith("conv.weight"):
            v = r * math.sqrt(2.0 / math.prod(shape[1:]))
        elif key.endswith("bn.weight"):
            v = 1.0 + 0.1 * r
        elif key.endswith("running_var"):
            v = 0.75 + 0.5 * torch.rand(shape, generator=g)
        elif key == "fc.weight":
            v = r / math.sqrt(shape[1])
        else:  # bn.bias, bn.running_mean, fc.bias
            v = 0.1 * r
        out[key] = v
    return out


def seeded_images() -> torch.Tensor:
    """``N_IMAGES`` RGB images of 32x32 (CIFAR-10 size) in [0, 1], float32."""
    return torch.rand((N_IMAGES, 3, 32, 32), generator=torch.Generator().manual_seed(0))


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 of the sorted keys, shapes and float32/int64 bytes of a state dict."""
    h = hashlib.sha256()
    for key in sorted(state):
        v = state[key].detach().cpu().contiguous()
        h.update(f"{key}:{list(v.shape)}:{v.dtype};".encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


def images_sha256(images: torch.Tensor) -> str:
    """sha256 of the images' float32 bytes."""
    return hashlib.sha256(images.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def _define_torchvision_schemas() -> None:
    """Define ``torchvision::nms`` / ``qnms`` (schemas as torchvision's C++ declares them), so
    that ``import torchvision`` can register its fake kernels without its compiled ops."""
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBS.append(lib)  # the definitions live as long as the Library object


def seeded_pytorch_fid(pfid) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, torch.Tensor]]:
    """pytorch-fid's ``InceptionV3([3])`` (module ``pfid`` = ``pytorch_fid.inception``) with
    :func:`seeded_state` loaded strictly by its own ``fid_inception_v3()`` in place of the
    download; returns the model, the torchvision ``Inception3`` inside it and that state."""
    built: list[torch.nn.Module] = []
    states: list[dict[str, torch.Tensor]] = []
    real_build, real_loader = pfid._inception_v3, pfid.load_state_dict_from_url

    def capture(*args, **kwargs):
        m = real_build(*args, **kwargs)
        built.append(m)
        return m

    def seeded_loader(url: str, progress: bool = True) -> dict[str, torch.Tensor]:
        assert url == pfid.FID_WEIGHTS_URL, url
        # fid_inception_v3() has swapped in its FID blocks by now: these are its final shapes
        states.append(seeded_state({k: tuple(v.shape) for k, v in built[-1].state_dict().items()}))
        return states[-1]

    pfid._inception_v3, pfid.load_state_dict_from_url = capture, seeded_loader
    try:
        model = pfid.InceptionV3([pfid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    finally:
        pfid._inception_v3, pfid.load_state_dict_from_url = real_build, real_loader
    assert model.resize_input and model.normalize_input
    assert len(states) == 1 and len(states[0]) == 566, len(states)
    return model, built[-1].eval(), states[0]


def main(out: str | Path = OUT) -> None:
    """Compute pytorch-fid's outputs for the seeded state and images and write ``out``."""
    torch.set_num_threads(1)
    _define_torchvision_schemas()
    import pytorch_fid
    import pytorch_fid.inception as pfid
    import torchvision

    model, inception, _ = seeded_pytorch_fid(pfid)
    state = inception.state_dict()
    assert len(state) == 566, len(state)
    expected = seeded_state({k: tuple(v.shape) for k, v in state.items()})
    assert all(torch.equal(state[k], v) for k, v in expected.items())

    x = seeded_images()
    with torch.no_grad():
        feats = model(x)[0].flatten(1)
        up = torch.nn.functional.interpolate(
            x, size=(299, 299), mode="bilinear", align_corners=False
        )
        net_in = 2 * up - 1  # pytorch-fid's resize_input and normalize_input
        logits = inception(net_in)  # torchvision's Inception3.forward (eval: plain logits)
    assert feats.shape == (N_IMAGES, 2048) and logits.shape == (N_IMAGES, 1008)
    assert feats.dtype == logits.dtype == torch.float32
    # the two paths share the network up to pool3
    torch.testing.assert_close(logits, inception.fc(feats), rtol=1e-6, atol=1e-6)
    np.savez(
        out,
        features=feats.numpy(),
        logits=logits.numpy(),
        state_sha256=np.array(state_sha256(expected)),
        images_sha256=np.array(images_sha256(x)),
        versions=np.array(
            f"pytorch-fid {pytorch_fid.__version__}, torch {torch.__version__}, "
            f"torchvision {torchvision.__version__}, numpy {np.__version__}"
        ),
    )
    print(f"wrote {out}: features {tuple(feats.shape)}, logits {tuple(logits.shape)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else OUT)
