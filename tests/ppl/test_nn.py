"""Bayesian nn.Modules (``ppl.nn.PyroModule``/``PyroSample``): sites and densities as Pyro's, NUTS and SVI on a
tiny Bayesian neural network, and Predictive from its posterior."""

import pyro
import pyro.distributions as pdist
import pyro.nn
import pyro.poutine as poutine
import pytest
import torch
from torch import nn

import ppl
import ppl.distributions as dist
from inference.autoguide import AutoNormal
from inference.mcmc import MCMC, NUTS
from inference.predictive import Predictive
from inference.vi import SVI, Adam, Trace_ELBO
from ppl import handlers
from ppl.nn import PyroModule, PyroSample

F64 = torch.float64


def make_bnn(Module, Sample, d, hidden=4):
    """The same two-layer BNN in either language (the output bias stays a plain parameter)."""

    class BNN(Module):
        def __init__(self):
            super().__init__()
            self.fc1 = Module[nn.Linear](2, hidden)
            self.fc1.weight = Sample(d.Normal(torch.tensor(0.0, dtype=F64), 1.0).expand([hidden, 2]).to_event(2))
            self.fc1.bias = Sample(lambda m: d.Normal(torch.zeros(hidden, dtype=F64), 1.0).to_event(1))
            self.out = Module[nn.Linear](hidden, 1)
            self.out.weight = Sample(d.Normal(torch.tensor(0.0, dtype=F64), 1.0).expand([1, hidden]).to_event(2))

        def forward(self, x, y=None):
            mean = self.out(torch.tanh(self.fc1(x))).squeeze(-1)
            assert self.fc1.weight is self.fc1.weight  # one draw per call
            with (ppl if Module is PyroModule else pyro).plate("data", x.shape[0]):
                return (ppl if Module is PyroModule else pyro).sample("y", d.Normal(mean, 0.3), obs=y)

    return BNN().double()


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 2, generator=g, dtype=F64)
    return x, torch.tanh(x[:, 0] - 0.5 * x[:, 1]) + 0.1 * torch.randn(20, generator=g, dtype=F64)


def test_sites_and_log_density_match_pyro_module():
    x, y = _data()
    ours = make_bnn(PyroModule, PyroSample, dist)
    theirs = make_bnn(pyro.nn.PyroModule, pyro.nn.PyroSample, pdist)
    theirs.out.bias.data.copy_(ours.out.bias.data)
    pyro.set_rng_seed(0)
    pyro_trace = poutine.trace(theirs).get_trace(x, y)
    names = [n for n, s in pyro_trace.nodes.items() if s["type"] == "sample" and n != "data"]
    values = {n: pyro_trace.nodes[n]["value"] for n in names if not pyro_trace.nodes[n]["is_observed"]}
    assert sorted(values) == ["fc1.bias", "fc1.weight", "out.weight"]
    ppl.clear_param_store()
    tr = handlers.trace(handlers.substitute(ours, data=values)).get_trace(x, y)
    assert [n for n, s in tr.items() if s["type"] == "sample"] == names
    assert [n for n, s in tr.items() if s["type"] == "param"] == ["out.bias"]
    assert tr.log_prob_sum().item() == pytest.approx(pyro_trace.log_prob_sum().item(), abs=1e-9)
    # outside a model call each read draws afresh; PyroSample can be removed again
    assert not torch.equal(ours.fc1.weight, ours.fc1.weight)
    del ours.fc1.bias
    assert "bias" not in ours.fc1._pyro_samples


def test_nuts_and_predictive_on_a_tiny_bnn():
    x, y = _data()
    ppl.clear_param_store()
    bnn = make_bnn(PyroModule, PyroSample, dist, hidden=2)
    mcmc = MCMC(NUTS(bnn, jit_compile=False), num_warmup=60, num_samples=100, num_chains=2, seed=0,
                progress_bar=False)
    mcmc.run(x, y)
    samples = mcmc.get_samples()
    assert samples["fc1.weight"].shape == (200, 2, 2) and samples["out.weight"].shape == (200, 1, 2)
    predictive = Predictive(bnn, samples, parallel=False)(x)
    assert predictive["y"].shape == (200, 20)
    # the posterior predictive mean fits the data far better than the prior's spread
    error = (predictive["y"].mean(0) - y).pow(2).mean().sqrt()
    assert error < 0.5 * y.std()


def test_svi_fits_the_bnn_and_its_plain_parameters():
    x, y = _data()
    ppl.clear_param_store()
    bnn = make_bnn(PyroModule, PyroSample, dist)
    guide = AutoNormal(bnn)
    svi = SVI(bnn, guide, Adam({"lr": 0.03}), Trace_ELBO())
    result = svi.run(300, x, y, progress_bar=False)
    assert "out.bias" in ppl.get_param_store()
    assert result.losses[-20:].mean() < 0.5 * result.losses[:20].mean()
    draws = Predictive(bnn, guide=guide, num_samples=50, parallel=False)(x)
    assert set(draws) >= {"fc1.weight", "fc1.bias", "out.weight", "y"}
