"""Normalizing flows (SPEC §2): one :class:`Flow` API, planar flows, 2-D densities and fits,
RealNVP on images.

* :mod:`~dgm_ext.flows.base`: :class:`Flow` (``forward``/``inverse`` with log-dets,
  ``log_prob``, ``sample(n, temperature)``, ``sample_and_log_prob``), N(0, I) base;
* :mod:`~dgm_ext.flows.planar`: :class:`PlanarFlow` (û, fused op, numerical inverse);
* :mod:`~dgm_ext.flows.densities`: U1–U4, arcs, sine: energies, exact samplers, log Z and
  entropies by quadrature;
* :mod:`~dgm_ext.flows.fit`: step-based maximum-likelihood and reverse-KL fits, NLL and
  KL(q‖p) estimates with standard errors;
* :mod:`~dgm_ext.flows.coupling`: masks, squeeze, :class:`AffineCoupling` and its MLP and
  residual conv nets (fused ``affine_coupling`` op);
* :mod:`~dgm_ext.flows.image`: :class:`ImageFlow` (dequantisation, logit transform,
  bits/dim with every Jacobian term), :func:`evaluate_bits_per_dim`;
* :mod:`~dgm_ext.flows.realnvp`: :class:`MLPRealNVP`, :class:`MultiScaleRealNVP`,
  :class:`RealNVPConfig`, :func:`build_realnvp`, save/load.
"""

from dgm_ext.flows.base import Flow, standard_normal_log_prob
from dgm_ext.flows.densities import TARGETS, Density2D, get_density
from dgm_ext.flows.fit import (
    FitResult,
    PlanarFitConfig,
    evaluate_kl,
    evaluate_nll,
    fit_planar,
    load_planar,
    save_planar,
)
from dgm_ext.flows.image import ImageFlow, bits_per_dim, dequantize, evaluate_bits_per_dim
from dgm_ext.flows.planar import PlanarFlow, planar_inverse, planar_u_hat
from dgm_ext.flows.realnvp import (
    MLPRealNVP,
    MultiScaleRealNVP,
    RealNVPConfig,
    build_realnvp,
    load_realnvp,
    save_realnvp,
)

__all__ = [
    "TARGETS",
    "Density2D",
    "FitResult",
    "Flow",
    "ImageFlow",
    "MLPRealNVP",
    "MultiScaleRealNVP",
    "PlanarFitConfig",
    "PlanarFlow",
    "RealNVPConfig",
    "bits_per_dim",
    "build_realnvp",
    "dequantize",
    "evaluate_bits_per_dim",
    "evaluate_kl",
    "evaluate_nll",
    "fit_planar",
    "get_density",
    "load_planar",
    "load_realnvp",
    "planar_inverse",
    "planar_u_hat",
    "save_planar",
    "save_realnvp",
    "standard_normal_log_prob",
]
