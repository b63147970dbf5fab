"""HMC/NUTS on potential functions: analytic moments within Monte Carlo error, Stan's adaptation as NumPyro
computes it, vectorized chains, seeds, checkpoint/resume, ArviZ export and bad input."""

import math
import warnings

import numpy as np
import pytest
import torch

from inference import NonFiniteError, diagnostics
from inference.mcmc import HMC, MCMC, NUTS
from inference.mcmc import adaptation

MC_SIGMAS = 4.5  # |estimate - truth| < 4.5 MCSE: a false alarm about once in 10^5 per parameter



def _gaussian(mean, cov):
    """Potential of N(mean, cov) for positions (C, D)."""
    precision = torch.linalg.inv(cov)

    def potential(z):
        d = z - mean
        return 0.5 * ((d @ precision) * d).sum(-1)

    return potential


# -- adaptation pieces against NumPyro ------------------------------------------------------------------------


@pytest.mark.parametrize("num_steps", [1, 10, 19, 20, 99, 150, 151, 200, 300, 500, 1000, 1234, 3000])
def test_window_schedule_matches_numpyro(num_steps):
    from numpyro.infer.hmc_util import build_adaptation_schedule

    expected = [(w.start, w.end) for w in build_adaptation_schedule(num_steps)]
    assert list(adaptation.build_adaptation_schedule(num_steps)) == expected


def test_dual_averaging_and_welford_match_numpyro():
    import jax
    import jax.numpy as jnp
    from numpyro.infer.hmc_util import dual_averaging, welford_covariance

    rng = np.random.default_rng(0)
    g = rng.uniform(-0.5, 0.5, size=30)
    draws = rng.normal(size=(40, 3)) @ np.array([[1.0, 0.3, 0.0], [0.0, 2.0, 0.5], [0.0, 0.0, 0.1]])
    with jax.enable_x64(True):
        da_init, da_update = dual_averaging()
        ref = da_init(math.log(10 * 0.3))
        for gi in g:
            ref = da_update(gi, ref)
        ref_cov = {}
        for dense in (False, True):
            wf_init, wf_update, wf_final = welford_covariance(diagonal=not dense)
            s = wf_init(3)
            for x in draws:
                s = wf_update(jnp.asarray(x), s)
            ref_cov[dense] = np.asarray(wf_final(s, regularize=True)[0])

    no_search = lambda step_size, inverse_mass_matrix: step_size  # noqa: E731
    ours_step = torch.tensor([0.3], dtype=torch.float64)
    state = adaptation.WarmupAdapter(100, adapt_step_size=False).init(ours_step, torch.ones(1, 3), no_search)
    for gi in g:
        state = adaptation.dual_averaging_update(state, torch.tensor([gi], dtype=torch.float64))
    assert float(state.log_step_size) == pytest.approx(float(ref[0]), rel=1e-12)
    assert float(state.log_step_size_avg) == pytest.approx(float(ref[1]), rel=1e-12)
    for dense in (False, True):
        inv = torch.eye(3).unsqueeze(0) if dense else torch.ones(1, 3)
        s = adaptation.WarmupAdapter(100, dense_mass=dense).init(ours_step, inv.double(), no_search)
        for x in torch.from_numpy(draws):
            s = adaptation.welford_update(s, x.unsqueeze(0))
        np.testing.assert_allclose(adaptation.welford_covariance(s)[0].numpy(), ref_cov[dense], rtol=1e-12)


# -- correctness on known targets -----------------------------------------------------------------------------


def test_nuts_standard_normal(device, dtype, assert_within_mc_error):
    dim = 4
    kernel = NUTS(potential_fn=lambda z: 0.5 * (z**2).sum(-1))
    mcmc = MCMC(kernel, num_warmup=150, num_samples=400, num_chains=4, seed=1, progress_bar=False)
    mcmc.run(init_params=torch.full((4, dim), 1.5, dtype=dtype, device=device))
    draws = mcmc.get_samples(group_by_chain=True)["z"]
    assert draws.shape == (4, 400, dim) and draws.device.type == device.type and draws.dtype == dtype
    assert_within_mc_error(draws, torch.zeros(dim), torch.ones(dim))
    assert (diagnostics.rhat(draws) < 1.05).all()
    extra = mcmc.get_extra_fields()
    assert not extra["diverging"].any()
    assert set(extra) == {"diverging", "accept_prob", "step_size", "tree_depth", "num_steps", "energy", "potential_energy"}
    assert ((extra["num_steps"] >= 2 ** extra["tree_depth"] - 1) & (extra["num_steps"] <= 2 ** (extra["tree_depth"] + 1) - 1)).all()


def test_conjugate_normal_posterior_hmc_and_nuts(conjugate_normal, assert_within_mc_error):
    """The conjugate normal (see conftest) as a potential function: the closed-form posterior of mu."""
    c = conjugate_normal

    def potential(z):
        mu = z[:, :1]
        return 0.5 * ((c.y - mu) ** 2).sum(-1) / c.sigma**2 + 0.5 * (z[:, 0] - c.m0) ** 2 / c.s0**2

    for kernel in (HMC(potential_fn=potential, trajectory_length=1.0), NUTS(potential_fn=potential)):
        mcmc = MCMC(kernel, num_warmup=150, num_samples=500, num_chains=2, seed=4, progress_bar=False)
        mcmc.run(init_params=torch.zeros(1, dtype=torch.float64, device=c.y.device))
        assert_within_mc_error(mcmc.get_samples(group_by_chain=True)["z"], [c.mean], [c.sd])


def test_dense_mass_beats_diagonal_on_correlated_gaussian(device, assert_within_mc_error):
    """10-d Gaussian with strong correlations and mixed scales: the dense metric whitens it, the diagonal cannot."""
    dim = 10
    scales = torch.logspace(-0.5, 0.5, dim, dtype=torch.float64)
    corr = 0.7 * torch.ones(dim, dim, dtype=torch.float64) + 0.3 * torch.eye(dim, dtype=torch.float64)
    cov = (scales[:, None] * corr * scales[None, :]).to(device)
    mean = torch.linspace(-1, 1, dim, dtype=torch.float64, device=device)
    potential = _gaussian(mean, cov)
    ess, efficiency = {}, {}
    for dense in (False, True):
        mcmc = MCMC(NUTS(potential_fn=potential, dense_mass=dense), num_warmup=200, num_samples=200,
                    num_chains=2, seed=5, progress_bar=False)
        mcmc.run(init_params=mean + 0.5)
        draws = mcmc.get_samples(group_by_chain=True)["z"]
        assert_within_mc_error(draws, mean.cpu(), cov.diagonal().sqrt().cpu())
        steps = mcmc.get_extra_fields()["num_steps"].sum().item()
        ess[dense] = diagnostics.ess_bulk(draws).min().item()
        efficiency[dense] = ess[dense] / steps  # per gradient evaluation
    assert ess[True] > 2 * ess[False] and efficiency[True] > 2 * efficiency[False], (ess, efficiency)


def test_step_size_adaptation_matches_numpyro():
    """Sampling-phase acceptance and adapted step size and metric as NumPyro's on the same target. (Both land
    above the target: dual averaging ends on the averaged log step size, smaller than the last iterate.)"""
    import jax
    import jax.numpy as jnp
    import numpyro.infer

    scales, target, chains = [0.3, 1.0, 3.0], 0.65, 4
    scales_t = torch.tensor(scales, dtype=torch.float64)
    kernel = NUTS(potential_fn=lambda z: 0.5 * ((z / scales_t) ** 2).sum(-1), target_accept_prob=target)
    mcmc = MCMC(kernel, num_warmup=300, num_samples=200, num_chains=chains, seed=6, progress_bar=False)
    mcmc.run(init_params=torch.ones(3, dtype=torch.float64))
    ours = mcmc.get_extra_fields(group_by_chain=True)
    with jax.enable_x64(True):
        scales_j = jnp.asarray(scales)
        ref = numpyro.infer.MCMC(
            numpyro.infer.NUTS(potential_fn=lambda z: 0.5 * jnp.sum((z / scales_j) ** 2), target_accept_prob=target),
            num_warmup=300, num_samples=200, num_chains=chains, chain_method="vectorized", progress_bar=False,
        )
        ref.run(jax.random.PRNGKey(0), init_params=jnp.ones((chains, 3)),
                extra_fields=("accept_prob", "adapt_state.step_size"))
        theirs = ref.get_extra_fields(group_by_chain=True)
        theirs = {"accept_prob": np.asarray(theirs["accept_prob"]),
                  "log_step": np.log(np.asarray(theirs["adapt_state.step_size"]))}
    for name, a, b in (("accept_prob", ours["accept_prob"].mean(1).numpy(), theirs["accept_prob"].mean(1)),
                       ("log_step", ours["step_size"].log().mean(1).numpy(), theirs["log_step"].mean(1))):
        # chain means are independent replicates: compare the two averages within their standard error
        se = math.sqrt(a.var(ddof=1) / chains + b.var(ddof=1) / chains + 0.01**2)
        assert abs(a.mean() - b.mean()) < MC_SIGMAS * se, (name, a, b)
    assert ours["accept_prob"].mean() > target  # the metric learned the scales: one step size fits all
    inv_mass = mcmc.last_state.adapt.inverse_mass_matrix
    assert torch.allclose(inv_mass.sqrt(), scales_t.expand(chains, 3), rtol=0.35)


def test_divergences_on_centred_funnel():
    """Neal's funnel, v ~ N(0, 3^2), x_i | v ~ N(0, e^v): the neck defeats one step size, so NUTS diverges."""
    def potential(z):
        v, x = z[:, 0], z[:, 1:]
        return v**2 / 18 + 0.5 * (x**2).sum(-1) * torch.exp(-v) + 0.5 * x.shape[1] * v

    # Whether one chain meets the neck in a short run depends on its chaotic path (and so on the CPU's
    # floating-point paths): eight independent chains together diverge on any machine.
    mcmc = MCMC(NUTS(potential_fn=potential), num_warmup=100, num_samples=100, num_chains=8, seed=7,
                progress_bar=False)
    mcmc.run(init_params=torch.zeros(5, dtype=torch.float64))
    diverging = mcmc.get_extra_fields(group_by_chain=True)["diverging"]
    assert diverging.shape == (8, 100) and diverging.dtype == torch.bool
    assert diverging.sum() > 0


# -- chains, seeds, checkpoints -------------------------------------------------------------------------------


def _scaled_normal(z):
    return 0.5 * ((z / torch.tensor([0.5, 1.0, 3.0], dtype=z.dtype)) ** 2).sum(-1)


@pytest.mark.parametrize("kernel_cls", [NUTS, HMC])
def test_vectorized_chains_equal_sequential_chains(kernel_cls):
    """Each chain draws from its own generator, so batching chains changes nothing, bit for bit."""
    init = torch.tensor([[0.1, -1.0, 2.0], [1.0, 0.5, -3.0], [-0.3, 0.2, 0.0]], dtype=torch.float64)
    runs = {}
    for method in ("vectorized", "sequential"):
        mcmc = MCMC(kernel_cls(potential_fn=_scaled_normal), num_warmup=60, num_samples=40, num_chains=3,
                    chain_method=method, seed=11, progress_bar=False)
        mcmc.run(init_params=init)
        runs[method] = mcmc
    vec, seq = runs["vectorized"], runs["sequential"]
    assert torch.equal(vec.get_samples()["z"], seq.get_samples()["z"])
    for name, value in vec.get_extra_fields().items():
        assert torch.equal(value, seq.get_extra_fields()[name]), name
    # a single chain run alone with the same seed reproduces chain 0
    alone = MCMC(kernel_cls(potential_fn=_scaled_normal), num_warmup=60, num_samples=40, seed=11, progress_bar=False)
    alone.run(init_params=init[:1])
    assert torch.equal(alone.get_samples(group_by_chain=True)["z"][0], vec.get_samples(group_by_chain=True)["z"][0])


def test_seed_determines_draws():
    def draws(seed):
        mcmc = MCMC(NUTS(potential_fn=_scaled_normal), num_warmup=30, num_samples=20, num_chains=2, seed=seed,
                    progress_bar=False)
        mcmc.run(init_params=torch.zeros(3, dtype=torch.float64))
        return mcmc.get_samples()["z"]

    first = draws(3)
    assert torch.equal(first, draws(3))
    assert not torch.equal(first, draws(4))
    assert not torch.equal(first[:20], first[20:])  # the chains differ from each other


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("chain_method", ["vectorized", "sequential"])
@pytest.mark.parametrize("interrupt_after", [150, 700])  # leapfrog steps: inside warm-up, inside sampling
def test_resume_from_checkpoint_is_bit_for_bit(tmp_path, chain_method, interrupt_after):
    config = dict(num_warmup=40, num_samples=30, num_chains=2, chain_method=chain_method, seed=21,
                  progress_bar=False)
    init = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.5]], dtype=torch.float64)
    reference = MCMC(NUTS(potential_fn=_scaled_normal), **config)
    reference.run(init_params=init)

    calls = {"n": 0}

    def flaky(z):
        calls["n"] += 1
        if calls["n"] > interrupt_after:
            raise _Interrupt
        return _scaled_normal(z)

    path = tmp_path / "run.pt"
    interrupted = MCMC(NUTS(potential_fn=flaky), checkpoint=path, checkpoint_every=7, **config)
    with pytest.raises(_Interrupt):
        interrupted.run(init_params=init)
    assert path.exists()
    resumed = MCMC(NUTS(potential_fn=_scaled_normal), checkpoint=path, checkpoint_every=7, **config)
    resumed.run(init_params=init, resume_from=path)
    assert torch.equal(resumed.get_samples()["z"], reference.get_samples()["z"])
    for name, value in reference.get_extra_fields().items():
        assert torch.equal(resumed.get_extra_fields()[name], value), name

    other = MCMC(NUTS(potential_fn=_scaled_normal), **{**config, "seed": 22})
    with pytest.raises(ValueError, match="seed"):
        other.run(init_params=init, resume_from=path)


# -- outputs --------------------------------------------------------------------------------------------------


def test_summary_postprocess_and_arviz(capsys):
    def postprocess(z):
        return {"loc": z[..., 0], "scale": torch.exp(z[..., 1:])}

    mcmc = MCMC(NUTS(potential_fn=_scaled_normal), num_warmup=50, num_samples=60, num_chains=2, seed=8,
                progress_bar=False, postprocess_fn=postprocess)
    mcmc.run(init_params=torch.zeros(3, dtype=torch.float64))
    samples = mcmc.get_samples()
    assert samples["loc"].shape == (120,) and samples["scale"].shape == (120, 2)
    stats = mcmc.summary()
    out = capsys.readouterr().out
    assert "scale[1]" in out and "r_hat" in out and "Number of divergences" in out
    grouped = mcmc.get_samples(group_by_chain=True)
    assert float(stats["loc"]["ess_bulk"]) == pytest.approx(float(diagnostics.ess_bulk(grouped["loc"])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        idata = mcmc.to_arviz()
    assert idata.posterior["scale"].shape == (2, 60, 2)
    np.testing.assert_array_equal(idata.posterior["loc"].values, grouped["loc"].numpy())
    np.testing.assert_array_equal(idata.sample_stats["diverging"].values,
                                  mcmc.get_extra_fields(group_by_chain=True)["diverging"].numpy())
    assert {"lp", "acceptance_rate", "step_size", "tree_depth", "n_steps", "energy"} <= set(idata.sample_stats)


def test_progress_bar_shows_phase_and_counts(capsys):
    mcmc = MCMC(NUTS(potential_fn=_scaled_normal), num_warmup=5, num_samples=5, seed=0, progress_bar=True)
    mcmc.run(init_params=torch.zeros(3, dtype=torch.float64))
    err = capsys.readouterr().err
    assert "phase=sample" in err and "step_size=" in err and "divergences=" in err and "tree_depth=" in err


# -- bad input ------------------------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="exactly one of"):
        NUTS()
    with pytest.raises(ValueError, match="max_tree_depth"):
        NUTS(potential_fn=_scaled_normal, max_tree_depth=0)
    with pytest.raises(ValueError, match="chain_method"):
        MCMC(NUTS(potential_fn=_scaled_normal), 10, 10, chain_method="parallel")
    mcmc = MCMC(NUTS(potential_fn=_scaled_normal), 10, 10, num_chains=2, progress_bar=False)
    with pytest.raises(ValueError, match="init_params"):
        mcmc.run()
    with pytest.raises(ValueError, match="num_chains=2"):
        mcmc.run(init_params=torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="run()"):
        mcmc.get_samples()
    log_of_positive = lambda z: -torch.log(z).sum(-1)  # noqa: E731
    outside = MCMC(NUTS(potential_fn=log_of_positive), 10, 10, num_chains=2, progress_bar=False)
    with pytest.raises(NonFiniteError, match=r"chain\(s\) \[1\]"):
        outside.run(init_params=torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, 1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="energies"):
        MCMC(NUTS(potential_fn=lambda z: z**2), 10, 10, progress_bar=False).run(init_params=torch.zeros(2))
    with pytest.raises(ValueError, match="inverse_mass_matrix"):
        MCMC(NUTS(potential_fn=_scaled_normal, inverse_mass_matrix=torch.ones(4)), 10, 10,
             progress_bar=False).run(init_params=torch.zeros(3))
