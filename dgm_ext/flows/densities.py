"""2-D target densities and data sets: the potentials U1–U4 of Rezende & Mohamed (2015),
"arcs" and "sine", with exact samplers and grid-quadrature normalisers and entropies.

Energies (``p(z) ∝ exp(−U(z))``), with ``w1 = sin(2π z1/4)``, ``w2 = 3 exp(−½((z1 − 1)/0.6)²)``
and ``w3 = 3 σ((z1 − 1)/0.3)``:

* U1 = ½((‖z‖ − 2)/0.4)² − log(exp(−½((z1 − 2)/0.6)²) + exp(−½((z1 + 2)/0.6)²))
* U2 = ½((z2 − w1)/0.4)²
* U3 = −log(exp(−½((z2 − w1)/0.35)²) + exp(−½((z2 − w1 + w2)/0.35)²))
* U4 = −log(exp(−½((z2 − w1)/0.4)²) + exp(−½((z2 − w1 + w3)/0.35)²))

U1 is normalisable on ℝ²; U2–U4 are not (their integral over z2 is the same for every z1),
so they are restricted to ``|z1| <= 4``. That restriction is used in two forms:

* the **restricted density** (``log_prob``, ``sample``, ``entropy()``): zero outside the
  strip. It is what the data sets are drawn from and what the maximum-likelihood floor (the
  differential entropy) refers to;
* the **walled energy** (``energy``, ``log_z(wall=True)``): ``U + ½((|z1| − 4)₊ / 0.1)²``,
  a smooth wall, because a flow has full support on ℝ² and a hard restriction would make
  KL(q‖p) infinite. Reverse-KL fits minimise ``E_q[log q + energy]`` and report
  ``KL(q‖p_wall) = E_q[log q + energy] + log Z_wall``.

"arcs" is U1 and "sine" is U2 restricted (SPEC §3); "u3" and "u4" are the restricted U3 and
U4 as data sets too. Exact samplers: arcs by rejection sampling (an analytic envelope, see
:func:`_sample_u1`); U2–U4 restricted are z1 ~ U[−4, 4] (their z1 marginal is uniform) and
z2 | z1 Gaussian, or a two-component Gaussian mixture for U3/U4.

Normalisers and entropies are midpoint-rule quadratures in float64 on a grid of cell
``h = 0.01`` over a box that holds all but a negligible tail of the mass (the restricted
densities integrate over exactly ``|z1| <= 4``). The rule converges faster than any power
of h for these smooth, rapidly decaying integrands: h = 0.005 changes log Z and the
entropies by less than 1e-12.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "DATASETS",
    "STRIP",
    "TARGETS",
    "WALL_SCALE",
    "Density2D",
    "get_density",
    "grid_quadrature",
]

STRIP = 4.0  # |z1| <= 4 for U2–U4
WALL_SCALE = 0.1  # the wall term ½((|z1| − 4)₊ / 0.1)² of the reverse-KL energies
_HALF_PI = 0.5 * math.pi


def _w1(z1: Tensor) -> Tensor:
    return torch.sin(_HALF_PI * z1)


def _w2(z1: Tensor) -> Tensor:
    return 3.0 * torch.exp(-0.5 * ((z1 - 1.0) / 0.6) ** 2)


def _w3(z1: Tensor) -> Tensor:
    return 3.0 * torch.sigmoid((z1 - 1.0) / 0.3)


def _neg_logaddexp(a: Tensor, b: Tensor) -> Tensor:
    """``−log(exp(−a) + exp(−b))`` (stable)."""
    return -torch.logaddexp(-a, -b)


def _u1(z: Tensor) -> Tensor:
    z1, z2 = z[..., 0], z[..., 1]
    r = torch.sqrt(z1 * z1 + z2 * z2)
    ring = 0.5 * ((r - 2.0) / 0.4) ** 2
    return ring + _neg_logaddexp(0.5 * ((z1 - 2.0) / 0.6) ** 2, 0.5 * ((z1 + 2.0) / 0.6) ** 2)


def _u2(z: Tensor) -> Tensor:
    return 0.5 * ((z[..., 1] - _w1(z[..., 0])) / 0.4) ** 2


def _u3(z: Tensor) -> Tensor:
    z1, z2 = z[..., 0], z[..., 1]
    d = z2 - _w1(z1)
    return _neg_logaddexp(0.5 * (d / 0.35) ** 2, 0.5 * ((d + _w2(z1)) / 0.35) ** 2)


def _u4(z: Tensor) -> Tensor:
    z1, z2 = z[..., 0], z[..., 1]
    d = z2 - _w1(z1)
    return _neg_logaddexp(0.5 * (d / 0.4) ** 2, 0.5 * ((d + _w3(z1)) / 0.35) ** 2)


def _wall(z1: Tensor) -> Tensor:
    return 0.5 * (torch.relu(z1.abs() - STRIP) / WALL_SCALE) ** 2


# -- exact samplers ------------------------------------------------------------------------
_U1_S = 2.0  # proposal width in z2 of the arcs rejection sampler


def _u1_log_bound(s: float = _U1_S) -> float:
    """``log M`` with ``ring(r) exp(z2²/(2s²)) <= M`` (see :func:`_sample_u1`)."""
    # t = |z2| <= r. For t < 2: ring <= 1, so the ratio is <= exp(t²/(2s²)) < exp(2/s²).
    # For t >= 2: ring(r) <= ring(t), so log ratio <= h(t) = −(t−2)²/0.32 + t²/(2s²), a concave
    # quadratic (s² > 0.16) whose maximum is at t* = (2/0.16)/(1/0.16 − 1/s²) >= 2, and
    # h(t*) >= h(2) = 2/s².
    t = (2.0 / 0.16) / (1.0 / 0.16 - 1.0 / s**2)
    return -((t - 2.0) ** 2) / 0.32 + t * t / (2.0 * s * s)


def _sample_u1(n: int, g: torch.Generator) -> Tensor:
    """Exact samples of U1 ("arcs").

    ``p ∝ ring(r) (g(z1 − 2) + g(z1 + 2))`` with ``ring(r) = exp(−½((r − 2)/0.4)²)`` and
    ``g(x) = exp(−½(x/0.6)²)`` is an equal mixture of ``p₊ ∝ ring(r) g(z1 − 2)`` and its mirror
    image in z1. ``p₊`` is sampled by rejection from the proposal z1 ~ N(2, 0.6²),
    z2 ~ N(0, s²): the ratio ``p̃₊/q̃ = ring(r) exp(z2²/(2s²))`` is bounded by the analytic
    ``M`` of :func:`_u1_log_bound`, and a proposal is accepted with probability ratio/M.
    Then z1's sign is flipped with probability ½.
    """
    log_m = _u1_log_bound()
    out: list[Tensor] = []
    have = 0
    while have < n:
        m = max(2 * (n - have), 1024)
        z1 = 2.0 + 0.6 * torch.randn(m, generator=g, dtype=torch.float64)
        z2 = _U1_S * torch.randn(m, generator=g, dtype=torch.float64)
        r = torch.sqrt(z1 * z1 + z2 * z2)
        log_ratio = -0.5 * ((r - 2.0) / 0.4) ** 2 + z2 * z2 / (2.0 * _U1_S**2)
        accept = torch.log(torch.rand(m, generator=g, dtype=torch.float64)) < log_ratio - log_m
        z = torch.stack([z1[accept], z2[accept]], dim=1)
        out.append(z)
        have += z.shape[0]
    z = torch.cat(out)[:n]
    flip = torch.rand(n, generator=g, dtype=torch.float64) < 0.5
    z[:, 0] = torch.where(flip, -z[:, 0], z[:, 0])
    return z


def _uniform_z1(n: int, g: torch.Generator) -> Tensor:
    return (torch.rand(n, generator=g, dtype=torch.float64) * 2.0 - 1.0) * STRIP


def _sample_u2(n: int, g: torch.Generator) -> Tensor:
    z1 = _uniform_z1(n, g)
    z2 = _w1(z1) + 0.4 * torch.randn(n, generator=g, dtype=torch.float64)
    return torch.stack([z1, z2], dim=1)


def _sample_mixture(
    n: int, g: torch.Generator, shift: Callable[[Tensor], Tensor], s1: float, s2: float
) -> Tensor:
    """z1 uniform; z2 | z1 = w1 + s1 ε (weight s1/(s1+s2)) or w1 − shift(z1) + s2 ε.

    The two unnormalised components of U3/U4 integrate over z2 to √(2π) s1 and √(2π) s2
    whatever z1 is, hence the uniform z1 marginal and the weights."""
    z1 = _uniform_z1(n, g)
    second = torch.rand(n, generator=g, dtype=torch.float64) < s2 / (s1 + s2)
    eps = torch.randn(n, generator=g, dtype=torch.float64)
    z2 = _w1(z1) + torch.where(second, s2 * eps - shift(z1), s1 * eps)
    return torch.stack([z1, z2], dim=1)


# -- the densities -------------------------------------------------------------------------
@dataclass(frozen=True)
class Density2D:
    """One 2-D density ``exp(−U)/Z``; ``restricted``: U2–U4's strip ``|z1| <= 4``.

    ``box``: the quadrature box ``((z1_lo, z1_hi), (z2_lo, z2_hi))`` of the unrestricted or
    walled density (it holds all but a negligible tail); ``plot_box``: the window of the
    figures.
    """

    name: str
    description: str
    base_energy: Callable[[Tensor], Tensor]
    sampler: Callable[[int, torch.Generator], Tensor]
    restricted: bool
    box: tuple[tuple[float, float], tuple[float, float]]
    plot_box: tuple[tuple[float, float], tuple[float, float]]

    def energy(self, z: Tensor) -> Tensor:
        """``U(z)`` (N, 2) → (N,), plus the wall term for restricted densities: the energy a
        reverse-KL fit minimises (``exp(−energy)/log_z(wall=True)`` is normalised)."""
        e = self.base_energy(z)
        return e + _wall(z[..., 0]) if self.restricted else e

    def log_prob(self, z: Tensor) -> Tensor:
        """Normalised log-density of the (hard-)restricted density: ``−U − log Z``, ``−inf``
        outside ``|z1| <= 4`` for U2–U4."""
        lp = -self.base_energy(z) - self.log_z(wall=False)
        if self.restricted:
            lp = torch.where(z[..., 0].abs() <= STRIP, lp, torch.full_like(lp, -math.inf))
        return lp

    def walled_log_prob(self, z: Tensor) -> Tensor:
        """Normalised log-density of the walled energy (the reverse-KL target)."""
        return -self.energy(z) - self.log_z(wall=True)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact samples (float64, (n, 2)) of the restricted density."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        g = generator if generator is not None else torch.default_generator
        return self.sampler(n, g)

    def log_z(self, wall: bool = False, h: float = 0.01) -> float:
        """``log ∫ exp(−U)`` by quadrature: over the strip (``wall=False``) or over ℝ² with the
        wall term (``wall=True``); the same for U1/arcs."""
        return _quadrature(self.name, wall and self.restricted, h)[0]

    def entropy(self, wall: bool = False, h: float = 0.01) -> float:
        """Differential entropy ``−∫ p log p`` in nats by quadrature (``wall`` as in
        :meth:`log_z`); for the restricted density it is the floor of the NLL of a
        maximum-likelihood fit to its samples."""
        return _quadrature(self.name, wall and self.restricted, h)[1]


_SINE_BOX = ((-STRIP - 1.0, STRIP + 1.0), (-8.0, 8.0))
_PLOT_STRIP = ((-4.5, 4.5), (-5.0, 3.0))
_PLOT_SINE = ((-4.5, 4.5), (-2.5, 2.5))
_PLOT_RING = ((-4.0, 4.0), (-4.0, 4.0))


def _make(name: str, description: str, energy, sampler, restricted: bool, plot) -> Density2D:
    box = _SINE_BOX if restricted else ((-6.0, 6.0), (-6.0, 6.0))
    return Density2D(name, description, energy, sampler, restricted, box, plot)


_U1 = ("U1: two arcs of a ring of radius 2", _u1, _sample_u1, False, _PLOT_RING)
_U2 = ("U2: sine band, |z1| <= 4", _u2, _sample_u2, True, _PLOT_SINE)
_U3 = (
    "U3: sine band and a split branch, |z1| <= 4",
    _u3,
    lambda n, g: _sample_mixture(n, g, _w2, 0.35, 0.35),
    True,
    _PLOT_STRIP,
)
_U4 = (
    "U4: sine band and a sigmoid step, |z1| <= 4",
    _u4,
    lambda n, g: _sample_mixture(n, g, _w3, 0.4, 0.35),
    True,
    _PLOT_STRIP,
)

#: Reverse-KL targets: U1–U4, and arcs / sine (= U1 / U2 restricted, SPEC §3).
TARGETS: dict[str, Density2D] = {
    "u1": _make("u1", *_U1),
    "u2": _make("u2", *_U2),
    "u3": _make("u3", *_U3),
    "u4": _make("u4", *_U4),
    "arcs": _make("arcs", "arcs = U1", *_U1[1:]),
    "sine": _make("sine", "sine = U2 with |z1| <= 4", *_U2[1:]),
}
#: Data sets for maximum likelihood: exact samples of these restricted densities.
DATASETS: tuple[str, ...] = ("arcs", "sine", "u1", "u2", "u3", "u4")


def get_density(name: str, argument: str = "target") -> Density2D:
    """The density called ``name``; a ``ValueError`` naming ``argument`` otherwise."""
    try:
        return TARGETS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"{argument}: unknown density {name!r}; choose one of {', '.join(TARGETS)}"
        ) from None


def grid_quadrature(
    energy: Callable[[Tensor], Tensor],
    box: tuple[tuple[float, float], tuple[float, float]],
    h: float,
    rows_per_chunk: int = 256,
) -> tuple[float, float]:
    """``(log Z, entropy)`` of ``exp(−energy)`` over ``box`` by the midpoint rule with cell
    ``h`` (float64, chunked over z1): ``log Z = log Σ e^{−U} h²`` and
    ``H = log Z + Σ U e^{−U} / Σ e^{−U}``. Cells where the energy is infinite contribute 0."""
    (a0, a1), (b0, b1) = box
    n1, n2 = round((a1 - a0) / h), round((b1 - b0) / h)
    if n1 < 1 or n2 < 1 or abs(n1 * h - (a1 - a0)) > 1e-9 or abs(n2 * h - (b1 - b0)) > 1e-9:
        raise ValueError(f"h={h} must divide the box {box} into whole cells")
    z1 = a0 + h * (torch.arange(n1, dtype=torch.float64) + 0.5)
    z2 = b0 + h * (torch.arange(n2, dtype=torch.float64) + 0.5)
    u_min = math.inf
    chunks: list[Tensor] = []
    for i in range(0, n1, rows_per_chunk):
        zz = torch.stack(torch.meshgrid(z1[i : i + rows_per_chunk], z2, indexing="ij"), -1)
        u = energy(zz.reshape(-1, 2))
        chunks.append(u)
        u_min = min(u_min, float(u.min()))
    mass = 0.0
    weighted = 0.0
    for u in chunks:
        p = torch.exp(u_min - u)
        mass += float(p.sum())
        weighted += float(torch.where(p > 0, u * p, torch.zeros_like(p)).sum())
    log_z = math.log(mass) - u_min + 2.0 * math.log(h)
    return log_z, log_z + weighted / mass


@functools.lru_cache(maxsize=64)
def _quadrature(name: str, wall: bool, h: float) -> tuple[float, float]:
    name = {"arcs": "u1", "sine": "u2"}.get(name, name)  # the same densities
    d = TARGETS[name]
    if not d.restricted:
        return grid_quadrature(d.base_energy, d.box, h)
    if wall:
        return grid_quadrature(d.energy, d.box, h)
    box = ((-STRIP, STRIP), d.box[1])
    return grid_quadrature(d.base_energy, box, h)
