"""ppl.distributions: log_prob against scipy.stats (NumPyro for LKJCholesky) on random, broadcast parameters;
shapes, support, expand / to_event / mask, argument validation, samplers and analytic KL."""

import zlib

import numpy as np
import pytest
import torch
from scipy import special, stats

import ppl.distributions as dist
from ppl import constraints


def _loop(fn, x, *params, event_ndims):
    """Apply a scipy function that takes one event at a time over the broadcast batch of ``x`` and params."""
    batch = np.broadcast_shapes(*(a.shape[: a.ndim - n] for a, n in zip((x, *params), event_ndims)))
    out = np.empty(batch)
    for index in np.ndindex(batch):
        args = [np.broadcast_to(a, batch + a.shape[a.ndim - n :])[index] for a, n in zip((x, *params), event_ndims)]
        out[index] = fn(*args)
    return out


def _positive(rng, shape, low=0.5, high=2.5):
    return rng.uniform(low, high, size=shape)


def _ordered_logistic_reference(x, predictor, cutpoints):
    cdf = stats.logistic.cdf(cutpoints - predictor[..., None])
    cdf = np.concatenate([np.zeros(cdf.shape[:-1] + (1,)), cdf, np.ones(cdf.shape[:-1] + (1,))], axis=-1)
    probs = np.diff(cdf, axis=-1)
    probs = np.broadcast_to(probs, x.shape + probs.shape[-1:])
    return np.log(np.take_along_axis(probs, x.astype(int)[..., None], axis=-1)[..., 0])


def _lkj_cholesky_reference(x, concentration):
    """log density of a Cholesky factor L of an LKJ(concentration) correlation matrix, from the C-vine.

    Lewandowski, Kurowicka & Joe (2009): the partial correlations z_ij = L_ij / sqrt(1 - sum_{k<j} L_ik^2)
    (i > j) are independent, with (z_ij + 1) / 2 ~ Beta(b_j, b_j), b_j = concentration + (n - 2 - j) / 2.
    dz_ij / dL_ij = 1 / sqrt(1 - sum_{k<j} L_ik^2) and the map is triangular, giving the density of L.
    """
    n = x.shape[-1]
    log_density = np.zeros(np.broadcast_shapes(x.shape[:-2], np.shape(concentration)))
    for i in range(1, n):
        for j in range(i):
            remaining = 1 - (x[..., i, :j] ** 2).sum(-1)
            z = x[..., i, j] / np.sqrt(remaining)
            b = concentration + (n - 2 - j) / 2
            log_density = log_density + stats.beta.logpdf((z + 1) / 2, b, b) - np.log(2) - 0.5 * np.log(remaining)
    return log_density


# Each case: name -> make(t, rng) returning (distribution, reference log density of a numpy value).
# Parameters have different shapes so that every case exercises broadcasting to its batch_shape.
def _cases():
    cases = {}

    def case(fn):
        cases[fn.__name__] = fn
        return fn

    @case
    def normal(t, rng):
        loc, scale = rng.normal(size=(3, 1)), _positive(rng, (4,))
        return dist.Normal(t(loc), t(scale)), lambda x: stats.norm.logpdf(x, loc, scale)

    @case
    def half_normal(t, rng):
        scale = _positive(rng, (3, 2))
        return dist.HalfNormal(t(scale)), lambda x: stats.halfnorm.logpdf(x, scale=scale)

    @case
    def cauchy(t, rng):
        loc, scale = rng.normal(size=(3,)), _positive(rng, (2, 1))
        return dist.Cauchy(t(loc), t(scale)), lambda x: stats.cauchy.logpdf(x, loc, scale)

    @case
    def half_cauchy(t, rng):
        scale = _positive(rng, (3,))
        return dist.HalfCauchy(t(scale)), lambda x: stats.halfcauchy.logpdf(x, scale=scale)

    @case
    def student_t(t, rng):
        df, loc, scale = _positive(rng, (3, 1), 1.5, 6.0), rng.normal(size=(2,)), _positive(rng, (3, 2))
        return dist.StudentT(t(df), t(loc), t(scale)), lambda x: stats.t.logpdf(x, df, loc, scale)

    @case
    def log_normal(t, rng):
        loc, scale = rng.normal(size=(2, 1)), _positive(rng, (3,), 0.3, 1.0)
        return dist.LogNormal(t(loc), t(scale)), lambda x: stats.lognorm.logpdf(x, s=scale, scale=np.exp(loc))

    @case
    def gamma(t, rng):
        concentration, rate = _positive(rng, (3, 1)), _positive(rng, (2,))
        reference = lambda x: stats.gamma.logpdf(x, concentration, scale=1 / rate)  # noqa: E731
        return dist.Gamma(t(concentration), t(rate)), reference

    @case
    def inverse_gamma(t, rng):
        concentration, rate = _positive(rng, (3, 1), 1.5, 4.0), _positive(rng, (2,))
        reference = lambda x: stats.invgamma.logpdf(x, concentration, scale=rate)  # noqa: E731
        return dist.InverseGamma(t(concentration), t(rate)), reference

    @case
    def beta(t, rng):
        a, b = _positive(rng, (3, 1)), _positive(rng, (4,))
        return dist.Beta(t(a), t(b)), lambda x: stats.beta.logpdf(x, a, b)

    @case
    def exponential(t, rng):
        rate = _positive(rng, (3, 2))
        return dist.Exponential(t(rate)), lambda x: stats.expon.logpdf(x, scale=1 / rate)

    @case
    def uniform(t, rng):
        low = rng.normal(size=(3, 1))
        high = low + _positive(rng, (2,))
        return dist.Uniform(t(low), t(high)), lambda x: stats.uniform.logpdf(x, low, high - low)

    @case
    def laplace(t, rng):
        loc, scale = rng.normal(size=(3,)), _positive(rng, (2, 1))
        return dist.Laplace(t(loc), t(scale)), lambda x: stats.laplace.logpdf(x, loc, scale)

    @case
    def weibull(t, rng):
        scale, concentration = _positive(rng, (3, 1)), _positive(rng, (2,), 0.8, 3.0)
        reference = lambda x: stats.weibull_min.logpdf(x, concentration, scale=scale)  # noqa: E731
        return dist.Weibull(t(scale), t(concentration)), reference

    @case
    def von_mises(t, rng):
        loc, concentration = rng.uniform(-3, 3, size=(3, 1)), _positive(rng, (2,), 0.5, 4.0)
        reference = lambda x: stats.vonmises.logpdf(x, concentration, loc)  # noqa: E731
        return dist.VonMises(t(loc), t(concentration)), reference

    @case
    def truncated_normal(t, rng):
        loc, scale = rng.normal(size=(3, 1)), _positive(rng, (2,))
        low, high = loc - 1.0, loc + _positive(rng, (2,))
        a, b = (low - loc) / scale, (high - loc) / scale
        reference = lambda x: stats.truncnorm.logpdf(x, a, b, loc, scale)  # noqa: E731
        return dist.TruncatedNormal(t(loc), t(scale), low=t(low), high=t(high)), reference

    @case
    def truncated_normal_far_right_tail(t, rng):
        loc, scale = rng.normal(size=(3,)), _positive(rng, (3,))
        low = loc + 7.0 * scale
        reference = lambda x: stats.truncnorm.logpdf(x, (low - loc) / scale, np.inf, loc, scale)  # noqa: E731
        return dist.TruncatedNormal(t(loc), t(scale), low=t(low)), reference

    @case
    def truncated_normal_upper_only(t, rng):
        loc, scale, high = rng.normal(size=(3,)), _positive(rng, (2, 1)), rng.normal(size=(2, 1))
        reference = lambda x: stats.truncnorm.logpdf(x, -np.inf, (high - loc) / scale, loc, scale)  # noqa: E731
        return dist.TruncatedNormal(t(loc), t(scale), high=t(high)), reference

    @case
    def dirichlet(t, rng):
        concentration = _positive(rng, (3, 4))

        def reference(x):
            x = x / x.sum(-1, keepdims=True)  # scipy insists on sums equal to 1 within 1e-9
            return _loop(stats.dirichlet.logpdf, x, concentration, event_ndims=(1, 1))

        return dist.Dirichlet(t(concentration)), reference

    @case
    def multivariate_normal(t, rng):
        loc = rng.normal(size=(3, 1, 2))
        factor = rng.normal(size=(2, 2, 2))
        cov = factor @ np.swapaxes(factor, -1, -2) + np.eye(2)
        reference = lambda x: _loop(stats.multivariate_normal.logpdf, x, loc, cov, event_ndims=(1, 1, 2))  # noqa: E731
        return dist.MultivariateNormal(t(loc), covariance_matrix=t(cov)), reference

    @case
    def multivariate_normal_scale_tril(t, rng):
        loc = rng.normal(size=(3,))
        scale_tril = np.tril(rng.normal(size=(2, 3, 3)), -1) + np.diag(_positive(rng, (3,)))
        cov = scale_tril @ np.swapaxes(scale_tril, -1, -2)
        reference = lambda x: _loop(stats.multivariate_normal.logpdf, x, loc, cov, event_ndims=(1, 1, 2))  # noqa: E731
        return dist.MultivariateNormal(t(loc), scale_tril=t(scale_tril)), reference

    @case
    def low_rank_multivariate_normal(t, rng):
        loc, cov_factor, cov_diag = rng.normal(size=(2, 1, 3)), rng.normal(size=(3, 2)), _positive(rng, (4, 3))
        cov = cov_factor @ cov_factor.T + cov_diag[..., None] * np.eye(3)
        reference = lambda x: _loop(stats.multivariate_normal.logpdf, x, loc, cov, event_ndims=(1, 1, 2))  # noqa: E731
        return dist.LowRankMultivariateNormal(t(loc), t(cov_factor), t(cov_diag)), reference

    @case
    def lkj_cholesky_2d(t, rng):
        concentration = _positive(rng, (3,), 0.5, 3.0)
        reference = lambda x: _lkj_cholesky_reference(x, concentration)  # noqa: E731
        return dist.LKJCholesky(2, t(concentration)), reference

    @case
    def lkj_cholesky_4d(t, rng):
        concentration = _positive(rng, (2, 1), 0.5, 3.0)
        reference = lambda x: _lkj_cholesky_reference(x, concentration)  # noqa: E731
        return dist.LKJCholesky(4, t(concentration)), reference

    @case
    def bernoulli(t, rng):
        probs = rng.uniform(0.1, 0.9, size=(3, 2))
        return dist.Bernoulli(t(probs)), lambda x: stats.bernoulli.logpmf(x, probs)

    @case
    def bernoulli_logits(t, rng):
        logits = rng.normal(size=(3,))
        return dist.Bernoulli(logits=t(logits)), lambda x: stats.bernoulli.logpmf(x, special.expit(logits))

    @case
    def binomial(t, rng):
        total_count, probs = rng.integers(1, 10, size=(3, 1)).astype(float), rng.uniform(0.1, 0.9, size=(2,))
        return dist.Binomial(t(total_count), t(probs)), lambda x: stats.binom.logpmf(x, total_count, probs)

    @case
    def categorical(t, rng):
        probs = rng.uniform(0.1, 1.0, size=(3, 4))

        def reference(x):
            one_hot = np.eye(4)[x.astype(int)]
            return _loop(lambda v, p: stats.multinomial.logpmf(v, 1, p / p.sum()), one_hot, probs, event_ndims=(1, 1))

        return dist.Categorical(t(probs)), reference

    @case
    def multinomial(t, rng):
        probs = rng.uniform(0.1, 1.0, size=(3, 4))
        reference = lambda x: _loop(  # noqa: E731
            lambda v, p: stats.multinomial.logpmf(v, 7, p / p.sum()), x, probs, event_ndims=(1, 1)
        )
        return dist.Multinomial(7, t(probs)), reference

    @case
    def poisson(t, rng):
        rate = _positive(rng, (3, 2), 0.5, 6.0)
        return dist.Poisson(t(rate)), lambda x: stats.poisson.logpmf(x, rate)

    @case
    def negative_binomial(t, rng):
        total_count, probs = _positive(rng, (3, 1), 0.5, 5.0), rng.uniform(0.1, 0.8, size=(2,))
        # torch's probs is the success probability; scipy's p is the failure one
        reference = lambda x: stats.nbinom.logpmf(x, total_count, 1 - probs)  # noqa: E731
        return dist.NegativeBinomial(t(total_count), t(probs)), reference

    @case
    def gamma_poisson(t, rng):
        concentration, rate = _positive(rng, (3, 1), 0.5, 5.0), _positive(rng, (2,), 0.3, 2.0)
        reference = lambda x: stats.nbinom.logpmf(x, concentration, rate / (1 + rate))  # noqa: E731
        return dist.GammaPoisson(t(concentration), t(rate)), reference

    @case
    def beta_binomial(t, rng):
        a, b, n = _positive(rng, (3, 1)), _positive(rng, (2,)), rng.integers(1, 12, size=(3, 2)).astype(float)
        return dist.BetaBinomial(t(a), t(b), t(n)), lambda x: stats.betabinom.logpmf(x, n, a, b)

    @case
    def zero_inflated_poisson(t, rng):
        rate, gate = _positive(rng, (3, 1), 0.5, 4.0), rng.uniform(0.1, 0.7, size=(2,))
        reference = lambda x: np.log(gate * (x == 0) + (1 - gate) * stats.poisson.pmf(x, rate))  # noqa: E731
        return dist.ZeroInflatedPoisson(t(rate), gate=t(gate)), reference

    @case
    def zero_inflated_poisson_logits(t, rng):
        rate, gate_logits = _positive(rng, (3,), 0.5, 4.0), rng.normal(size=(2, 1))
        gate = special.expit(gate_logits)
        reference = lambda x: np.log(gate * (x == 0) + (1 - gate) * stats.poisson.pmf(x, rate))  # noqa: E731
        return dist.ZeroInflatedPoisson(t(rate), gate_logits=t(gate_logits)), reference

    @case
    def ordered_logistic(t, rng):
        predictor, cutpoints = rng.normal(size=(3, 1)), np.sort(rng.normal(size=(2, 3)) * 2, axis=-1)
        reference = lambda x: _ordered_logistic_reference(x, predictor, cutpoints)  # noqa: E731
        return dist.OrderedLogistic(t(predictor), t(cutpoints)), reference

    @case
    def mixture_same_family(t, rng):
        weights, loc, scale = _positive(rng, (2, 3)), rng.normal(size=(3,)) * 2, _positive(rng, (4, 1, 3))

        def reference(x):
            log_weights = np.log(weights / weights.sum(-1, keepdims=True))
            return special.logsumexp(log_weights + stats.norm.logpdf(x[..., None], loc, scale), axis=-1)

        mixture = dist.Categorical(t(weights))
        components = dist.Normal(t(loc), t(scale))
        return dist.MixtureSameFamily(mixture, components), reference

    @case
    def gaussian_random_walk(t, rng):
        scale = _positive(rng, (3,))

        def reference(x):
            steps = np.diff(x, axis=-1, prepend=0.0)
            return stats.norm.logpdf(steps, 0.0, scale[..., None]).sum(-1)

        return dist.GaussianRandomWalk(t(scale), num_steps=5), reference

    return cases


CASES = _cases()


def _tensor_maker(device, dtype):
    return lambda array: torch.as_tensor(np.asarray(array), dtype=dtype, device=device)


@pytest.mark.parametrize("name", list(CASES))
def test_log_prob_matches_scipy(name, device, dtype):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    d, reference = CASES[name](_tensor_maker(device, dtype), rng)
    x = d.sample((2,))
    assert x.shape == (2,) + d.batch_shape + d.event_shape
    assert x.device.type == device.type
    assert d.support.check(x).all()
    log_prob = d.log_prob(x)
    assert log_prob.shape == (2,) + d.batch_shape
    assert log_prob.dtype == dtype and log_prob.device.type == device.type
    expected = torch.as_tensor(reference(x.cpu().double().numpy()))
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(log_prob.cpu().double(), expected, **tol)


@pytest.mark.parametrize("name", list(CASES))
def test_expand_to_event_and_mask(name, device):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    d, _ = CASES[name](_tensor_maker(device, torch.float64), rng)
    batch = d.batch_shape

    expanded = d.expand((2,) + batch)
    assert type(expanded) is type(d) and expanded.batch_shape == (2,) + batch
    x = expanded.sample()
    torch.testing.assert_close(expanded.log_prob(x), d.log_prob(x))

    event = d.to_event(1)
    assert event.batch_shape == batch[:-1] and event.event_shape == batch[-1:] + d.event_shape
    torch.testing.assert_close(event.log_prob(x), d.log_prob(x).sum(-1))
    assert d.to_event().batch_shape == () and d.to_event(0) is d
    assert type(event.expand((2,) + event.batch_shape)) is dist.Independent

    mask = torch.rand(batch, device=device) < 0.5
    masked = d.mask(mask)
    assert masked.batch_shape == batch and masked.event_shape == d.event_shape
    torch.testing.assert_close(masked.log_prob(x), torch.where(mask, d.log_prob(x), 0.0))
    assert (d.mask(False).log_prob(x) == 0).all()
    assert masked.sample((3,)).shape == (3,) + batch + d.event_shape
    torch.testing.assert_close(masked.expand((2,) + batch).log_prob(x), masked.log_prob(x))
    assert d.mask(mask).to_event().log_prob(x).shape == (2,)


@pytest.mark.parametrize("name", list(CASES))
def test_log_prob_works_under_vmap(name, device):
    """The potential evaluates a batch of chains with torch.func.vmap, validation off."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    d, _ = CASES[name](_tensor_maker(device, torch.float64), rng)
    x = d.sample((2,))
    default = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        d, _ = CASES[name](_tensor_maker(device, torch.float64), np.random.default_rng(zlib.crc32(name.encode())))
        torch.testing.assert_close(torch.func.vmap(d.log_prob)(x), d.log_prob(x))
    finally:
        torch.distributions.Distribution.set_default_validate_args(default)


def test_mask_broadcasts_to_a_larger_batch(device):
    d = dist.Normal(torch.zeros(3, device=device), 1.0)
    masked = d.mask(torch.tensor([[True], [False]], device=device))
    assert masked.batch_shape == (2, 3)
    log_prob = masked.log_prob(torch.zeros(3, device=device))
    assert (log_prob[1] == 0).all() and (log_prob[0] == d.log_prob(torch.zeros(3, device=device))).all()


def test_mask_must_be_boolean_and_broadcastable():
    d = dist.Normal(torch.zeros(3), 1.0)
    with pytest.raises(TypeError, match="bool"):
        d.mask(torch.ones(3))
    with pytest.raises(ValueError, match="broadcast"):
        d.mask(torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="batch dimensions"):
        d.to_event(2)


def test_calling_a_distribution_samples_with_reparameterization(device):
    loc = torch.zeros(3, device=device, requires_grad=True)
    x = dist.Normal(loc, 1.0)((2,))
    assert x.shape == (2, 3) and x.requires_grad
    assert dist.Poisson(torch.ones(3, device=device))().shape == (3,)


@pytest.mark.parametrize(
    "make",
    [
        lambda: dist.Normal(0.0, -1.0),
        lambda: dist.Beta(torch.tensor([1.0, -1.0]), 1.0),
        lambda: dist.Gamma(1.0, 0.0),
        lambda: dist.Dirichlet(torch.tensor([1.0, -0.5])),
        lambda: dist.MultivariateNormal(torch.zeros(2), covariance_matrix=-torch.eye(2)),
        lambda: dist.TruncatedNormal(0.0, 1.0, low=2.0, high=1.0),
        lambda: dist.TruncatedNormal(0.0, -1.0, low=0.0),
        lambda: dist.BetaBinomial(1.0, 1.0, total_count=2.5),
        lambda: dist.GammaPoisson(-1.0, 1.0),
        lambda: dist.ZeroInflatedPoisson(1.0, gate=1.5),
        lambda: dist.ZeroInflatedPoisson(1.0),
        lambda: dist.ZeroInflatedPoisson(1.0, gate=0.5, gate_logits=0.0),
        lambda: dist.OrderedLogistic(0.0, torch.tensor([1.0, 0.0])),
        lambda: dist.GaussianRandomWalk(1.0, num_steps=0),
        lambda: dist.Delta(torch.zeros(2), event_dim=2),
        lambda: dist.ImproperUniform(constraints.simplex, (), ()),
    ],
)
def test_invalid_arguments_raise_value_error(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize(
    "d, value",
    [
        (dist.HalfNormal(1.0), -1.0),
        (dist.Poisson(2.0), 0.5),
        (dist.GammaPoisson(2.0, 1.0), -1.0),
        (dist.BetaBinomial(1.0, 1.0, 3.0), 4.0),
        (dist.TruncatedNormal(0.0, 1.0, low=0.0, high=1.0), 2.0),
        (dist.OrderedLogistic(0.0, torch.tensor([-1.0, 1.0])), 3.0),
        (dist.Beta(2.0, 2.0).to_event(0), 1.5),
    ],
)
def test_log_prob_outside_support_raises(d, value):
    with pytest.raises(ValueError, match="support"):
        d.log_prob(torch.tensor(value))


def test_delta(device, dtype):
    v = torch.randn(2, 3, device=device, dtype=dtype, requires_grad=True)
    d = dist.Delta(v, log_density=torch.tensor([0.5, -1.0], device=device, dtype=dtype), event_dim=1)
    assert d.batch_shape == (2,) and d.event_shape == (3,) and d.has_rsample
    x = d.rsample((4,))
    assert x.shape == (4, 2, 3)
    x.sum().backward()
    torch.testing.assert_close(v.grad, torch.full_like(v, 4.0))
    torch.testing.assert_close(d.log_prob(v.detach()), d.log_density)
    other = v.detach().clone()
    other[1, 2] += 1
    assert d.log_prob(other)[0] == 0.5 and d.log_prob(other)[1] == -torch.inf
    assert d.expand((5, 2)).log_prob(v.detach()).shape == (5, 2)
    assert dist.Delta(torch.tensor(1.0)).support is constraints.real


def test_improper_uniform(device, dtype):
    d = dist.ImproperUniform(constraints.positive, (2,), (3,))
    assert d.batch_shape == (2,) and d.event_shape == (3,) and d.support.event_dim == 1
    value = torch.rand(4, 1, 3, device=device, dtype=dtype)
    log_prob = d.log_prob(value)
    assert log_prob.shape == (4, 2) and (log_prob == 0).all() and log_prob.dtype == dtype
    assert d.expand((5, 2)).batch_shape == (5, 2)
    with pytest.raises(NotImplementedError, match="cannot be sampled"):
        d.sample()
    with pytest.raises(ValueError, match="support"):
        d.log_prob(-value)


def _assert_mean_matches(samples, mean, variance):
    """Sample mean within 5 standard errors of the exact mean."""
    error = (samples.double().mean(0) - torch.as_tensor(mean)).abs()
    assert (error < 5 * (torch.as_tensor(variance) / samples.shape[0]).sqrt()).all()


def test_truncated_normal_samples_follow_scipy(device):
    loc, scale = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 0.5, 2.0])
    low, high = torch.tensor([-0.5, 4.5, -30.0]), torch.tensor([2.0, 5.5, -20.0])
    d = dist.TruncatedNormal(loc.to(device), scale.to(device), low=low.to(device), high=high.to(device))
    samples = d.sample((4000,)).cpu()
    assert ((samples >= low) & (samples <= high)).all()
    for i in range(3):
        a, b = (low[i] - loc[i]) / scale[i], (high[i] - loc[i]) / scale[i]
        reference = stats.truncnorm(a.item(), b.item(), loc[i].item(), scale[i].item())
        assert stats.kstest(samples[:, i].numpy(), reference.cdf).pvalue > 1e-3


@pytest.mark.parametrize("low, high", [(0.0, 1.0), (4.0, None), (None, -1.0)])
def test_truncated_normal_rsample_is_differentiable(low, high):
    loc = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    x = dist.TruncatedNormal(loc, scale, low=low, high=high).rsample((5,))
    x.sum().backward()
    assert torch.isfinite(loc.grad) and loc.grad != 0 and torch.isfinite(scale.grad)


def test_new_discrete_samplers_match_scipy_moments(device):
    n = 4000
    t = _tensor_maker(device, torch.float64)
    for d, reference in [
        (dist.BetaBinomial(t(2.0), t(3.0), t(10.0)), stats.betabinom(10, 2.0, 3.0)),
        (dist.GammaPoisson(t(3.0), t(0.5)), stats.nbinom(3.0, 0.5 / 1.5)),
        (dist.ZeroInflatedPoisson(t(3.0), gate=t(0.3)), None),
    ]:
        samples = d.sample((n,)).cpu()
        if reference is None:  # zero-inflated Poisson: mean (1 - g) r, variance (1 - g) r (1 + g r)
            _assert_mean_matches(samples, 0.7 * 3.0, 0.7 * 3.0 * (1 + 0.3 * 3.0))
        else:
            _assert_mean_matches(samples, reference.mean(), reference.var())

    cutpoints = np.array([-1.0, 0.0, 2.0])
    samples = dist.OrderedLogistic(t(0.5), t(cutpoints)).sample((n,)).cpu()
    probs = np.exp(_ordered_logistic_reference(np.arange(4.0), np.array(0.5), cutpoints))
    observed = torch.bincount(samples, minlength=4).double() / n
    assert (observed - torch.as_tensor(probs)).abs().max() < 5 * (0.25 / n) ** 0.5


def test_gaussian_random_walk_samples_have_walk_variance(device):
    scale = torch.tensor(2.0, dtype=torch.float64, device=device)
    samples = dist.GaussianRandomWalk(scale, num_steps=4).rsample((4000,)).cpu()
    steps = np.arange(1, 5)
    _assert_mean_matches(samples, np.zeros(4), 4.0 * steps)
    variance = samples.var(0)
    assert ((variance / torch.as_tensor(4.0 * steps) - 1).abs() < 0.15).all()


def test_kl_extensions(device):
    t = _tensor_maker(device, torch.float64)
    loc, scale = t(np.array([[0.1, -0.4], [1.0, 0.3]])), t(np.array([[0.5, 1.2], [0.8, 2.0]]))
    q_loc, q_scale = t(np.array([0.2, -0.1])), t(np.array([1.5, 0.7]))
    p, q = dist.Normal(loc, scale), dist.Normal(q_loc, q_scale)
    elementwise = dist.kl_divergence(p, q)

    nested = q.expand((2, 2)).to_event(1).to_event(1)
    torch.testing.assert_close(dist.kl_divergence(p.to_event(2), nested), elementwise.sum())
    mask = torch.tensor([[True, False], [False, True]], device=device)
    torch.testing.assert_close(dist.kl_divergence(p.mask(mask), q.mask(True)), torch.where(mask, elementwise, 0.0))

    factor = t(np.array([[1.0, 0.0], [0.6, 0.9]]))
    mvn = dist.MultivariateNormal(q_loc, scale_tril=factor)
    full = dist.MultivariateNormal(loc, scale_tril=torch.diag_embed(scale))
    torch.testing.assert_close(dist.kl_divergence(p.to_event(1), mvn), dist.kl_divergence(full, mvn))

    v = t(np.array([0.3, -0.2]))
    torch.testing.assert_close(dist.kl_divergence(dist.Delta(v, event_dim=1), mvn), -mvn.log_prob(v))


@pytest.mark.parametrize(
    "make, params, value",
    [
        (lambda p: dist.TruncatedNormal(p[0], p[1], low=-0.5, high=2.0), [0.3, 1.2], [0.1, 1.9]),
        (lambda p: dist.TruncatedNormal(p[0], p[1], low=4.0), [0.3, 0.7], [4.1, 5.0]),
        (lambda p: dist.VonMises(p[0], p[1]), [0.3, 2.0], [0.1, -2.5]),
        (lambda p: dist.GammaPoisson(p[0], p[1]), [2.5, 0.7], [0.0, 4.0]),
        (lambda p: dist.BetaBinomial(p[0], p[1], 6.0), [1.5, 0.7], [0.0, 4.0]),
        (lambda p: dist.ZeroInflatedPoisson(p[0], gate=p[1]), [2.5, 0.3], [0.0, 3.0]),
        (lambda p: dist.OrderedLogistic(p[0], torch.stack([p[1] - 1, p[1]])), [0.4, 0.2], [0.0, 2.0]),
        (lambda p: dist.GaussianRandomWalk(p[0], num_steps=2), [1.3], [[0.4, -0.3]]),
        (lambda p: dist.Delta(torch.zeros(2, dtype=p.dtype), log_density=p[0]), [0.7], [0.0, 0.0]),
        (lambda p: dist.Normal(p[0], p[1]), [0.3, 1.2], [0.1, -1.9]),
        (lambda p: dist.Normal(p, 1.3).expand([2]), [0.3, -0.4], [0.1, -1.9]),
        (lambda p: dist.HalfNormal(p[0]), [1.2], [0.1, 1.9]),
        (lambda p: dist.HalfCauchy(p[0]), [1.2], [0.1, 1.9]),
        (lambda p: dist.Bernoulli(logits=p), [0.3, -2.0], [1.0, 0.0]),
    ],
)
def test_new_log_probs_are_differentiable_in_their_parameters(make, params, value):
    params = torch.tensor(params, dtype=torch.float64, requires_grad=True)
    value = torch.tensor(value, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: make(p).log_prob(value), (params,))


def test_rewritten_log_probs_equal_torch_s_on_hard_values():
    """Normal, HalfNormal, HalfCauchy and Bernoulli write log_prob in fewer operations than torch: the same values
    (and -inf below a half distribution's support), extreme logits included."""
    x = torch.tensor([-3.0, -1e-300, 0.0, 1e-300, 0.4, 7.0, 1e3], dtype=torch.float64)
    loc, scale = torch.tensor(0.3, dtype=torch.float64), torch.tensor(1.7, dtype=torch.float64)
    off = dict(validate_args=False)
    for ours, theirs in (
        (dist.Normal(loc, scale, **off), torch.distributions.Normal(loc, scale, **off)),
        (dist.HalfNormal(scale, **off), torch.distributions.HalfNormal(scale, **off)),
        (dist.HalfCauchy(scale, **off), torch.distributions.HalfCauchy(scale, **off)),
    ):
        torch.testing.assert_close(ours.log_prob(x), theirs.log_prob(x), rtol=1e-14, atol=1e-14)
    logits = torch.tensor([-800.0, -40.0, -1.0, 0.0, 1.0, 40.0, 800.0], dtype=torch.float64)
    for value in (0.0, 1.0):
        y = torch.full_like(logits, value)
        expected = torch.distributions.Bernoulli(logits=logits).log_prob(y)
        ours = dist.Bernoulli(logits=logits, **off)
        torch.testing.assert_close(ours.log_prob(y), expected, rtol=1e-14, atol=1e-15)
        # under vmap (vectorized chains) log_prob takes another form: the same values
        batched = torch.func.vmap(lambda row: dist.Bernoulli(logits=row, **off).log_prob(y))(logits.expand(2, -1))
        torch.testing.assert_close(batched, expected.expand(2, -1), rtol=1e-14, atol=1e-15)
    # integer and bool observations count as their 0/1 values
    y = torch.tensor([1, 0, 1, 1, 0, 0, 1])
    expected = dist.Bernoulli(logits=logits, **off).log_prob(y.to(torch.float64))
    for value in (y, y.bool()):
        torch.testing.assert_close(dist.Bernoulli(logits=logits, **off).log_prob(value), expected, rtol=0, atol=0)
    # a number scale is kept as a number: the same values as torch's, expanded too
    for number in (1.7, 0.0, -1.0):  # (invalid scales: torch's NaNs, no Python arithmetic error)
        ours = dist.Normal(loc, number, **off).expand([7])
        theirs = torch.distributions.Normal(loc, number, **off).expand([7])
        torch.testing.assert_close(ours.log_prob(x), theirs.log_prob(x), rtol=1e-14, atol=1e-14, equal_nan=True)


def test_quick_constructors_equal_torch_s(device):
    """Normal from tensors of one shape (or a tensor and a number) and Bernoulli from a logits tensor skip torch's
    broadcast_all: the same shapes, parameters, log-densities, expansions and validation as torch's."""
    loc = torch.linspace(-1.0, 1.0, 3, dtype=torch.float64, device=device)
    scale = torch.linspace(0.5, 2.0, 3, dtype=torch.float64, device=device)
    value = torch.linspace(-2.0, 2.0, 6, dtype=torch.float64, device=device).reshape(2, 3)
    for args in ((loc, scale), (loc, 1.5), (loc[:1], scale), (0.0, scale)):
        ours, theirs = dist.Normal(*args), torch.distributions.Normal(*args)
        assert ours.batch_shape == theirs.batch_shape and ours.scale.dtype == theirs.scale.dtype
        torch.testing.assert_close(ours.log_prob(value), theirs.log_prob(value), rtol=1e-14, atol=1e-14)
        expanded = ours.expand((4, 3))
        assert type(expanded) is dist.Normal and expanded.batch_shape == (4, 3)
        torch.testing.assert_close(expanded.scale, theirs.expand((4, 3)).scale)
    logits = torch.tensor([-3.0, 0.0, 2.0], dtype=torch.float64, device=device)
    y = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64, device=device)
    ours, theirs = dist.Bernoulli(logits=logits), torch.distributions.Bernoulli(logits=logits)
    assert ours.batch_shape == theirs.batch_shape
    torch.testing.assert_close(ours.probs, theirs.probs)
    torch.testing.assert_close(ours.log_prob(y), theirs.log_prob(y), rtol=1e-14, atol=1e-15)
    expanded = ours.expand((2, 3))
    assert type(expanded) is dist.Bernoulli and expanded.batch_shape == (2, 3)
    torch.testing.assert_close(expanded.log_prob(y), theirs.expand((2, 3)).log_prob(y), rtol=1e-14, atol=1e-15)
    with pytest.raises(ValueError):
        dist.Normal(loc, -scale, validate_args=True)
