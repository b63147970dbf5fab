"""The base of every distribution in ``ppl.distributions``, and the wrappers that reshape or mask one.

Every distribution is a :class:`torch.distributions.Distribution` (so ``batch_shape``, ``event_shape``,
``expand``, ``log_prob``, ``sample``/``rsample``, ``support`` and argument validation work as in torch) that
also carries :class:`DistributionMixin`: Pyro's ``.to_event(n)``, ``.mask(mask)`` and calling ``d()`` to
draw a sample.
"""

import torch
import torch.distributions as torch_dist
from torch.distributions import constraints

__all__ = ["Distribution", "DistributionMixin", "Independent", "MaskedDistribution", "MixtureSameFamily"]


class DistributionMixin:
    """Pyro's conveniences on top of a torch distribution."""

    def __call__(self, sample_shape=torch.Size()):
        """A draw of shape ``sample_shape + batch_shape + event_shape``; reparameterized when possible."""
        return self.rsample(sample_shape) if self.has_rsample else self.sample(sample_shape)

    def to_event(self, reinterpreted_batch_ndims=None):
        """Treat the rightmost ``reinterpreted_batch_ndims`` batch dimensions (default: all) as event dimensions."""
        if reinterpreted_batch_ndims is None:
            reinterpreted_batch_ndims = len(self.batch_shape)
        if not 0 <= reinterpreted_batch_ndims <= len(self.batch_shape):
            raise ValueError(
                f"to_event({reinterpreted_batch_ndims}): {type(self).__name__} has batch_shape "
                f"{tuple(self.batch_shape)}, so at most {len(self.batch_shape)} batch dimensions can become "
                "event dimensions."
            )
        if reinterpreted_batch_ndims == 0:
            return self
        return Independent(self, reinterpreted_batch_ndims)

    def mask(self, mask):
        """Zero ``log_prob`` where ``mask`` (a bool, or a bool tensor broadcasting with ``batch_shape``) is False."""
        return MaskedDistribution(self, mask)


class Distribution(torch_dist.Distribution, DistributionMixin):
    """Base class for the distributions ``ppl`` adds to torch's."""


class Independent(torch_dist.Independent, DistributionMixin):
    __doc__ = torch_dist.Independent.__doc__

    def log_prob(self, value):
        # one sum over the event dims (torch reshapes, then sums: two operations, forward and backward)
        log_prob = self.base_dist.log_prob(value)
        return log_prob.sum(tuple(range(-self.reinterpreted_batch_ndims, 0)))


class MixtureSameFamily(torch_dist.MixtureSameFamily, DistributionMixin):
    """torch's ``MixtureSameFamily``, with the batch shapes of the mixture weights and the components broadcast
    first (torch accepts broadcastable shapes but then fails to sample from them)."""

    def __init__(self, mixture_distribution, component_distribution, validate_args=None):
        num_components = component_distribution.batch_shape[-1:]
        try:
            batch_shape = torch.broadcast_shapes(
                mixture_distribution.batch_shape, component_distribution.batch_shape[:-1]
            )
        except RuntimeError as error:
            raise ValueError(
                f"MixtureSameFamily: mixture batch_shape {tuple(mixture_distribution.batch_shape)} does not "
                f"broadcast with the component batch_shape {tuple(component_distribution.batch_shape)} less its "
                "last (component) dimension."
            ) from error
        super().__init__(
            mixture_distribution.expand(batch_shape),
            component_distribution.expand(batch_shape + num_components),
            validate_args=validate_args,
        )

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return MixtureSameFamily(
            self.mixture_distribution.expand(batch_shape),
            self.component_distribution.expand(batch_shape + self.component_distribution.batch_shape[-1:]),
            validate_args=self._validate_args,
        )


class MaskedDistribution(Distribution):
    """``base_dist`` whose ``log_prob`` is 0 wherever ``mask`` is False (Pyro's ``MaskedDistribution``).

    ``mask`` is a Python bool or a bool tensor; its shape broadcasts with ``base_dist.batch_shape`` and the
    result has the broadcast batch shape. Sampling is unchanged.
    """

    arg_constraints = {}

    def __init__(self, base_dist, mask):
        if isinstance(mask, bool):
            batch_shape = base_dist.batch_shape
        else:
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
                raise TypeError(
                    f"mask must be a bool or a bool tensor, got {type(mask).__name__}"
                    f"{'' if not isinstance(mask, torch.Tensor) else ' of dtype ' + str(mask.dtype)}; "
                    "convert it with `mask.bool()`."
                )
            try:
                batch_shape = torch.broadcast_shapes(mask.shape, base_dist.batch_shape)
            except RuntimeError as error:
                raise ValueError(
                    f"mask of shape {tuple(mask.shape)} does not broadcast with the batch_shape "
                    f"{tuple(base_dist.batch_shape)} of {type(base_dist).__name__}."
                ) from error
            mask = mask.expand(batch_shape)
            if base_dist.batch_shape != batch_shape:
                base_dist = base_dist.expand(batch_shape)
        self.base_dist = base_dist
        self._mask = mask
        super().__init__(batch_shape, base_dist.event_shape, validate_args=False)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        mask = self._mask if isinstance(self._mask, bool) else self._mask.expand(batch_shape)
        return MaskedDistribution(self.base_dist.expand(batch_shape), mask)

    @constraints.dependent_property
    def support(self):
        return self.base_dist.support

    @property
    def has_rsample(self):
        return self.base_dist.has_rsample

    @property
    def mean(self):
        return self.base_dist.mean

    @property
    def variance(self):
        return self.base_dist.variance

    def sample(self, sample_shape=torch.Size()):
        return self.base_dist.sample(sample_shape)

    def rsample(self, sample_shape=torch.Size()):
        return self.base_dist.rsample(sample_shape)

    def log_prob(self, value):
        log_prob = self.base_dist.log_prob(value)
        if self._mask is True:
            return log_prob
        if self._mask is False:
            return torch.zeros_like(log_prob)
        return torch.where(self._mask, log_prob, log_prob.new_zeros(()))
