"""cifar10-gan: the DCGAN of SPEC §2 on CIFAR-10 with JSD/W1 losses, spectral norm and R1,
sample quality (IS, FID, KID with FID's Inception-v3) over training.

Setup (SPEC §3, "Known setups"): DCGAN "standard CNN" generator and critic of width 128,
batch 64, z = 100, Adam with betas (0, 0.99), generator lr 2e-4, critic lr 4e-4, 2 critic
steps per generator step, generator EMA with decay 0.998 (``--ema`` overrides it; ``--ema 0``
turns it off). Five presets (``--run NAME``, or a comma-separated list; default: all five in
turn, each in ``<out>/<preset>/``):

=======  ===================================  ======================
preset   setup                                reference IS / FID
=======  ===================================  ======================
jsd-1    non-saturating JSD, no regulariser   3.483 / 124.47
jsd-2    non-saturating JSD, spectral norm    4.873 / 40.89
jsd-3    non-saturating JSD, R1 weight 1.0    5.424 / 33.07
w1-2     W1, spectral norm                    3.642 / 84.27
w1-3     W1, R1 weight 1.0                    5.812 / 24.91
=======  ===================================  ======================

Decisions where the SPEC says nothing: the JSD presets use the non-saturating generator loss
(the SPEC reserves the saturating loss for the Dirac-GAN lab); the R1 presets have no
spectral norm (the SPEC lists one regulariser per preset); 100 epochs by default (``--epochs``
to change; an epoch is one critic pass over the 50 000 training images, 782 critic and 391
generator steps); R1 = weight · E‖∇C(x)‖² on real data, without a ½.

Sample quality, measured with the EMA generator at epochs 1, every tenth of the run and the
last (the numbers join ``<preset>/metrics.jsonl``): Inception Score of 10 000 samples
(10 splits), FID of the same 10 000 samples against the statistics of the 50 000 CIFAR-10
**training** images (the usual CIFAR-10 convention), KID (100 subsets of 1 000) against a
fixed 10 000-image subset of the training features. The reference features are computed once
per invocation (shared by the presets); their mean and covariance are also written to
``reference-stats.npz`` (pytorch-fid format). The floor row measures the 10 000 test images
the same way. FID's Inception-v3 weights come from a local file: ``$DGM_EXT_INCEPTION_WEIGHTS``
or pytorch-fid's / torch-fidelity's file name in the data root; a run without them, or
without the CIFAR-10 python batches, stops before any training with a message saying what is
missing and where it looked.

Outputs per preset: sample grids (untrained, epoch 1, middle, end), the training metric (JSD
or W1 estimate) with FID (``figures/metric_and_fid.png``), 64 final samples
(``figures/samples-final.png``), ``generator.pt`` (EMA weights); in ``<out>``: FID over
training for all presets and the comparison table beside the reference run.

``--quick``: a few hundred generated 32×32 images written in the python-batch format to
``<out>/quick-data/cifar-10-batches-py`` (read back by the CIFAR-10 loader), width 16,
2 epochs, and a small convolutional stand-in feature network with random weights in place of
Inception (256 samples, 10 KID subsets): it checks the plumbing; its numbers mean nothing.
"""

from __future__ import annotations

import os
import pickle
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dgm_ext.experiments.common import RunContext, Table
from dgm_ext.experiments.gan_common import (
    GANTraining,
    SampleQuality,
    eval_epochs,
    grid_epochs,
    plot_metric_and_fid,
    train_seconds,
    using_ema,
)
from dgm_ext.gan import GAN, GANConfig

__all__ = [
    "DEFAULT_EMA",
    "PRESETS",
    "Preset",
    "ema_decay",
    "parse_presets",
    "preset_config",
    "run",
    "stand_in_feature_space",
    "write_fake_cifar10",
]

DEFAULT_EMA = 0.998
EPOCHS, QUICK_EPOCHS = 100, 2
WIDTH, QUICK_WIDTH = 128, 16
BATCH_SIZE = 64
N_SAMPLES, QUICK_N_SAMPLES = 10_000, 256
KID_REFERENCE = 10_000
KID_SUBSETS, QUICK_KID_SUBSETS = 100, 10
FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)


@dataclass(frozen=True)
class Preset:
    """One run of the experiment: objective, regulariser, and the reference run's numbers."""

    name: str
    loss: str
    penalty: str | None
    penalty_weight: float
    spectral_norm: bool
    reference_is: float
    reference_fid: float

    def describe(self) -> str:
        """Short human description, e.g. ``"JSD (non-saturating) + spectral norm"``."""
        loss = "JSD (non-saturating)" if self.loss.startswith("jsd") else "W1"
        if self.spectral_norm:
            return f"{loss} + spectral norm"
        if self.penalty is not None:
            return f"{loss} + {self.penalty.upper()} weight {self.penalty_weight:g}"
        return f"{loss}, plain"


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("jsd-1", "jsd-nonsaturating", None, 0.0, False, 3.483, 124.47),
        Preset("jsd-2", "jsd-nonsaturating", None, 0.0, True, 4.873, 40.89),
        Preset("jsd-3", "jsd-nonsaturating", "r1", 1.0, False, 5.424, 33.07),
        Preset("w1-2", "w1", None, 0.0, True, 3.642, 84.27),
        Preset("w1-3", "w1", "r1", 1.0, False, 5.812, 24.91),
    )
}


def parse_presets(spec: Any) -> list[str]:
    """Preset names from ``--run``: ``None`` or ``"all"`` gives all five (in SPEC order), else
    one name or a comma-separated list; ``ValueError`` naming the presets for anything else."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return list(PRESETS)
    names = [s.strip() for s in str(spec).split(",") if s.strip()]
    bad = [n for n in names if n not in PRESETS]
    if bad or not names:
        raise ValueError(
            f"--run {spec!r}: unknown cifar10-gan preset; the presets are "
            f"{', '.join(PRESETS)} (one, a comma-separated list, or all)"
        )
    return list(dict.fromkeys(names))


def ema_decay(value: Any) -> float | None:
    """The generator EMA decay: SPEC's 0.998 when ``value`` is ``None``, ``None`` (no EMA) for
    0, else ``value`` (must be in [0, 1))."""
    if value is None:
        return DEFAULT_EMA
    try:
        decay = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"--ema must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"--ema must be in [0, 1) (0 turns the EMA off), got {value!r}")
    return None if decay == 0.0 else decay


def preset_config(name: str, width: int = WIDTH) -> GANConfig:
    """The :class:`GANConfig` of preset ``name`` (SPEC §3) with DCGAN ``width``."""
    p = PRESETS[parse_presets(name)[0]]
    return GANConfig(
        arch="dcgan",
        z_dim=100,
        image_shape=(3, 32, 32),
        loss=p.loss,
        penalty=p.penalty,
        penalty_weight=p.penalty_weight,
        critic_steps=2,
        lr_generator=2e-4,
        lr_critic=4e-4,
        betas=(0.0, 0.99),
        width=width,
        spectral_norm=p.spectral_norm,
    )


# --------------------------------------------------------------------------- sample quality
class _StandInNet(nn.Module):
    """Random-weight net (quick runs only) on 32×32 RGB in [0, 1]: 64 features (mean and max
    of 32 conv channels) and 10 class probabilities from the 4×4 average colours."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU()
        )
        self.fc = nn.Linear(48, 10)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = 2.0 * x - 1.0
        h = self.body(x)
        feats = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        logits = self.fc(nn.functional.avg_pool2d(x, 8).flatten(1))
        return feats, torch.softmax(4.0 * logits, dim=1)


def stand_in_feature_space(seed: int = 0) -> Any:
    """A :class:`~dgm_ext.metrics.FeatureSpace` of a small convolutional net with seeded random
    weights (64 features, 10 classes): a fast stand-in for Inception-v3 in ``--quick`` runs and
    tests. Its IS/FID/KID have no meaning beyond checking the plumbing."""
    from dgm_ext.metrics import FeatureSpace

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _StandInNet().eval()

    def extract(images: Tensor) -> tuple[Tensor, Tensor]:
        feats, probs = [], []
        with torch.no_grad():
            for x in images.float().cpu().split(500):
                f, p = net(x)
                feats.append(f.double())
                probs.append(p.double())
        return torch.cat(feats), torch.cat(probs)

    return FeatureSpace("random-conv-stand-in", "pool", 64, extract)


def _inception_space(weights: Path, device: torch.device) -> Any:
    from dgm_ext.metrics import FeatureSpace, fid_inception_v3, inception_outputs
    from dgm_ext.metrics.inception import NUM_FEATURES

    net = fid_inception_v3(weights, device=device)
    batch = 250 if device.type == "cuda" else 50
    return FeatureSpace(
        "fid-inception-v3",
        "pool3",
        NUM_FEATURES,
        lambda x: inception_outputs(net, x, batch_size=batch),
    )


# --------------------------------------------------------------------------- data and weights
def write_fake_cifar10(
    root: str | os.PathLike, per_batch: int = 64, n_test: int = 64, seed: int = 0
) -> Path:
    """Write generated 32×32 RGB images as CIFAR-10 python batches (``data_batch_1..5``,
    ``test_batch``, ``batches.meta``) into ``<root>/cifar-10-batches-py``; returns that folder.

    Each image is a smooth two-colour gradient with a disc or square whose colour and shape
    follow its label (0..9): structure a small GAN can pick up, nothing like CIFAR-10."""
    from dgm_ext.data.cifar import CIFAR10_CLASSES

    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32) / 31.0

    def images(n: int) -> tuple[np.ndarray, list[int]]:
        labels = rng.integers(0, 10, n)
        a, b = rng.uniform(0, 1, (n, 3, 1, 1)), rng.uniform(0, 1, (n, 3, 1, 1))
        angle = rng.uniform(0, 2 * np.pi, (n, 1, 1, 1))
        t = np.clip(0.5 + (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)), 0, 1)
        img = (1 - t) * a + t * b
        cy, cx = rng.uniform(0.3, 0.7, (2, n, 1, 1, 1))
        r = rng.uniform(0.12, 0.25, (n, 1, 1, 1))
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        square = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r)
        shape = np.where((labels % 2 == 0)[:, None, None, None], disc, square)
        hue = labels / 10.0 * 2 * np.pi
        rgb = np.stack([np.cos(hue), np.cos(hue - 2.1), np.cos(hue + 2.1)], axis=1)
        colour = 0.5 + 0.45 * rgb[:, :, None, None]
        img = np.where(shape, colour, img)
        data = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8).reshape(n, 3072)
        return data, labels.tolist()

    def dump(name: str, label: str, n: int) -> None:
        data, labels = images(n)
        d = {
            b"batch_label": label.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"generated_{name}_{i}.png".encode() for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=2)

    for i in range(1, 6):
        dump(f"data_batch_{i}", f"training batch {i} of 5 (generated)", per_batch)
    dump("test_batch", "testing batch 1 of 1 (generated)", n_test)
    meta = {
        b"label_names": [c.encode() for c in CIFAR10_CLASSES],
        b"num_cases_per_batch": per_batch,
        b"num_vis": 3072,
    }
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return folder


def _find_inception_weights(data_root: str | None) -> Path:
    """The FID Inception-v3 weights file: ``$DGM_EXT_INCEPTION_WEIGHTS``, else one of the
    standard file names in the data root; ``FileNotFoundError`` saying where it looked."""
    from dgm_ext.data.files import data_root as resolve_root
    from dgm_ext.metrics.inception import WEIGHTS_ENV, WEIGHTS_FILE_NAMES

    get = (
        f"get pytorch-fid's {WEIGHTS_FILE_NAMES[0]} once from {FID_WEIGHTS_URL} (or "
        f"torch-fidelity's {WEIGHTS_FILE_NAMES[1]}, the same weights) and set "
        f"{WEIGHTS_ENV}=/path/to/it or put it in the data root; dgm_ext never downloads it. "
        "(--quick needs neither these weights nor CIFAR-10.)"
    )
    env = os.environ.get(WEIGHTS_ENV, "").strip()
    if env:
        path = Path(env).expanduser()
        if path.is_file():
            return path
        raise FileNotFoundError(
            f"cifar10-gan measures IS/FID/KID with FID's Inception-v3, but {WEIGHTS_ENV}={env} "
            f"is not a file; {get}"
        )
    root = resolve_root(data_root)
    for name in WEIGHTS_FILE_NAMES:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"cifar10-gan measures IS/FID/KID with FID's Inception-v3 and needs its weights file: "
        f"{WEIGHTS_ENV} is unset and neither {' nor '.join(WEIGHTS_FILE_NAMES)} is in the data "
        f"root {root}; {get}"
    )


def _check_inputs(ctx: RunContext) -> tuple[Path, Path]:
    """Weights file and CIFAR-10 folder, checked before anything is trained; one error naming
    everything that is missing. CIFAR-10 is not downloaded while the weights are missing."""
    from dgm_ext.data import DatasetNotFoundError
    from dgm_ext.data.cifar import find_cifar10

    try:
        weights = _find_inception_weights(ctx.data_root)
    except FileNotFoundError as exc:
        try:
            find_cifar10(ctx.data_root, download=False)
        except DatasetNotFoundError as data_exc:
            raise FileNotFoundError(
                f"{exc}\nCIFAR-10 is missing too (not downloaded while the Inception weights "
                f"are missing): {data_exc}"
            ) from None
        raise
    try:
        folder = find_cifar10(ctx.data_root)
    except DatasetNotFoundError as exc:
        raise DatasetNotFoundError(
            f"cifar10-gan trains on the CIFAR-10 python batches: {exc} (the data root is "
            "--data-root, else $DGM_EXT_DATA; --quick needs no data)"
        ) from None
    return weights, folder


# --------------------------------------------------------------------------- the experiment
@dataclass
class _Setup:
    train: Any
    test: Tensor
    space: Any
    n_samples: int
    kid_subsets: int
    width: int
    epochs: int
    data_note: str


def _setup(ctx: RunContext) -> _Setup:
    from dgm_ext.data import ChecksumWarning, ImageDataset, load_cifar10

    epochs = ctx.epochs if ctx.epochs is not None else QUICK_EPOCHS if ctx.quick else EPOCHS
    if ctx.quick:
        root = ctx.out / "quick-data"
        write_fake_cifar10(root, per_batch=64, n_test=64, seed=ctx.data_seed)
        with warnings.catch_warnings():  # generated files: no published checksum to expect
            warnings.simplefilter("ignore", ChecksumWarning)
            train = load_cifar10("train", root, download=False, verify=False)
            test = load_cifar10("test", root, download=False, verify=False)
        space, n, width = stand_in_feature_space(ctx.seed), QUICK_N_SAMPLES, QUICK_WIDTH
        kid_subsets = QUICK_KID_SUBSETS
        note = f"{len(train)} generated CIFAR-format images in {root} (quick)"
    else:
        from dgm_ext.train import resolve_device

        weights, folder = _check_inputs(ctx)
        space = _inception_space(weights, resolve_device(ctx.device))
        ctx.log(f"FID Inception-v3 weights: {weights}; CIFAR-10: {folder}")
        train = load_cifar10("train", ctx.data_root, verify=ctx.verify)
        test = load_cifar10("test", ctx.data_root, verify=ctx.verify)
        n, width, kid_subsets = N_SAMPLES, WIDTH, KID_SUBSETS
        note = f"CIFAR-10 training set ({folder})"
    if ctx.train_size is not None and ctx.train_size < len(train):
        k = ctx.train_size
        train = ImageDataset(train.images[:k], train.labels[:k], "grey", name=train.name)
        note += f", first {k} images"
    return _Setup(train, test.images, space, n, kid_subsets, width, epochs, note)


def _run_preset(
    ctx: RunContext, name: str, setup: _Setup, quality: SampleQuality, ema: float | None
) -> dict[str, Any]:
    from dgm_ext.plots import save_image_grid

    preset = PRESETS[name]
    torch.manual_seed(ctx.seed)
    model = GAN(preset_config(name, setup.width), ops=ctx.ops)
    run_dir = ctx.out / name
    epochs = setup.epochs
    title = f"cifar10-gan {name}: {preset.describe()}"
    training = GANTraining(
        ctx, model, run_dir, epochs=epochs, batch_size=BATCH_SIZE, ema_decay=ema,
        evaluate=quality, evaluate_at=eval_epochs(epochs, 1, max(1, epochs // 10)),
        grids_at=grid_epochs(epochs), title=title, seed=ctx.seed,
    )  # fmt: skip
    rows = training.fit(setup.train)
    metric = f"train_{model.metric_name}"
    plot_metric_and_fid(
        rows, metric, run_dir / "figures" / "metric_and_fid.png",
        f"{title}\n{model.metric_name.upper()} estimate and FID ({quality.space.name}, "
        f"{quality.n} samples vs {quality.n_reference} training images)",
    )  # fmt: skip
    with using_ema(model, training.trainer):
        model.to(training.trainer.device)
        final = training.sampler(ctx.seed + 2)(64)
    save_image_grid(
        final, run_dir / "figures" / "samples-final.png", 8,
        f"{title}: 64 samples after epoch {rows[-1]['epoch']}" + (" (EMA)" if ema else ""),
    )  # fmt: skip
    evaluated = [r for r in rows if "fid" in r]
    keys = ("epoch", metric, "is", "is_std", "fid", "kid", "kid_std", "eval_s")
    last = evaluated[-1] if evaluated else {}
    best = min(evaluated, key=lambda r: r["fid"]) if evaluated else {}
    nan = float("nan")
    return {
        "setup": preset.describe(),
        "config": model.config.to_dict(),
        "ema": ema,
        "epochs": rows[-1]["epoch"] if rows else 0,
        "evaluated_epoch": last.get("epoch"),
        **{k: last.get(k, nan) for k in ("is", "is_std", "fid", "kid", "kid_std")},
        "best_fid": best.get("fid", nan),
        "best_fid_epoch": best.get("epoch"),
        "reference_is": preset.reference_is,
        "reference_fid": preset.reference_fid,
        "seconds_per_epoch": float(np.mean([train_seconds(r) for r in rows])) if rows else nan,
        "metric": metric,
        "evaluations": [{k: r[k] for k in keys if k in r} for r in evaluated],
    }


def _fid_figure(results: dict[str, dict], path: Path, subtitle: str) -> None:
    from dgm_ext.plots import plot_curves

    curves = {
        name: ([e["epoch"] for e in r["evaluations"]], [e["fid"] for e in r["evaluations"]])
        for name, r in results.items()
        if r["evaluations"]
    }
    if curves:
        plot_curves(curves, path, ylabel="FID", title=f"cifar10-gan: FID over training{subtitle}")


def check(ctx: RunContext) -> None:
    """Refuse bad options, and find the Inception weights and CIFAR-10 (full runs), before
    the run directory is created."""
    parse_presets(ctx.extra.get("run"))
    ema_decay(ctx.extra.get("ema"))
    if not ctx.quick:
        _check_inputs(ctx)


def run(ctx: RunContext) -> dict:
    """Train the chosen presets (default all five) and compare them with the reference run."""
    from dgm_ext.metrics import save_stats

    names = parse_presets(ctx.extra.get("run"))
    ema = ema_decay(ctx.extra.get("ema"))
    setup = _setup(ctx)
    ctx.log(
        f"presets {', '.join(names)}; {setup.epochs} epochs each; EMA {ema}; data: "
        f"{setup.data_note}; quality: {setup.space.name}, {setup.n_samples} samples"
    )
    t0 = time.perf_counter()
    quality = SampleQuality(
        setup.space, setup.train.images, setup.n_samples, kid_reference=KID_REFERENCE,
        kid_subsets=setup.kid_subsets, seed=ctx.seed,
    )  # fmt: skip
    save_stats(ctx.path("reference-stats.npz"), quality.mu, quality.sigma)
    floor = quality.measure(setup.test)
    ctx.log(
        f"reference features of {quality.n_reference} training images in "
        f"{time.perf_counter() - t0:.1f} s; their IS {quality.reference_is:.3f}; floor (test "
        f"vs training images): FID {floor['fid']:.3f}"
    )

    results: dict[str, dict] = {}
    for name in names:
        ctx.log(f"--- {name}: {PRESETS[name].describe()}")
        results[name] = _run_preset(ctx, name, setup, quality, ema)
    _fid_figure(results, ctx.out / "figures" / "fid_over_training.png",
                f" ({setup.space.name}, {setup.n_samples} samples)")  # fmt: skip

    table_rows: list[Sequence[Any]] = []
    for name, r in results.items():
        best = f"{r['best_fid']:.2f} ({r['best_fid_epoch']})" if r["best_fid_epoch"] else "-"
        table_rows.append([
            name, r["setup"], r["epochs"], r["is"], r["fid"], 1000 * r["kid"], best,
            r["reference_is"], r["reference_fid"], r["seconds_per_epoch"],
        ])  # fmt: skip
    table_rows.append([
        "data", f"{len(setup.test)} test images vs training", "", floor["is"], floor["fid"],
        1000 * floor["kid"], "", "", "", "",
    ])  # fmt: skip
    cfg = preset_config(names[0], setup.width)
    space = setup.space
    notes = (
        f"DCGAN width {setup.width}, batch {BATCH_SIZE}, z = 100, Adam betas (0, 0.99), "
        f"generator lr 2e-4, critic lr 4e-4, {cfg.critic_steps} critic steps per generator "
        f"step, generator EMA {ema if ema else 'off'} (the EMA generator is evaluated); "
        f"{setup.data_note}. JSD presets use the non-saturating generator loss; R1 presets have "
        f"no spectral norm. IS: {setup.n_samples} samples, 10 splits; FID: the same samples vs "
        f"the statistics of {quality.n_reference} training images; KID (x10^3): "
        f"{setup.kid_subsets} subsets of {min(1000, setup.n_samples)} vs "
        f"{min(KID_REFERENCE, quality.n_reference)} training images; feature network "
        f"{space.name} ({space.layer}, {space.width}-d). Final = last evaluated epoch; "
        "reference = the reference run's final IS/FID (its sample counts are not known; FID "
        "from 10k samples is a few points higher than from 50k). s/epoch excludes the "
        "evaluation."
    )
    if ctx.quick:
        notes += (
            " QUICK run: generated images, a random-weight stand-in feature network instead "
            "of Inception, tiny networks and 2 epochs; the numbers are meaningless (and with "
            "EMA 0.998 over so few generator steps the EMA generator is still close to its "
            "initialisation)."
        )
    table = Table(
        "cifar10-gan: sample quality of the final (EMA) generator",
        ["preset", "setup", "epochs", "IS", "FID", "KID x10^3", "best FID (epoch)",
         "reference IS", "reference FID", "s/epoch"],
        table_rows,
        notes=notes,
    )  # fmt: skip
    return {
        "_title": "cifar10-gan: DCGAN on CIFAR-10, JSD/W1 with spectral norm or R1",
        "_tables": [table],
        "presets": results,
        "order": names,
        "quick": ctx.quick,
        "epochs": setup.epochs,
        "width": setup.width,
        "ema": ema,
        "data": setup.data_note,
        "feature_net": {
            "name": setup.space.name,
            "layer": setup.space.layer,
            "width": setup.space.width,
        },
        "n_samples": setup.n_samples,
        "reference_set": {
            "split": "train",
            "n": quality.n_reference,
            "is": quality.reference_is,
            "kid_subset": min(KID_REFERENCE, quality.n_reference),
        },
        "floor": floor,
        "reference_run": {
            n: {"is": p.reference_is, "fid": p.reference_fid} for n, p in PRESETS.items()
        },
    }
