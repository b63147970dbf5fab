"""Delta: a point mass, for observed deterministic values and MAP/AutoDelta guides (Pyro's ``Delta``)."""

import torch
from torch.distributions import constraints

from ppl.distributions.distribution import Distribution

__all__ = ["Delta"]


class Delta(Distribution):
    """Point mass at ``v``, with ``log_prob(v) = log_density`` and ``-inf`` elsewhere.

    The rightmost ``event_dim`` dimensions of ``v`` are the event; the rest are the batch. ``log_density``
    (a number or a tensor broadcasting with ``batch_shape``) carries a Jacobian or weight along with the point,
    as in Pyro. ``rsample`` returns ``v`` itself, so gradients flow to it.
    """

    arg_constraints = {"v": constraints.dependent, "log_density": constraints.real}
    has_rsample = True

    def __init__(self, v, log_density=0.0, event_dim=0, validate_args=None):
        v = torch.as_tensor(v)
        if not 0 <= event_dim <= v.dim():
            raise ValueError(f"Delta: event_dim={event_dim} must lie in [0, v.dim()={v.dim()}].")
        batch_dim = v.dim() - event_dim
        batch_shape, event_shape = v.shape[:batch_dim], v.shape[batch_dim:]
        self.v = v
        self.log_density = torch.as_tensor(log_density, dtype=v.dtype, device=v.device).expand(batch_shape)
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return Delta(
            self.v.expand(batch_shape + self.event_shape),
            self.log_density.expand(batch_shape),
            event_dim=len(self.event_shape),
            validate_args=self._validate_args,
        )

    @constraints.dependent_property(is_discrete=False)
    def support(self):
        event_dim = len(self.event_shape)
        return constraints.independent(constraints.real, event_dim) if event_dim else constraints.real

    @property
    def mean(self):
        return self.v

    @property
    def variance(self):
        return torch.zeros_like(self.v)

    def rsample(self, sample_shape=torch.Size()):
        return self.v.expand(torch.Size(sample_shape) + self.v.shape)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        log_prob = (value == self.v).to(self.v.dtype).log()
        log_prob = log_prob.reshape(log_prob.shape[: log_prob.dim() - len(self.event_shape)] + (-1,)).sum(-1)
        return log_prob + self.log_density
