"""``sample(..., obs_mask=...)``: missing data imputed with Pyro's and NumPyro's site layout and densities, and
sampled by NUTS against the closed-form posterior."""

import math

import pyro
import pyro.distributions as pdist
import pyro.poutine as poutine
import pytest
import torch

import ppl
import ppl.distributions as dist
from inference.mcmc import MCMC, NUTS
from ppl import handlers

F64 = torch.float64
Y = torch.tensor([0.8, float("nan"), 1.9, 0.2, float("nan"), 1.4, float("nan"), 1.1], dtype=F64)
MASK = ~torch.isnan(Y)
PRIOR_SD = 10.0


def model(y, mask, lib=ppl, d=dist):
    mu = lib.sample("mu", d.Normal(torch.tensor(0.0, dtype=F64), PRIOR_SD))
    with lib.plate("data", len(mask)):
        return lib.sample("y", d.Normal(mu, 1.0), obs=y, obs_mask=mask)


def test_sites_and_densities_match_pyros():
    pyro.set_rng_seed(0)
    filled = torch.nan_to_num(Y)  # Pyro validates obs before masking: no NaN placeholders there
    pyro_trace = poutine.trace(lambda: model(filled, MASK, pyro, pdist)).get_trace()
    pyro_trace.compute_log_prob()
    values = {name: pyro_trace.nodes[name]["value"] for name in ("mu", "y_unobserved")}
    ours = handlers.trace(handlers.substitute(model, data=values)).get_trace(Y, MASK)
    assert [n for n in ours if n != "data"] == ["mu", "y_unobserved", "y_observed", "y"]
    assert ours["y_unobserved"]["is_observed"] is False and ours["y"]["type"] == "deterministic"
    imputed = ours["y"]["value"]
    torch.testing.assert_close(imputed, pyro_trace.nodes["y"]["value"])
    assert torch.equal(imputed[MASK], Y[MASK]) and torch.equal(imputed[~MASK], values["y_unobserved"][~MASK])
    expected = sum(pyro_trace.nodes[n]["log_prob_sum"] for n in ("mu", "y_unobserved", "y_observed"))
    assert ours.log_prob_sum().item() == pytest.approx(expected.item(), abs=1e-10)
    # without a handler, the missing entries are drawn
    drawn = model(Y, MASK)
    assert torch.isfinite(drawn).all() and torch.equal(drawn[MASK], Y[MASK])
    with pytest.raises(ppl.ModelError, match="obs_mask needs obs"):
        handlers.trace(model).get_trace(None, MASK)


def test_nuts_imputes_missing_values_as_the_closed_form(assert_within_mc_error):
    observed = Y[MASK]
    precision = 1 / PRIOR_SD**2 + len(observed)
    mu_mean, mu_var = observed.sum().item() / precision, 1 / precision
    mcmc = MCMC(NUTS(model), num_warmup=300, num_samples=500, num_chains=2, seed=1, progress_bar=False)
    mcmc.run(Y, MASK)
    samples = mcmc.get_samples(group_by_chain=True)
    assert samples["y"].shape == (2, 500, len(Y))
    assert torch.equal(samples["y"][..., MASK], Y[MASK].expand(2, 500, -1))
    assert_within_mc_error(samples["mu"], mu_mean, math.sqrt(mu_var))
    # each missing value ~ N(mu, 1) given mu: marginally N(mu_mean, 1 + mu_var)
    missing = samples["y"][..., ~MASK]
    assert_within_mc_error(missing, [mu_mean] * 3, [math.sqrt(1 + mu_var)] * 3)
    # the observed entries of the imputed part are tethered (proper), so trees stay short
    assert mcmc.get_extra_fields()["tree_depth"].double().mean() < 5
