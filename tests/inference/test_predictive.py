"""Predictive and log_likelihood: prior predictive moments, posterior predictive draws against a loop of
conditioned runs, draws through a fitted guide, pointwise log-likelihoods against scipy, ArviZ's WAIC from them
against a direct computation, and errors."""

import arviz as az
import numpy as np
import pytest
import scipy.stats
import torch

import ppl
import ppl.distributions as dist
from inference.autoguide import AutoNormal
from inference.predictive import Predictive, log_likelihood
from ppl.handlers import condition, seed, trace



def model(x, y=None):
    """y_i ~ N(a + b x_i, sigma): it broadcasts over a batch of draws (a, b and sigma then have shape (S, 1), left
    of the data plate's dim)."""
    a = ppl.sample("a", dist.Normal(x.new_tensor(1.0), 2.0))
    b = ppl.sample("b", dist.Normal(x.new_tensor(0.0), 1.0))
    sigma = ppl.sample("sigma", dist.HalfNormal(x.new_tensor(1.0)))
    mean = ppl.deterministic("mean", a + b * x)
    with ppl.plate("data", x.shape[-1]):
        ppl.sample("y", dist.Normal(mean, sigma), obs=y)


def _x(device):
    return torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64, device=device)


def _draws(device, num_samples=6):
    generator = torch.Generator().manual_seed(2)
    draws = {
        "a": torch.randn(num_samples, generator=generator, dtype=torch.float64),
        "b": torch.randn(num_samples, generator=generator, dtype=torch.float64),
        "sigma": torch.rand(num_samples, generator=generator, dtype=torch.float64) + 0.5,
    }
    return {name: value.to(device) for name, value in draws.items()}


def test_prior_predictive_moments(device):
    x = _x(device)
    draws = Predictive(model, num_samples=20000)(x)
    assert set(draws) == {"a", "b", "sigma", "mean", "y"}
    assert draws["y"].shape == (20000, 3) and draws["a"].shape == (20000,)
    # y_i = a + b x_i + sigma eps: mean 1, variance 4 + x_i^2 + E[sigma^2] (= 1 for HalfNormal(1))
    variance = 4 + x.cpu().numpy() ** 2 + 1
    y = draws["y"].cpu().numpy()
    standard_error = np.sqrt(variance / 20000)
    assert np.all(np.abs(y.mean(0) - 1.0) < 5 * standard_error)
    np.testing.assert_allclose(y.var(0), variance, rtol=0.08)
    only_y = Predictive(model, num_samples=5, return_sites=["y"], parallel=False)(x)
    assert set(only_y) == {"y"} and only_y["y"].shape == (5, 3)


@pytest.mark.parametrize("parallel", [True, False])
def test_posterior_predictive_equals_a_loop_of_conditioned_runs(parallel, device):
    x, draws = _x(device), _draws(device)
    predictive = Predictive(model, posterior_samples=draws, parallel=parallel)
    values = seed(predictive, rng_seed=0)(x)
    assert set(values) == {"mean", "y"} and values["y"].shape == (6, 3) and not values["y"].requires_grad
    for s in range(6):
        run = trace(condition(model, data={name: value[s] for name, value in draws.items()})).get_trace(x)
        torch.testing.assert_close(values["mean"][s], run["mean"]["value"])
        # each predicted y is a draw of that run's N(mean, sigma): standardized, it stays well inside 6
        assert ((values["y"][s] - run["mean"]["value"]) / draws["sigma"][s]).abs().max() < 6
    # many draws at one posterior point: the predictive spread is that point's sigma
    one = {name: value[:1].expand(4000) for name, value in draws.items()}
    spread = Predictive(model, posterior_samples=one, return_sites=["y"])(x)["y"].std(0)
    torch.testing.assert_close(spread, draws["sigma"][0].expand(3), rtol=0.06, atol=0)


def test_posterior_predictive_through_a_guide(device):
    x = _x(device)
    values = {"a": x.new_tensor(0.5), "b": x.new_tensor(2.0), "sigma": x.new_tensor(0.3)}
    guide = AutoNormal(model, init_loc_fn=ppl.init_to_value(values=values), init_scale=1e-6)
    guide(x, torch.zeros(3, dtype=torch.float64, device=device))  # set up with the data observed, as in training
    predictive = Predictive(model, guide=guide, num_samples=500, return_sites=["a", "mean", "y"])
    draws = predictive(x)
    assert draws["a"].shape == (500,) and draws["y"].shape == (500, 3)
    torch.testing.assert_close(draws["mean"], (0.5 + 2.0 * x).expand(500, 3), atol=1e-4, rtol=0)
    np.testing.assert_allclose(draws["y"].std(0).cpu().numpy(), 0.3, rtol=0.15)
    latent = guide.sample_posterior(7, x)
    assert set(latent) == {"a", "b", "sigma"} and latent["sigma"].shape == (7,)
    # with a guide and no return_sites, every site of the model, latent ones from the guide: Pyro's default
    everything = Predictive(model, guide=guide, num_samples=50)(x)
    assert set(everything) == {"a", "b", "sigma", "mean", "y"} and everything["b"].shape == (50,)
    torch.testing.assert_close(everything["b"], x.new_full((50,), 2.0), atol=1e-4, rtol=0)


@pytest.mark.filterwarnings("ignore:For one or more samples the posterior variance")  # ArviZ: random draws
def test_log_likelihood_matches_scipy_and_feeds_arviz(device):
    x, draws = _x(device), _draws(device, num_samples=40)
    y = torch.tensor([0.3, 1.1, 2.5], dtype=torch.float64, device=device)
    pointwise = log_likelihood(model, draws, x, y)
    assert set(pointwise) == {"y"} and pointwise["y"].shape == (40, 3)
    d = {name: value.cpu().numpy() for name, value in draws.items()}
    expected = scipy.stats.norm.logpdf(
        y.cpu().numpy(), d["a"][:, None] + d["b"][:, None] * x.cpu().numpy(), d["sigma"][:, None]
    )
    np.testing.assert_allclose(pointwise["y"].cpu().numpy(), expected, rtol=1e-12)
    # WAIC from ArviZ (one chain) against the formula: sum_i log mean_s p_si - var_s log p_si (ddof 0)
    idata = az.from_dict(
        posterior={name: value[None] for name, value in d.items()},
        log_likelihood={"y": pointwise["y"].cpu().numpy()[None]},
    )
    waic = az.waic(idata, pointwise=True)
    lppd = scipy.special.logsumexp(expected, axis=0) - np.log(40)
    elpd = lppd - expected.var(axis=0)
    assert waic.elpd_waic == pytest.approx(elpd.sum(), rel=1e-10)


def test_errors(device):
    x, draws = _x(device), _draws(device)
    with pytest.raises(ValueError, match="num_samples"):
        Predictive(model)
    with pytest.raises(ValueError, match="differs"):
        Predictive(model, posterior_samples=draws, num_samples=3)
    with pytest.raises(ValueError, match="common leading size"):
        Predictive(model, posterior_samples=dict(draws, a=draws["a"][:2]))
    with pytest.raises(ValueError, match="not both"):
        Predictive(model, posterior_samples=draws, guide=AutoNormal(model))
    with pytest.raises(ppl.ModelError, match="names no site"):
        log_likelihood(model, dict(draws, c=draws["a"]), x)
