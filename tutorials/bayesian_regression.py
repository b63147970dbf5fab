"""Bayesian linear regression, the whole workflow: priors, a prior predictive check, NUTS with several
vectorized chains, convergence diagnostics, a posterior predictive check and LOO with ArviZ.

The data are simulated (a few hundred rows, three standardized predictors, one of which has no effect), so the
posterior can be compared with the values that generated them. The prior is the conjugate Normal-inverse-gamma
one, so the exact posterior is also known in closed form (tests/test_tutorials.py checks the draws against it).
Everything is written as a Pyro/NumPyro user would write it: ``ppl`` is Pyro's language, ``inference`` holds
NumPyro's ``MCMC``/``NUTS`` and Pyro's ``Predictive``.

Run:  .venv/bin/python tutorials/bayesian_regression.py [--out DIR] [--quick]

--quick draws fewer iterations, without progress bars (the tests run it so). Plots go to DIR (default
./tutorial_output/bayesian_regression): posterior.png and predictive_checks.png.
"""

import argparse
from pathlib import Path

import arviz as az
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import ppl  # noqa: E402
import ppl.distributions as dist  # noqa: E402
from inference.mcmc import MCMC, NUTS  # noqa: E402
from inference.predictive import Predictive  # noqa: E402

NAME = Path(__file__).stem
NUM_ROWS = 300
TRUE_INTERCEPT = 1.0
TRUE_BETA = (0.8, -0.5, 0.0)
TRUE_SIGMA = 0.7
# Prior: sigma^2 ~ InverseGamma(A0, B0); intercept, beta | sigma ~ Normal(0, PRIOR_SCALE * sigma) (conjugate).
A0, B0, PRIOR_SCALE = 2.0, 1.0, 2.5


def simulate(num_rows, seed):
    """Standardized predictors x (num_rows, 3) and responses y (num_rows,), float64."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_rows, len(TRUE_BETA), generator=generator, dtype=torch.float64)
    noise = torch.randn(num_rows, generator=generator, dtype=torch.float64)
    y = TRUE_INTERCEPT + x @ torch.tensor(TRUE_BETA, dtype=torch.float64) + TRUE_SIGMA * noise
    return x, y


def model(x, y=None):
    sigma2 = ppl.sample("sigma2", dist.InverseGamma(x.new_tensor(A0), x.new_tensor(B0)))
    sigma = ppl.deterministic("sigma", sigma2.sqrt())
    intercept = ppl.sample("intercept", dist.Normal(x.new_tensor(0.0), PRIOR_SCALE * sigma))
    # sigma[..., None] and (x * beta).sum(-1) index from the right, so the model also runs once for a whole
    # batch of draws (Predictive and the pointwise log-likelihood vectorize over a leading dimension).
    beta = ppl.sample("beta", dist.Normal(x.new_zeros(x.shape[-1]), PRIOR_SCALE * sigma[..., None]).to_event(1))
    with ppl.plate("data", x.shape[0]):
        ppl.sample("y", dist.Normal(intercept + (x * beta).sum(-1), sigma), obs=y)


def plot_posterior(samples, path):
    """One histogram per coefficient and sigma, pooled over chains, with the true value marked."""
    columns = [("intercept", samples["intercept"], TRUE_INTERCEPT)]
    columns += [(f"beta[{j}]", samples["beta"][:, j], b) for j, b in enumerate(TRUE_BETA)]
    columns += [("sigma", samples["sigma"], TRUE_SIGMA)]
    fig, axes = plt.subplots(1, len(columns), figsize=(3 * len(columns), 2.8))
    for ax, (label, draws, truth) in zip(axes, columns):
        ax.hist(draws.numpy(), bins=40, density=True, color="C0", alpha=0.7)
        ax.axvline(truth, color="k", ls="--", label="true")
        ax.set_title(label)
        ax.set_yticks([])
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_predictive(y, prior_y, posterior_y, path):
    """Densities of 50 replicated data sets from the prior and from the posterior, against the observed y."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=False)
    for ax, replicas, title in ((axes[0], prior_y, "prior predictive"), (axes[1], posterior_y, "posterior predictive")):
        low, high = torch.quantile(replicas[:50], torch.tensor([0.01, 0.99], dtype=replicas.dtype)).tolist()
        low, high = min(low, float(y.min())), max(high, float(y.max()))
        bins = torch.linspace(low, high, 31).numpy()
        for replica in replicas[:50]:
            ax.hist(replica.numpy(), bins=bins, density=True, histtype="step", color="C0", alpha=0.15)
        ax.hist(y.numpy(), bins=bins, density=True, histtype="step", color="k", lw=2, label="observed")
        ax.set_title(title)
        ax.set_xlabel("y")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(out=f"tutorial_output/{NAME}", quick=False, seed=0):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    num_warmup, num_samples, num_chains = (300, 300, 4) if quick else (1000, 1000, 4)
    x, y = simulate(NUM_ROWS, seed)
    print(f"data: {x.shape[0]} rows, {x.shape[1]} predictors; y sd {float(y.std()):.2f}")

    # Prior predictive check: do the priors put the data on a plausible scale? (Predictive without a guide or
    # posterior draws samples the prior; y=None lets the observed site be drawn.)
    prior = Predictive(model, num_samples=500)(x)
    prior_y = prior["y"]
    lo, hi = torch.quantile(prior_y.flatten(), torch.tensor([0.05, 0.95], dtype=prior_y.dtype)).tolist()
    print(f"prior predictive: 90% of simulated y in [{lo:.1f}, {hi:.1f}]; observed y in "
          f"[{float(y.min()):.1f}, {float(y.max()):.1f}]")

    # NUTS, NumPyro's API: the chains advance together as one batched tensor, each with its own step size and
    # mass matrix, adapted during warm-up as Stan does.
    mcmc = MCMC(NUTS(model), num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method="vectorized", seed=seed, progress_bar=not quick)
    mcmc.run(x, y)
    # The summary table: mean, sd, 90% interval, MCSE, bulk/tail ESS and rank-normalized R-hat per parameter.
    stats = mcmc.summary()
    samples = mcmc.get_samples()
    divergences = int(mcmc.get_extra_fields()["diverging"].sum())
    max_rhat = max(float(s["r_hat"].max()) for s in stats.values())
    min_ess = min(float(s["ess_bulk"].min()) for s in stats.values())
    print(f"{num_chains} chains x {num_samples} draws: max R-hat {max_rhat:.3f}, min bulk ESS {min_ess:.0f}, "
          f"{divergences} divergences")
    means = {"intercept": float(samples["intercept"].mean()), "beta": samples["beta"].mean(0).tolist(),
             "sigma": float(samples["sigma"].mean())}
    print("posterior means (true): intercept {:.3f} ({}), beta {} ({}), sigma {:.3f} ({})".format(
        means["intercept"], TRUE_INTERCEPT, [round(b, 3) for b in means["beta"]], list(TRUE_BETA), means["sigma"],
        TRUE_SIGMA))

    # Posterior predictive check: replicate the data set from each posterior draw (y=None: y is drawn).
    posterior_y = Predictive(model, posterior_samples=samples)(x)["y"]
    low, high = torch.quantile(posterior_y, torch.tensor([0.05, 0.95], dtype=posterior_y.dtype), dim=0)
    coverage = float(((y >= low) & (y <= high)).double().mean())
    # A discrepancy statistic: how often is a replica's sd above the observed sd? (near 0 or 1: misfit)
    p_sd = float((posterior_y.std(dim=1) > y.std()).double().mean())
    print(f"posterior predictive: {100 * coverage:.1f}% of observations inside their 90% interval; "
          f"P(sd(y_rep) > sd(y)) = {p_sd:.2f}")

    # LOO: to_arviz() carries the pointwise log-likelihood of y, which arviz.loo uses (PSIS-LOO).
    idata = mcmc.to_arviz()
    loo = az.loo(idata, pointwise=True)
    print(f"PSIS-LOO: elpd_loo {loo.elpd_loo:.1f} (se {loo.se:.1f}), p_loo {loo.p_loo:.1f}, "
          f"max Pareto k {float(loo.pareto_k.max()):.2f}")

    files = {"posterior": out / "posterior.png", "predictive_checks": out / "predictive_checks.png"}
    plot_posterior(samples, files["posterior"])
    plot_predictive(y, prior_y, posterior_y, files["predictive_checks"])
    print(f"plots: {', '.join(str(path) for path in files.values())}")
    return {"x": x, "y": y, "samples": mcmc.get_samples(group_by_chain=True), "summary": stats,
            "divergences": divergences, "num_draws": num_chains * num_samples, "prior_predictive": prior,
            "posterior_predictive": posterior_y, "coverage": coverage, "idata": idata, "loo": loo, "files": files}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=f"tutorial_output/{NAME}", help="folder for the outputs")
    parser.add_argument("--quick", action="store_true", help="a reduced run (as the tests run it)")
    main(**vars(parser.parse_args()))
