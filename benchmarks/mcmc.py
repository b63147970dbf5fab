"""NUTS effective samples per second: diffsci vs NumPyro vs Pyro (JIT off and on), side by side in one run.

The same three models in each tool: eight schools (non-centred), Bayesian logistic regression (N = 5000,
D = 25, synthetic data with a fixed seed) and a hierarchical normal model with 100 latent dimensions. Every
tool runs NUTS with its defaults (target acceptance 0.8, max tree depth 10, diagonal mass matrix, Stan's
warm-up), float64 everywhere, 500 warm-up iterations and 500 draws, 1 chain and 4 chains (diffsci and NumPyro:
vectorized; Pyro: sequential, only with --pyro-chains). Each (tool, model, chains) runs in a fresh worker
process with every library already imported, so the clock covers what a user waits for at the first run:
building the kernel, tracing / JIT compilation (NumPyro's and Pyro's included), warm-up and sampling.

ESS is the minimum bulk ESS over all scalar latent parameters (constrained values, as each tool returns them),
computed for every tool with ``inference.diagnostics.ess_bulk`` (rank-normalized, Vehtari et al. 2021). Besides
wall time the table gives the worker's CPU time (all its threads), which a machine shared with other jobs
disturbs less, and the leapfrog steps of the sampling phase (diffsci and NumPyro), which show whether two tools'
trajectories are alike; ratios are of ESS per wall second. One run's min ESS is noisy: ``--seeds N`` runs every
case with seeds 0..N-1 and reports the means (ESS/s = mean ESS / mean wall time). Intra-op threads: ``--threads``
(default 1, the right setting for models this small) for torch and XLA alike.

    .venv/bin/python benchmarks/mcmc.py [--quick] [--skip-pyro] [--pyro-chains] [--seeds N] [--threads N]
                                        [--device cuda] [--models logistic,eight]
"""

import argparse
import os
import time

import fresh_process
import numpy as np

NUM_WARMUP = 500
NUM_SAMPLES = 500
SEED = 0  # the data's seed (and the first run's)

EIGHT_Y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
EIGHT_SIGMA = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]


def _logistic_data():
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(5000, 25))
    beta = rng.normal(scale=0.5, size=25)
    y = (rng.uniform(size=5000) < 1 / (1 + np.exp(-x @ beta))).astype(np.float64)
    return x, y


def _hierarchical_data():
    """97 groups of 10 observations: with mu, tau, sigma and 97 group offsets, 100 latent dimensions."""
    rng = np.random.default_rng(SEED + 1)
    groups = 97
    group = np.repeat(np.arange(groups), 10)
    theta = 1.0 + 0.7 * rng.normal(size=groups)
    y = theta[group] + 1.5 * rng.normal(size=group.size)
    return group, y, groups


# -- the models, once per tool --------------------------------------------------------------------------------


def _models_diffsci(device):
    import torch

    import ppl
    import ppl.distributions as dist

    def t(x):
        return torch.as_tensor(np.asarray(x), dtype=torch.float64, device=device)

    zero, one = t(0.0), t(1.0)

    def eight_schools(sigma, y):
        mu = ppl.sample("mu", dist.Normal(zero, 5.0))
        tau = ppl.sample("tau", dist.HalfCauchy(5 * one))
        with ppl.plate("J", sigma.shape[0]):
            theta_tilde = ppl.sample("theta_tilde", dist.Normal(zero, 1.0))
            ppl.sample("obs", dist.Normal(mu + tau * theta_tilde, sigma), obs=y)

    def logistic(x, y):
        beta = ppl.sample("beta", dist.Normal(zero, 1.0).expand([x.shape[1]]).to_event(1))
        ppl.sample("y", dist.Bernoulli(logits=x @ beta).to_event(1), obs=y)

    def hierarchical(group, y, groups):
        mu = ppl.sample("mu", dist.Normal(zero, 5.0))
        tau = ppl.sample("tau", dist.HalfNormal(5 * one))
        sigma = ppl.sample("sigma", dist.HalfNormal(5 * one))
        with ppl.plate("groups", groups):
            theta_tilde = ppl.sample("theta_tilde", dist.Normal(zero, 1.0))
        theta = mu + tau * theta_tilde
        with ppl.plate("data", y.shape[0]):
            ppl.sample("y", dist.Normal(theta[group], sigma), obs=y)

    x, y = _logistic_data()
    group, yh, groups = _hierarchical_data()
    return {
        "eight schools": (eight_schools, (t(EIGHT_SIGMA), t(EIGHT_Y))),
        "logistic regression": (logistic, (t(x), t(y))),
        "hierarchical (D=100)": (hierarchical, (torch.as_tensor(group, device=device), t(yh), groups)),
    }


def _models_numpyro():
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def eight_schools(sigma, y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        with numpyro.plate("J", sigma.shape[0]):
            theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
            numpyro.sample("obs", dist.Normal(mu + tau * theta_tilde, sigma), obs=y)

    def logistic(x, y):
        beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
        numpyro.sample("y", dist.Bernoulli(logits=x @ beta).to_event(1), obs=y)

    def hierarchical(group, y, groups):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfNormal(5.0))
        sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
        with numpyro.plate("groups", groups):
            theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = mu + tau * theta_tilde
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", dist.Normal(theta[group], sigma), obs=y)

    x, y = _logistic_data()
    group, yh, groups = _hierarchical_data()
    return {
        "eight schools": (eight_schools, (jnp.asarray(EIGHT_SIGMA), jnp.asarray(EIGHT_Y))),
        "logistic regression": (logistic, (jnp.asarray(x), jnp.asarray(y))),
        "hierarchical (D=100)": (hierarchical, (jnp.asarray(group), jnp.asarray(yh), groups)),
    }


def _models_pyro():
    import pyro
    import pyro.distributions as dist
    import torch

    def t(x):
        return torch.as_tensor(np.asarray(x), dtype=torch.float64)

    zero, one = t(0.0), t(1.0)

    def eight_schools(sigma, y):
        mu = pyro.sample("mu", dist.Normal(zero, 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(5 * one))
        with pyro.plate("J", sigma.shape[0]):
            theta_tilde = pyro.sample("theta_tilde", dist.Normal(zero, 1.0))
            pyro.sample("obs", dist.Normal(mu + tau * theta_tilde, sigma), obs=y)

    def logistic(x, y):
        beta = pyro.sample("beta", dist.Normal(zero, 1.0).expand([x.shape[1]]).to_event(1))
        pyro.sample("y", dist.Bernoulli(logits=x @ beta).to_event(1), obs=y)

    def hierarchical(group, y, groups):
        mu = pyro.sample("mu", dist.Normal(zero, 5.0))
        tau = pyro.sample("tau", dist.HalfNormal(5 * one))
        sigma = pyro.sample("sigma", dist.HalfNormal(5 * one))
        with pyro.plate("groups", groups):
            theta_tilde = pyro.sample("theta_tilde", dist.Normal(zero, 1.0))
        theta = mu + tau * theta_tilde
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal(theta[group], sigma), obs=y)

    x, y = _logistic_data()
    group, yh, groups = _hierarchical_data()
    return {
        "eight schools": (eight_schools, (t(EIGHT_SIGMA), t(EIGHT_Y))),
        "logistic regression": (logistic, (t(x), t(y))),
        "hierarchical (D=100)": (hierarchical, (torch.as_tensor(group), t(yh), groups)),
    }


# -- one timed run per worker ---------------------------------------------------------------------------------


def _run_diffsci(model, args, chains, num_warmup, num_samples, device, seed):
    from inference.mcmc import MCMC, NUTS

    mcmc = MCMC(NUTS(model), num_warmup=num_warmup, num_samples=num_samples, num_chains=chains, seed=seed,
                progress_bar=False)
    mcmc.run(*args)
    return mcmc.get_samples(group_by_chain=True), int(mcmc.get_extra_fields()["num_steps"].sum())


def _run_numpyro(model, args, chains, num_warmup, num_samples, device, seed):
    import jax
    import numpyro

    mcmc = numpyro.infer.MCMC(numpyro.infer.NUTS(model), num_warmup=num_warmup, num_samples=num_samples,
                              num_chains=chains, chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), *args, extra_fields=("num_steps",))
    samples = mcmc.get_samples(group_by_chain=True)
    jax.block_until_ready(samples)
    return samples, int(np.asarray(mcmc.get_extra_fields()["num_steps"]).sum())


def _run_pyro(model, args, chains, num_warmup, num_samples, device, seed, jit):
    import pyro

    pyro.set_rng_seed(seed)
    kernel = pyro.infer.NUTS(model, jit_compile=jit, ignore_jit_warnings=True)
    mcmc = pyro.infer.MCMC(kernel, num_samples=num_samples, warmup_steps=num_warmup, num_chains=1,
                           disable_progbar=True)
    draws = []
    for _ in range(chains):  # sequential chains in one process (Pyro's multi-chain runs spawn processes)
        mcmc.run(*args)
        draws.append(mcmc.get_samples(group_by_chain=True))
    return {name: np.concatenate([np.asarray(d[name]) for d in draws]) for name in draws[0]}, None


TOOLS = {
    "diffsci": lambda *a: _run_diffsci(*a),
    "NumPyro": lambda *a: _run_numpyro(*a),
    "Pyro": lambda *a: _run_pyro(*a, jit=False),
    "Pyro (JIT)": lambda *a: _run_pyro(*a, jit=True),
}


def _worker(tool, model_name, chains, num_warmup, num_samples, device, threads, seed, queue):
    os.environ["XLA_FLAGS"] = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
    import jax
    import pyro  # noqa: F401 - every library imported before the clock starts, in every worker
    import torch

    import ppl  # noqa: F401
    from inference import diagnostics

    jax.config.update("jax_enable_x64", True)
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(threads)
    if tool == "NumPyro":
        models = _models_numpyro()
    elif tool.startswith("Pyro"):
        models = _models_pyro()
    else:
        models = _models_diffsci(device)
    model, args = models[model_name]
    start, start_cpu = time.perf_counter(), time.process_time()
    samples, steps = TOOLS[tool](model, args, chains, num_warmup, num_samples, device, seed)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    ess = min(float(diagnostics.ess_bulk(np.asarray(v, dtype=np.float64)).min()) for v in samples.values())
    queue.put((wall, cpu, ess, steps))


def _measure_seeds(tool, model_name, chains, num_warmup, num_samples, device, threads, seeds):
    """Means over seeds of wall time, CPU time, min ESS and leapfrog steps (None where a tool has none)."""
    runs = [fresh_process.run(_worker, tool, model_name, chains, num_warmup, num_samples, device, threads, seed)
            for seed in seeds]
    wall, cpu, ess = (float(np.mean([run[k] for run in runs])) for k in range(3))
    steps = None if runs[0][3] is None else float(np.mean([run[3] for run in runs]))
    return wall, cpu, ess, steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 warm-up + 100 draws, eight schools only")
    parser.add_argument("--skip-pyro", action="store_true", help="leave Pyro out (minutes per model)")
    parser.add_argument("--pyro-chains", action="store_true", help="also run Pyro's 4 chains (sequentially)")
    parser.add_argument("--seeds", type=int, default=1, help="runs per case (seeds 0..N-1); the table shows means")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of torch and XLA")
    parser.add_argument("--device", default="cpu", help="diffsci's device (the others run on CPU)")
    parser.add_argument("--models", default=None,
                        help="comma-separated words picking models by name, e.g. 'logistic' (default: all three)")
    opts = parser.parse_args()
    num_warmup, num_samples = (100, 100) if opts.quick else (NUM_WARMUP, NUM_SAMPLES)
    model_names = ["eight schools"] if opts.quick else ["eight schools", "logistic regression", "hierarchical (D=100)"]
    if opts.models:
        words = opts.models.split(",")
        model_names = [name for name in model_names if any(word in name for word in words)]
    tools = ["diffsci", "NumPyro"] + ([] if opts.skip_pyro else ["Pyro", "Pyro (JIT)"])

    seeds = range(SEED, SEED + opts.seeds)
    print(f"NUTS, {num_warmup} warm-up + {num_samples} draws, float64, {opts.threads} intra-op thread(s); "
          f"diffsci on {opts.device}; " + (f"means over seeds 0-{opts.seeds - 1}" if opts.seeds > 1 else "seed 0"))
    header = (f"{'model':22s} {'tool':11s} {'chains':>6s} {'wall s':>8s} {'cpu s':>8s} {'steps':>7s} {'min ESS':>8s} "
              f"{'ESS/s':>8s} {'ESS/cpu s':>9s} {'diffsci x':>9s}")
    print(header)
    print("-" * len(header))
    results = {}
    for model_name in model_names:
        for chains in (1, 4):
            for tool in tools:
                if tool.startswith("Pyro") and chains > 1 and not opts.pyro_chains:
                    continue
                wall, cpu, ess, steps = _measure_seeds(tool, model_name, chains, num_warmup, num_samples,
                                                       opts.device, opts.threads, seeds)
                results[model_name, tool, chains] = ess / wall
                ratio = results[model_name, "diffsci", chains] / results[model_name, tool, chains]
                steps = "-" if steps is None else f"{steps:.0f}"
                print(f"{model_name:22s} {tool:11s} {chains:6d} {wall:8.2f} {cpu:8.2f} {steps:>7s} {ess:8.0f} "
                      f"{ess / wall:8.1f} {ess / cpu:9.1f} {ratio:9.2f}", flush=True)
        speedup = results[model_name, "diffsci", 4] / results[model_name, "diffsci", 1]
        print(f"{model_name:22s} diffsci 4 vectorized chains / 1 chain, ESS/s: {speedup:.2f}x", flush=True)


if __name__ == "__main__":
    main()
