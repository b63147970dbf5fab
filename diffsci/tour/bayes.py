"""Tour stage 1: eight schools (non-centred) by NUTS with 4 vectorized chains, then by SVI with an autoguide."""

from diffsci.tour import plots
from diffsci.tour.report import Section, markdown_table, text_table

TITLE = "Bayesian modelling: eight schools by NUTS and by SVI"
Y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
SIGMA = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]


def eight_schools(sigma, y=None):
    """Rubin's eight schools: treatment effects theta_j ~ N(mu, tau), observed with known sd sigma_j."""
    import ppl
    import ppl.distributions as dist

    mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
    tau = ppl.sample("tau", dist.HalfCauchy(5.0))
    with ppl.plate("schools", len(sigma)):
        theta = ppl.sample("theta", dist.Normal(mu, tau))
        ppl.sample("obs", dist.Normal(theta, sigma), obs=y)


def run(ctx):
    import torch

    from inference import diagnostics
    from inference.autoguide import AutoNormal
    from inference.mcmc import MCMC, NUTS
    from inference.predictive import Predictive
    from inference.vi import SVI, Adam, Trace_ELBO
    from ppl import clear_param_store, handlers
    from ppl.reparam import LocScaleReparam

    as_tensor = lambda values: torch.tensor(values, dtype=torch.float64, device=ctx.device)  # noqa: E731
    sigma, y = as_tensor(SIGMA), as_tensor(Y)
    model = handlers.reparam(eight_schools, config={"theta": LocScaleReparam(centered=0.0)})
    num_warmup, num_samples = (300, 300) if ctx.quick else (1000, 1000)

    ctx.echo(f"NUTS: 4 chains advanced together as one batch, {num_warmup} warm-up + {num_samples} draws each")
    mcmc = MCMC(NUTS(model), num_warmup=num_warmup, num_samples=num_samples, num_chains=4, seed=ctx.seed)
    mcmc.run(sigma, y)
    samples = mcmc.get_samples(group_by_chain=True)
    latents = {"mu": samples["mu"], "tau": samples["tau"], "theta": samples["theta"]}
    stats = diagnostics.summary(latents)
    divergences = int(mcmc.get_extra_fields()["diverging"].sum())
    header = ["", "mean", "sd", "hdi_3%", "hdi_97%", "ess_bulk", "ess_tail", "r_hat"]
    rows, flat = [], {}
    for name, draws in latents.items():
        interval = diagnostics.hdi(draws, prob=0.94)
        for index in range(draws[0, 0].numel()):
            label = name if draws.dim() == 2 else f"{name}[{index}]"
            scalar = draws if draws.dim() == 2 else draws[..., index]
            flat[label] = scalar.detach().cpu().numpy()
            at = () if draws.dim() == 2 else (index,)
            rows.append([label] + [f"{float(stats[name][key][at]):.2f}" for key in ("mean", "sd")]
                        + [f"{float(interval[at][k]):.2f}" for k in (0, 1)]
                        + [f"{float(stats[name][key][at]):.0f}" for key in ("ess_bulk", "ess_tail")]
                        + [f"{float(stats[name]['r_hat'][at]):.3f}"])
    ctx.echo(text_table(header, rows))
    ctx.echo(f"divergences: {divergences}")
    trace = plots.trace_and_rank({k: flat[k] for k in ("mu", "tau", "theta[0]")}, ctx.plot_path("bayes_trace.png"))

    num_steps = 600 if ctx.quick else 2000
    ctx.echo(f"SVI: AutoNormal guide, Adam(lr=0.02), {num_steps} steps of Trace_ELBO(num_particles=8)")
    clear_param_store()
    torch.manual_seed(ctx.seed)
    guide = AutoNormal(model)
    svi = SVI(model, guide, Adam({"lr": 0.02}), Trace_ELBO(num_particles=8))
    _, losses = svi.run(num_steps, sigma, y)
    vi_draws = Predictive(model, guide=guide, num_samples=4000, return_sites=["mu", "tau", "theta"])(sigma)
    losses = losses.cpu().numpy()
    elbo = plots.curves({"ELBO": (range(1, len(losses) + 1), -losses)}, ctx.plot_path("bayes_elbo.png"),
                        "step", "ELBO", "SVI on eight schools")
    nuts_vs_vi = {"NUTS": {k: flat[k].reshape(-1) for k in ("mu", "tau", "theta[0]")},
                  "SVI (AutoNormal)": {"mu": vi_draws["mu"].cpu().numpy(), "tau": vi_draws["tau"].cpu().numpy(),
                                       "theta[0]": vi_draws["theta"][:, 0].cpu().numpy()}}
    posterior = plots.posteriors(nuts_vs_vi, ctx.plot_path("bayes_posteriors.png"))
    compare = [[label] + [f"{nuts_vs_vi[m][label].mean():.2f} ± {nuts_vs_vi[m][label].std():.2f}"
                          for m in nuts_vs_vi] for label in ("mu", "tau", "theta[0]")]
    ctx.echo(text_table(["", "NUTS mean ± sd", "SVI mean ± sd"], compare))
    ctx.echo("The model's log density is an ordinary torch function: a DFT or MM energy can sit inside it "
             "(see tutorials/).")

    results = {"mu_mean": float(flat["mu"].mean()), "tau_mean": float(flat["tau"].mean()),
               "mu_sd": float(flat["mu"].std()), "tau_sd": float(flat["tau"].std()),
               "mu_mcse": float(stats["mu"]["mcse_mean"]), "tau_mcse": float(stats["tau"]["mcse_mean"]),
               "r_hat_max": max(float(stats[k]["r_hat"].max()) for k in latents), "divergences": divergences,
               "num_draws": int(flat["mu"].size), "svi_mu_mean": float(nuts_vs_vi["SVI (AutoNormal)"]["mu"].mean()),
               "final_elbo": float(-losses[-50:].mean())}
    markdown = "\n\n".join([
        f"## {TITLE}",
        f"Non-centred eight schools, NUTS with Stan's warm-up, 4 chains advanced together as one batched tensor "
        f"({num_warmup} warm-up + {num_samples} draws each); divergences: {divergences}.",
        markdown_table(header, rows),
        f"![trace and rank plots]({trace})",
        f"The same model by SVI with an `AutoNormal` guide ({num_steps} steps):",
        markdown_table(["", "NUTS mean ± sd", "SVI mean ± sd"], compare),
        f"![ELBO]({elbo}) ![posteriors]({posterior})",
    ])
    return Section(markdown, [trace, elbo, posterior], results)
