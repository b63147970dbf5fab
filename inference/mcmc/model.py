"""The model front-end of MCMC: a ``ppl`` model turned into what a kernel samples, and the draws turned back.

``ModelPotential`` wraps :class:`ppl.Potential` (every continuous latent site in one flat unconstrained vector
``z``) and adds what a run needs around it: reproducible initial positions per chain, constrained values of the
draws (latent and deterministic sites) and the pointwise log-likelihood of every observed site for ArviZ.

Model errors (``integrator.MODEL_ERRORS``: a failed Cholesky factorization, a domain error) reject the point where
the model raises them: a kernel rejects the proposal (a divergence), and setup and initialization redraw from the
init strategy. A ``ppl.ModelError`` says that the model is malformed: it always raises.
"""

import torch

import ppl
from ppl.errors import ModelError
from ppl.handlers import seed, site_log_prob, trace
from ppl.vectorize import vectorized_trace

from .integrator import MODEL_ERRORS


def _is_observed_data(site):
    return site["type"] == "sample" and site["is_observed"] and not site["infer"].get("is_auxiliary", False)


class ModelPotential:
    """A model's potential for one run: ``U(z)`` for positions (C, D), its maps back to site values.

    Args:
        model: a ``ppl`` model function.
        model_args, model_kwargs: its arguments (the data).
        init_strategy: a ``ppl`` initialization strategy (default ``ppl.init_to_uniform``).
        setup_seed: seeds the model run that learns the latent sites (redrawn where the model raises one of
            ``MODEL_ERRORS``; the global RNG is restored after).

    Attributes:
        errors_to_raise: ``(ModelError,)``, the exceptions among ``MODEL_ERRORS`` that a kernel raises rather than
            rejects (see ``integrator.PotentialAndGrad``).

    Raises:
        ModelError: the model has no continuous latent site, or ``ppl.Potential`` rejects it.
    """

    errors_to_raise = (ModelError,)

    def __init__(self, model, model_args, model_kwargs, init_strategy, setup_seed):
        self.model = model
        self.model_args = tuple(model_args)
        self.model_kwargs = dict(model_kwargs)
        with seed(rng_seed=setup_seed):
            self.potential = ppl.Potential(
                model, model_args, model_kwargs, init_strategy or ppl.init_to_uniform, invalid_errors=MODEL_ERRORS
            )
        if self.potential.dim == 0:
            raise ModelError(
                f"MCMC: model {getattr(model, '__name__', model)!r} has no continuous latent sample site, so there "
                "is nothing to sample; check that its sample statements are not all observed."
            )

    @property
    def dim(self):
        return self.potential.dim

    def __call__(self, z):
        """U(z) for positions (C, D), (C,). One chain runs the model as is: ``ppl.Potential`` vectorizes several
        with ``torch.func.vmap``, whose batching rules cost operations (and memory copies) one chain can spare."""
        if z.shape[0] == 1:  # (squeeze rather than z[0]: its backward is a view, not a copy into zeros)
            return self.potential(z.squeeze(0)).unsqueeze(0)
        return self.potential(z)

    def initial_positions(self, seeds, max_tries=100):
        """Initial unconstrained positions (C, D), chain c drawn by the init strategy under ``seeds[c]``, in the
        dtype of the potential (a model may draw float32 latent values, e.g. from ``Normal(0., 1.)``, and
        observe float64 data: the chain then runs in float64).

        Raises:
            ModelError: a chain found no position with a finite potential and gradient in ``max_tries`` draws
                (a draw where the model raises one of ``MODEL_ERRORS`` is redrawn); the message names the sites
                at fault and the error the model raised.
        """
        rows = []
        for c, chain_seed in enumerate(seeds):
            with seed(rng_seed=chain_seed):
                try:
                    rows.append(self.potential.initial_params(max_tries=max_tries))
                except ModelError as error:
                    raise ModelError(f"MCMC: initializing chain {c}: {error}") from None
        z = torch.stack(rows)
        with torch.no_grad():
            return z.to(torch.promote_types(z.dtype, self.potential(z).dtype))

    def postprocess(self, z):
        """Constrained values of the latent and deterministic sites: positions (..., D) -> dict of (..., *shape)."""
        batch_shape = z.shape[:-1]
        with torch.no_grad():
            values = self.potential.constrain(z.reshape(-1, self.dim))
        return {name: value.reshape(*batch_shape, *value.shape[1:]) for name, value in values.items()}

    def log_likelihood(self, samples):
        """Pointwise log-likelihood of every observed site (mask and scale applied, as in the potential).

        ``samples``: latent site values by name, each (C, N, *shape). Returns a dict of (C, N, *batch_shape)
        per observed site, from one vectorized run of the model over the C x N draws (see
        ``ppl.vectorized_trace``: the model must broadcast over an extra leading dimension).
        """
        if self.potential.enumerated:
            raise ModelError(
                f"the pointwise log-likelihood of a model with enumerated discrete sites "
                f"({', '.join(map(repr, self.potential.enumerated))}) needs them summed out per observation, which "
                "is not implemented; marginalize them by hand in the model to get it."
            )
        latent = {name: samples[name] for name in self.potential.latent_sites}
        chains_draws = next(iter(latent.values())).shape[:2]
        flat = {name: value.reshape(-1, *value.shape[2:]) for name, value in latent.items()}
        with torch.no_grad():
            model_trace, shapes = vectorized_trace(self.model, flat, self.model_args, self.model_kwargs)
        out = {}
        for name, site in model_trace.items():
            if not _is_observed_data(site):
                continue
            event_dim = len(site["fn"].event_shape)
            shape = shapes[name]
            batch_shape = tuple(shape[: len(shape) - event_dim])
            log_lik = site_log_prob(site)
            padded = (log_lik.shape[0],) + (1,) * (log_lik.dim() - 1 - len(batch_shape)) + batch_shape
            out[name] = log_lik.expand(padded).reshape(*chains_draws, *batch_shape)
        return out

    def observed_data(self):
        """The observed sites' values by name (from one run of the model)."""
        with torch.no_grad(), seed(rng_seed=0):  # the latent draws of this run are not used
            model_trace = trace(self.model).get_trace(*self.model_args, **self.model_kwargs)
        return {name: site["value"] for name, site in model_trace.items() if _is_observed_data(site)}
