"""``TraceEnum_ELBO``: the ELBO with the model's discrete sites summed out by parallel enumeration (Pyro's name
and semantics, for sites enumerated in the model).

The guide covers the continuous latent sites (e.g. ``AutoNormal(block(model, hide=["assignment"]))``); the model
is replayed against the guide's draws under ``ppl.handlers.enum``, so every site marked for enumeration
(``ppl.config_enumerate``) takes its whole support along a dim left of the plates, and ``ppl.log_joint`` sums
those dims out plate by plate. The estimate is ``E_q[log sum_z p(x, z, theta) - log q(theta)]``, with pathwise
gradients through the guide's reparameterized draws; with no continuous latent site it is the exact log
evidence. Guide sites that cannot be reparameterized are not supported (enumerate them in the model instead).
"""

import warnings

import torch

from inference.errors import InferenceError
from inference.vi.elbo import ELBO, _check_model_guide, _is_latent
from ppl.contract import log_joint
from ppl.enum import enum
from ppl.handlers import replay, site_log_prob, trace
from ppl.primitives import plate

__all__ = ["TraceEnum_ELBO"]


class TraceEnum_ELBO(ELBO):
    """The ELBO with enumerated model sites marginalized exactly (Pyro's ``TraceEnum_ELBO``).

    Args:
        num_particles, vectorize_particles: as in :class:`inference.vi.ELBO`; vectorized particles take the dim
            left of the plates and enumeration the dims left of that.
        max_plate_nesting: the number of plate dims the model uses (enumeration starts left of them); None to
            find it from one run.
    """

    def _first_available_dim(self, vectorized):
        return -self.max_plate_nesting - (2 if vectorized else 1)

    def _get_trace(self, model, guide, args, kwargs, vectorized=False):
        with trace() as guide_trace:
            guide(*args, **kwargs)
        for name, site in guide_trace.items():
            if _is_latent(site) and not site["fn"].has_rsample:
                raise InferenceError(
                    f"TraceEnum_ELBO: guide site '{name}' ({type(site['fn']).__name__}) cannot be reparameterized; "
                    "enumerate it in the model instead (ppl.config_enumerate, and leave it out of the guide)."
                )
        first_dim = self._first_available_dim(vectorized)
        with trace() as model_trace, enum(first_available_dim=first_dim), replay(trace=guide_trace):
            model(*args, **kwargs)
        if not self._checked:
            _check_model_guide(model_trace, guide_trace)
            if not any("_enumerate_dim" in site["infer"] for site in model_trace.values() if site["type"] == "sample"):
                warnings.warn(
                    "TraceEnum_ELBO found no site marked for enumeration: wrap the model with "
                    "ppl.config_enumerate (or give sites infer={'enumerate': 'parallel'}).",
                    stacklevel=4,
                )
        return model_trace, guide_trace

    def _traces(self, model, guide, args, kwargs):
        if self.max_plate_nesting is None:
            self.max_plate_nesting = self._guess_max_plate_nesting(model, guide, args, kwargs)
        if self.num_particles == 1 or not self.vectorize_particles:
            return [(*self._get_trace(model, guide, args, kwargs), None) for _ in range(self.num_particles)]
        with plate("num_particles_vectorized", self.num_particles, dim=-self.max_plate_nesting - 1):
            model_trace, guide_trace = self._get_trace(model, guide, args, kwargs, vectorized=True)
        return [(model_trace, guide_trace, -self.max_plate_nesting - 1)]

    def _particle_terms(self, model_trace, guide_trace, particle_dim):
        # summed over every dim, vectorized particles included (the base class divides by num_particles)
        elbo = log_joint(model_trace)
        for site in guide_trace.values():
            if _is_latent(site):
                elbo = elbo - site_log_prob(site).sum()
        elbo = torch.as_tensor(elbo)
        return elbo, elbo
