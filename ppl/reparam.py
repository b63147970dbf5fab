"""Reparameterizers for :class:`ppl.handlers.reparam`.

A reparameterizer is called as ``r(name, fn, obs)`` at a sample site and returns ``(new_fn, value)``; it may
add sample sites of its own. ``new_fn=None`` turns the original site into a deterministic one holding
``value`` (NumPyro's protocol).
"""

import torch

from ppl import constraints
from ppl.errors import ModelError
from ppl.primitives import param, sample

__all__ = ["LocScaleReparam"]


class LocScaleReparam:
    """Partially or fully non-centre a location-scale site (Pyro's ``LocScaleReparam``).

    For ``x ~ D(loc, scale)`` it samples ``{name}_decentered ~ D(loc * c, scale ** c)`` and returns
    ``x = loc + scale ** (1 - c) * ({name}_decentered - c * loc)``: ``c = 1`` leaves the site centred, ``c = 0``
    is the fully non-centred ``x = loc + scale * eps`` with ``eps ~ D(0, 1)``. ``x`` becomes a deterministic
    site.

    Args:
        centered: ``c`` in [0, 1] (a number or a tensor broadcasting with the event shape), or None to learn it
            as a param ``{name}_centered`` (initialized to 0.5, as in Pyro).
        shape_params: names of the distribution's other parameters, passed through unchanged (e.g. ``("df",)``
            for StudentT); None takes all of ``fn.arg_constraints`` except ``loc`` and ``scale``.
    """

    def __init__(self, centered=None, shape_params=None):
        if isinstance(centered, (int, float)) and not 0 <= centered <= 1:
            raise ValueError(f"LocScaleReparam: centered must lie in [0, 1], got {centered}.")
        self.centered = centered
        self.shape_params = shape_params

    def __call__(self, name, fn, obs):
        if obs is not None:
            raise ModelError(
                f"LocScaleReparam at site '{name}': the site has a value already; it only applies to latent sites."
            )
        event_shape = fn.event_shape
        event_dim = 0
        base = fn
        while isinstance(base, torch.distributions.Independent):
            event_dim += base.reinterpreted_batch_ndims
            base = base.base_dist
        if base.support is not constraints.real or not hasattr(base, "loc") or not hasattr(base, "scale"):
            raise ModelError(
                f"LocScaleReparam at site '{name}': {type(base).__name__} is not a location-scale family on the "
                "real line (it needs loc and scale attributes and a real support)."
            )
        centered = self.centered
        if centered is None:
            centered = param(
                f"{name}_centered", lambda: base.loc.new_full(event_shape, 0.5), constraint=constraints.unit_interval
            )
        shape_params = self.shape_params
        if shape_params is None:
            shape_params = [key for key in base.arg_constraints if key not in ("loc", "scale")]
        params = {key: getattr(base, key) for key in shape_params}
        params["loc"] = base.loc * centered
        params["scale"] = base.scale**centered
        decentered_fn = type(base)(**params)
        if event_dim:
            decentered_fn = torch.distributions.Independent(decentered_fn, event_dim)
        decentered = sample(f"{name}_decentered", decentered_fn)
        value = base.loc + base.scale ** (1 - centered) * (decentered - centered * base.loc)
        return None, value
