"""Normalizing flows (SPEC §2): one :class:`Flow` API, composable transforms and base
distributions, planar flows, 2-D densities and fits, RealNVP on images.

* :mod:`~dgm_ext.flows.base`: :class:`Flow` (``forward``/``inverse`` with log-dets,
  ``log_prob``, ``sample(n, temperature)``, ``sample_and_log_prob``), N(0, I) base; the
  :class:`Transform` API (``forward``/``inverse(x, context=None) -> (y, logdet)``,
  :class:`ComposedTransform`, ``t.inv``), base distributions (:class:`StandardNormal`, the
  learnable :class:`DiagonalGaussian`) and :class:`TransformedFlow` (transform + base, with an
  optional context: conditional flows);
* :mod:`~dgm_ext.flows.transforms`: every transform in one place: :class:`PlanarTransform`,
  :class:`ConditionalPlanarTransform` (per-example planar layers from a context, the amortised
  VAE posterior's flow), :class:`AffineCouplingTransform` (conditional when its net has a
  ``context_dim``), :class:`SqueezeTransform`, :class:`FactorOutTransform`,
  :class:`PermutationTransform`, :class:`LogitTransform`;
* :mod:`~dgm_ext.flows.planar`: :class:`PlanarFlow` (û, fused op, numerical inverse; on a
  :class:`PlanarTransform`);
* :mod:`~dgm_ext.flows.densities`: U1–U4, arcs, sine: energies, exact samplers, log Z and
  entropies by quadrature;
* :mod:`~dgm_ext.flows.fit`: step-based maximum-likelihood and reverse-KL fits, NLL and
  KL(q‖p) estimates with standard errors;
* :mod:`~dgm_ext.flows.coupling`: masks, squeeze, :class:`AffineCoupling` and its MLP and
  residual conv nets (fused ``affine_coupling`` op);
* :mod:`~dgm_ext.flows.image`: :class:`ImageFlow` (dequantisation, logit transform,
  bits/dim with every Jacobian term), :func:`evaluate_bits_per_dim`;
* :mod:`~dgm_ext.flows.realnvp`: :class:`MLPRealNVP`, :class:`MultiScaleRealNVP` (each one
  :class:`ComposedTransform` of couplings, squeezes and factor-outs), :class:`RealNVPConfig`
  (``num_classes``: class-conditional), :func:`build_realnvp`, save/load.

Composing a flow: ``TransformedFlow(ComposedTransform(PlanarTransform(2), PlanarTransform(2)),
DiagonalGaussian((2,)))``; a conditional one: ``TransformedFlow(ComposedTransform(
AffineCouplingTransform(mask, MLPCouplingNet(d, 64, context_dim=c)), ...), StandardNormal(d))``
with ``flow.log_prob(x, context)`` and ``flow.sample(n, context=context)``.
"""

from dgm_ext.flows.base import (
    ComposedTransform,
    DiagonalGaussian,
    Distribution,
    Flow,
    InverseTransform,
    StandardNormal,
    Transform,
    TransformedFlow,
    standard_normal_log_prob,
)
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
from dgm_ext.flows.transforms import (
    AffineCouplingTransform,
    ConditionalPlanarTransform,
    FactorOutTransform,
    LogitTransform,
    PermutationTransform,
    PlanarTransform,
    SqueezeTransform,
)

__all__ = [
    "TARGETS",
    "AffineCouplingTransform",
    "ComposedTransform",
    "ConditionalPlanarTransform",
    "Density2D",
    "DiagonalGaussian",
    "Distribution",
    "FactorOutTransform",
    "FitResult",
    "Flow",
    "ImageFlow",
    "InverseTransform",
    "LogitTransform",
    "MLPRealNVP",
    "MultiScaleRealNVP",
    "PermutationTransform",
    "PlanarFitConfig",
    "PlanarFlow",
    "PlanarTransform",
    "RealNVPConfig",
    "SqueezeTransform",
    "StandardNormal",
    "Transform",
    "TransformedFlow",
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
