"""Variational autoencoders on the fused ops: models, evaluation, latent and inference tools."""

from dgm_ext.vae.evaluate import (
    evaluate_elbo,
    evaluate_log_likelihood,
    importance_log_likelihood,
)
from dgm_ext.vae.latent import (
    different_class_pairs,
    encode_means,
    interpolate,
    manifold_grid,
    manifold_images,
    pca,
)
from dgm_ext.vae.likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    BetaLikelihood,
    CategoricalLikelihood,
    GaussianLikelihood,
    Likelihood,
    make_likelihood,
)
from dgm_ext.vae.model import VAE, VAEConfig, build_vae, load_vae, resolve_ops, save_vae
from dgm_ext.vae.networks import ARCHITECTURES, make_decoder, make_encoder
from dgm_ext.vae.no_encoder import (
    amortisation_gap,
    complete_left_half,
    fit_posterior,
    left_half_index,
    posterior_elbo,
)
from dgm_ext.vae.planar import PlanarPosterior, planar_u_hat

__all__ = [
    "ARCHITECTURES",
    "LIKELIHOODS",
    "VAE",
    "BernoulliLikelihood",
    "BetaLikelihood",
    "CategoricalLikelihood",
    "GaussianLikelihood",
    "Likelihood",
    "PlanarPosterior",
    "VAEConfig",
    "amortisation_gap",
    "build_vae",
    "complete_left_half",
    "different_class_pairs",
    "encode_means",
    "evaluate_elbo",
    "evaluate_log_likelihood",
    "fit_posterior",
    "importance_log_likelihood",
    "interpolate",
    "left_half_index",
    "load_vae",
    "make_decoder",
    "make_encoder",
    "make_likelihood",
    "manifold_grid",
    "manifold_images",
    "pca",
    "planar_u_hat",
    "posterior_elbo",
    "resolve_ops",
    "save_vae",
]
