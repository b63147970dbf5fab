"""Probability distributions for ``ppl`` models: ``import ppl.distributions as dist``.

Torch's distributions are reused through thin subclasses that add Pyro's ``.to_event()``, ``.mask()`` and
``d()``; the ones torch lacks (BetaBinomial, GammaPoisson, ZeroInflatedPoisson, OrderedLogistic,
TruncatedNormal, GaussianRandomWalk, Delta, ImproperUniform) are written here on the same base. Parameter
names follow Pyro.
"""

from ppl import constraints
from ppl.distributions.continuous import (
    Beta,
    Cauchy,
    Dirichlet,
    Exponential,
    Gamma,
    GaussianRandomWalk,
    HalfCauchy,
    HalfNormal,
    InverseGamma,
    Laplace,
    LKJCholesky,
    LogNormal,
    LowRankMultivariateNormal,
    MultivariateNormal,
    Normal,
    StudentT,
    TruncatedNormal,
    Uniform,
    VonMises,
    Weibull,
)
from ppl.distributions.delta import Delta
from ppl.distributions.discrete import (
    Bernoulli,
    BetaBinomial,
    Binomial,
    Categorical,
    GammaPoisson,
    Multinomial,
    NegativeBinomial,
    OrderedLogistic,
    Poisson,
    ZeroInflatedPoisson,
)
from ppl.distributions.distribution import (
    Distribution,
    DistributionMixin,
    Independent,
    MaskedDistribution,
    MixtureSameFamily,
)
from ppl.distributions.improper_uniform import ImproperUniform
from ppl.distributions.kl import kl_divergence, register_kl

__all__ = [
    "Bernoulli",
    "Beta",
    "BetaBinomial",
    "Binomial",
    "Categorical",
    "Cauchy",
    "Delta",
    "Dirichlet",
    "Distribution",
    "DistributionMixin",
    "Exponential",
    "Gamma",
    "GammaPoisson",
    "GaussianRandomWalk",
    "HalfCauchy",
    "HalfNormal",
    "ImproperUniform",
    "Independent",
    "InverseGamma",
    "LKJCholesky",
    "Laplace",
    "LogNormal",
    "LowRankMultivariateNormal",
    "MaskedDistribution",
    "MixtureSameFamily",
    "Multinomial",
    "MultivariateNormal",
    "NegativeBinomial",
    "Normal",
    "OrderedLogistic",
    "Poisson",
    "StudentT",
    "TruncatedNormal",
    "Uniform",
    "VonMises",
    "Weibull",
    "ZeroInflatedPoisson",
    "constraints",
    "kl_divergence",
    "register_kl",
]
