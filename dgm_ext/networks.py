"""Users' own networks in the library's models: a registry of network builders by name.

A model file holds weights and a config, and is read with ``torch.load(weights_only=True)``:
no pickled code. So a user's network enters a model as a *spec*, ``{"name": NAME, "kwargs":
{...}}`` (plain values), whose builder is registered under ``NAME``::

    from torch import nn
    from dgm_ext import register_network
    from dgm_ext.vae import build_vae

    @register_network("my-encoder")
    class MyEncoder(nn.Module):
        def __init__(self, latent_dim: int, width: int = 256) -> None: ...
        def forward(self, x):            # (B, C, H, W) in [0, 1]
            return mu, logvar            # (B, L) each; or (mu, logvar, features)

    vae = build_vae(latent_dim=8, encoder={"name": "my-encoder", "kwargs": {"latent_dim": 8}})

The spec is saved in the model's config; loading builds the network again from the registry
(import the module that registers it first: a missing builder is one line naming it) and
loads the weights. The contracts (what the models call the networks with):

* VAE **encoder** ``encoder(x[, y]) -> (mu, logvar)`` or ``(mu, logvar, h)``: ``x`` images
  ``(B, C, H, W)`` in [0, 1], ``mu``/``logvar`` ``(B, L)``; ``h`` (features, with a
  ``feature_dim`` attribute on the module) only for an amortised planar-flow posterior.
* VAE **decoder** ``decoder(z[, y]) -> params``: ``z`` ``(*S, B, L)`` (leading sample
  dimensions for importance sampling), ``params`` the likelihood's raw parameters
  ``(*S, B, P, D)``, D = C·H·W (``(*S, B, D)`` is taken for P = 1).
* GAN **generator** ``generator(z[, y]) -> images``: ``z`` ``(N, z_dim)``, images
  ``(N, C, H, W)`` in [-1, 1].
* GAN **critic** ``critic(x[, y]) -> scores``: images ``(N, C, H, W)`` in [-1, 1], scores
  ``(N,)`` (or ``(N, 1)``), logits for the JSD losses.

``y`` (int64 class labels ``(B,)``) is passed only to the networks of class-conditional
models (``num_classes`` > 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

__all__ = ["NETWORKS", "build_network", "network_spec", "register_network"]

#: Registered network builders by name (classes or functions returning an ``nn.Module``).
NETWORKS: dict[str, Callable[..., nn.Module]] = {}

B = TypeVar("B", bound=Callable[..., nn.Module])


def register_network(name: str, builder: B | None = None, *, replace: bool = False) -> Any:
    """Register ``builder`` (a class or function returning an ``nn.Module``) under ``name``;
    as a decorator without ``builder``. Registering another builder under a taken name is
    refused unless ``replace=True``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")

    def add(b: B) -> B:
        if not callable(b):
            raise TypeError(f"builder of network {name!r} must be callable, got {b!r}")
        old = NETWORKS.get(name)
        if old is not None and old is not b and not replace:
            raise ValueError(
                f"a network named {name!r} is already registered ({_describe(old)}); pass "
                "replace=True to replace it"
            )
        NETWORKS[name] = b
        return b

    return add if builder is None else add(builder)


def _describe(b: Callable[..., Any]) -> str:
    return f"{getattr(b, '__module__', '?')}.{getattr(b, '__qualname__', repr(b))}"


def _check_plain(value: Any, where: str) -> None:
    """Only values a ``weights_only`` load reads back (and JSON writes)."""
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} must be finite, got {value!r}")
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} keys must be strings, got {k!r}")
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise ValueError(
        f"{where} must hold plain values (None, bool, int, float, str, lists, dicts) so the "
        f"model file loads with weights_only=True; got {type(value).__name__}"
    )


def network_spec(spec: str | Mapping[str, Any], role: str = "network") -> dict[str, Any]:
    """``spec`` (a registered name, or ``{"name": ..., "kwargs": {...}}``) checked and in its
    saved form; one-line errors name ``role`` (e.g. ``encoder``)."""
    if isinstance(spec, str):
        spec = {"name": spec, "kwargs": {}}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise ValueError(
            f"{role} must be a registered network name or {{'name': ..., 'kwargs': {{...}}}}, "
            f"got {spec!r}"
        )
    unknown = set(spec) - {"name", "kwargs"}
    if unknown:
        raise ValueError(f"{role} spec has unknown keys {sorted(unknown)} (name, kwargs)")
    kwargs = dict(spec.get("kwargs") or {})
    _check_plain(kwargs, f"{role} kwargs")
    return {"name": spec["name"], "kwargs": kwargs}


def build_network(spec: str | Mapping[str, Any], role: str = "network") -> nn.Module:
    """The network a spec names, built by its registered builder; a one-line ``ValueError``
    when the name is not registered (saying how to register it)."""
    spec = network_spec(spec, role)
    builder = NETWORKS.get(spec["name"])
    if builder is None:
        known = ", ".join(sorted(NETWORKS)) or "none"
        raise ValueError(
            f"{role} network {spec['name']!r} is not registered in this process (registered: "
            f"{known}); import the module that defines it, which calls "
            f"dgm_ext.register_network({spec['name']!r}, builder), before building or loading "
            "the model"
        )
    try:
        net = builder(**spec["kwargs"])
    except TypeError as exc:
        raise ValueError(f"{role} network {spec['name']!r}: {exc}") from None
    if not isinstance(net, nn.Module):
        raise TypeError(
            f"{role} network {spec['name']!r}: its builder returned {type(net).__name__}, "
            "not an nn.Module"
        )
    return net
