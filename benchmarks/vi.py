"""SVI speed and quality, diffsci vs Pyro vs NumPyro, side by side in one run.

Bayesian logistic regression, N = 5000 observations, D = 25 coefficients (synthetic data, fixed seed), an
AutoNormal guide (initialized at zero in unconstrained space, init_scale 0.1), the ELBO with one particle,
Adam(lr=0.01), float64 on every side. diffsci and Pyro each run Trace_ELBO (eager) and JitTrace_ELBO (compiled
after the first step; the compilation is inside the timed steps), taking their steps in alternating chunks so
that load on the machine affects all alike (torch._dynamo, which torch.optim imports on first use, is
imported before the clock starts, so that the first tool does not pay it for all); NumPyro runs its ``svi.run`` (jit-compiled) once, JAX on CPU,
compilation included. Each final guide is then scored with the same estimate of the ELBO: 4000 common draws of
the standard normal through each guide's N(loc, scale), plus the exact entropy.

    .venv/bin/python benchmarks/vi.py [--steps 1000] [--chunks 10] [--threads 1]

``--threads`` sets torch's and XLA's intra-op threads (default 1: on a shared machine extra threads mostly wait).
"""

import argparse
import math
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

N, D, LR, SEED = 5000, 25, 0.01, 0


def make_data():
    import torch

    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(N, D, generator=generator, dtype=torch.float64)
    true_beta = torch.randn(D, generator=generator, dtype=torch.float64)
    y = torch.bernoulli(torch.sigmoid(x @ true_beta), generator=generator)
    return x, y


def diffsci_fitter(x, y, compiled=False):
    import torch

    import ppl
    import ppl.distributions as dist
    from inference.autoguide import AutoNormal
    from inference.vi import SVI, Adam, JitTrace_ELBO, Trace_ELBO

    def model(x, y):
        beta = ppl.sample("beta", dist.Normal(x.new_zeros(()), 1.0).expand([D]).to_event(1))
        with ppl.plate("data", N):
            ppl.sample("obs", dist.Bernoulli(logits=x @ beta), obs=y)

    name = "compiled" if compiled else "eager"
    guide = AutoNormal(model, init_loc_fn=ppl.init_to_uniform(radius=0.0), init_scale=0.1, name=name)
    svi = SVI(model, guide, Adam({"lr": LR}), JitTrace_ELBO() if compiled else Trace_ELBO())

    def steps(count):
        return [svi.step(x, y) for _ in range(count)]

    def final():
        store = ppl.get_param_store()
        return store[f"{name}.locs.beta"].detach(), store[f"{name}.scales.beta"].detach()

    torch.manual_seed(SEED)
    return steps, final


def pyro_fitter(x, y, compiled=False):
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal, init_to_feasible

    def model(x, y):
        beta = pyro.sample("beta", dist.Normal(x.new_zeros(()), 1.0).expand([D]).to_event(1))
        with pyro.plate("data", N):
            pyro.sample("obs", dist.Bernoulli(logits=x @ beta), obs=y)

    guide = AutoNormal(model, init_loc_fn=init_to_feasible, init_scale=0.1)
    guide._pyro_name = "compiled" if compiled else "eager"  # two guides, two sets of names in the param store
    svi = SVI(model, guide, pyro.optim.Adam({"lr": LR}), JitTrace_ELBO() if compiled else Trace_ELBO())

    def steps(count):
        return [svi.step(x, y) for _ in range(count)]

    def final():
        return guide.locs.beta.detach(), guide.scales.beta.detach()

    torch.manual_seed(SEED)
    return steps, final


def run_numpyro(x, y, num_steps):
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal
    from numpyro.infer.initialization import init_to_feasible

    jax.config.update("jax_enable_x64", True)
    x, y = jnp.asarray(x.numpy()), jnp.asarray(y.numpy())

    def model(x, y):
        beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
        with numpyro.plate("data", N):
            numpyro.sample("obs", dist.Bernoulli(logits=x @ beta), obs=y)

    guide = AutoNormal(model, init_loc_fn=init_to_feasible, init_scale=0.1)
    svi = SVI(model, guide, numpyro.optim.Adam(LR), Trace_ELBO())
    start = time.perf_counter()
    result = svi.run(jax.random.PRNGKey(SEED), num_steps, x, y, progress_bar=False)
    jax.block_until_ready(result.losses)
    seconds = time.perf_counter() - start
    params = result.params
    return seconds, [float(v) for v in result.losses], (params["beta_auto_loc"], params["beta_auto_scale"])


def common_elbo(x, y, loc, scale, num_draws=4000):
    """E_q[log p(y | beta) + log p(beta)] + H[q] for q = N(loc, diag(scale^2)), the same draws for every guide."""
    import torch

    loc = torch.as_tensor(loc, dtype=torch.float64)
    scale = torch.as_tensor(scale, dtype=torch.float64)
    eps = torch.randn(num_draws, D, generator=torch.Generator().manual_seed(123), dtype=torch.float64)
    beta = loc + scale * eps
    logits = beta @ x.T
    log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none")
    log_prior = -0.5 * (beta**2).sum(-1) - 0.5 * D * math.log(2 * math.pi)
    entropy = (scale.log() + 0.5 * (1 + math.log(2 * math.pi))).sum()
    return float((log_lik.sum(-1) + log_prior).mean() + entropy)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--chunks", type=int, default=10, help="alternating chunks of diffsci and Pyro steps")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of torch and XLA")
    args = parser.parse_args()
    os.environ["XLA_FLAGS"] = (
        f"--xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'} "
        f"intra_op_parallelism_threads={args.threads}"
    )

    import torch
    import torch._dynamo  # noqa: F401 - imported by torch.optim on first use (about a second): not a per-tool cost

    torch.set_num_threads(args.threads)

    x, y = make_data()
    fitters = {
        "diffsci Trace_ELBO": diffsci_fitter(x, y),
        "diffsci JitTrace_ELBO": diffsci_fitter(x, y, compiled=True),
        "Pyro Trace_ELBO": pyro_fitter(x, y),
        "Pyro JitTrace_ELBO": pyro_fitter(x, y, compiled=True),
    }
    seconds = {name: 0.0 for name in fitters}
    losses = {name: [] for name in fitters}
    sizes = [args.steps // args.chunks + (index < args.steps % args.chunks) for index in range(args.chunks)]
    for size in sizes:
        for name, (steps, _) in fitters.items():
            start = time.perf_counter()
            losses[name] += steps(size)
            seconds[name] += time.perf_counter() - start
    finals = {name: final() for name, (_, final) in fitters.items()}

    seconds["NumPyro"], losses["NumPyro"], finals["NumPyro"] = run_numpyro(x, y, args.steps)
    seconds = {name: seconds[name] for name in fitters} | {"NumPyro": seconds["NumPyro"]}

    print(f"Bayesian logistic regression N={N} D={D}, AutoNormal, Adam({LR}), {args.steps} steps, float64, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    print(f"{'tool':<24}{'steps/s':>10}{'final ELBO':>14}{'mean loss, last 50':>20}")
    rates = {}
    for name in seconds:
        rates[name] = args.steps / seconds[name]
        elbo = common_elbo(x, y, *finals[name])
        tail = sum(losses[name][-50:]) / len(losses[name][-50:])
        print(f"{name:<24}{rates[name]:>10.0f}{elbo:>14.2f}{tail:>20.2f}")
    for ours, theirs in (("diffsci JitTrace_ELBO", "Pyro Trace_ELBO"), ("diffsci Trace_ELBO", "Pyro Trace_ELBO"),
                         ("diffsci JitTrace_ELBO", "Pyro JitTrace_ELBO"), ("diffsci JitTrace_ELBO", "NumPyro")):
        print(f"{ours} / {theirs}: {rates[ours] / rates[theirs]:.2f}x steps/s")


if __name__ == "__main__":
    main()
