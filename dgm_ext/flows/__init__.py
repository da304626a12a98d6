"""Normalizing flows (SPEC §2): one :class:`Flow` API, planar flows, 2-D densities and fits.

* :mod:`~dgm_ext.flows.base`: :class:`Flow` (``forward``/``inverse`` with log-dets,
  ``log_prob``, ``sample(n, temperature)``, ``sample_and_log_prob``), N(0, I) base;
* :mod:`~dgm_ext.flows.planar`: :class:`PlanarFlow` (û, fused op, numerical inverse);
* :mod:`~dgm_ext.flows.densities`: U1–U4, arcs, sine: energies, exact samplers, log Z and
  entropies by quadrature;
* :mod:`~dgm_ext.flows.fit`: step-based maximum-likelihood and reverse-KL fits, NLL and
  KL(q‖p) estimates with standard errors.
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
from dgm_ext.flows.planar import PlanarFlow, planar_inverse, planar_u_hat

__all__ = [
    "TARGETS",
    "Density2D",
    "FitResult",
    "Flow",
    "PlanarFitConfig",
    "PlanarFlow",
    "evaluate_kl",
    "evaluate_nll",
    "fit_planar",
    "get_density",
    "load_planar",
    "planar_inverse",
    "planar_u_hat",
    "save_planar",
    "standard_normal_log_prob",
]
