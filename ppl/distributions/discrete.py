"""Discrete distributions: torch's (with Pyro's ``to_event``/``mask``), plus BetaBinomial, GammaPoisson,
ZeroInflatedPoisson and OrderedLogistic, which torch lacks. Parameter names and semantics are Pyro's."""

import torch
import torch.distributions as torch_dist
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all, lazy_property, logits_to_probs, probs_to_logits

from ppl import constraints as ppl_constraints
from ppl.distributions.distribution import Distribution, DistributionMixin

__all__ = [
    "Bernoulli",
    "BetaBinomial",
    "Binomial",
    "Categorical",
    "GammaPoisson",
    "Geometric",
    "Multinomial",
    "NegativeBinomial",
    "OrderedLogistic",
    "Poisson",
    "ZeroInflatedPoisson",
]


def _is_batched(tensor):
    """Whether ``tensor`` is a batched tensor of ``torch.func.vmap`` (the vectorized chains of a sampler)."""
    return isinstance(tensor, torch.Tensor) and torch._C._functorch.is_batchedtensor(tensor)


class Bernoulli(torch_dist.Bernoulli, DistributionMixin):
    """torch's ``Bernoulli``; under ``torch.func.vmap``, ``log_prob`` = value * logits + log sigmoid(-logits),
    torch's values (its binary cross-entropy with logits) in operations that vmap batches as they are (it
    decomposes torch's into some thirty, with copies, when a sampler vectorizes chains). Built from a ``logits``
    tensor in a fraction of torch's time (models build one at every step). Integer and bool values count as
    their 0/1 values (torch's ``log_prob`` raises on them)."""

    def __init__(self, probs=None, logits=None, validate_args=None):
        if probs is not None or not isinstance(logits, torch.Tensor):
            super().__init__(probs, logits, validate_args)
            return
        self.logits = self._param = logits
        torch_dist.Distribution.__init__(self, logits.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return super().expand(batch_shape, type(self).__new__(type(self)) if _instance is None else _instance)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        logits = self.logits
        if _is_batched(logits) or _is_batched(value):
            return value * logits + torch.nn.functional.logsigmoid(-logits)
        # torch's own form: one fused operation forward and one backward (a third of the time of the above)
        if logits.shape != value.shape:
            logits, value = torch.broadcast_tensors(logits, value)
        if not value.is_floating_point():  # 0/1 counts or bools (torch's own fails on them)
            value = value.to(logits.dtype)
        return -torch.nn.functional.binary_cross_entropy_with_logits(logits, value, reduction="none")


class Binomial(torch_dist.Binomial, DistributionMixin):
    __doc__ = torch_dist.Binomial.__doc__


class Categorical(torch_dist.Categorical, DistributionMixin):
    __doc__ = torch_dist.Categorical.__doc__


class Multinomial(torch_dist.Multinomial, DistributionMixin):
    """torch's ``Multinomial`` with an out-of-place ``log_prob``, so that it also runs under ``torch.func.vmap``
    (torch's writes into a clone of the logits in place)."""

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        # 0 * log(0) counts as 0: a category with probability 0 and no counts contributes nothing
        log_powers = torch.where(value == 0, 0.0, self.logits * value).sum(-1)
        return torch.lgamma(value.sum(-1) + 1) - torch.lgamma(value + 1).sum(-1) + log_powers


class NegativeBinomial(torch_dist.NegativeBinomial, DistributionMixin):
    __doc__ = torch_dist.NegativeBinomial.__doc__


class Poisson(torch_dist.Poisson, DistributionMixin):
    __doc__ = torch_dist.Poisson.__doc__


def _log_binomial_coefficient(n, k):
    return torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)


def _log_beta(a, b):
    return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)


class BetaBinomial(Distribution):
    """Binomial(total_count, p) with p ~ Beta(concentration1, concentration0), p integrated out."""

    arg_constraints = {
        "concentration1": constraints.positive,
        "concentration0": constraints.positive,
        "total_count": constraints.nonnegative_integer,
    }

    def __init__(self, concentration1, concentration0, total_count=1, validate_args=None):
        self.concentration1, self.concentration0, self.total_count = broadcast_all(
            concentration1, concentration0, total_count
        )
        super().__init__(self.concentration1.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return BetaBinomial(
            self.concentration1.expand(batch_shape),
            self.concentration0.expand(batch_shape),
            self.total_count.expand(batch_shape),
            validate_args=self._validate_args,
        )

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(0, self.total_count)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            probs = torch_dist.Beta(self.concentration1, self.concentration0).sample(sample_shape)
            return torch_dist.Binomial(self.total_count.expand(probs.shape), probs).sample()

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        n, a, b = self.total_count, self.concentration1, self.concentration0
        return _log_binomial_coefficient(n, value) + _log_beta(value + a, n - value + b) - _log_beta(a, b)


class GammaPoisson(Distribution):
    """Poisson(r) with r ~ Gamma(concentration, rate), r integrated out (a negative binomial)."""

    arg_constraints = {"concentration": constraints.positive, "rate": constraints.positive}
    support = constraints.nonnegative_integer

    def __init__(self, concentration, rate, validate_args=None):
        self.concentration, self.rate = broadcast_all(concentration, rate)
        super().__init__(self.concentration.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return GammaPoisson(
            self.concentration.expand(batch_shape), self.rate.expand(batch_shape), validate_args=self._validate_args
        )

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            rate = torch_dist.Gamma(self.concentration, self.rate).sample(sample_shape)
            return torch.poisson(rate)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        alpha, beta = self.concentration, self.rate
        return (
            torch.lgamma(value + alpha)
            - torch.lgamma(alpha)
            - torch.lgamma(value + 1)
            + alpha * beta.log()
            - (value + alpha) * torch.log1p(beta)
        )


class ZeroInflatedPoisson(Distribution):
    """Zero with probability ``gate``, otherwise Poisson(rate). Give exactly one of ``gate``/``gate_logits``."""

    arg_constraints = {
        "rate": constraints.nonnegative,
        "gate": constraints.unit_interval,
        "gate_logits": constraints.real,
    }
    support = constraints.nonnegative_integer

    def __init__(self, rate, *, gate=None, gate_logits=None, validate_args=None):
        if (gate is None) == (gate_logits is None):
            raise ValueError("ZeroInflatedPoisson needs exactly one of gate= and gate_logits=.")
        if gate is not None:
            self.rate, self.gate = broadcast_all(rate, gate)
        else:
            self.rate, self.gate_logits = broadcast_all(rate, gate_logits)
        super().__init__(self.rate.shape, validate_args=validate_args)

    @lazy_property
    def gate(self):
        return logits_to_probs(self.gate_logits, is_binary=True)

    @lazy_property
    def gate_logits(self):
        return probs_to_logits(self.gate, is_binary=True)

    def expand(self, batch_shape, _instance=None):
        gate = {"gate": self.gate.expand(batch_shape)}
        if "gate_logits" in self.__dict__:
            gate = {"gate_logits": self.gate_logits.expand(batch_shape)}
        return ZeroInflatedPoisson(self.rate.expand(batch_shape), **gate, validate_args=self._validate_args)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            counts = torch.poisson(self.rate.expand(shape))
            zero = torch.rand(shape, dtype=self.rate.dtype, device=self.rate.device) < self.gate
            return torch.where(zero, 0.0, counts)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        log_gate = -torch.nn.functional.softplus(-self.gate_logits)
        log_not_gate = -torch.nn.functional.softplus(self.gate_logits)
        log_poisson = torch.xlogy(value, self.rate) - self.rate - torch.lgamma(value + 1)
        log_zero = torch.logaddexp(log_gate, log_not_gate - self.rate)
        return torch.where(value == 0, log_zero, log_not_gate + log_poisson)


class OrderedLogistic(Categorical):
    """Ordinal outcomes 0..K: P(y <= k) = sigmoid(cutpoints[k] - predictor) (Pyro's ``OrderedLogistic``).

    ``predictor`` has shape ``batch_shape``; ``cutpoints`` (increasing) has shape ``batch_shape + (K,)``; both
    broadcast.
    """

    arg_constraints = {"predictor": constraints.real, "cutpoints": ppl_constraints.ordered_vector}

    def __init__(self, predictor, cutpoints, validate_args=None):
        predictor, cutpoints = torch.as_tensor(predictor), torch.as_tensor(cutpoints)
        if cutpoints.dim() < 1:
            raise ValueError(f"OrderedLogistic needs a vector of cutpoints, got a scalar {cutpoints}.")
        batch_shape = torch.broadcast_shapes(predictor.shape, cutpoints.shape[:-1])
        self.predictor = predictor.expand(batch_shape)
        self.cutpoints = cutpoints.expand(batch_shape + cutpoints.shape[-1:])
        cdf = torch.sigmoid(self.cutpoints - self.predictor.unsqueeze(-1))
        zeros = cdf.new_zeros(batch_shape + (1,))
        probs = torch.cat([cdf, zeros + 1], dim=-1) - torch.cat([zeros, cdf], dim=-1)
        super().__init__(probs=probs.clamp(min=torch.finfo(probs.dtype).tiny), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return OrderedLogistic(
            self.predictor.expand(batch_shape),
            self.cutpoints.expand(batch_shape + self.cutpoints.shape[-1:]),
            validate_args=self._validate_args,
        )


class Geometric(torch_dist.Geometric, DistributionMixin):
    __doc__ = torch_dist.Geometric.__doc__
