"""inference.diagnostics against ArviZ on the same draws."""

import warnings

import numpy as np
import pytest
import torch

from inference import diagnostics

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az


@pytest.fixture(autouse=True, scope="module")
def _arviz_without_numba():
    """ArviZ's numba path of mcse_sd calls float() on a 1-element array, which numpy >= 2.4 rejects; numba is
    installed as a dependency of openmmtools. The numpy path computes the same estimator."""
    enabled = az.Numba.numba_flag
    az.Numba.disable_numba()
    yield
    if enabled:
        az.Numba.enable_numba()


def _ar1_draws(chains, draws, params, phi, seed, offsets=0.0):
    """AR(1) chains (autocorrelated, like MCMC output), shape (chains, draws, params)."""
    rng = np.random.default_rng(seed)
    x = np.empty((chains, draws, params))
    x[:, 0] = rng.normal(size=(chains, params))
    for t in range(1, draws):
        x[:, t] = phi * x[:, t - 1] + np.sqrt(1 - phi**2) * rng.normal(size=(chains, params))
    return x + offsets


CASES = {
    "mixing": _ar1_draws(4, 200, 3, phi=0.6, seed=1),
    "sticky": _ar1_draws(3, 101, 2, phi=0.95, seed=2),  # odd draw count: split drops the middle draw
    "antithetic": _ar1_draws(2, 150, 2, phi=-0.5, seed=3),
    "not-mixed": _ar1_draws(4, 100, 2, phi=0.3, seed=4, offsets=np.array([0.0, 0.0, 0.0, 2.0])[:, None, None]),
    "ties": np.round(_ar1_draws(2, 80, 2, phi=0.4, seed=5), 1),
}


@pytest.mark.parametrize("case", CASES)
def test_matches_arviz(case):
    draws = CASES[case]
    ours = {
        "rhat": diagnostics.rhat(torch.from_numpy(draws)),
        "bulk": diagnostics.ess_bulk(torch.from_numpy(draws)),
        "tail": diagnostics.ess_tail(draws),
        "mcse_mean": diagnostics.mcse_mean(draws),
        "mcse_sd": diagnostics.mcse_sd(draws),
    }
    for p in range(draws.shape[2]):
        x = draws[:, :, p]
        ref = {
            "rhat": az.rhat(x, method="rank"),
            "bulk": az.ess(x, method="bulk"),
            "tail": az.ess(x, method="tail"),
            "mcse_mean": az.mcse(x, method="mean"),
            "mcse_sd": az.mcse(x, method="sd"),
        }
        for key, value in ref.items():
            assert float(ours[key][p]) == pytest.approx(float(value), rel=1e-8, abs=1e-12), (key, p)


def test_hdi_and_shapes_match_arviz():
    draws = _ar1_draws(2, 151, 6, phi=0.3, seed=6).reshape(2, 151, 2, 3)
    ours = diagnostics.hdi(torch.from_numpy(draws), prob=0.9)
    assert ours.shape == (2, 3, 2)
    ref = az.hdi(draws, hdi_prob=0.9)  # (chain, draw, *shape) -> (*shape, 2)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-12)
    assert diagnostics.ess_bulk(draws).shape == (2, 3)


def test_autocorrelation_matches_arviz():
    draws = _ar1_draws(3, 64, 2, phi=0.7, seed=7)
    ours = diagnostics.autocorrelation(torch.from_numpy(draws), dim=1)
    ref = az.autocorr(draws, axis=1)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10, atol=1e-12)
    cov = diagnostics.autocovariance(draws, dim=1)
    np.testing.assert_allclose(cov[:, 0].numpy(), draws.var(axis=1), rtol=1e-10)


def test_edge_cases_follow_arviz():
    one_chain = _ar1_draws(1, 50, 1, phi=0.2, seed=8)
    assert np.isnan(float(diagnostics.rhat(one_chain)[0])) and np.isnan(az.rhat(one_chain[:, :, 0]))
    constant = np.ones((2, 20, 1))
    assert float(diagnostics.ess_bulk(constant)[0]) == az.ess(constant[:, :, 0], method="bulk")
    with pytest.raises(ValueError, match="chains, draws"):
        diagnostics.rhat(np.zeros(5))
    with pytest.raises(ValueError, match="prob"):
        diagnostics.hdi(one_chain, prob=1.5)


def test_summary_table(capsys):
    draws = {"a": _ar1_draws(2, 100, 2, phi=0.1, seed=9), "b": _ar1_draws(2, 100, 1, phi=0.1, seed=10)[..., 0]}
    stats = diagnostics.summary(draws)
    assert set(stats["a"]) == {"mean", "sd", "q5", "q95", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat"}
    flat = draws["a"].reshape(-1, 2)
    np.testing.assert_allclose(stats["a"]["mean"].numpy(), flat.mean(0))
    np.testing.assert_allclose(stats["a"]["q95"].numpy(), np.quantile(flat, 0.95, axis=0))
    assert stats["b"]["r_hat"].shape == ()
    diagnostics.print_summary(stats)
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == list(stats["a"])
    assert [row[0] for row in lines[1:]] == ["a[0]", "a[1]", "b"]
