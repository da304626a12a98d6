"""Normalizing flows (SPEC §2): one :class:`Flow` API, planar flows, 2-D densities and fits."""

from dgm_ext.flows.base import Flow, standard_normal_log_prob
from dgm_ext.flows.planar import PlanarFlow, planar_inverse, planar_u_hat

__all__ = ["Flow", "PlanarFlow", "planar_inverse", "planar_u_hat", "standard_normal_log_prob"]
