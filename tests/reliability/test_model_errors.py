"""Samplers survive model errors: where a model's density cannot be computed (a Cholesky factorization of a matrix
that is not positive definite, a domain error), only the chain that meets it rejects its proposal, which counts as
a divergence (as in Stan and NumPyro), the run goes on and a warning reports it; bugs still raise.

The targets: a correlation rho with a Normal prior that is not constrained to (-1, 1), whose Cholesky factor exists
only for |rho| < 1 (the posterior is then the normal truncated to (-1, 1), known in closed form), and a Gaussian
process in float32 (as on a GPU) with a squared-exponential kernel and no jitter, whose Cholesky factorization fails
in the tails (small noise) and which, before model errors were rejected, aborted runs with ``LinAlgError``.
"""

import math

import pytest
import torch

import ppl
import ppl.distributions as dist
from inference import diagnostics
from inference.errors import NonFiniteError
from inference.mcmc import HMC, MCMC, NUTS
from inference.mcmc.integrator import MODEL_ERRORS, PotentialAndGrad
from inference.mcmc.model import ModelPotential
from ppl.handlers import seed

F64 = torch.float64
MC_SIGMAS = 4.5  # |estimate - truth| < 4.5 MCSE: a false alarm about once in 10^5 per parameter
REJECTED = r"proposals rejected because the model raised .*LinAlgError"

# rho ~ N(0, 1) truncated to (-1, 1): E[rho^2] = 1 - 2 phi(1) / (2 Phi(1) - 1)
TRUNCATED_RHO_SQUARED = 1 - 2 * math.exp(-0.5) / math.sqrt(2 * math.pi) / math.erf(1 / math.sqrt(2))


def _correlation(rho):
    """[[1, rho], [rho, 1]] for rho of any batch shape: (..., 2, 2)."""
    one = torch.ones_like(rho)
    return torch.stack([torch.stack([one, rho], -1), torch.stack([rho, one], -1)], -2)


def correlated_effects():
    """Two effects with correlation rho, non-centred through the Cholesky factor of their correlation matrix, which
    raises ``LinAlgError`` for |rho| >= 1: the posterior of rho is its prior truncated to (-1, 1)."""
    rho = ppl.sample("rho", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    raw = ppl.sample("raw", dist.Normal(torch.zeros(2, dtype=F64), 1.0).to_event(1))
    ppl.deterministic("effects", torch.linalg.cholesky(_correlation(rho)) @ raw)


def correlated_effects_potential(z):
    """The potential of ``correlated_effects`` with the effects observed as (0.5, -0.5) with unit noise, for
    positions (C, 3) = (rho, raw); raises ``LinAlgError`` where |rho| >= 1 for any chain."""
    rho, raw = z[:, 0], z[:, 1:]
    effects = (torch.linalg.cholesky(_correlation(rho)) @ raw.unsqueeze(-1)).squeeze(-1)
    observed = torch.tensor([0.5, -0.5], dtype=z.dtype)
    return 0.5 * (rho**2 + (raw**2).sum(-1) + ((observed - effects) ** 2).sum(-1))


def _assert_mean(draws, truth, slack=0.0):
    """draws (chains, draws): their mean is ``truth`` within 4.5 MCSE (+ ``slack``)."""
    error = (draws.double().mean() - truth).abs()
    assert error < MC_SIGMAS * diagnostics.mcse_mean(draws.double()) + slack, (float(draws.mean()), truth)


# -- runs that meet model errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kernel, chain_method, num_chains",
    [
        (lambda: NUTS(correlated_effects, jit_compile=False), "vectorized", 4),
        (lambda: NUTS(correlated_effects, jit_compile=False), "sequential", 2),
        (lambda: HMC(correlated_effects, num_steps=4, jit_compile=False), "vectorized", 4),
    ],
    ids=["nuts-vectorized", "nuts-sequential", "hmc-vectorized"],
)
def test_proposals_where_the_model_raises_are_rejected(kernel, chain_method, num_chains):
    mcmc = MCMC(kernel(), num_warmup=50, num_samples=120, num_chains=num_chains, chain_method=chain_method, seed=0,
                progress_bar=False)
    with pytest.warns(RuntimeWarning, match=REJECTED) as record:
        mcmc.run()
    assert len([w for w in record if "rejected because the model raised" in str(w.message)]) == 1  # one report
    samples = mcmc.get_samples(group_by_chain=True)
    rho = samples["rho"]
    assert (rho.abs() < 1).all()
    assert mcmc.get_extra_fields()["diverging"].any()
    _assert_mean(rho, 0.0)
    _assert_mean(rho**2, TRUNCATED_RHO_SQUARED, slack=0.02)
    _assert_mean(samples["raw"][..., 0] ** 2, 1.0, slack=0.05)


def test_a_chain_that_raises_leaves_the_other_chains_as_they_were():
    """Vectorized chains share one evaluation of the potential, which a chain that raises aborts; the chains that
    raise are found and only they reject: every chain draws bit for bit what it draws alone."""
    init = torch.tensor([[0.5, 0.0, 0.0], [-0.8, 1.0, -1.0], [0.0, 0.3, 0.2]], dtype=F64)
    runs = {}
    for method in ("vectorized", "sequential"):
        runs[method] = MCMC(NUTS(potential_fn=correlated_effects_potential), num_warmup=30, num_samples=40,
                            num_chains=3, chain_method=method, seed=5, progress_bar=False)
        with pytest.warns(RuntimeWarning, match=REJECTED):
            runs[method].run(init_params=init)
    vectorized, sequential = runs["vectorized"], runs["sequential"]
    assert torch.equal(vectorized.get_samples()["z"], sequential.get_samples()["z"])
    for name, value in vectorized.get_extra_fields().items():
        assert torch.equal(value, sequential.get_extra_fields()[name]), name


@pytest.mark.parametrize("kernel_cls", [NUTS, HMC])
def test_a_rejected_proposal_counts_as_a_divergence(kernel_cls):
    kernel = kernel_cls(potential_fn=correlated_effects_potential, **({"num_steps": 4} if kernel_cls is HMC else {}))
    generators = [torch.Generator().manual_seed(c) for c in range(4)]
    state = kernel.init(torch.zeros(4, 3, dtype=F64), 20, generators)
    raised = torch.zeros(4, dtype=torch.long)
    for _ in range(60):
        state, stats = kernel.sample(state, generators)
        assert (stats["diverging"] | ~stats["model_error"]).all()
        assert (state.z[:, 0].abs() < 1).all() and state.potential_energy.isfinite().all()
        raised += stats["model_error"]
    assert raised.sum() > 0
    assert isinstance(kernel.last_model_error, torch.linalg.LinAlgError)


GP_PRIORS = {"lengthscale": (-1.0, 1.0), "variance": (0.0, 1.0), "noise": (-2.0, 1.5)}  # log-normal (loc, scale)


def _gp_covariance(x, lengthscale, variance, noise):
    """Squared-exponential kernel plus noise, no jitter: (..., N, N) for parameters of any batch shape."""
    d2 = (x[:, None] - x[None, :]) ** 2
    k = variance[..., None, None] * torch.exp(-0.5 * d2 / lengthscale[..., None, None] ** 2)
    return k + noise[..., None, None] ** 2 * torch.eye(len(x), dtype=x.dtype)


def gp(x, y):
    """A Gaussian process regression with log-normal priors on its parameters (``GP_PRIORS``)."""
    params = {name: ppl.sample(name, dist.LogNormal(torch.tensor(loc, dtype=x.dtype), scale))
              for name, (loc, scale) in GP_PRIORS.items()}
    ppl.sample("y", dist.MultivariateNormal(torch.zeros_like(x), _gp_covariance(x, **params)), obs=y)


def _gp_data():
    generator = torch.Generator().manual_seed(0)
    x = torch.linspace(0, 1, 10, dtype=F64)
    return x, torch.sin(2 * math.pi * x) + 0.1 * torch.randn(10, generator=generator, dtype=F64)


def _gp_posterior(x, y, points=40):
    """Posterior means and sds of the logs of the GP's parameters, by quadrature in float64 over +-4.5 prior sds."""
    axes = [torch.linspace(loc - 4.5 * scale, loc + 4.5 * scale, points, dtype=F64)
            for loc, scale in GP_PRIORS.values()]
    u = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    covariance = _gp_covariance(x, *u.exp().unbind(-1))
    log_p = torch.distributions.MultivariateNormal(torch.zeros_like(x), covariance_matrix=covariance).log_prob(y)
    for i, (loc, scale) in enumerate(GP_PRIORS.values()):
        log_p = log_p + torch.distributions.Normal(loc, scale).log_prob(u[:, i])
    weights = torch.softmax(log_p, 0).unsqueeze(-1)
    mean = (weights * u).sum(0)
    sd = ((weights * u**2).sum(0) - mean**2).sqrt()
    return {name: (float(mean[i]), float(sd[i])) for i, name in enumerate(GP_PRIORS)}


def test_gaussian_process_in_float32_samples_its_posterior():
    """In float32 the GP's Cholesky factorization fails where the noise is small against the variance, which the
    warm-up's long early steps reach in some chains; those proposals are rejected and the posterior is the
    quadrature's (the failing region holds no posterior mass)."""
    x, y = _gp_data()
    mcmc = MCMC(NUTS(gp, jit_compile=False), num_warmup=40, num_samples=40, num_chains=16, seed=0,
                progress_bar=False)
    with pytest.warns(RuntimeWarning, match=REJECTED):
        mcmc.run(x.float(), y.float())
    samples = mcmc.get_samples(group_by_chain=True)
    for name, (mean, sd) in _gp_posterior(x, y).items():
        _assert_mean(samples[name].double().log(), mean, slack=0.1 * sd)


def test_jit_compile_runs_a_step_that_can_raise_in_python():
    """A step whose potential can raise (linalg's error checks read values) cannot be traced: ``jit_compile``
    warns and runs the Python step, which rejects."""
    mcmc = MCMC(NUTS(correlated_effects, jit_compile=True), num_warmup=20, num_samples=20, num_chains=2, seed=1,
                progress_bar=False)
    with pytest.warns(RuntimeWarning) as record:
        mcmc.run()
    messages = " ".join(str(w.message) for w in record)
    assert "jit_compile" in messages and "rejected because the model raised" in messages
    assert (mcmc.get_samples()["rho"].abs() < 1).all()


# -- which exceptions reject, and what it costs ---------------------------------------------------------------


class _RaisesWherePositive:
    """A potential (C, D) -> (C,) that raises ``error`` if any chain's first coordinate is positive; counts calls."""

    def __init__(self, error):
        self.error = error
        self.calls = 0

    def __call__(self, z):
        self.calls += 1
        if (z[:, 0] > 0).any():
            raise self.error
        return 0.5 * (z**2).sum(-1)


@pytest.mark.parametrize(
    "error",
    [torch.linalg.LinAlgError("linalg.cholesky: not positive-definite"), ValueError("math domain error"),
     ZeroDivisionError("float division by zero"), FloatingPointError("overflow"), NonFiniteError("NaN")],
    ids=lambda e: type(e).__name__,
)
def test_model_errors_reject_only_the_chains_that_raise(error):
    potential = _RaisesWherePositive(error)
    evaluate = PotentialAndGrad(potential)
    z = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    z[:, 0] = torch.tensor([1.0, -1.0, 0.5, -0.5, -0.2, 0.3, -0.7, -0.1])
    fails = z[:, 0] > 0  # chains 0, 2 and 5
    value, grad = evaluate(z)
    assert sorted(evaluate.raised) == [0, 2, 5]
    assert all(raised is error for raised in evaluate.raised.values())
    assert torch.allclose(value[~fails], 0.5 * (z[~fails] ** 2).sum(-1)) and torch.allclose(grad[~fails], z[~fails])
    assert value[fails].isposinf().all() and grad[fails].isnan().all()
    assert potential.calls <= 1 + 2 * fails.sum() * math.log2(len(z))  # halving, not one chain at a time


def test_evaluations_that_raise_nothing_cost_nothing_extra_and_positions_that_are_not_finite_are_not_evaluated():
    potential = _RaisesWherePositive(torch.linalg.LinAlgError("not positive-definite"))
    evaluate = PotentialAndGrad(potential)
    evaluate(-torch.ones(4, 2, dtype=F64))
    assert potential.calls == 1
    z = -torch.ones(4, 2, dtype=F64)
    z[1, 0] = math.nan  # a chain that raised earlier in its trajectory and moved along its NaN gradient
    z[3, 0] = 1.0
    potential.calls = 0
    value, _ = evaluate(z)  # the batch raises; the finite rows 0, 2, 3 are searched, row 1 is not evaluated
    assert value[[0, 2]].isfinite().all() and value[[1, 3]].isposinf().all()
    assert sorted(evaluate.raised) == [3]


@pytest.mark.parametrize(
    "error", [TypeError("unsupported operand"), RuntimeError("The size of tensor a (3) must match"),
              IndexError("index 5 is out of bounds")],
    ids=lambda e: type(e).__name__,
)
def test_bugs_still_raise(error):
    assert not isinstance(error, MODEL_ERRORS)
    with pytest.raises(type(error), match=str(error)[:10]):
        PotentialAndGrad(_RaisesWherePositive(error))(torch.ones(2, 2, dtype=F64))
    # in a run: the potential raises the bug only where chains wander to z0 > 0.5
    potential = _RaisesWherePositive(error)

    def bug_far_out(z):
        return potential(z - 0.5)

    mcmc = MCMC(NUTS(potential_fn=bug_far_out), num_warmup=50, num_samples=50, num_chains=2, seed=0,
                progress_bar=False)
    with pytest.raises(type(error)):
        mcmc.run(init_params=torch.zeros(2, dtype=F64))


def test_a_malformed_model_still_raises_its_model_error():
    """``ppl.ModelError`` is a ValueError, but says that the model is malformed: a model's potential names it in
    ``errors_to_raise``, and it raises."""
    assert ModelPotential.errors_to_raise == (ppl.ModelError,)
    potential = _RaisesWherePositive(ppl.ModelError("latent site 'extra' did not appear when the potential was set up"))
    potential.errors_to_raise = (ppl.ModelError,)
    with pytest.raises(ppl.ModelError, match="'extra' did not appear"):
        PotentialAndGrad(potential)(torch.tensor([[-1.0], [1.0]], dtype=F64))


# -- initialization -------------------------------------------------------------------------------------------


def test_initialization_redraws_where_the_model_raises():
    """init_to_uniform(radius=2) draws |rho| >= 1 about half of the time: setup and every chain redraw there."""
    potential = ppl.Potential(correlated_effects, init_strategy=ppl.init_to_uniform(radius=2.0),
                              invalid_errors=MODEL_ERRORS)
    with seed(rng_seed=0):
        z = potential.initial_params(num_chains=16)
    assert (z[:, 0].abs() < 1).all()
    assert (z[:, 0].abs() > 0.3).any()  # the draws are not all from a narrow box


def test_initialization_names_the_error_when_every_draw_raises():
    def singular():
        scale = ppl.sample("scale", dist.LogNormal(torch.tensor(0.0, dtype=F64), 1.0))
        torch.linalg.cholesky(-scale * torch.eye(2, dtype=F64))

    with pytest.raises(ppl.ModelError, match="all 100 draws.*LinAlgError"):
        MCMC(NUTS(singular), 10, 10, progress_bar=False).run()

    def half_singular():  # in the init box (-2, 2): raises for rho >= 0, a wall of zero density for rho < 0
        rho = ppl.sample("rho", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
        torch.linalg.cholesky(_correlation(rho + 1.0))
        ppl.factor("wall", torch.tensor(-math.inf, dtype=F64))

    potential = ppl.Potential(half_singular, invalid_errors=MODEL_ERRORS)
    with pytest.raises(ppl.ModelError, match=r"raised at \d+ of the draws .*LinAlgError.*not finite at: 'wall'"):
        potential.initial_params(max_tries=20)

    kernel = NUTS(potential_fn=correlated_effects_potential)
    init = torch.tensor([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]], dtype=F64)
    with pytest.raises(NonFiniteError, match=r"chain\(s\) \[1\].*chain 1 raised .*LinAlgError"):
        MCMC(kernel, 10, 10, num_chains=2, progress_bar=False).run(init_params=init)
