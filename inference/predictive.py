"""Predictive distributions: prior and posterior predictive draws, and pointwise log-likelihoods for LOO/WAIC.

    Predictive(model, num_samples=1000)(x)                         # prior predictive
    Predictive(model, posterior_samples=mcmc.get_samples())(x)     # posterior predictive from MCMC draws
    Predictive(model, guide=guide, num_samples=1000)(x)            # ... from a fitted guide
    log_likelihood(model, mcmc.get_samples(), x, y)                # {observed site: (S, *batch shape)}

With ``parallel=True`` (the default) all draws go through one vectorized run of the model inside an outer plate
(:func:`ppl.vectorized_values`): the model must broadcast over a leading batch dimension, as Pyro requires for
``parallel=True``. ``parallel=False`` runs the model once per draw. Observed sites keep their data: to predict
them, call the model with the observations set to None (Pyro's convention). Draws are made without gradients.
"""

import torch

from ppl.handlers import block, substitute, trace
from ppl.vectorize import vectorized_trace, vectorized_values

__all__ = ["Predictive", "log_likelihood"]


def _latent_names(fn, args, kwargs):
    """The latent sample sites of a model or guide, less auxiliary ones, from one ordinary (blocked) run."""
    with block():
        fn_trace = trace(fn).get_trace(*args, **kwargs)
    return [
        name
        for name, site in fn_trace.items()
        if site["type"] == "sample" and not site["is_observed"] and not site["infer"].get("is_auxiliary")
    ]


def _sequential_values(model, samples, num_samples, args, kwargs, return_sites):
    """The values of ``return_sites`` (None: every sample/deterministic site not in ``samples``), one run per draw."""
    draws = []
    for index in range(num_samples):
        model_trace = trace(substitute(model, data={name: value[index] for name, value in samples.items()}))
        model_trace = model_trace.get_trace(*args, **kwargs)
        sites = return_sites
        if sites is None:
            sites = [
                name
                for name, site in model_trace.items()
                if site["type"] in ("sample", "deterministic") and name not in samples
            ]
        draws.append({name: model_trace[name]["value"] for name in sites})
    return {name: torch.stack([draw[name] for draw in draws]) for name in draws[0]}


class Predictive:
    """Draws of a model's sites given posterior draws, a guide, or neither (the prior) (Pyro's ``Predictive``).

    Args:
        model: the model function.
        posterior_samples: a dict of draws of latent sites, each of shape ``(S,) + site shape`` (e.g. from MCMC).
        guide: a guide (e.g. a fitted autoguide) to draw ``num_samples`` latent values from instead.
        num_samples: the number of draws ``S`` (taken from ``posterior_samples`` when those are given).
        return_sites: the site names to return; None for every sample and deterministic site of the model that
            is not in the posterior draws, or, with a guide, every site of the model (latent ones drawn from
            the guide), as Pyro does.
        parallel: one vectorized run (True) or one run per draw (False).

    Calling it with the model's arguments returns ``{site name: tensor of shape (S,) + site shape}``.
    """

    def __init__(self, model, posterior_samples=None, *, guide=None, num_samples=None, return_sites=None,
                 parallel=True):
        if posterior_samples is not None and guide is not None:
            raise ValueError("Predictive: give posterior_samples or a guide, not both.")
        if posterior_samples is not None:
            if not isinstance(posterior_samples, dict) or not posterior_samples:
                raise ValueError("Predictive: posterior_samples must be a non-empty dict of tensors by site name.")
            sizes = {name: value.shape[0] if value.dim() else None for name, value in posterior_samples.items()}
            if len(set(sizes.values())) != 1 or None in sizes.values():
                raise ValueError(f"Predictive: the posterior samples need one common leading size, got {sizes}.")
            size = next(iter(sizes.values()))
            if num_samples is not None and num_samples != size:
                raise ValueError(
                    f"Predictive: num_samples={num_samples} differs from the posterior samples' leading size {size}."
                )
            num_samples = size
        elif num_samples is None:
            raise ValueError("Predictive: give num_samples for draws from the prior or from a guide.")
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"Predictive: num_samples must be a positive integer, got {num_samples!r}.")
        self.model = model
        self.posterior_samples = posterior_samples or {}
        self.guide = guide
        self.num_samples = num_samples
        self.return_sites = None if return_sites is None else list(return_sites)
        self.parallel = parallel

    def _values(self, model, samples, return_sites, args, kwargs):
        if self.parallel:
            return vectorized_values(model, samples, args, kwargs, return_sites, num_samples=self.num_samples)
        return _sequential_values(model, samples, self.num_samples, args, kwargs, return_sites)

    def __call__(self, *args, **kwargs):
        with torch.no_grad():
            samples = self.posterior_samples
            if self.guide is not None:
                samples = self._values(self.guide, {}, _latent_names(self.guide, args, kwargs), args, kwargs)
            values = self._values(self.model, samples, self.return_sites, args, kwargs)
            if self.guide is not None and self.return_sites is None:  # Pyro: every site of the model by default
                latent = [name for name in _latent_names(self.model, args, kwargs) if name in samples]
                values = {**{name: samples[name] for name in latent}, **values}
            return values

    get_samples = __call__


def log_likelihood(model, posterior_samples, *args, **kwargs):
    """Pointwise log-likelihoods of each observed site for each posterior draw (for ArviZ's LOO and WAIC).

    Args:
        model: the model function.
        posterior_samples: a dict of draws of latent sites, each of shape ``(S,) + site shape``.
        *args, **kwargs: the model's arguments, with the observed data.

    Returns:
        ``{observed site name: tensor of shape (S,) + the site's batch shape}``: the unscaled log-density of
        the observation under each draw (event dimensions summed; ``factor`` sites are left out), from one
        vectorized run.
    """
    model_trace, shapes = vectorized_trace(model, posterior_samples, args, kwargs)
    num_samples = next(iter(posterior_samples.values())).shape[0]
    result = {}
    for name, site in model_trace.items():
        if site["type"] != "sample" or not site["is_observed"] or site["infer"].get("is_auxiliary"):
            continue
        log_prob = site["fn"].log_prob(site["value"])
        event_dim = len(site["fn"].event_shape)
        batch_shape = tuple(shapes[name][: len(shapes[name]) - event_dim])
        full = (num_samples,) + (1,) * (log_prob.dim() - 1 - len(batch_shape)) + batch_shape
        result[name] = log_prob.expand(full).reshape((num_samples,) + batch_shape)
    return result
