"""Discrete enumeration against Pyro, run in the test: config_enumerate, handlers.enum, markov, TraceEnum_ELBO,
infer_discrete, and NUTS with enumerated sites summed out of the potential (NumPyro's behaviour)."""

import math
import warnings

import pyro
import pyro.distributions as pdist
import pyro.infer
import pyro.poutine as poutine
import pytest
import torch

import ppl
import ppl.distributions as dist
from inference import diagnostics
from inference.discrete import infer_discrete
from inference.errors import InferenceError
from inference.mcmc import MCMC, NUTS
from inference.vi import TraceEnum_ELBO
from ppl import handlers

F64 = torch.float64


def _mixture_data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(n // 3, generator=g, dtype=F64) - 2.0, torch.randn(n - n // 3, generator=g, dtype=F64) + 1.5])


WEIGHTS = torch.tensor([0.35, 0.65], dtype=F64)
SCALE = torch.tensor(0.9, dtype=F64)


def gmm(data, locs, lib=ppl, d=dist):
    """A two-component Gaussian mixture, written once for both languages."""
    with lib.plate("data", len(data)):
        z = lib.sample("z", d.Categorical(WEIGHTS))
        lib.sample("obs", d.Normal(locs[z], SCALE), obs=data)


def gmm_guided(data, lib=ppl, d=dist):
    locs = lib.sample("locs", d.Normal(torch.zeros(2, dtype=F64), 5.0).to_event(1))
    gmm(data, locs, lib, d)


def _pyro_gmm_guided(data):
    gmm_guided(data, pyro, pdist)


def test_gaussian_mixture_marginal_likelihood_equals_pyro_and_closed_form():
    data = _mixture_data()
    locs = torch.tensor([-2.0, 1.5], dtype=F64)
    model = ppl.config_enumerate(gmm)
    ours = -TraceEnum_ELBO(max_plate_nesting=1).loss(model, lambda *a: None, data, locs)
    pyro_model = pyro.infer.config_enumerate(lambda data, locs: gmm(data, locs, pyro, pdist))
    theirs = -pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).loss(pyro_model, lambda *a: None, data, locs)
    components = torch.distributions.Normal(locs, SCALE).log_prob(data[:, None]) + WEIGHTS.log()
    exact = torch.logsumexp(components, -1).sum().item()
    assert ours == pytest.approx(theirs, abs=1e-8) and ours == pytest.approx(exact, abs=1e-8)
    # the same through the handlers directly, with max_plate_nesting found by the ELBO
    tr = handlers.trace(handlers.enum(model, first_available_dim=-2)).get_trace(data, locs)
    assert tr["z"]["value"].shape == (2, 1) and tr["z"]["infer"]["_enumerate_dim"] == -2
    assert ppl.log_joint(tr).item() == pytest.approx(exact, abs=1e-8)
    assert -TraceEnum_ELBO().loss(model, lambda *a: None, data, locs) == pytest.approx(exact, abs=1e-8)


def test_trace_enum_elbo_loss_and_gradients_equal_pyros_with_a_guide():
    data = _mixture_data()
    init = torch.tensor([-1.0, 0.5], dtype=F64)

    def guide(data, lib=ppl, d=dist):
        loc = lib.param("auto_locs", init.clone())
        lib.sample("locs", d.Delta(loc).to_event(1))

    ppl.clear_param_store()
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    loss = elbo.differentiable_loss(ppl.config_enumerate(gmm_guided), guide, data)
    loss.backward()
    grad = ppl.get_param_store().unconstrained("auto_locs").grad
    pyro.clear_param_store()
    pyro_loss = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(
        pyro.infer.config_enumerate(_pyro_gmm_guided), lambda data: guide(data, pyro, pdist), data
    )
    pyro_loss.backward()
    pyro_grad = pyro.param("auto_locs").unconstrained().grad
    assert loss.item() == pytest.approx(pyro_loss.item(), abs=1e-8)
    torch.testing.assert_close(grad, pyro_grad, atol=1e-8, rtol=0)
    # particles of a deterministic guide give the single-particle value
    vectorized = TraceEnum_ELBO(num_particles=3, max_plate_nesting=1, vectorize_particles=False)
    assert vectorized.loss(ppl.config_enumerate(gmm_guided), guide, data) == pytest.approx(loss.item(), abs=1e-8)


def test_infer_discrete_map_equals_pyros_and_samples_follow_the_posterior():
    data = _mixture_data()
    locs = torch.tensor([-1.0, 1.0], dtype=F64)  # overlapping components: uncertain assignments
    model = infer_discrete(ppl.config_enumerate(gmm), first_available_dim=-2, temperature=0)
    ours = handlers.trace(model).get_trace(data, locs)["z"]["value"]
    pyro_model = pyro.infer.infer_discrete(
        pyro.infer.config_enumerate(lambda data, locs: gmm(data, locs, pyro, pdist)), first_available_dim=-2,
        temperature=0,
    )
    theirs = poutine.trace(pyro_model).get_trace(data, locs).nodes["z"]["value"]
    assert ours.shape == (len(data),) and torch.equal(ours, theirs)
    # temperature 1: each assignment is drawn from p(z_i | x_i)
    sampler = infer_discrete(ppl.config_enumerate(gmm), temperature=1)
    num_draws = 400
    with handlers.seed(rng_seed=1):
        draws = torch.stack([handlers.trace(sampler).get_trace(data, locs)["z"]["value"] for _ in range(num_draws)])
    log_post = torch.distributions.Normal(locs, SCALE).log_prob(data[:, None]) + WEIGHTS.log()
    p1 = torch.softmax(log_post, -1)[:, 1]
    sd = (p1 * (1 - p1) / num_draws).sqrt().clamp_min(1e-3)
    assert ((draws.double().mean(0) - p1).abs() / sd).max() < 5


def change_point(counts, rates, lib=ppl, d=dist):
    """Coal-mining style: the rate switches from rates[0] to rates[1] at an unknown year tau."""
    years = len(counts)
    tau = lib.sample("tau", d.Categorical(logits=torch.zeros(years, dtype=F64)))
    rate = torch.where(torch.arange(years) < tau, rates[..., 0], rates[..., 1])
    with lib.plate("years", years):
        lib.sample("obs", d.Poisson(rate), obs=counts)


def test_change_point_marginal_likelihood_and_map_equal_pyros():
    g = torch.Generator().manual_seed(2)
    counts = torch.cat([torch.poisson(torch.full((12,), 3.0, dtype=F64), generator=g),
                        torch.poisson(torch.full((18,), 1.0, dtype=F64), generator=g)])
    rates = torch.tensor([3.0, 1.0], dtype=F64)
    ours = -TraceEnum_ELBO(max_plate_nesting=1).loss(ppl.config_enumerate(change_point), lambda *a: None, counts, rates)
    pyro_model = pyro.infer.config_enumerate(lambda c, r: change_point(c, r, pyro, pdist))
    theirs = -pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).loss(pyro_model, lambda *a: None, counts, rates)
    assert ours == pytest.approx(theirs, abs=1e-8)
    tau_map = handlers.trace(infer_discrete(ppl.config_enumerate(change_point), temperature=0)).get_trace(counts, rates)
    pyro_map = poutine.trace(pyro.infer.infer_discrete(pyro_model, first_available_dim=-2, temperature=0))
    assert int(tau_map["tau"]["value"]) == int(pyro_map.get_trace(counts, rates).nodes["tau"]["value"])

    # vectorized particles (a plate left of the data plate, enumeration left of that) with a point-mass guide
    def model(counts):
        change_point(counts, ppl.sample("rates", dist.Gamma(torch.ones(2, dtype=F64), 1.0).to_event(1)))

    def guide(counts):
        ppl.sample("rates", dist.Delta(rates).to_event(1))

    single = TraceEnum_ELBO(max_plate_nesting=1).loss(ppl.config_enumerate(model), guide, counts)
    vectorized = TraceEnum_ELBO(num_particles=4, max_plate_nesting=1).loss(ppl.config_enumerate(model), guide, counts)
    prior = torch.distributions.Gamma(torch.ones(2, dtype=F64), 1.0).log_prob(rates).sum().item()
    assert single == pytest.approx(-(theirs + prior), abs=1e-8)
    assert vectorized == pytest.approx(single, abs=1e-8)


TRANSITION = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.25, 0.65]], dtype=F64)
EMISSION_LOCS = torch.tensor([-1.0, 0.0, 1.5], dtype=F64)


def hmm(ys, lib=ppl, d=dist, markov=ppl.markov):
    """A 3-state HMM over 3 independent series (a plate), written with markov."""
    state = 0
    with lib.plate("series", ys.shape[1], dim=-1):
        for t in markov(range(ys.shape[0])):
            state = lib.sample(f"x_{t}", d.Categorical(TRANSITION[state]))
            lib.sample(f"y_{t}", d.Normal(EMISSION_LOCS[state], 0.6), obs=ys[t])


def _hmm_forward(ys):
    """log p(ys) by the forward algorithm, per series, summed."""
    alpha = TRANSITION[0].log()[None, :] + torch.distributions.Normal(EMISSION_LOCS, 0.6).log_prob(ys[0][:, None])
    for y in ys[1:]:
        alpha = torch.logsumexp(alpha[:, :, None] + TRANSITION.log(), 1)
        alpha = alpha + torch.distributions.Normal(EMISSION_LOCS, 0.6).log_prob(y[:, None])
    return torch.logsumexp(alpha, -1).sum().item()


def test_hmm_with_markov_marginal_likelihood_and_map_equal_pyros():
    g = torch.Generator().manual_seed(4)
    ys = torch.randn(40, 3, generator=g, dtype=F64)
    model = ppl.config_enumerate(hmm)
    tr = handlers.trace(handlers.enum(model, first_available_dim=-2)).get_trace(ys)
    assert {tr[f"x_{t}"]["infer"]["_enumerate_dim"] for t in range(40)} == {-2, -3}  # dims are recycled
    ours = ppl.log_joint(tr).item()
    pyro_model = pyro.infer.config_enumerate(lambda ys: hmm(ys, pyro, pdist, pyro.markov))
    theirs = -pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).loss(pyro_model, lambda ys: None, ys)
    assert ours == pytest.approx(theirs, abs=1e-8) and ours == pytest.approx(_hmm_forward(ys), abs=1e-8)
    ours_map = handlers.trace(infer_discrete(model, first_available_dim=-2, temperature=0)).get_trace(ys)
    pyro_map = poutine.trace(pyro.infer.infer_discrete(pyro_model, first_available_dim=-2, temperature=0))
    pyro_map = pyro_map.get_trace(ys)
    for t in range(40):
        assert torch.equal(ours_map[f"x_{t}"]["value"], pyro_map.nodes[f"x_{t}"]["value"])


def test_recursive_markov_decorator_recycles_dims():
    ys = torch.randn(12, dtype=F64)

    @ppl.markov
    def step(t, state):
        if t == len(ys):
            return
        state = ppl.sample(f"x_{t}", dist.Categorical(TRANSITION[state]))
        ppl.sample(f"y_{t}", dist.Normal(EMISSION_LOCS[state], 0.6), obs=ys[t])
        step(t + 1, state)

    tr = handlers.trace(handlers.enum(ppl.config_enumerate(lambda: step(0, 0)), first_available_dim=-1)).get_trace()
    assert {tr[f"x_{t}"]["infer"]["_enumerate_dim"] for t in range(12)} == {-1, -2}
    assert ppl.log_joint(tr).item() == pytest.approx(_hmm_forward(ys[:, None]), abs=1e-8)


def _hand_marginalized(data):
    locs = ppl.sample("locs", dist.Normal(torch.tensor([-2.0, 2.0], dtype=F64), 1.0).to_event(1))
    w = ppl.sample("w", dist.Dirichlet(torch.ones(2, dtype=F64)))
    with ppl.plate("data", len(data)):
        mixture = dist.MixtureSameFamily(dist.Categorical(w), dist.Normal(locs, 1.0))
        ppl.sample("obs", mixture, obs=data)


def _enumerated(data):
    locs = ppl.sample("locs", dist.Normal(torch.tensor([-2.0, 2.0], dtype=F64), 1.0).to_event(1))
    w = ppl.sample("w", dist.Dirichlet(torch.ones(2, dtype=F64)))
    with ppl.plate("data", len(data)):
        z = ppl.sample("z", dist.Categorical(w))
        ppl.sample("obs", dist.Normal(locs[..., z], 1.0), obs=data)


def test_nuts_sums_out_discrete_sites_like_a_hand_marginalized_model():
    data = _mixture_data(30, seed=5)
    enumerated, by_hand = ppl.Potential(_enumerated, (data,)), ppl.Potential(_hand_marginalized, (data,))
    assert enumerated.enumerated == ["z"] and enumerated.dim == by_hand.dim == 3
    z = torch.randn(5, 3, dtype=F64)
    torch.testing.assert_close(enumerated(z), by_hand(z), atol=1e-10, rtol=0)
    draws = {}
    for name, model in (("enumerated", _enumerated), ("by_hand", _hand_marginalized)):
        mcmc = MCMC(NUTS(model), num_warmup=150, num_samples=250, num_chains=2, seed=0, progress_bar=False)
        mcmc.run(data)
        draws[name] = mcmc.get_samples(group_by_chain=True)
        assert set(draws[name]) == {"locs", "w"}
    for site in ("locs", "w"):
        a, b = draws["enumerated"][site], draws["by_hand"][site]
        mcse = (diagnostics.mcse_mean(a) ** 2 + diagnostics.mcse_mean(b) ** 2).sqrt()
        difference = (a.reshape(-1, a.shape[-1]).mean(0) - b.reshape(-1, b.shape[-1]).mean(0)).abs()
        assert (difference < 5 * mcse).all(), (site, difference, mcse)


def test_errors_name_the_problem():
    data = _mixture_data()
    with pytest.raises(ValueError, match="first_available_dim"):
        handlers.enum(first_available_dim=0)
    with pytest.raises(ppl.ModelError, match="raise max_plate_nesting"):
        handlers.trace(handlers.enum(ppl.config_enumerate(gmm), first_available_dim=-1)).get_trace(data, WEIGHTS)

    def poisson_latent():
        ppl.sample("n", dist.Poisson(torch.tensor(3.0)))
        ppl.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ppl.ModelError, match="without a finite support"):
        ppl.Potential(poisson_latent)

    def bernoulli_guide(data):
        ppl.sample("locs", dist.Normal(torch.zeros(2, dtype=F64), 1.0).to_event(1))
        ppl.sample("extra", dist.Bernoulli(torch.tensor(0.5)), infer={"is_auxiliary": True})

    with pytest.raises(InferenceError, match="cannot be reparameterized"):
        TraceEnum_ELBO(max_plate_nesting=1).loss(ppl.config_enumerate(gmm_guided), bernoulli_guide, data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TraceEnum_ELBO(max_plate_nesting=1).loss(gmm_guided, lambda data: ppl.sample(
            "locs", dist.Normal(torch.zeros(2, dtype=F64), 1.0).to_event(1)), data)
    assert any("no site marked for enumeration" in str(w.message) for w in caught)

    def crossed():  # enumerated sites in plates that do not nest, sharing a factor
        a, b = ppl.plate("a", 2, dim=-1), ppl.plate("b", 3, dim=-2)
        with a:
            x = ppl.sample("x", dist.Bernoulli(torch.tensor(0.3, dtype=F64)))
        with b:
            y = ppl.sample("y", dist.Bernoulli(torch.tensor(0.6, dtype=F64)))
        with a, b:
            ppl.sample("obs", dist.Normal(x + y, 1.0), obs=torch.zeros(3, 2, dtype=F64))

    tr = handlers.trace(handlers.enum(ppl.config_enumerate(crossed), first_available_dim=-3)).get_trace()
    with pytest.raises(ppl.ModelError, match="not tractable|neither a plate"):
        ppl.log_joint(tr)
    assert math.isfinite(ppl.log_joint(handlers.trace(handlers.enum(
        ppl.config_enumerate(gmm), first_available_dim=-2)).get_trace(data, WEIGHTS)).item())


def test_svi_with_an_autoguide_over_the_continuous_sites_of_an_enumerated_model():
    from inference.autoguide import AutoDelta
    from inference.vi import SVI, Adam

    data = _mixture_data(30, seed=5)
    model = ppl.config_enumerate(gmm_guided)
    ppl.clear_param_store()
    guide = AutoDelta(model)  # the enumerated site is left to TraceEnum_ELBO
    svi = SVI(model, guide, Adam({"lr": 0.1}), TraceEnum_ELBO(max_plate_nesting=1))
    losses = svi.run(200, data, progress_bar=False).losses
    assert set(guide(data)) == {"locs"} and losses[-10:].mean() < losses[:10].mean()
    locs = guide.median(data)["locs"].sort().values
    assert (locs - torch.tensor([-2.0, 1.5], dtype=F64)).abs().max() < 0.8
    with pytest.raises(ppl.ModelError, match="'z' is discrete"):  # not marked: the autoguide cannot cover it
        AutoDelta(gmm_guided, name="unmarked")(data)
