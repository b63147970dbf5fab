"""Continuous distributions: torch's (with Pyro's ``to_event``/``mask``), plus TruncatedNormal and
GaussianRandomWalk, which torch lacks. Parameter names and semantics are Pyro's (NumPyro's for
TruncatedNormal, which Pyro lacks)."""

import math

import torch
import torch.distributions as torch_dist
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all

from ppl.distributions.distribution import Distribution, DistributionMixin

_LOG_2 = math.log(2.0)
_LOG_PI = math.log(math.pi)
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

__all__ = [
    "Beta",
    "Cauchy",
    "Chi2",
    "Dirichlet",
    "Exponential",
    "Gamma",
    "GaussianRandomWalk",
    "Gumbel",
    "HalfCauchy",
    "HalfNormal",
    "InverseGamma",
    "Laplace",
    "LKJCholesky",
    "LogNormal",
    "LowRankMultivariateNormal",
    "MultivariateNormal",
    "Normal",
    "Pareto",
    "StudentT",
    "TransformedDistribution",
    "TruncatedNormal",
    "Uniform",
    "VonMises",
    "Weibull",
    "Wishart",
]


class Beta(torch_dist.Beta, DistributionMixin):
    __doc__ = torch_dist.Beta.__doc__


class Cauchy(torch_dist.Cauchy, DistributionMixin):
    __doc__ = torch_dist.Cauchy.__doc__


class Dirichlet(torch_dist.Dirichlet, DistributionMixin):
    __doc__ = torch_dist.Dirichlet.__doc__


class Exponential(torch_dist.Exponential, DistributionMixin):
    __doc__ = torch_dist.Exponential.__doc__


class Gamma(torch_dist.Gamma, DistributionMixin):
    __doc__ = torch_dist.Gamma.__doc__


def _gaussian_log_density(centred, scale, constant):
    """centred^2 * (-1 / (2 scale^2)) - (log scale + constant): the factors that depend only on ``scale``
    grouped, so that they are constants of a traced sampler step when ``scale`` is."""
    return centred.pow(2) * (scale.pow(2).reciprocal() * -0.5) - (scale.log() + constant)


class HalfCauchy(torch_dist.HalfCauchy, DistributionMixin):
    """torch's ``HalfCauchy`` with its ``log_prob`` in one expression (torch's goes through the base Cauchy's;
    the same values, in fewer tensor operations, which matters to samplers that call it at every step)."""

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        scale = self.scale
        log_prob = (_LOG_2 - _LOG_PI - scale.log()) - (value / scale).pow(2).log1p()
        return torch.where(value >= 0, log_prob, -math.inf)


class HalfNormal(torch_dist.HalfNormal, DistributionMixin):
    """torch's ``HalfNormal`` with its ``log_prob`` in one expression (see ``Normal``)."""

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        log_prob = _gaussian_log_density(value, self.scale, _HALF_LOG_2PI - _LOG_2)
        return torch.where(value >= 0, log_prob, -math.inf)


class InverseGamma(torch_dist.InverseGamma, DistributionMixin):
    __doc__ = torch_dist.InverseGamma.__doc__


class LKJCholesky(torch_dist.LKJCholesky, DistributionMixin):
    __doc__ = torch_dist.LKJCholesky.__doc__


class Laplace(torch_dist.Laplace, DistributionMixin):
    __doc__ = torch_dist.Laplace.__doc__


class LogNormal(torch_dist.LogNormal, DistributionMixin):
    __doc__ = torch_dist.LogNormal.__doc__


class LowRankMultivariateNormal(torch_dist.LowRankMultivariateNormal, DistributionMixin):
    __doc__ = torch_dist.LowRankMultivariateNormal.__doc__


class MultivariateNormal(torch_dist.MultivariateNormal, DistributionMixin):
    __doc__ = torch_dist.MultivariateNormal.__doc__


class Normal(torch_dist.Normal, DistributionMixin):
    """torch's ``Normal`` with ``log_prob`` written as (x - loc)^2 * (-1 / (2 scale^2)) - (log scale + log(2 pi) / 2):
    the same values as torch's, with the factors that depend only on ``scale`` grouped, so that they are
    constants of a traced sampler step when ``scale`` is (four tensor operations forward instead of six).
    Built in a fraction of torch's time when ``loc`` and ``scale`` are tensors of one shape (or a tensor and a
    number), which models and guides do at every step. A number ``scale`` (a fixed prior width) is remembered as
    one, so that ``log_prob`` folds its factors in Python: two tensor operations fewer forward and backward."""

    _scale_number = None  # the scale as a Python float when it was given as one

    def __init__(self, loc, scale, validate_args=None):
        if isinstance(loc, torch.Tensor) and isinstance(scale, (int, float)) and not isinstance(scale, bool):
            if scale > 0:  # (others take torch's arithmetic: its validation, or its infinities and NaNs)
                self._scale_number = float(scale)
            scale = loc.new_full((), scale).expand(loc.shape)
        if not (isinstance(loc, torch.Tensor) and isinstance(scale, torch.Tensor) and loc.shape == scale.shape):
            super().__init__(loc, scale, validate_args)
            return
        # what torch's broadcast_all would give, without its cost
        self.loc, self.scale = loc, scale
        torch_dist.Distribution.__init__(self, loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, type(self).__new__(type(self)) if _instance is None else _instance)
        new._scale_number = self._scale_number
        return new

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        number = self._scale_number
        if number is not None:
            # (value - loc) broadcasts like value, loc and scale together: scale has loc's shape
            return (value - self.loc).pow(2) * (-0.5 / number**2) - (math.log(number) + _HALF_LOG_2PI)
        return _gaussian_log_density(value - self.loc, self.scale, _HALF_LOG_2PI)


class StudentT(torch_dist.StudentT, DistributionMixin):
    __doc__ = torch_dist.StudentT.__doc__


class Uniform(torch_dist.Uniform, DistributionMixin):
    __doc__ = torch_dist.Uniform.__doc__


class VonMises(torch_dist.VonMises, DistributionMixin):
    """torch's ``VonMises`` with ``log_prob`` normalized by ``torch.special.i0e``, exact to float64 rounding
    (torch's own uses a polynomial approximation of the Bessel function accurate to about 1e-7)."""

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        kappa = self.concentration
        return kappa * (torch.cos(value - self.loc) - 1) - math.log(2 * math.pi) - torch.special.i0e(kappa).log()


class Weibull(torch_dist.Weibull, DistributionMixin):
    __doc__ = torch_dist.Weibull.__doc__


class TruncatedNormal(Distribution):
    """Normal(loc, scale) restricted to [low, high] and renormalized (NumPyro's ``TruncatedNormal``).

    ``low``/``high`` default to None (no bound on that side); all parameters broadcast to ``batch_shape``.
    Sampling is reparameterized by the inverse CDF; intervals in the right tail are handled by mirroring them
    into the left tail, where ``log_ndtr`` keeps full relative precision.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = True

    def __init__(self, loc=0.0, scale=1.0, *, low=None, high=None, validate_args=None):
        self._has_low, self._has_high = low is not None, high is not None
        low = -math.inf if low is None else low
        high = math.inf if high is None else high
        self.loc, self.scale, self.low, self.high = broadcast_all(loc, scale, low, high)
        super().__init__(self.loc.shape, validate_args=validate_args)
        if self._validate_args and not (self.low < self.high).all():
            raise ValueError(f"TruncatedNormal needs low < high everywhere, got low={self.low}, high={self.high}.")
        a = self._standardize(self.low)
        b = self._standardize(self.high)
        # mirror intervals lying right of the mode into the left tail: standardized bounds (a', b') = (-b, -a)
        self._sign = torch.where(a > 0, -1.0, 1.0).to(a.dtype)
        self._a = torch.where(a > 0, -b, a)
        self._b = torch.where(a > 0, -a, b)
        self._log_ndtr_a = torch.special.log_ndtr(self._a)
        self._log_ndtr_b = torch.special.log_ndtr(self._b)
        self._log_normalizer = self._log_ndtr_b + torch.log1p(-torch.exp(self._log_ndtr_a - self._log_ndtr_b))

    def _standardize(self, bound):
        """(bound - loc) / scale, with infinite bounds kept constant so that no inf * 0 reaches the gradients."""
        infinite = bound.isinf()
        return torch.where(infinite, bound, (torch.where(infinite, 0.0, bound) - self.loc) / self.scale)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return TruncatedNormal(
            self.loc.expand(batch_shape),
            self.scale.expand(batch_shape),
            low=self.low.expand(batch_shape) if self._has_low else None,
            high=self.high.expand(batch_shape) if self._has_high else None,
            validate_args=self._validate_args,
        )

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        if self._has_low and self._has_high:
            return constraints.interval(self.low, self.high)
        if self._has_low:
            return constraints.greater_than(self.low)
        if self._has_high:
            return constraints.less_than(self.high)
        return constraints.real

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
        log_cdf = torch.logaddexp(self._log_ndtr_a, torch.log(u) + self._log_normalizer)
        z = torch.special.ndtri(torch.exp(log_cdf)).clamp(self._a, self._b)
        return self.loc + self.scale * self._sign * z

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        z = (value - self.loc) / self.scale
        log_prob = -0.5 * z**2 - 0.5 * math.log(2 * math.pi) - self.scale.log() - self._log_normalizer
        inside = (value >= self.low) & (value <= self.high)
        return torch.where(inside, log_prob, -math.inf)


class GaussianRandomWalk(Distribution):
    """A random walk of ``num_steps`` steps: x_0 ~ Normal(0, scale), x_t - x_{t-1} ~ Normal(0, scale) (Pyro's).

    ``scale`` has shape ``batch_shape``; values have event shape ``(num_steps,)``.
    """

    arg_constraints = {"scale": constraints.positive}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, scale, num_steps=1, validate_args=None):
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"GaussianRandomWalk needs a positive integer num_steps, got {num_steps!r}.")
        (self.scale,) = broadcast_all(scale)
        self.num_steps = num_steps
        super().__init__(self.scale.shape, torch.Size([num_steps]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return GaussianRandomWalk(self.scale.expand(batch_shape), self.num_steps, validate_args=self._validate_args)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        steps = torch.randn(shape, dtype=self.scale.dtype, device=self.scale.device) * self.scale.unsqueeze(-1)
        return steps.cumsum(dim=-1)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        steps = torch.cat([value[..., :1], value[..., 1:] - value[..., :-1]], dim=-1)
        scale = self.scale.unsqueeze(-1)
        log_prob = -0.5 * (steps / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)
        return log_prob.sum(dim=-1)


class Chi2(torch_dist.Chi2, DistributionMixin):
    __doc__ = torch_dist.Chi2.__doc__


class Gumbel(torch_dist.Gumbel, DistributionMixin):
    __doc__ = torch_dist.Gumbel.__doc__


class Pareto(torch_dist.Pareto, DistributionMixin):
    __doc__ = torch_dist.Pareto.__doc__


class TransformedDistribution(torch_dist.TransformedDistribution, DistributionMixin):
    __doc__ = torch_dist.TransformedDistribution.__doc__


class Wishart(torch_dist.Wishart, DistributionMixin):
    __doc__ = torch_dist.Wishart.__doc__
