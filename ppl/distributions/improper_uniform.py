"""ImproperUniform: a flat, unnormalized density over a support, for priors given only by a constraint."""

import torch
from torch.distributions import constraints

from ppl.distributions.distribution import Distribution

__all__ = ["ImproperUniform"]


class ImproperUniform(Distribution):
    """``log_prob = 0`` everywhere on ``support`` (Pyro's ``ImproperUniform``); it cannot be sampled.

    ``support`` is a constraint; when ``event_shape`` has more dimensions than ``support.event_dim``, the
    extra ones are made part of the event with ``constraints.independent``. Use it for latent sites whose
    values inference initializes and moves in unconstrained space (e.g. ``init_to_uniform``).
    """

    arg_constraints = {}

    def __init__(self, support, batch_shape, event_shape, validate_args=None):
        event_shape = torch.Size(event_shape)
        extra = len(event_shape) - support.event_dim
        if extra < 0:
            raise ValueError(
                f"ImproperUniform: event_shape {tuple(event_shape)} has fewer dimensions than the support "
                f"{support!r} needs ({support.event_dim})."
            )
        self._support = constraints.independent(support, extra) if extra else support
        super().__init__(torch.Size(batch_shape), event_shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return ImproperUniform(self._support, batch_shape, self.event_shape, validate_args=self._validate_args)

    @constraints.dependent_property
    def support(self):
        return self._support

    def sample(self, sample_shape=torch.Size()):
        raise NotImplementedError(
            "ImproperUniform has no normalized density and cannot be sampled; initialize the site in "
            "unconstrained space (e.g. init_to_uniform) or condition it on a value."
        )

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        batch_shape = torch.broadcast_shapes(value.shape[: value.dim() - len(self.event_shape)], self.batch_shape)
        return value.new_zeros(batch_shape)
