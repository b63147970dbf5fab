"""MCMC convergence diagnostics: rank-normalized split R-hat, bulk/tail ESS, MCSE, HDI, autocorrelation.

Definitions follow Vehtari, Gelman, Simpson, Carpenter & Bürkner, *Rank-normalization, folding, and
localization: an improved R-hat for assessing convergence of MCMC*, Bayesian Analysis 16(2), 2021, exactly as
ArviZ implements them (same split, rank back-transform, Geyer truncation and edge cases), so numbers agree
with ``arviz.rhat``, ``arviz.ess``, ``arviz.mcse`` and ``arviz.hdi`` on the same draws.

Every function takes draws shaped ``(chains, draws, *param_shape)`` (a torch tensor or anything numpy accepts)
and returns a float64 CPU tensor shaped ``param_shape`` (``hdi``: ``(*param_shape, 2)``). Diagnostics are not
differentiable: they run in numpy, float64.
"""

import numpy as np
import torch
from scipy.fft import next_fast_len
from scipy.special import ndtri
from scipy.stats import rankdata

__all__ = [
    "autocorrelation",
    "autocovariance",
    "ess_bulk",
    "ess_tail",
    "hdi",
    "mcse_mean",
    "mcse_sd",
    "print_summary",
    "rhat",
    "summary",
]


def _as_numpy(x):
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _as_draws(x, name="draws"):
    """(chains, draws, *shape) -> float64 numpy array (chains, draws, P) and the parameter shape."""
    x = _as_numpy(x)
    if x.ndim < 2:
        raise ValueError(f"{name} must be shaped (chains, draws, *param_shape); got shape {x.shape}")
    return x.reshape(x.shape[0], x.shape[1], -1), x.shape[2:]


def _per_param(fn, x, name="draws"):
    ary, shape = _as_draws(x, name)
    out = np.array([fn(ary[:, :, p]) for p in range(ary.shape[2])], dtype=np.float64)
    return torch.from_numpy(out.reshape(shape))


def _invalid(ary, min_chains):
    return np.isnan(ary).any() or ary.shape[1] < 4 or ary.shape[0] < min_chains


def _split_chains(ary):
    """Split each chain in halves (dropping the middle draw when odd): (C, N) -> (2C, N // 2)."""
    half = ary.shape[1] // 2
    return np.vstack((ary[:, :half], ary[:, -half:]))


def _z_scale(ary):
    """Rank-normalize: average ranks over all draws, Blom's offset c = 3/8, then the normal quantile."""
    rank = rankdata(ary, method="average", nan_policy="omit").reshape(ary.shape)
    return ndtri((rank - 0.375) / (ary.size - 0.75 + 1))


def _autocov(ary):
    """Autocovariance over the last axis at every lag, by FFT; biased (divided by n), as ArviZ."""
    n = ary.shape[-1]
    m = next_fast_len(2 * n, real=True)
    centred = ary - ary.mean(-1, keepdims=True)
    f = np.fft.rfft(centred, n=m, axis=-1)
    return np.fft.irfft(f * np.conjugate(f), n=m, axis=-1)[..., :n] / n


def _rhat_2d(ary):
    """Classic R-hat of a (chains, draws) array."""
    n = ary.shape[1]
    between = n * np.var(ary.mean(axis=1), ddof=1)
    within = np.mean(np.var(ary, axis=1, ddof=1))
    return np.sqrt((between / within + n - 1) / n)


def _ess_2d(ary):
    """ESS of a (chains, draws) array: Geyer's initial positive then initial monotone sequence."""
    if np.isnan(ary).any():
        return np.nan
    if np.max(ary) - np.min(ary) < np.finfo(float).resolution:
        return float(ary.size)
    n_chain, n_draw = ary.shape
    acov = _autocov(ary)
    chain_mean = ary.mean(axis=1)
    mean_var = np.mean(acov[:, 0]) * n_draw / (n_draw - 1.0)
    var_plus = mean_var * (n_draw - 1.0) / n_draw
    if n_chain > 1:
        var_plus += np.var(chain_mean, ddof=1)
    rho_of = lambda lag: 1.0 - (mean_var - np.mean(acov[:, lag])) / var_plus  # noqa: E731

    rho = np.zeros(n_draw)
    rho_even, rho_odd = 1.0, rho_of(1)
    rho[0], rho[1] = rho_even, rho_odd
    t = 1
    while t < n_draw - 3 and rho_even + rho_odd > 0.0:
        rho_even, rho_odd = rho_of(t + 1), rho_of(t + 2)
        if rho_even + rho_odd >= 0:
            rho[t + 1], rho[t + 2] = rho_even, rho_odd
        t += 2
    max_t = t - 2
    if rho_even > 0:
        rho[max_t + 1] = rho_even
    t = 1
    while t <= max_t - 2:
        if rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t]:
            rho[t + 1] = rho[t + 2] = (rho[t - 1] + rho[t]) / 2.0
        t += 2
    ess = n_chain * n_draw
    tau = -1.0 + 2.0 * np.sum(rho[: max_t + 1]) + np.sum(rho[max_t + 1 : max_t + 2])
    tau = max(tau, 1 / np.log10(ess))
    return np.nan if np.isnan(rho).any() else ess / tau


def _rhat_rank(ary):
    if _invalid(ary, min_chains=2):
        return np.nan
    split = _split_chains(ary)
    bulk = _rhat_2d(_z_scale(split))
    tail = _rhat_2d(_z_scale(np.abs(split - np.median(split))))
    return max(bulk, tail)


def _ess_bulk(ary):
    if _invalid(ary, min_chains=1):
        return np.nan
    return _ess_2d(_z_scale(_split_chains(ary)))


def _ess_quantile(ary, prob):
    quantile = np.quantile(ary, prob)  # type-7, as ArviZ's mquantiles(alphap=1, betap=1)
    return _ess_2d(_split_chains((ary <= quantile).astype(np.float64)))


def _ess_tail(ary):
    if _invalid(ary, min_chains=1):
        return np.nan
    return min(_ess_quantile(ary, 0.05), _ess_quantile(ary, 0.95))


def _ess_mean(ary):
    return _ess_2d(_split_chains(ary))


def _mcse_mean(ary):
    if _invalid(ary, min_chains=1):
        return np.nan
    return np.std(ary, ddof=1) / np.sqrt(_ess_mean(ary))


def _mcse_sd(ary):
    if _invalid(ary, min_chains=1):
        return np.nan
    sq = (ary - ary.mean()) ** 2
    ess = _ess_mean(sq)
    evar = sq.mean()
    varvar = ((sq**2).mean() - evar**2) / ess
    return np.sqrt(varvar / evar / 4)


def rhat(x):
    """Rank-normalized split R-hat: max of the bulk and the folded (tail) R-hat. NaN for one chain
    or fewer than 4 draws (as ArviZ). x: (chains, draws, *shape) -> (*shape,)."""
    return _per_param(_rhat_rank, x)


def ess_bulk(x):
    """Bulk effective sample size (rank-normalized split chains). x: (chains, draws, *shape) -> (*shape,)."""
    return _per_param(_ess_bulk, x)


def ess_tail(x):
    """Tail effective sample size: min of the ESS of the 5% and 95% quantile indicators.
    x: (chains, draws, *shape) -> (*shape,)."""
    return _per_param(_ess_tail, x)


def mcse_mean(x):
    """Monte Carlo standard error of the posterior mean (sd / sqrt(ESS of split chains)).
    x: (chains, draws, *shape) -> (*shape,), in the unit of x."""
    return _per_param(_mcse_mean, x)


def mcse_sd(x):
    """Monte Carlo standard error of the posterior standard deviation. x: (chains, draws, *shape) -> (*shape,)."""
    return _per_param(_mcse_sd, x)


def hdi(x, prob=0.94):
    """Highest density interval: the narrowest interval holding a fraction ``prob`` of all draws
    (chains pooled). x: (chains, draws, *shape) -> (*shape, 2) with [low, high]."""
    if not 0.0 < prob < 1.0:
        raise ValueError(f"hdi: prob must lie in (0, 1); got {prob}")
    ary, shape = _as_draws(x)
    flat = np.sort(ary.reshape(-1, ary.shape[2]), axis=0)
    n = flat.shape[0]
    inc = int(np.floor(prob * n))
    if n - inc == 0:
        raise ValueError(f"hdi: too few draws ({n}) for an interval of probability {prob}")
    width = flat[inc:] - flat[: n - inc]
    lo = np.argmin(width, axis=0)
    cols = np.arange(flat.shape[1])
    out = np.stack([flat[lo, cols], flat[lo + inc, cols]], axis=-1)
    return torch.from_numpy(out.reshape(*shape, 2))


def autocovariance(x, dim=-1):
    """Autocovariance at every lag along ``dim`` (FFT; biased estimator, divided by n), same shape as x."""
    ary = np.moveaxis(_as_numpy(x), dim, -1)
    return torch.from_numpy(np.moveaxis(_autocov(ary), -1, dim))


def autocorrelation(x, dim=-1):
    """Autocorrelation at every lag along ``dim`` (FFT), normalized to 1 at lag 0; same shape as x."""
    ary = np.moveaxis(_as_numpy(x), dim, -1)
    acov = _autocov(ary)
    with np.errstate(invalid="ignore", divide="ignore"):
        acorr = acov / acov[..., :1]
    return torch.from_numpy(np.moveaxis(acorr, -1, dim))


def summary(samples, prob=0.9):
    """Posterior summary of each site.

    samples: dict name -> draws (chains, draws, *shape). Returns dict name -> dict of (*shape,) float64
    tensors: ``mean``, ``sd``, ``q5`` / ``q95`` (the (1 -/+ prob)/2 quantiles, 5% and 95% by default),
    ``mcse_mean``, ``mcse_sd``, ``ess_bulk``, ``ess_tail``, ``r_hat``.
    """
    lo_q, hi_q = (1 - prob) / 2, (1 + prob) / 2
    out = {}
    for name, value in samples.items():
        ary, shape = _as_draws(value, name)
        flat = ary.reshape(-1, ary.shape[2])
        stats = {
            "mean": flat.mean(0),
            "sd": flat.std(0, ddof=1),
            f"q{100 * lo_q:g}": np.quantile(flat, lo_q, axis=0),
            f"q{100 * hi_q:g}": np.quantile(flat, hi_q, axis=0),
        }
        stats = {k: torch.from_numpy(np.asarray(v).reshape(shape)) for k, v in stats.items()}
        stats["mcse_mean"] = mcse_mean(value)
        stats["mcse_sd"] = mcse_sd(value)
        stats["ess_bulk"] = ess_bulk(value)
        stats["ess_tail"] = ess_tail(value)
        stats["r_hat"] = rhat(value)
        out[name] = stats
    return out


def print_summary(stats, file=None):
    """Print the table of ``summary``'s output: one row per scalar parameter, one column per statistic."""
    columns = list(next(iter(stats.values())).keys()) if stats else []
    rows = []
    for name, site in stats.items():
        shape = site["mean"].shape
        for idx in np.ndindex(*shape):
            label = name + (f"[{','.join(map(str, idx))}]" if idx else "")
            rows.append([label] + [f"{float(site[c][idx]):.3f}" for c in columns])
    header = [""] + columns
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header] + rows]
    print("\n".join(lines), file=file)
