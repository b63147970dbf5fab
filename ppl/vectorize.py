"""Running a model once for many posterior draws: the plumbing of ``Predictive`` and posterior checks.

The draws (each of shape ``(S,) + site shape``) are substituted into the model inside an outer plate of size
``S`` placed left of every batch dimension the model uses, so one vectorized run replaces ``S`` runs. The model
must broadcast over that extra leading dimension, as Pyro's ``Predictive(parallel=True)`` requires (write
``x @ beta`` as ``(x * beta[..., None, :]).sum(-1)``, index from the right, and so on).
"""

from ppl.errors import ModelError
from ppl.handlers import block, substitute, trace
from ppl.primitives import plate

__all__ = ["max_plate_nesting", "vectorized_trace", "vectorized_values"]


def _prototype(model, model_args, model_kwargs):
    """One ordinary (blocked) run, for the sites' shapes."""
    with block():
        return trace(model).get_trace(*model_args, **model_kwargs)


def max_plate_nesting(model_trace):
    """The number of batch dimensions used by the sample sites of ``model_trace`` (plates and batch shapes)."""
    return max((len(site["fn"].batch_shape) for site in model_trace.values() if site["type"] == "sample"), default=0)


def _num_samples(samples, num_samples=None):
    sizes = {value.shape[0] for value in samples.values()}
    if num_samples is not None:
        sizes.add(num_samples)
    if len(sizes) != 1:
        raise ModelError(
            "vectorized_trace: the samples (and num_samples) need one common leading size, got sizes "
            f"{sorted(sizes)}; with no samples give num_samples."
        )
    return sizes.pop()


def vectorized_trace(model, samples, model_args=(), model_kwargs=None, name="_num_samples", num_samples=None):
    """Run ``model`` once with ``samples`` substituted, vectorized over their leading dimension.

    Args:
        model: a model function.
        samples: a dict of site values, each of shape ``(S,) + site shape`` (e.g. posterior draws); may be
            empty when ``num_samples`` is given (draws from the prior).
        model_args, model_kwargs: the model's arguments.
        name: the name of the outer plate.
        num_samples: ``S``; None to take it from ``samples``.

    Returns:
        ``(trace, shapes)``: the trace of the vectorized run (its sites have batch shapes
        ``(S, 1, ..., 1) + batch shape``, so per-draw log-densities such as pointwise log-likelihoods come from
        ``trace[site]["fn"].log_prob(trace[site]["value"])``), and each sample/deterministic site's shape in an
        ordinary run, so that ``trace[site]["value"]`` broadcasts to ``(S, 1, ..., 1) + shapes[site]``.
    """
    model_kwargs = model_kwargs or {}
    num_samples = _num_samples(samples, num_samples)
    prototype = _prototype(model, model_args, model_kwargs)
    nesting = max_plate_nesting(prototype)
    reshaped = {}
    for site_name, value in samples.items():
        site = prototype.get(site_name)
        if site is None:
            raise ModelError(f"vectorized_trace: samples['{site_name}'] names no site of the model.")
        shape = site["value"].shape
        if value.shape[1:] != shape:
            raise ModelError(
                f"vectorized_trace: samples['{site_name}'] has shape {tuple(value.shape)}, expected "
                f"({num_samples},) + {tuple(shape)}."
            )
        event_dim = len(site["fn"].event_shape) if site["type"] == "sample" else 0
        padding = max(nesting - (len(shape) - event_dim), 0)
        reshaped[site_name] = value.reshape((num_samples,) + (1,) * padding + shape)
    with trace() as model_trace:
        with plate(name, num_samples, dim=-nesting - 1):
            substitute(model, data=reshaped)(*model_args, **model_kwargs)
    shapes = {
        site_name: site["value"].shape
        for site_name, site in prototype.items()
        if site["type"] in ("sample", "deterministic")
    }
    return model_trace, shapes


def vectorized_values(model, samples, model_args=(), model_kwargs=None, return_sites=None, num_samples=None):
    """The values of the sample and deterministic sites of ``model`` for each draw in ``samples``, from one
    vectorized run (:func:`vectorized_trace`).

    Returns:
        a dict of tensors of shape ``(S,) + site shape``, for ``return_sites`` (names) or, when None, every
        sample and deterministic site that is not in ``samples``. ``num_samples`` as in :func:`vectorized_trace`.
    """
    num_samples = _num_samples(samples, num_samples)
    model_trace, shapes = vectorized_trace(model, samples, model_args, model_kwargs, num_samples=num_samples)
    if return_sites is None:
        return_sites = [site_name for site_name in shapes if site_name not in samples]
    values = {}
    for site_name in return_sites:
        if site_name not in shapes:
            raise ModelError(f"vectorized_values: '{site_name}' is not a sample or deterministic site of the model.")
        value = model_trace[site_name]["value"]
        shape = shapes[site_name]
        full = (num_samples,) + (1,) * (value.dim() - 1 - len(shape)) + tuple(shape)
        values[site_name] = value.expand(full).reshape((num_samples,) + tuple(shape))
    return values
