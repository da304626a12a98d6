"""Registry of the reproducible experiments of SPEC §3 (``dgm-ext reproduce NAME``).

Each experiment lives in its own module exposing ``run(ctx: RunContext) -> dict``; the
registry maps names to modules and imports them lazily, so GAN and flow experiments join
by calling :func:`register` (or adding an entry to ``EXPERIMENTS``) without importing the
VAE code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from dgm_ext.experiments.common import RunContext, run_experiment

__all__ = [
    "EXPERIMENTS",
    "ExperimentSpec",
    "RunContext",
    "get_experiment",
    "list_experiments",
    "register",
    "run_experiment",
]


@dataclass(frozen=True)
class ExperimentSpec:
    """A registered experiment: its name, the module holding ``run``, a one-line summary,
    whether its ``run`` uses ``ctx.checkpoint`` (``reproduce --checkpoint``), which keys of
    ``ctx.extra`` it reads (``reproduce --run`` / ``--ema``: ``"run"``, ``"ema"``) and the data
    sets it reads (found, and their md5 checked, before the run directory is created)."""

    name: str
    module: str
    summary: str
    takes_checkpoint: bool = False
    options: tuple[str, ...] = ()
    data: tuple[str, ...] = ()

    def load(self) -> Callable[[RunContext], dict]:
        """Import the module and return its ``run(ctx)`` function."""
        return importlib.import_module(self.module).run

    def check(self, ctx: RunContext) -> None:
        """The module's ``check(ctx)``, when it has one: the experiment's own options (and
        inputs), refused before :func:`run_experiment` creates anything."""
        check = getattr(importlib.import_module(self.module), "check", None)
        if check is not None:
            check(ctx)


EXPERIMENTS: dict[str, ExperimentSpec] = {}


def register(
    name: str,
    module: str,
    summary: str,
    takes_checkpoint: bool = False,
    options: tuple[str, ...] = (),
    data: tuple[str, ...] = (),
) -> ExperimentSpec:
    """Add an experiment to the registry (names must be unique). ``takes_checkpoint``: its
    ``run`` reuses ``ctx.checkpoint``; other experiments refuse ``--checkpoint``.
    ``options``: the ``ctx.extra`` keys it reads; :func:`run_experiment` refuses others.
    ``data``: data sets it reads (``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``)."""
    if name in EXPERIMENTS and EXPERIMENTS[name].module != module:
        raise ValueError(f"name: experiment {name!r} is already registered")
    spec = ExperimentSpec(name, module, summary, takes_checkpoint, tuple(options), tuple(data))
    EXPERIMENTS[name] = spec
    return spec


def get_experiment(name: str) -> ExperimentSpec:
    """Look up a registered experiment by name."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ValueError(
            f"name: unknown experiment {name!r}; available: {', '.join(sorted(EXPERIMENTS))}"
        ) from None


def list_experiments() -> list[str]:
    """Names of all registered experiments, sorted."""
    return sorted(EXPERIMENTS)


register(
    "vae-elbo",
    "dgm_ext.experiments.vae_elbo",
    "VAE L=100 (784-300-300), Adam 3e-4, 20 epochs, binarised MNIST; val ELBO, test log p(x)",
    data=("mnist",),
)
register(
    "vae-mlp",
    "dgm_ext.experiments.vae_mlp",
    "MLP VAE 784-500-20, 40 epochs; ELBO curves, samples over training, L=2 manifold",
    data=("mnist",),
)
register(
    "vae-likelihoods",
    "dgm_ext.experiments.vae_likelihoods",
    "conv VAE L=16 with Gaussian / Beta / Categorical(4) / Bernoulli decoders",
    data=("mnist",),
)
register(
    "vae-latent",
    "dgm_ext.experiments.vae_latent",
    "latent scatter (L=2), PCA of L=16 encodings, interpolations",
    data=("mnist",),
)
register(
    "vae-no-encoder",
    "dgm_ext.experiments.vae_no_encoder",
    "per-example ELBO optimisation vs encoder (amortisation gap), left-half completion",
    takes_checkpoint=True,
    data=("mnist",),
)
register(
    "dirac-gan",
    "dgm_ext.experiments.dirac_gan",
    "Dirac-GAN grid {JSD, W1} x {none, R1, GP} x EMA: trajectories, convergence table",
    options=("iterations", "seeds", "nonsaturating"),
)
register(
    "gan-mnist",
    "dgm_ext.experiments.gan_mnist",
    "MLP GAN on MNIST (non-saturating JSD): grids, FID/KID over training, interpolation, modes",
    options=("ema",),
    data=("mnist",),
)
register(
    "conditional-mnist",
    "dgm_ext.experiments.conditional_mnist",
    "class-conditional VAE and GAN vs unconditional twins: sample accuracy, per-class FID/KID",
    data=("mnist",),
)
register(
    "cifar10-gan",
    "dgm_ext.experiments.cifar10_gan",
    "DCGAN on CIFAR-10: JSD/W1 with spectral norm or R1 (--run jsd-1..w1-3), IS/FID/KID",
    options=("run", "ema"),
)
register(
    "planar-2d",
    "dgm_ext.experiments.planar_2d",
    "planar flows K=2,8,32: ML on arcs/sine samples (NLL vs entropy), reverse KL to U1-U4",
    options=("run", "steps"),
)
register(
    "vae-flow",
    "dgm_ext.experiments.vae_flow",
    "vae-elbo VAE with a planar-flow posterior, K=0,10,40 x 2 seeds: ELBO, IS log p(x), s/epoch",
    options=("run", "seeds"),
    data=("mnist",),
)
register(
    "realnvp-mnist",
    "dgm_ext.experiments.realnvp_mnist",
    "RealNVP on dequantised MNIST: MLP reference (--run mlp) and multi-scale conv; bits/dim",
    options=("run",),
    data=("mnist",),
)
register(
    "families-mnist",
    "dgm_ext.experiments.families_mnist",
    "VAE vs GAN vs RealNVP on MNIST: FID/KID (MNIST classifier), likelihoods, size, s/epoch",
    options=("run",),
    data=("mnist",),
)
