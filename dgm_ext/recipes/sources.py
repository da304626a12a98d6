"""What ``eval`` and ``sample`` read: model files, run folders, training checkpoints, image
folders, data splits and statistics files, each answered with one line when it is none of
them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dgm_ext.recipes.options import DATASETS

__all__ = [
    "EVAL_TAKES",
    "MODEL_SAMPLES",
    "Source",
    "data_spec",
    "model_file",
    "model_samples",
    "read_model",
    "split_images",
]

MODEL_SAMPLES = 10_000  # samples drawn from a model when --n is not given

# the end of every message about a SOURCE that eval cannot read
EVAL_TAKES = (
    "eval takes a model.pt written by train vae, train realnvp or reproduce, a GAN "
    "generator.pt, the run folder holding one, a folder of images, a data split such as "
    "mnist:test, or (as A or B of two) an .npz of statistics"
)


def data_spec(source: str) -> tuple[str, str] | None:
    """``"mnist:train"`` -> ``("mnist", "train")`` when source names a data split."""
    if Path(source).exists() or ":" not in source:
        return None
    name, _, split = source.partition(":")
    if name not in DATASETS:
        raise ValueError(f"data source {source!r}: data set must be one of {DATASETS}")
    return name, split


def split_images(dataset: str, split: str, root: str | None, n: int | None, verify: bool = True):
    """The grey (MNIST-like) or RGB (CIFAR-10) images of a data split, the first ``n``."""
    from dgm_ext.data import load_cifar10, load_mnist

    if dataset == "cifar10":
        data = load_cifar10(split, root=root, download=False, verify=verify)
    else:
        fashion = dataset == "fashion-mnist"
        data = load_mnist(split, "grey", root=root, fashion=fashion, verify=verify)
    return data.images if n is None else data.images[:n]


class Source:
    """One side of a comparison: a folder, a data split, model samples or a statistics file.

    ``channels`` (1 or 3) and ``dataset`` hint at the feature network."""

    def __init__(self, kind: str, label: str, **kw: Any) -> None:
        self.kind, self.label = kind, label
        self.path: Path | None = kw.get("path")
        self.dataset: str | None = kw.get("dataset")
        self.split: str | None = kw.get("split")
        self.images = kw.get("images")
        self.channels: int | None = kw.get("channels")


def model_file(source: Path) -> Path | None:
    """The model file ``source`` names: the file itself; in a run folder its generator.pt,
    model.pt, flow.pt or (training not finished) checkpoints/last.pt; ``None`` for a folder
    without any of them (a folder of images)."""
    if not source.is_dir():
        return source
    for name in ("generator.pt", "model.pt", "flow.pt", "checkpoints/last.pt"):
        if (source / name).is_file():
            return source / name
    return None


def _load_model(path: Path, kind: str, ops: str) -> Any:
    from dgm_ext.flows.realnvp import load_realnvp
    from dgm_ext.gan import load_gan
    from dgm_ext.vae import load_vae

    return {"vae": load_vae, "gan": load_gan, "realnvp": load_realnvp}[kind](path, ops=ops)


def read_model(path: Path, ops: str, planar: bool = False) -> tuple[str, Any, dict]:
    """(kind, model, about) of a model file; one-line errors for other files."""
    from dgm_ext._model_files import describe, file_kind, read_model_file

    try:
        blob = read_model_file(path)  # one line for files that are not ours, no torch advice
    except ValueError as exc:
        raise ValueError(f"{exc}; {EVAL_TAKES}") from None
    kind = file_kind(blob)
    if kind == "checkpoint":
        return _from_checkpoint(path, blob, ops)
    if kind in ("vae", "gan", "realnvp"):
        return kind, _load_model(path, kind, ops), {"checkpoint": str(path)}
    if kind == "planar" and planar:
        from dgm_ext.flows import load_planar

        return kind, load_planar(path, ops=ops), {"checkpoint": str(path)}
    raise ValueError(f"{path} is {describe(blob)}, not a model eval reads; {EVAL_TAKES}")


def _from_checkpoint(path: Path, blob: dict, ops: str) -> tuple[str, Any, dict]:
    """(kind, model, about) for a trainer checkpoint: the model is rebuilt from the config
    beside it (the model file of its run folder, or train vae's vae_args.json) and given the
    checkpoint's weights; one-line ``ValueError`` when no matching config is found."""
    from dgm_ext._model_files import file_kind, read_model_file
    from dgm_ext.recipes.vae import vae_config
    from dgm_ext.vae import VAE, VAEConfig

    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    # reproduce writes <out>/model.pt (or model-X.pt) beside the trainer's <out>/train(-X)/
    looked = [run / "model.pt", run / "generator.pt", run / "vae_args.json"]
    if run.name == "train" or run.name.startswith("train-"):
        looked.append(run.parent / f"model{run.name[len('train') :]}.pt")
    state = blob.get("model")
    epoch = (blob.get("trainer") or {}).get("epoch")
    for candidate in looked:
        if not candidate.is_file():
            continue
        try:
            if candidate.suffix == ".json":
                options = json.loads(candidate.read_text(encoding="utf-8"))
                kind, model = "vae", VAE(VAEConfig(**vae_config(options)), ops=ops)
            else:
                kind = file_kind(read_model_file(candidate))
                if kind not in ("vae", "gan", "realnvp"):
                    continue
                model = _load_model(candidate, kind, ops)
            model.load_state_dict(state)  # a config that does not fit these weights: next
        except (ValueError, TypeError, KeyError, RuntimeError, OSError):
            continue
        about = {"checkpoint": str(path), "trained_epochs": epoch, "model_config": str(candidate)}
        return kind, model, about
    raise ValueError(
        f"{path} is a training checkpoint, and no model config matching it was found beside it "
        f"(looked for {', '.join(str(p) for p in looked)}); pass its run folder once training "
        f"has written the model file; {EVAL_TAKES}"
    )


def model_classes(kind: str, model: Any) -> int:
    """Number of classes of a class-conditional VAE, GAN or RealNVP (0: unconditional)."""
    if kind == "gan":
        return int(model.config.num_classes)
    return int(getattr(model, "num_classes", 0) or 0)


def model_samples(
    kind: str, model: Any, n: int, *, temperature: float = 1.0, batch_size: int = 500,
    device: Any = None, label: int | None = None,
) -> Any:  # fmt: skip
    """``n`` images (N, C, H, W) in [0, 1] on the CPU from a VAE (decoder means), GAN or
    RealNVP, latent draws z ~ N(0, T^2 I); a class-conditional model draws class ``label``
    (``None``: a GAN cycles through the classes, the others draw them uniformly)."""
    import torch

    k_classes = model_classes(kind, model)
    if label is not None and not k_classes:
        raise ValueError(f"--label {label}: the model is not class-conditional")
    if label is not None and not 0 <= label < k_classes:
        raise ValueError(f"--label must be a class in [0, {k_classes}), got {label}")
    if device is not None:
        model.to(device)
    model.eval()
    parts = []
    with torch.no_grad():
        for i in range(0, n, batch_size):
            k = min(batch_size, n - i)
            if kind == "gan":
                x = model.decode(model.sample_z(k) * temperature, labels=label)
            elif kind == "vae":
                z = torch.randn(k, model.latent_dim, device=model.device) * temperature
                x = model.sample(z=z, labels=label).clamp(0, 1)
            else:  # realnvp
                x = model.sample_images(k, temperature, labels=label)
            parts.append(x.detach().float().cpu())
    return torch.cat(parts)
