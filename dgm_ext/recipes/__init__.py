"""Recipes: what each ``dgm-ext`` command does, callable from Python with the same options.

Each recipe (:class:`~dgm_ext.recipes.base.Recipe`) declares its options once; the command
line builds its parser from :data:`RECIPES` and only parses and prints, and the functions
below take the same options as keywords (same names as the long options with ``_`` for
``-``, same defaults, choices checked the same way) and return the result as a dict::

    from dgm_ext.recipes import train_vae, evaluate, sample

    train_vae(out="runs/vae", epochs=5, latent_dim=20)
    evaluate("runs/vae", k=200)                      # ELBO and log p(x) of the test split
    evaluate("samples/", "mnist:test", metrics="fid,kid")
    sample("runs/vae", n=1000, out="samples/")

A training recipe records its options in its run folder; ``config="runs/vae"`` (``--config``
on the command line) starts from them, so the same ``out`` continues that run and another
``out`` reruns it.
"""

from __future__ import annotations

from typing import Any

from dgm_ext.recipes import evaluation, gan, planar, realnvp, reproduce, sampling, vae
from dgm_ext.recipes.base import Recipe
from dgm_ext.recipes.options import setup

__all__ = [
    "RECIPES",
    "Recipe",
    "evaluate",
    "run_recipe",
    "sample",
    "train_gan",
    "train_planar",
    "train_realnvp",
    "train_vae",
]

#: Every ``dgm-ext`` command but ``list``, by its command words.
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        vae.RECIPE,
        gan.RECIPE,
        planar.RECIPE,
        realnvp.RECIPE,
        evaluation.RECIPE,
        sampling.RECIPE,
        reproduce.RECIPE,
    )
}


def run_recipe(name: str, positional: dict[str, Any] | None = None, **options: Any) -> dict:
    """Run the recipe ``name`` (e.g. ``"train gan"``) with ``options`` as keywords."""
    try:
        recipe = RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; recipes: {', '.join(RECIPES)}") from None
    args = recipe.namespace(positional or {}, options)
    setup(args)
    return recipe.run(args)


def train_vae(**options: Any) -> dict:
    """``dgm-ext train vae`` (see ``dgm-ext train vae --help`` for the options)."""
    return run_recipe("train vae", **options)


def train_gan(**options: Any) -> dict:
    """``dgm-ext train gan`` (see ``dgm-ext train gan --help`` for the options)."""
    return run_recipe("train gan", **options)


def train_planar(**options: Any) -> dict:
    """``dgm-ext train planar`` (see ``dgm-ext train planar --help`` for the options)."""
    return run_recipe("train planar", **options)


def train_realnvp(**options: Any) -> dict:
    """``dgm-ext train realnvp`` (see ``dgm-ext train realnvp --help`` for the options)."""
    return run_recipe("train realnvp", **options)


def evaluate(a: str, b: str | None = None, **options: Any) -> dict:
    """``dgm-ext eval A [B]``: a model's numbers, or sample quality of A (against B)."""
    return run_recipe("eval", {"checkpoint": str(a), "reference": b}, **options)


def sample(model: str, **options: Any) -> dict:
    """``dgm-ext sample MODEL --n N --out DIR``."""
    return run_recipe("sample", {"model": str(model)}, **options)
