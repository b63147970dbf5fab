"""Names Pyro and NumPyro users reach for: torch's distributions wrapped with Pyro's methods (log-densities
against scipy), MCMC's ``warmup_steps``/``print_summary``, and ``svi.run`` refusing a step count it cannot run."""

import numpy as np
import pytest
import scipy.stats
import torch

import ppl
import ppl.distributions as dist
from inference.autoguide import AutoNormal
from inference.mcmc import MCMC, NUTS
from inference.vi import SVI, Adam, Trace_ELBO

F64 = torch.float64


def _wishart_value():
    a = torch.tensor([[1.0, 0.3, 0.0], [0.3, 2.0, 0.5], [0.0, 0.5, 1.5]], dtype=F64)
    return a @ a.T + torch.eye(3, dtype=F64)


CASES = [
    (lambda: dist.Chi2(torch.tensor(3.5, dtype=F64)), torch.tensor([0.3, 2.0, 7.1], dtype=F64),
     lambda v: scipy.stats.chi2(3.5).logpdf(v)),
    (lambda: dist.Gumbel(torch.tensor(0.5, dtype=F64), 2.0), torch.tensor([-1.0, 0.5, 4.0], dtype=F64),
     lambda v: scipy.stats.gumbel_r(0.5, 2.0).logpdf(v)),
    (lambda: dist.Pareto(torch.tensor(1.5, dtype=F64), 3.0), torch.tensor([1.6, 2.0, 9.0], dtype=F64),
     lambda v: scipy.stats.pareto(3.0, scale=1.5).logpdf(v)),
    (lambda: dist.Geometric(torch.tensor(0.3, dtype=F64)), torch.tensor([0.0, 1.0, 6.0], dtype=F64),
     lambda v: scipy.stats.geom(0.3).logpmf(v + 1)),  # torch counts failures, scipy trials
    (lambda: dist.TransformedDistribution(dist.Normal(torch.tensor(0.2, dtype=F64), 0.7),
                                          torch.distributions.ExpTransform()),
     torch.tensor([0.5, 1.0, 3.0], dtype=F64), lambda v: scipy.stats.lognorm(0.7, scale=np.exp(0.2)).logpdf(v)),
]


@pytest.mark.parametrize("make, value, reference", CASES, ids=["Chi2", "Gumbel", "Pareto", "Geometric", "Transformed"])
def test_wrapped_distributions_log_prob_against_scipy(make, value, reference):
    d = make()
    np.testing.assert_allclose(d.log_prob(value).numpy(), reference(value.numpy()), rtol=1e-10, atol=1e-12)
    batched = d.expand([3]).to_event(1)  # Pyro's methods, and expand keeps the wrapper
    assert batched.log_prob(value).item() == pytest.approx(float(reference(value.numpy()).sum()), rel=1e-10)
    assert d.mask(torch.tensor([True, False, True])).log_prob(value)[1].item() == 0.0


def test_wishart_log_prob_against_scipy():
    scale = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 1.5]], dtype=F64)
    value = _wishart_value()
    ours = dist.Wishart(torch.tensor(5.0, dtype=F64), covariance_matrix=scale).log_prob(value).item()
    assert ours == pytest.approx(scipy.stats.wishart(5.0, scale.numpy()).logpdf(value.numpy()), rel=1e-10)


def _normal_model(y):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 10.0))
    with ppl.plate("data", len(y)):
        ppl.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_mcmc_accepts_pyros_warmup_steps_and_numpyros_print_summary(capsys):
    y = torch.tensor([0.3, -0.2, 0.9], dtype=F64)
    mcmc = MCMC(NUTS(_normal_model), num_samples=20, warmup_steps=10, progress_bar=False, seed=0)
    assert mcmc.num_warmup == 10
    assert MCMC(NUTS(_normal_model), num_samples=20).num_warmup == 20  # Pyro's default: as many as samples
    mcmc.run(y)
    mcmc.print_summary()
    assert "mu" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not both"):
        MCMC(NUTS(_normal_model), 10, 20, warmup_steps=10)
    with pytest.raises(ValueError, match="num_samples is required"):
        MCMC(NUTS(_normal_model), warmup_steps=10)


def test_svi_run_refuses_a_step_count_it_would_silently_skip():
    y = torch.tensor([0.3, -0.2, 0.9], dtype=F64)
    ppl.clear_param_store()
    svi = SVI(_normal_model, AutoNormal(_normal_model), Adam({"lr": 0.01}), Trace_ELBO())
    with pytest.raises(ValueError, match="random key first"):
        svi.run(0, 100, y)  # NumPyro's svi.run(rng_key, num_steps, ...)
