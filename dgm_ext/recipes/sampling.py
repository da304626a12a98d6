"""``dgm-ext sample MODEL --n N --out DIR``: a model's samples as files any tool can score."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from dgm_ext.recipes.base import Recipe
from dgm_ext.recipes.options import add_common, check_counts
from dgm_ext.recipes.sources import model_file, model_samples, read_model

__all__ = ["RECIPE", "write_pngs"]


def add_arguments(sa: argparse.ArgumentParser) -> None:
    """Options of ``sample``."""
    add_common(sa, data=False, data_seed=False, progress=False)
    sa.add_argument("model", metavar="MODEL", help="model file or run folder (as eval)")
    sa.add_argument("--n", type=int, required=True, help="number of samples")
    sa.add_argument("--out", required=True, help="folder to write (created; must be empty)")
    sa.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="scale of the latent draws z ~ N(0, T^2 I) (default 1)",
    )
    sa.add_argument(
        "--label",
        type=int,
        default=None,
        help="class-conditional models: samples of this class only (default: every class)",
    )
    sa.add_argument("--device", default=None, help="sampling device (default: cpu)")
    sa.add_argument("--batch-size", type=int, default=500, help="samples per batch")


def write_pngs(images, out: Path) -> None:
    """``images`` (N, C, H, W) in [0, 1] as 8-bit PNG files 000000.png, ... in ``out``."""
    import numpy as np
    import torch
    from PIL import Image

    a = (images.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    width = max(6, len(str(len(a) - 1)))
    for i, img in enumerate(a):
        if img.shape[0] == 1:
            pic = Image.fromarray(img[0])
        else:
            pic = Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0)))
        pic.save(out / f"{i:0{width}d}.png")


def run(args: argparse.Namespace) -> dict:
    """PNG files and an .npz (planar flows: a CSV and an .npz of points), and sample.json."""
    import numpy as np
    import torch

    check_counts(args, n=1, batch_size=1)
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise ValueError(f"--temperature must be a finite number >= 0, got {args.temperature}")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty folder")
    source = Path(args.model)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    path = model_file(source)
    if path is None:
        raise ValueError(f"{source} holds no generator.pt, model.pt or flow.pt")
    kind, model, about = read_model(path, args.ops, planar=True)
    torch.manual_seed(args.seed)
    res = {**about, "kind": kind, "n": args.n, "temperature": args.temperature,
           "seed": args.seed, "out": str(out)}  # fmt: skip
    if args.label is not None:
        if kind == "planar":
            raise ValueError(f"--label {args.label}: a planar flow is not class-conditional")
        res["label"] = args.label
    if kind == "planar":
        flow = model.flow.to(args.device) if args.device is not None else model.flow
        with torch.no_grad():
            pts = torch.cat(
                [flow.sample(min(args.batch_size, args.n - i), args.temperature).cpu()
                 for i in range(0, args.n, args.batch_size)]
            ).double().numpy()  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        np.savetxt(out / "samples.csv", pts, delimiter=",", header="x,y", comments="")
        np.savez(out / "samples.npz", points=pts)
        res["files"] = ["samples.csv", "samples.npz"]
    else:
        images = model_samples(
            kind, model, args.n, temperature=args.temperature, batch_size=args.batch_size,
            device=args.device, label=args.label,
        )  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        write_pngs(images, out)
        np.savez(out / "samples.npz", images=images.numpy().astype(np.float32))
        res["image_shape"] = list(images.shape[1:])
        res["files"] = f"{args.n} PNG files and samples.npz"
    (out / "sample.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    return res


RECIPE = Recipe(
    name="sample",
    help="write a model's samples as PNG files and an .npz (planar flows: a CSV)",
    add_arguments=add_arguments,
    run=run,
    description="Draw --n samples of a trained model into --out: PNG files 000000.png, "
    "... and samples.npz (key 'images', float32 (N, C, H, W) in [0, 1]) for image models "
    "(VAE decoder means, GAN, RealNVP), samples.csv (x, y) and samples.npz (key "
    "'points') for a planar flow. The PNG files are 8-bit: what any FID tool reads.",
)
