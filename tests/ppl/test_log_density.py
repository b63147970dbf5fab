"""Model -> log density and unconstrained potential: eight schools against a hand-written density, batching,
gradients, Pyro's potential, initialization, errors, and vectorized runs over posterior draws."""

import math

import pyro
import pyro.distributions as pdist
import pytest
import scipy.stats
import torch
import torch.distributions as td
from pyro.infer.mcmc.util import initialize_model

import ppl
from ppl import handlers
from ppl.primitives import _STACK
from ppl.reparam import LocScaleReparam

Y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
SIGMA = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]



def _data(device, dtype):
    return torch.tensor(SIGMA, device=device, dtype=dtype), torch.tensor(Y, device=device, dtype=dtype)


def centered(sigma, y=None):
    mu = ppl.sample("mu", td.Normal(sigma.new_tensor(0.0), 5.0))
    tau = ppl.sample("tau", td.HalfCauchy(sigma.new_tensor(5.0)))
    with ppl.plate("J", 8):
        theta = ppl.sample("theta", td.Normal(mu, tau))
        ppl.sample("obs", td.Normal(theta, sigma), obs=y)


def noncentered(sigma, y=None):
    mu = ppl.sample("mu", td.Normal(sigma.new_tensor(0.0), 5.0))
    tau = ppl.sample("tau", td.HalfCauchy(sigma.new_tensor(5.0)))
    with ppl.plate("J", 8):
        eta = ppl.sample("eta", td.Normal(sigma.new_tensor(0.0), 1.0))
        theta = ppl.deterministic("theta", mu + tau * eta)
        ppl.sample("obs", td.Normal(theta, sigma), obs=y)


MODELS = {
    "reparam": handlers.reparam(centered, config={"theta": LocScaleReparam(centered=0.0)}),
    "hand": noncentered,
}


def _normal_logpdf(x, loc, scale):
    return -0.5 * ((x - loc) / scale) ** 2 - torch.log(scale * math.sqrt(2 * math.pi))


def hand_potential(z, sigma, y):
    """-log p(y, mu, tau, eta) - log tau for z = (mu, log tau, eta_1..8), written out."""
    mu, log_tau, eta = z[..., 0], z[..., 1], z[..., 2:]
    tau = log_tau.exp()
    five = torch.as_tensor(5.0, dtype=z.dtype, device=z.device)
    log_half_cauchy = math.log(2 / math.pi) - torch.log(five) - torch.log1p((tau / five) ** 2)
    log_joint = (
        _normal_logpdf(mu, 0.0, five)
        + log_half_cauchy
        + log_tau
        + _normal_logpdf(eta, 0.0, torch.ones_like(five)).sum(-1)
        + _normal_logpdf(y, mu[..., None] + tau[..., None] * eta, sigma).sum(-1)
    )
    return -log_joint


def test_hand_potential_matches_scipy():
    z = torch.randn(10, dtype=torch.float64)
    sigma, y = _data("cpu", torch.float64)
    mu, tau, eta = z[0].item(), z[1].exp().item(), z[2:].numpy()
    log_joint = (
        scipy.stats.norm(0, 5).logpdf(mu)
        + scipy.stats.halfcauchy(scale=5).logpdf(tau)
        + math.log(tau)
        + scipy.stats.norm.logpdf(eta).sum()
        + scipy.stats.norm(mu + tau * eta, sigma.numpy()).logpdf(y.numpy()).sum()
    )
    assert hand_potential(z, sigma, y).item() == pytest.approx(-log_joint, rel=1e-12)


@pytest.mark.parametrize("variant", sorted(MODELS))
def test_eight_schools_potential_values_batches_and_gradients(variant, device, dtype):
    sigma, y = _data(device, dtype)
    potential = ppl.Potential(MODELS[variant], (sigma, y))
    assert potential.dim == 10
    names = list(potential.latent_sites)
    assert names[:2] == ["mu", "tau"] and potential.latent_sites[names[2]].shape == (8,)
    z = (2 * torch.randn(3, 10, device=device, dtype=dtype)).requires_grad_(True)
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-10)

    batched = potential(z)
    expected = hand_potential(z, sigma, y)
    assert batched.shape == (3,) and batched.dtype == dtype and batched.device.type == device.type
    torch.testing.assert_close(batched, expected, **tol)
    single = torch.stack([potential(row) for row in z])
    torch.testing.assert_close(single, batched, **tol)

    (grad,) = torch.autograd.grad(batched.sum(), z)
    (expected_grad,) = torch.autograd.grad(expected.sum(), z)
    torch.testing.assert_close(grad, expected_grad, **tol)
    (single_grad,) = torch.autograd.grad(potential(z[1]), z)
    torch.testing.assert_close(single_grad[1], expected_grad[1], **tol)


@pytest.mark.parametrize("variant", sorted(MODELS))
def test_constrain_and_unconstrain(variant, dtype):
    sigma, y = _data("cpu", dtype)
    potential = ppl.Potential(MODELS[variant], (sigma, y))
    eta_name = list(potential.latent_sites)[2]
    z = torch.randn(4, 10, dtype=dtype)
    values = potential.constrain(z)
    assert set(values) == {"mu", "tau", eta_name, "theta"}
    assert values["theta"].shape == (4, 8) and torch.allclose(values["tau"], z[:, 1].exp())
    torch.testing.assert_close(values["theta"], values["mu"][:, None] + values["tau"][:, None] * z[:, 2:])
    torch.testing.assert_close(potential.unconstrain(values), z)
    one = potential.constrain(z[0])
    assert one["theta"].shape == (8,)
    torch.testing.assert_close(potential.unconstrain(one), z[0])
    with pytest.raises(ppl.ModelError, match="'tau'"):
        potential.unconstrain({"mu": one["mu"], eta_name: one[eta_name]})
    with pytest.raises(ValueError, match="shape \\(10,\\)"):
        potential(torch.zeros(9))


def test_potential_matches_pyro_initialize_model():
    def model(lib, dist, sigma, y):
        mu = lib.sample("mu", dist.Normal(0.0, 5.0))
        tau = lib.sample("tau", dist.HalfCauchy(5.0))
        weights = lib.sample("w", dist.Dirichlet(torch.ones(3, dtype=torch.float64)))
        with lib.plate("J", 8):
            theta = lib.sample("theta", dist.Normal(mu, tau))
            lib.sample("obs", dist.Normal(theta + weights[0], sigma), obs=y)

    sigma, y = _data("cpu", torch.float64)
    ours = ppl.Potential(model, (ppl, td, sigma, y))
    _, pyro_potential, _, _ = initialize_model(model, model_args=(pyro, pdist, sigma, y))
    for _ in range(3):
        z = torch.randn(ours.dim, dtype=torch.float64)
        unconstrained = {
            name: z[site.start : site.stop].reshape(site.unconstrained_shape) for name, site in ours.latent_sites.items()
        }
        assert ours(z).item() == pytest.approx(pyro_potential(unconstrained).item(), rel=1e-10)


def test_support_depending_on_another_site():
    def model():
        a = ppl.sample("a", td.Gamma(torch.tensor(2.0, dtype=torch.float64), 1.0))
        ppl.sample("b", td.Uniform(0.0, a))

    potential = ppl.Potential(model)
    z = torch.tensor([0.3, -0.7], dtype=torch.float64)
    a = z[0].exp()
    log_joint = (
        scipy.stats.gamma(2.0).logpdf(a.item())
        + z[0].item()
        - math.log(a.item())
        + math.log(a.item()) + math.log(torch.sigmoid(z[1]).item()) + math.log(1 - torch.sigmoid(z[1]).item())
    )
    assert potential(z).item() == pytest.approx(-log_joint, rel=1e-12)
    assert potential.constrain(z)["b"].item() == pytest.approx((a * torch.sigmoid(z[1])).item())


def test_log_density_with_params():
    sigma, y = _data("cpu", torch.float64)
    params = {
        "mu": torch.tensor(1.0, dtype=torch.float64),
        "tau": torch.tensor(2.0, dtype=torch.float64),
        "eta": torch.linspace(-1, 1, 8, dtype=torch.float64),
    }
    log_joint, tr = ppl.log_density(noncentered, (sigma, y), {}, params)
    z = torch.cat([params["mu"][None], params["tau"].log()[None], params["eta"]])
    assert log_joint.item() == pytest.approx(-(hand_potential(z, sigma, y) + z[1]).item(), rel=1e-12)
    assert torch.allclose(tr["theta"]["value"], 1.0 + 2.0 * params["eta"])


def test_init_strategies():
    sigma, y = _data("cpu", torch.float64)
    potential = ppl.Potential(noncentered, (sigma, y))
    z = potential.initial_params(num_chains=5)
    assert z.shape == (5, 10) and z.dtype == torch.float64 and (z.abs() < 2).all() and not z.requires_grad
    narrow = ppl.Potential(noncentered, (sigma, y), init_strategy=ppl.init_to_uniform(radius=0.1))
    assert (narrow.initial_params().abs() < 0.1).all()
    values = {"mu": torch.tensor(3.0, dtype=torch.float64), "tau": torch.tensor(2.0, dtype=torch.float64)}
    fixed = ppl.Potential(noncentered, (sigma, y), init_strategy=ppl.init_to_value(values=values))
    z = fixed.initial_params()
    assert z[0].item() == 3.0 and z[1].item() == pytest.approx(math.log(2.0)) and (z[2:].abs() < 2).all()
    torch.manual_seed(0)
    median = ppl.Potential(noncentered, (sigma, y), init_strategy=ppl.init_to_median(num_samples=401)).initial_params()
    # medians of N(0, 5), HalfCauchy(5) and N(0, 1) are 0, 5 and 0; 401 draws put them within ~0.4, 1.2, 0.15
    assert abs(median[0].item()) < 1.0 and abs(median[1].exp().item() - 5.0) < 2.5 and (median[2:].abs() < 0.4).all()
    from_prior = ppl.Potential(noncentered, (sigma, y), init_strategy=ppl.init_to_sample)
    draws = torch.stack([from_prior.initial_params() for _ in range(3)])
    assert draws.shape == (3, 10) and not torch.equal(draws[0], draws[1])


def test_init_to_median_stays_in_non_elementwise_supports():
    """The elementwise median of Dirichlet draws is off the simplex: init_to_median then falls back to uniform."""

    def model():
        ppl.sample("w", td.Dirichlet(torch.ones(3, dtype=torch.float64)))

    for _ in range(5):
        w = handlers.trace(handlers.substitute(model, substitute_fn=ppl.init_to_median)).get_trace()["w"]["value"]
        assert torch.isclose(w.sum(), torch.tensor(1.0, dtype=torch.float64)) and (w > 0).all()
    assert ppl.Potential(model, init_strategy=ppl.init_to_median).initial_params().shape == (2,)


def test_init_retries_until_finite_and_names_failing_sites():
    def walled():
        x = ppl.sample("x", td.Normal(0.0, 1.0))
        ppl.factor("wall", torch.where(x > 0, torch.tensor(-math.inf), torch.tensor(0.0)))

    z = ppl.Potential(walled).initial_params(num_chains=8)
    assert (z < 0).all()

    def broken():
        x = ppl.sample("x", td.Normal(0.0, 1.0))
        ppl.factor("y", x * math.nan)

    with pytest.raises(ppl.ModelError, match="10 tries.*not finite at: 'y'"):
        ppl.Potential(broken).initial_params(max_tries=10)


def test_validation_at_setup_not_in_evaluations():
    def bad_data():
        rate = ppl.sample("rate", td.Gamma(2.0, 1.0))
        ppl.sample("count", td.Poisson(rate), obs=torch.tensor(-1.0))

    with pytest.raises(ppl.ModelError, match="site 'count'.*support"):
        ppl.Potential(bad_data)
    sigma, y = _data("cpu", torch.float64)
    potential = ppl.Potential(centered, (sigma, y))
    z = torch.zeros(2, 10, dtype=torch.float64)
    z[0, 1] = -1e4  # tau = theta's scale underflows to 0: a non-finite potential, not an exception
    values = potential(z)
    assert not torch.isfinite(values[0]) and torch.isfinite(values[1])
    assert not torch.isfinite(potential(z[0]))


def test_model_errors():
    def discrete():
        ppl.sample("k", td.Poisson(3.0))

    with pytest.raises(ppl.ModelError, match="'k' is discrete"):
        ppl.Potential(discrete)

    def duplicated():
        ppl.sample("x", td.Normal(0.0, 1.0))
        ppl.sample("x", td.Normal(0.0, 1.0))

    with pytest.raises(ppl.ModelError, match="two sites are named 'x'"):
        ppl.Potential(duplicated)

    calls = []

    def growing():
        calls.append(1)
        for i in range(len(calls)):
            ppl.sample(f"x{i}", td.Normal(0.0, 1.0))

    potential = ppl.Potential(growing)
    with pytest.raises(ppl.ModelError, match="'x1' did not appear"):
        potential(torch.zeros(1))
    assert not _STACK


def test_vectorized_runs_over_posterior_draws():
    sigma, y = _data("cpu", torch.float64)
    num_samples = 5
    samples = {
        "mu": torch.randn(num_samples, dtype=torch.float64),
        "tau": torch.rand(num_samples, dtype=torch.float64) + 0.5,
        "eta": torch.randn(num_samples, 8, dtype=torch.float64),
    }
    model_trace, shapes = ppl.vectorized_trace(noncentered, samples, (sigma, y))
    assert shapes["theta"] == (8,) and shapes["mu"] == ()
    pointwise = model_trace["obs"]["fn"].log_prob(model_trace["obs"]["value"])
    assert pointwise.shape == (num_samples, 8)
    for s in range(num_samples):
        _, tr = ppl.log_density(noncentered, (sigma, y), {}, {name: value[s] for name, value in samples.items()})
        torch.testing.assert_close(pointwise[s], tr["obs"]["fn"].log_prob(y))

    predictions = handlers.seed(ppl.vectorized_values, rng_seed=0)(noncentered, samples, (sigma,))
    assert set(predictions) == {"theta", "obs"} and predictions["obs"].shape == (num_samples, 8)
    theta = samples["mu"][:, None] + samples["tau"][:, None] * samples["eta"]
    torch.testing.assert_close(predictions["theta"], theta)
    # the predictions are draws of N(theta, sigma): standardized residuals of 40 draws stay within 5
    assert ((predictions["obs"] - theta) / sigma).abs().max() < 5
    with pytest.raises(ppl.ModelError, match="samples\\['eta'\\] has shape"):
        ppl.vectorized_trace(noncentered, dict(samples, eta=torch.zeros(num_samples, 3)), (sigma, y))


def test_vectorized_prior_draws_need_num_samples():
    """With no samples, num_samples sets the outer plate: one vectorized run draws from the prior."""
    sigma, _ = _data("cpu", torch.float64)
    draws = handlers.seed(ppl.vectorized_values, rng_seed=0)(noncentered, {}, (sigma,), num_samples=4000)
    assert draws["mu"].shape == (4000,) and draws["eta"].shape == (4000, 8) and draws["obs"].shape == (4000, 8)
    assert abs(float(draws["mu"].std()) - 5.0) < 0.3  # mu ~ N(0, 5): sd of 4000 draws within ~5 standard errors
    with pytest.raises(ppl.ModelError, match="give num_samples"):
        ppl.vectorized_trace(noncentered, {}, (sigma,))
    with pytest.raises(ppl.ModelError, match="common leading size"):
        ppl.vectorized_trace(noncentered, {"mu": torch.zeros(3, dtype=torch.float64)}, (sigma,), num_samples=4)


def test_improper_prior_initializes_in_its_support():
    """An ImproperUniform site has a shape but no sampler: every init strategy still places it in the support."""

    def model():
        scale = ppl.sample("scale", ppl.distributions.ImproperUniform(ppl.constraints.positive, (), (3,)))
        ppl.sample("y", ppl.distributions.Normal(0.0, scale).to_event(1), obs=torch.ones(3))

    for strategy in (ppl.init_to_uniform, ppl.init_to_median, ppl.init_to_sample):
        potential = ppl.Potential(model, init_strategy=strategy)
        z = potential.initial_params()
        assert z.shape == (3,) and (potential.constrain(z)["scale"] > 0).all()
        assert torch.isfinite(potential(z))
