"""Variational inference with autoguides on a hierarchical model with a few hundred latent variables.

Groups j = 1..J (J = 300; 100 with --quick) each have a mean theta_j drawn around a population mean mu, and
1-8 noisy observations each (partial pooling):

    mu ~ Normal(0, 5),   theta_j ~ Normal(mu, 0.5),   y_ij ~ Normal(theta_j, 1).

We fit four guides with SVI and the same optimizer, as a Pyro user would: ``AutoNormal`` (mean field),
``AutoLowRankMultivariateNormal``, ``AutoMultivariateNormal`` (a full 301 x 301 Cholesky factor) and a guide
written by hand with ``ppl.param``/``ppl.sample``. The model is linear-Gaussian, so its exact posterior is known
and printed beside them: every guide should find the posterior means, but mean field must underestimate the
spread of mu, whose posterior is correlated with every theta_j. The hand-written guide builds in the posterior's
exact structure (theta_j given mu is normal with a mean linear in mu) with 3 J + 2 parameters; the
full-covariance guide can represent it too, with (J + 1)(J + 2) / 2 parameters, but converges far more slowly.
``Predictive`` then draws from the fitted guides.

Run:  .venv/bin/python tutorials/vi_autoguides.py [--out DIR] [--quick]

--quick fits fewer groups with fewer steps, without progress bars (the tests run it so). Plots go to DIR
(default ./tutorial_output/vi_autoguides): elbo.png (the ELBO curves) and mu_posterior.png.
"""

import argparse
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import ppl  # noqa: E402
import ppl.distributions as dist  # noqa: E402
from inference.autoguide import AutoLowRankMultivariateNormal, AutoMultivariateNormal, AutoNormal  # noqa: E402
from inference.predictive import Predictive  # noqa: E402
from inference.vi import SVI, ClippedAdam, Trace_ELBO  # noqa: E402
from ppl import constraints  # noqa: E402

NAME = Path(__file__).stem
MU_SCALE, TAU, SIGMA = 5.0, 0.5, 1.0  # prior sd of mu, sd of theta_j around mu, observation noise
TRUE_MU = 1.5


def simulate(num_groups, seed):
    """Group index (N,) and observations y (N,), float64, with 1 to 8 observations per group."""
    generator = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, 9, (num_groups,), generator=generator)
    group = torch.repeat_interleave(torch.arange(num_groups), counts)
    theta = TRUE_MU + TAU * torch.randn(num_groups, generator=generator, dtype=torch.float64)
    y = theta[group] + SIGMA * torch.randn(len(group), generator=generator, dtype=torch.float64)
    return group, y


def model(group, num_groups, y=None):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=torch.float64), MU_SCALE))
    with ppl.plate("groups", num_groups):
        theta = ppl.sample("theta", dist.Normal(mu, TAU))
    with ppl.plate("data", len(group)):
        ppl.sample("y", dist.Normal(theta[..., group], SIGMA), obs=y)


def guide(group, num_groups, y=None):
    """Hand-written, Pyro style: q(mu) q(theta | mu), with theta_j | mu ~ Normal(a_j + b_j mu, s_j)."""
    f64 = dict(dtype=torch.float64)
    mu_loc = ppl.param("mu_loc", torch.tensor(0.0, **f64))
    mu_scale = ppl.param("mu_scale", torch.tensor(0.1, **f64), constraint=constraints.positive)
    mu = ppl.sample("mu", dist.Normal(mu_loc, mu_scale))
    a = ppl.param("theta_offset", torch.zeros(num_groups, **f64))
    b = ppl.param("theta_slope", torch.zeros(num_groups, **f64))
    s = ppl.param("theta_scale", torch.full((num_groups,), 0.1, **f64), constraint=constraints.positive)
    with ppl.plate("groups", num_groups):
        ppl.sample("theta", dist.Normal(a + b * mu, s))


def exact_posterior(group, y, num_groups):
    """Posterior means and sds of mu and theta in closed form, by integrating theta out first: the group means
    ybar_j | mu ~ Normal(mu, tau^2 + sigma^2 / n_j) are independent."""
    n = torch.bincount(group, minlength=num_groups).to(y.dtype)
    ybar = torch.zeros(num_groups, dtype=y.dtype).index_add_(0, group, y) / n
    weight = 1 / (TAU**2 + SIGMA**2 / n)
    mu_precision = 1 / MU_SCALE**2 + weight.sum()
    mu_mean = (weight * ybar).sum() / mu_precision
    # theta_j | mu, y ~ Normal(c_j + b_j mu, 1 / p_j): the form of the hand-written guide.
    p = n / SIGMA**2 + 1 / TAU**2
    b = 1 / (TAU**2 * p)
    theta_mean = (n * ybar / SIGMA**2) / p + b * mu_mean
    theta_sd = (1 / p + b**2 / mu_precision).sqrt()
    return {"mu": (mu_mean, mu_precision.rsqrt()), "theta": (theta_mean, theta_sd)}


def plot_elbo(losses, path):
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 50  # a moving average: single-step estimates are noisy
    for name, curve in losses.items():
        smooth = torch.nn.functional.avg_pool1d(curve[None, None], width, stride=1)[0, 0]
        ax.plot(torch.arange(width, len(curve) + 1).numpy(), smooth.numpy(), label=name)
    best = min(float(curve[-200:].mean()) for curve in losses.values())
    ax.set_ylim(best - 5, best + 60)
    ax.set_xlabel("SVI step")
    ax.set_ylabel(f"-ELBO (moving average of {width})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_mu(draws, exact, path):
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in draws.items():
        ax.hist(values["mu"].numpy(), bins=60, density=True, histtype="step", lw=1.5, label=name)
    mean, sd = (float(v) for v in exact["mu"])
    grid = torch.linspace(mean - 4 * sd, mean + 4 * sd, 200, dtype=torch.float64)
    density = torch.exp(-0.5 * ((grid - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
    ax.plot(grid.numpy(), density.numpy(), "k--", label="exact")
    ax.set_xlabel("mu")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(out=f"tutorial_output/{NAME}", quick=False, seed=0):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    num_groups, num_steps = (100, 1500) if quick else (300, 2500)
    group, y = simulate(num_groups, seed)
    print(f"data: {len(y)} observations in {num_groups} groups; {num_groups + 1} latent variables")
    exact = exact_posterior(group, y, num_groups)

    guides = {
        "AutoNormal": AutoNormal(model),
        "AutoLowRankMVN": AutoLowRankMultivariateNormal(model),
        "AutoMVN": AutoMultivariateNormal(model),
        "hand-written": guide,
    }
    losses, draws, seconds = {}, {}, {}
    for name, q in guides.items():
        ppl.clear_param_store()  # each guide starts from its own initial parameters
        torch.manual_seed(seed)
        # One optimizer for all: Adam with gradient clipping, its learning rate decaying 20-fold over the run
        # so that the last iterates settle instead of jittering around the optimum.
        optim = ClippedAdam({"lr": 0.02, "lrd": 0.05 ** (1 / num_steps)})
        svi = SVI(model, q, optim, Trace_ELBO(num_particles=4))
        start = time.perf_counter()
        losses[name] = svi.run(num_steps, group, num_groups, y, progress_bar=not quick).losses
        seconds[name] = time.perf_counter() - start
        # Predictive from the fitted guide: joint draws of the latent sites (and of replicated data, y=None).
        draws[name] = Predictive(model, guide=q, num_samples=4000, return_sites=["mu", "theta", "y"])(
            group, num_groups)

    theta_mean, theta_sd = exact["theta"]
    print(f"{'guide':>14} {'-ELBO':>9} {'mu mean':>8} {'mu sd':>7} {'theta mean err':>15} {'theta sd ratio':>15} "
          f"{'time':>6}")
    mean, sd = (float(v) for v in exact["mu"])
    print(f"{'exact':>14} {'':>9} {mean:8.4f} {sd:7.4f}")
    for name, values in draws.items():
        error = float(((values["theta"].mean(0) - theta_mean) / theta_sd).abs().max())
        ratio = values["theta"].std(0) / theta_sd
        print(f"{name:>14} {float(losses[name][-100:].mean()):9.2f} {float(values['mu'].mean()):8.4f} "
              f"{float(values['mu'].std()):7.4f} {error:12.3f} sd {float(ratio.min()):7.2f}-{float(ratio.max()):.2f} "
              f"{seconds[name]:5.1f}s")
    print("(theta mean err: largest |mean - exact| in posterior sds; -ELBO: mean of the last 100 steps)")

    # Posterior predictive from the hand-written guide: how often does a replicated observation's 90% interval
    # hold the observed one?
    replicated = draws["hand-written"]["y"]
    low, high = torch.quantile(replicated, torch.tensor([0.05, 0.95], dtype=replicated.dtype), dim=0)
    coverage = float(((y >= low) & (y <= high)).double().mean())
    print(f"posterior predictive (hand-written guide): {100 * coverage:.1f}% of observations inside their 90% "
          "interval")

    files = {"elbo": out / "elbo.png", "mu_posterior": out / "mu_posterior.png"}
    plot_elbo(losses, files["elbo"])
    plot_mu(draws, exact, files["mu_posterior"])
    print(f"plots: {', '.join(str(path) for path in files.values())}")
    return {"group": group, "y": y, "num_groups": num_groups, "losses": losses, "draws": draws,
            "coverage": coverage, "files": files}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=f"tutorial_output/{NAME}", help="folder for the outputs")
    parser.add_argument("--quick", action="store_true", help="a reduced run (as the tests run it)")
    main(**vars(parser.parse_args()))
