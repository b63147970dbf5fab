"""Autoguides: exact posteriors of conjugate Gaussian models (full-covariance guides recover them; mean-field
guides recover the known mean-field solution), the Laplace approximation against closed forms and an autograd
Hessian of a hand-written density, a normalizing flow against AutoNormal on a banana, posterior summaries
against scipy, MAP, init strategies, guides for subsets of sites, and errors."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

import ppl
import ppl.distributions as dist
from inference.autoguide import (
    AutoDelta,
    AutoDiagonalNormal,
    AutoGuideList,
    AutoIAFNormal,
    AutoLaplaceApproximation,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from inference.errors import InferenceError
from inference.vi import SVI, Adam, ClippedAdam, Trace_ELBO, TraceMeanField_ELBO
from ppl.handlers import block



NOISE, PRIOR_SCALE = 0.5, 1.0


def _regression(device, dtype=torch.float64):
    generator = np.random.default_rng(0)
    x = generator.normal(size=(20, 3))
    y = x @ np.array([0.5, -1.0, 2.0]) + NOISE * generator.normal(size=20)
    precision = np.eye(3) / PRIOR_SCALE**2 + x.T @ x / NOISE**2
    covariance = np.linalg.inv(precision)
    mean = covariance @ x.T @ y / NOISE**2
    as_tensor = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
    return as_tensor(x), as_tensor(y), mean, covariance


def regression_model(x, y):
    beta = ppl.sample("beta", dist.Normal(x.new_zeros(3), PRIOR_SCALE).to_event(1))
    with ppl.plate("data", x.shape[0]):
        ppl.sample("y", dist.Normal((x * beta).sum(-1), NOISE), obs=y)


SIGMA_J = np.array([1.0, 2.0, 0.5, 1.5])
Y_J = np.array([2.0, -1.0, 0.5, 3.0])
MU_SCALE, TAU = 5.0, 2.0


def hierarchical_model(sigma, y):
    mu = ppl.sample("mu", dist.Normal(sigma.new_tensor(0.0), MU_SCALE))
    with ppl.plate("groups", 4):
        theta = ppl.sample("theta", dist.Normal(mu, TAU))
        ppl.sample("y", dist.Normal(theta, sigma), obs=y)


def _hierarchical_posterior():
    """The joint Gaussian posterior of (mu, theta_1..4) in closed form."""
    precision = np.zeros((5, 5))
    precision[0, 0] = 1 / MU_SCALE**2 + 4 / TAU**2
    precision[0, 1:] = precision[1:, 0] = -1 / TAU**2
    precision[1:, 1:] = np.diag(1 / TAU**2 + 1 / SIGMA_J**2)
    covariance = np.linalg.inv(precision)
    mean = covariance @ np.concatenate([[0.0], Y_J / SIGMA_J**2])
    return mean, covariance


def _fit(model, guide, args, steps, particles=64, lr=0.1, loss=Trace_ELBO):
    """SVI with a learning rate decaying a thousandfold over the run, so that the last iterates average out the
    gradient noise."""
    optim = ClippedAdam({"lr": lr, "lrd": (1e-3) ** (1 / steps)})
    SVI(model, guide, optim, loss(num_particles=particles)).run(steps, *args, progress_bar=False)


def _joint_moments(guide, args):
    """Mean and covariance of the guide's flat latent vector (mu first), from its parameters."""
    store = ppl.get_param_store()
    loc = store[f"{guide.name}.loc"].detach().cpu().numpy()
    covariance = guide.get_posterior(*args).covariance_matrix.detach().cpu().numpy()
    return loc, covariance


@pytest.mark.parametrize("guide_class", [AutoMultivariateNormal, AutoLowRankMultivariateNormal])
@pytest.mark.parametrize("problem", ["regression", "hierarchical"])
def test_full_covariance_guides_recover_exact_gaussian_posteriors(guide_class, problem, device):
    if problem == "regression":
        x, y, mean, covariance = _regression(device)
        model, args = regression_model, (x, y)
    else:
        mean, covariance = _hierarchical_posterior()
        model = hierarchical_model
        args = tuple(torch.as_tensor(a, dtype=torch.float64, device=device) for a in (SIGMA_J, Y_J))
    options = {"rank": len(mean)} if guide_class is AutoLowRankMultivariateNormal else {}
    torch.manual_seed(0)
    guide = guide_class(model, **options)
    _fit(model, guide, args, steps=1000)
    loc, fitted = _joint_moments(guide, args)
    # within 2% (norms of the errors relative to norms of the exact mean and covariance), and every coordinate
    # of the mean within 5% of its posterior standard deviation
    assert np.linalg.norm(loc - mean) < 0.02 * np.linalg.norm(mean), (loc, mean)
    assert np.all(np.abs(loc - mean) < 0.05 * np.sqrt(np.diag(covariance))), (loc, mean)
    assert np.linalg.norm(fitted - covariance) < 0.02 * np.linalg.norm(covariance), (fitted, covariance)


@pytest.mark.parametrize("guide_class", [AutoNormal, AutoDiagonalNormal])
def test_mean_field_guides_find_the_mean_field_solution(guide_class, device):
    """For a Gaussian posterior N(m, inv(L)) the optimal mean-field Gaussian has mean m and variances 1/L_ii."""
    x, y, mean, covariance = _regression(device)
    torch.manual_seed(0)
    guide = guide_class(regression_model)
    _fit(regression_model, guide, (x, y), steps=800, loss=TraceMeanField_ELBO)  # 64 particles: less noise
    quantiles = guide.quantiles([0.5, scipy.stats.norm.cdf(1.0)], x, y)["beta"].cpu().numpy()
    sd = 1 / np.sqrt(np.diag(np.linalg.inv(covariance)))
    assert np.linalg.norm(quantiles[0] - mean) < 0.02 * np.linalg.norm(mean)
    np.testing.assert_allclose(quantiles[0], mean, atol=0.05 * sd.min())
    np.testing.assert_allclose(quantiles[1] - quantiles[0], sd, rtol=0.03)


def test_multivariate_normal_is_stable_at_a_large_learning_rate():
    """Pyro's factor diag(scale) @ unit triangle: Adam at lr 0.05 on 200 latents stays finite and the loss falls
    (a raw Cholesky parameter diverged to a loss of -1e47 within 3 steps, then NaN)."""
    torch.manual_seed(0)
    n, sigma = 200, 0.5
    y = torch.randn(n, dtype=torch.float64) * (1 + sigma**2) ** 0.5

    def model(y):
        with ppl.plate("units", n):
            theta = ppl.sample("theta", dist.Normal(torch.zeros(n, dtype=torch.float64), 1.0))
            ppl.sample("y", dist.Normal(theta, sigma), obs=y)

    guide = AutoMultivariateNormal(model)
    store = ppl.get_param_store()
    _, losses = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO()).run(600, y, progress_bar=False)
    assert torch.isfinite(losses).all()
    # -ELBO >= -log p(y) (exact: y_i ~ N(0, 1 + sigma^2) independently), and it falls from the start
    evidence = -torch.distributions.Normal(0.0, (1 + sigma**2) ** 0.5).log_prob(y).sum()
    assert evidence - 10 < losses[-100:].mean() < losses[:10].mean() - 100
    assert set(store.keys()) >= {f"{guide.name}.loc", f"{guide.name}.scale", f"{guide.name}.scale_tril"}


def test_laplace_approximation_of_a_gaussian_posterior_is_exact(device):
    x, y, mean, covariance = _regression(device)
    guide = AutoLaplaceApproximation(regression_model)
    _fit(regression_model, guide, (x, y), steps=1500, particles=1, lr=0.1)
    laplace = guide.laplace_approximation(x, y)
    loc, fitted = _joint_moments(laplace, (x, y))
    np.testing.assert_allclose(loc, mean, atol=1e-4)
    np.testing.assert_allclose(fitted, covariance, rtol=1e-8, atol=1e-12)


def test_laplace_approximation_of_a_gamma_poisson_posterior(device):
    """rate ~ Gamma(a, b), counts ~ Poisson(rate): in u = log rate the posterior density is
    Gamma(a + sum, b + n) times the Jacobian rate, whose mode is log((a + sum) / (b + n)) with Hessian a + sum."""
    a, b = 2.0, 1.0
    counts = torch.tensor([3.0, 5.0, 4.0, 6.0], dtype=torch.float64, device=device)

    def model(counts):
        rate = ppl.sample("rate", dist.Gamma(counts.new_tensor(a), counts.new_tensor(b)))
        with ppl.plate("data", 4):
            ppl.sample("counts", dist.Poisson(rate), obs=counts)

    guide = AutoLaplaceApproximation(model)
    _fit(model, guide, (counts,), steps=1500, particles=1, lr=0.1)
    alpha, beta = a + float(counts.sum()), b + 4
    loc = ppl.get_param_store()["AutoLaplaceApproximation.loc"].detach()
    assert float(loc) == pytest.approx(math.log(alpha / beta), abs=1e-5)
    assert float(guide.median(counts)["rate"]) == pytest.approx(alpha / beta, rel=1e-5)

    def hand_log_density(u):  # log Gamma(e^u; a, b) + sum log Poisson(counts; e^u) + u
        rate = u.exp()
        log_prior = a * math.log(b) - math.lgamma(a) + (a - 1) * u - b * rate
        log_lik = (counts * u - rate - torch.lgamma(counts + 1)).sum()
        return log_prior + log_lik + u

    expected = -torch.autograd.functional.hessian(hand_log_density, loc)
    laplace = guide.laplace_approximation(counts)
    store = ppl.get_param_store()
    scale_tril = (store[f"{laplace.name}.scale"][..., None] * store[f"{laplace.name}.scale_tril"]).detach()
    precision = torch.linalg.inv(scale_tril @ scale_tril.T)
    torch.testing.assert_close(precision.reshape(()), expected.reshape(()), rtol=1e-8, atol=0)
    assert float(precision) == pytest.approx(alpha, rel=1e-4)
    quantiles = laplace.quantiles([0.05, 0.95], counts)["rate"].cpu().numpy()
    expected_quantiles = np.exp(scipy.stats.norm.ppf([0.05, 0.95], float(loc), alpha**-0.5))
    np.testing.assert_allclose(quantiles, expected_quantiles, rtol=1e-6)


def banana(_=None):
    x = ppl.sample("x", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
    ppl.sample("y", dist.Normal(x**2 - 1, 0.3))


def test_flow_guide_fits_a_banana_better_than_autonormal():
    torch.manual_seed(0)
    elbos = {}
    for guide in (AutoNormal(banana), AutoIAFNormal(banana, hidden_dim=[24], num_transforms=2)):
        SVI(banana, guide, Adam({"lr": 0.01}), Trace_ELBO(num_particles=16)).run(1200, progress_bar=False)
        elbos[type(guide).__name__] = -np.mean([Trace_ELBO(num_particles=4000).loss(banana, guide) for _ in range(3)])
    # the target is normalized (log Z = 0): ELBO = -KL(q || p)
    assert elbos["AutoIAFNormal"] > elbos["AutoNormal"] + 0.1, elbos
    assert -0.3 < elbos["AutoIAFNormal"] < 0.01, elbos


def test_summaries_against_scipy(device, dtype):
    def model():
        ppl.sample("scale", dist.LogNormal(torch.tensor(0.0, dtype=dtype, device=device), 1.0))
        ppl.sample("loc", dist.Normal(torch.zeros(2, dtype=dtype, device=device), 1.0).to_event(1))

    values = {
        "scale": torch.tensor(2.0, dtype=dtype, device=device),
        "loc": torch.tensor([0.5, -0.5], dtype=dtype, device=device),
    }
    quantile_levels = [0.1, 0.5, 0.9]
    guide = AutoNormal(model, init_loc_fn=ppl.init_to_value(values=values), init_scale=0.4)
    median = guide.median()
    assert median["scale"].dtype == dtype and median["scale"].device.type == device.type
    assert float(median["scale"]) == pytest.approx(2.0, rel=1e-6)
    quantiles = guide.quantiles(quantile_levels)
    expected = scipy.stats.lognorm.ppf(quantile_levels, s=0.4, scale=2.0)
    np.testing.assert_allclose(quantiles["scale"].cpu().numpy(), expected, rtol=1e-5)
    expected_loc = scipy.stats.norm.ppf(quantile_levels, [[0.5], [-0.5]], 0.4).T
    np.testing.assert_allclose(quantiles["loc"].cpu().numpy(), expected_loc, rtol=1e-5, atol=1e-6)
    draws = guide.sample_posterior(4000)
    assert draws["loc"].shape == (4000, 2) and draws["scale"].shape == (4000,)
    log_scale = draws["scale"].log()
    assert abs(float(log_scale.mean()) - math.log(2.0)) < 5 * 0.4 / 4000**0.5
    assert abs(float(log_scale.std()) - 0.4) < 0.03

    mvn = AutoMultivariateNormal(model, init_loc_fn=ppl.init_to_value(values=values), init_scale=0.4)
    np.testing.assert_allclose(mvn.quantiles(quantile_levels)["scale"].cpu().numpy(), expected, rtol=1e-5)
    flow = AutoIAFNormal(model, init_loc_fn=ppl.init_to_value(values=values), init_scale=0.4)
    # an untrained flow is the diagonal normal: its Monte Carlo summaries match the closed forms
    np.testing.assert_allclose(flow.quantiles(quantile_levels)["scale"].cpu().numpy(), expected, rtol=0.05)
    assert float(flow.median()["scale"]) == pytest.approx(2.0, rel=0.05)


def test_map_and_init_strategies(device):
    counts = torch.tensor([3.0, 5.0, 4.0, 6.0], dtype=torch.float64, device=device)

    def model(counts):
        rate = ppl.sample("rate", dist.Gamma(counts.new_tensor(2.0), counts.new_tensor(1.0)))
        with ppl.plate("data", 4):
            ppl.sample("counts", dist.Poisson(rate), obs=counts)

    start = {"rate": counts.new_tensor(1.5)}
    guide = AutoDelta(model, init_loc_fn=ppl.init_to_value(values=start))
    guide(counts)
    assert float(guide.median(counts)["rate"]) == pytest.approx(1.5)
    SVI(model, guide, ClippedAdam({"lr": 0.1, "lrd": 0.997}), Trace_ELBO()).run(1500, counts, progress_bar=False)
    # the MAP of Gamma(2 + 18, 1 + 4) in the constrained space: (alpha - 1) / beta
    assert float(guide.median(counts)["rate"]) == pytest.approx(19 / 5, rel=1e-4)
    assert guide.quantiles([0.1, 0.9], counts)["rate"].shape == (2,)
    torch.manual_seed(0)
    median_init = AutoNormal(model, init_loc_fn=ppl.init_to_median(num_samples=1001))
    assert float(median_init.median(counts)["rate"]) == pytest.approx(scipy.stats.gamma.median(2.0), rel=0.1)


def test_guides_for_subsets_of_sites(device):
    """a and b have independent posteriors N(1, 1/2) and N(-1/2, 1/2): an AutoNormal for a (from the blocked
    model) and a hand-written guide for b, combined in an AutoGuideList, fit both."""
    data = torch.tensor([2.0, -1.0], dtype=torch.float64, device=device)

    def model(data):
        a = ppl.sample("a", dist.Normal(data.new_tensor(0.0), 1.0))
        b = ppl.sample("b", dist.Normal(data.new_tensor(0.0), 1.0))
        ppl.sample("obs_a", dist.Normal(a, 1.0), obs=data[0])
        ppl.sample("obs_b", dist.Normal(b, 1.0), obs=data[1])

    def guide_b(data):
        loc = ppl.param("b_loc", data.new_tensor(0.0))
        scale = ppl.param("b_scale", data.new_tensor(1.0), constraint=ppl.constraints.positive)
        ppl.sample("b", dist.Normal(loc, scale))

    guide = AutoGuideList(model)
    guide.append(AutoNormal(block(model, expose=["a"])))
    guide.append(guide_b)
    torch.manual_seed(0)
    _fit(model, guide, (data,), steps=800, particles=16, loss=TraceMeanField_ELBO)
    store = ppl.get_param_store()
    assert set(guide.median(data)) == {"a"}
    assert float(guide.median(data)["a"]) == pytest.approx(1.0, abs=0.02)
    assert float(store["AutoNormal.scales.a"].detach()) == pytest.approx(0.5**0.5, rel=0.03)
    assert float(store["b_loc"].detach()) == pytest.approx(-0.5, abs=0.02)
    assert float(store["b_scale"].detach()) == pytest.approx(0.5**0.5, rel=0.03)
    assert guide.sample_posterior(10, data)["a"].shape == (10,)
    assert set(guide(data)) == {"a"}


def test_errors(device):
    data = torch.zeros(6, dtype=torch.float64, device=device)

    def local_model(data):
        with ppl.plate("data", 6, subsample_size=2):
            ppl.sample("z", dist.Normal(data.new_tensor(0.0), 1.0))

    with pytest.raises(InferenceError, match="subsampled plate 'data'"):
        AutoDiagonalNormal(local_model)(data)
    guide = AutoNormal(local_model)
    assert guide(data)["z"].shape == (2,) and ppl.get_param_store()["AutoNormal.locs.z"].shape == (6,)

    def discrete_model():
        ppl.sample("k", dist.Bernoulli(torch.tensor(0.5)))

    with pytest.raises(ppl.ModelError, match="'k' is discrete"):
        AutoNormal(discrete_model)()
    with pytest.raises(InferenceError, match="no continuous latent site"):
        AutoMultivariateNormal(lambda: None)()
    with pytest.raises(ValueError, match="init_scale"):
        AutoNormal(discrete_model, init_scale=0.0)

    def saddle():  # log density -x0^2/2 - x1^2/2 + 2 x0^2: at 0 the Hessian of the potential is indefinite
        x = ppl.sample("x", dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1))
        ppl.factor("ridge", 2.0 * x[..., 0] ** 2)

    at_zero = ppl.init_to_value(values={"x": torch.zeros(2, dtype=torch.float64)})
    with pytest.raises(InferenceError, match="not positive definite"):
        AutoLaplaceApproximation(saddle, init_loc_fn=at_zero).laplace_approximation()


def test_guide_list_of_blocked_models_with_plates(device):
    """Issue 16: autoguides of blocked models whose exposed sites sit in a plate (the plate's own site is hidden by
    the block) raised KeyError. MAP for mu (AutoDelta) and AutoNormal for the local z_i find the known optimum:
    q(z_i) is the exact conditional p(z_i | mu, y_i), and mu maximizes the marginal p(mu, y)."""
    x = torch.tensor([0.5, -1.0, 1.5, 2.0, -0.3], dtype=torch.float64, device=device)
    y = torch.tensor([1.0, 0.2, 2.5, 1.7, -0.4], dtype=torch.float64, device=device)

    def model(x, y):
        mu = ppl.sample("mu", dist.Normal(x.new_tensor(0.0), 1.0))
        with ppl.plate("data", len(x)):
            z = ppl.sample("z", dist.Normal(mu, 1.0))
            ppl.sample("y", dist.Normal(z * x, 0.5), obs=y)

    guide = AutoGuideList(model)
    guide.append(AutoDelta(block(model, expose=["mu"])))
    guide.append(AutoNormal(block(model, expose=["z"])))
    torch.manual_seed(0)
    _fit(model, guide, (x, y), steps=800, particles=32, lr=0.05)
    xn, yn = x.cpu().numpy(), y.cpu().numpy()
    precision = 1 + xn**2 / 0.25  # of z_i given mu and y_i
    mu = np.sum(xn * yn / 0.25 / precision) / (len(xn) + 1 - np.sum(1 / precision))
    loc = (mu + xn * yn / 0.25) / precision
    store = ppl.get_param_store()
    assert float(store["AutoDelta.mu"].detach()) == pytest.approx(mu, abs=0.02)
    np.testing.assert_allclose(store["AutoNormal.locs.z"].detach().cpu().numpy(), loc, atol=0.02)
    np.testing.assert_allclose(store["AutoNormal.scales.z"].detach().cpu().numpy(), precision**-0.5, rtol=0.03)
    assert guide(x, y)["z"].shape == (5,)
