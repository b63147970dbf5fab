"""What the MCMC tests share: a conjugate normal model with its closed-form posterior, and the check of draws
against analytic moments within Monte Carlo error."""

import math
from types import SimpleNamespace

import pytest
import torch

from inference import diagnostics

MC_SIGMAS = 4.5  # |estimate - truth| < 4.5 MCSE: a false alarm about once in 10^5 per parameter


def _assert_within_mc_error(draws, mean, sd):
    """draws: (chains, draws) or (chains, draws, D); analytic means and sds (numbers, or (D,)). Tolerances are
    MCSEs of these very draws."""
    if draws.dim() == 2:
        draws = draws.unsqueeze(-1)
    mean, sd = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(sd, dtype=torch.float64)
    flat = draws.reshape(-1, draws.shape[-1]).cpu().double()
    err_mean = (flat.mean(0) - mean).abs() / diagnostics.mcse_mean(draws)
    err_sd = (flat.std(0) - sd).abs() / diagnostics.mcse_sd(draws)
    assert (err_mean < MC_SIGMAS).all(), f"means {flat.mean(0)} vs {mean}: {err_mean} MCSEs off"
    assert (err_sd < MC_SIGMAS).all(), f"sds {flat.std(0)} vs {sd}: {err_sd} MCSEs off"


@pytest.fixture
def assert_within_mc_error():
    return _assert_within_mc_error


@pytest.fixture
def conjugate_normal(device):
    """y_i ~ N(mu, sigma^2) (20 points on ``device``), sigma known, mu ~ N(m0, s0^2): the data and the posterior
    of mu, normal in closed form (``mean``, ``sd``)."""
    generator = torch.Generator().manual_seed(3)
    sigma, m0, s0 = 2.0, 1.0, 3.0
    y = (0.7 + sigma * torch.randn(20, generator=generator, dtype=torch.float64)).to(device)
    variance = 1 / (1 / s0**2 + len(y) / sigma**2)
    mean = variance * (m0 / s0**2 + y.sum().item() / sigma**2)
    return SimpleNamespace(y=y, sigma=sigma, m0=m0, s0=s0, mean=mean, sd=math.sqrt(variance))
