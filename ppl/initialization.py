"""Initialization strategies for the latent sites of a model (NumPyro's semantics and names).

A strategy is a function of a site (a message dict) returning an initial constrained value for continuous
latent sample sites and None for every other site; it is applied with
``ppl.handlers.substitute(model, substitute_fn=strategy)``. Each factory also works called with options only,
e.g. ``init_to_uniform(radius=1)`` or ``init_to_median(num_samples=31)``, returning the strategy.
"""

import functools

import torch

from ppl.transforms import biject_to

__all__ = ["init_to_median", "init_to_sample", "init_to_uniform", "init_to_value"]


def _is_continuous_latent(site):
    return site["type"] == "sample" and not site["is_observed"] and not site["fn"].support.is_discrete


def _prior_draw(site, sample_shape=()):
    return site["fn"].sample(torch.Size(sample_shape) + site["kwargs"]["sample_shape"])


def _site_like(site):
    """A tensor with the site's shape, dtype and device: a prior draw, or default-dtype zeros for improper
    priors (``ImproperUniform``), which have a shape but no sampler."""
    try:
        return _prior_draw(site)
    except NotImplementedError:
        fn = site["fn"]
        return torch.zeros(torch.Size(site["kwargs"]["sample_shape"]) + fn.batch_shape + fn.event_shape)


def init_to_uniform(site=None, radius=2.0):
    """Uniform on ``(-radius, radius)`` in the unconstrained space of each site (Stan's default, radius 2)."""
    if site is None:
        return functools.partial(init_to_uniform, radius=radius)
    if not _is_continuous_latent(site):
        return None
    if site["value"] is not None:
        return site["value"]
    transform = biject_to(site["fn"].support)
    like = _site_like(site)
    shape = transform.inverse_shape(like.shape)
    unconstrained = (2 * torch.rand(shape, dtype=like.dtype, device=like.device) - 1) * radius
    return transform(unconstrained)


def init_to_median(site=None, num_samples=15):
    """The elementwise median of ``num_samples`` prior draws (uniform initialization where the prior cannot be
    sampled, or where the elementwise median leaves the support, e.g. a simplex)."""
    if site is None:
        return functools.partial(init_to_median, num_samples=num_samples)
    if not _is_continuous_latent(site):
        return None
    if site["value"] is not None:
        return site["value"]
    try:
        draws = _prior_draw(site, (num_samples,))
    except NotImplementedError:
        return init_to_uniform(site)
    median = draws.median(dim=0).values
    if not bool(site["fn"].support.check(median).all()):
        return init_to_uniform(site)
    return median


def init_to_sample(site=None):
    """A draw from the prior."""
    return init_to_median(site, num_samples=1)


def init_to_value(site=None, values=None):
    """``values[name]`` (constrained values) for the sites it names, uniform initialization for the others."""
    if site is None:
        return functools.partial(init_to_value, values=values)
    if values is not None and site["name"] in values and _is_continuous_latent(site):
        return values[site["name"]]
    return init_to_uniform(site)
