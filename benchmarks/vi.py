"""SVI speed and quality, diffsci vs Pyro vs NumPyro, side by side in one run.

Bayesian logistic regression, N = 5000 observations, D = 25 coefficients (synthetic data, fixed seed), an
AutoNormal guide (initialized at zero in unconstrained space, init_scale 0.1), the ELBO with one particle,
Adam(lr=0.01), float64 on every side, 1000 steps. diffsci and Pyro each run Trace_ELBO (eager) and
JitTrace_ELBO (compiled after the first step); NumPyro runs its ``svi.run`` (jit-compiled), JAX on CPU.

Each tool runs in a fresh worker process with its libraries already imported, so the clock covers what a user
waits for in a new session: building the guide and SVI, every first-use cost (compilation, tracing, lazy
imports inside the libraries: e.g. torch.optim imports TorchDynamo when its first optimizer is built, about a
second) and the 1000 steps. The table gives steps/s over all 1000 steps and the steady rate of steps 101-1000
(NumPyro's loop is one compiled call: no steady rate). Each tool runs ``--repeats`` times (default 3), the
tools' workers alternating so that load on the machine falls on all alike, run r with seed r; the table gives
medians. Quality: the guides of the last 50 steps (every fifth; NumPyro: its final guide) are scored with the
same estimate of the ELBO, 4000 common draws of the standard normal through each guide's N(loc, scale) plus the
exact entropy, and averaged (Adam's last iterates jitter by a few tenths of a nat); the table gives the mean and
standard deviation of that over the runs.

    .venv/bin/python benchmarks/vi.py [--steps 1000] [--repeats 3] [--threads 1]

``--threads`` sets torch's and XLA's intra-op threads (default 1: on a shared machine extra threads mostly wait).
"""

import argparse
import math
import os
import statistics
import time

import fresh_process
import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")

N, D, LR, SEED = 5000, 25, 0.01, 0


def make_data():
    import torch

    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(N, D, generator=generator, dtype=torch.float64)
    true_beta = torch.randn(D, generator=generator, dtype=torch.float64)
    y = torch.bernoulli(torch.sigmoid(x @ true_beta), generator=generator)
    return x, y


def diffsci_fitter(x, y, compiled=False, seed=SEED):
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

    torch.manual_seed(seed)
    return steps, final


def pyro_fitter(x, y, compiled=False, seed=SEED):
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

    torch.manual_seed(seed)
    return steps, final


def run_numpyro(x, y, num_steps, seed=SEED):
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
    result = svi.run(jax.random.PRNGKey(seed), num_steps, x, y, progress_bar=False)
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


TOOLS = ["diffsci Trace_ELBO", "diffsci JitTrace_ELBO", "Pyro Trace_ELBO", "Pyro JitTrace_ELBO", "NumPyro"]
STEADY_FROM = 100  # steps before the steady rate is measured
LATE_STEPS = 50  # the final ELBO is averaged over the guides of the last steps (Adam's jitter)


def _worker(tool, num_steps, threads, seed, queue):
    """One timed fit in this fresh process, with the draws of ``seed`` (the data are the same for every seed):
    (seconds for all steps, seconds for the steps after STEADY_FROM or None, losses, the late guides' (loc,
    scale))."""
    os.environ["XLA_FLAGS"] = (
        f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} intra_op_parallelism_threads={threads}"
    )
    import torch

    torch.set_num_threads(threads)
    # the tool's libraries, imported before the clock starts (first uses inside them are the tool's to pay)
    if tool.startswith("diffsci"):
        import inference.autoguide  # noqa: F401
        import inference.vi  # noqa: F401
    elif tool.startswith("Pyro"):
        import pyro.infer.autoguide  # noqa: F401
    else:
        import numpyro.infer.autoguide  # noqa: F401
    x, y = make_data()
    if tool == "NumPyro":
        seconds, losses, final = run_numpyro(x, y, num_steps, seed)
        steady, late = None, [final]
    else:
        fitter = diffsci_fitter if tool.startswith("diffsci") else pyro_fitter
        start = time.perf_counter()
        steps, final = fitter(x, y, compiled="Jit" in tool, seed=seed)
        losses = steps(STEADY_FROM)
        middle = time.perf_counter()
        losses += steps(num_steps - STEADY_FROM - LATE_STEPS)
        late = []  # the guide at the last LATE_STEPS // 5 + 1 steps of 5 (copies of two vectors: microseconds)
        for _ in range(LATE_STEPS // 5):
            late.append([value.clone() for value in final()])
            losses += steps(5)
        late.append(final())
        end = time.perf_counter()
        seconds, steady = end - start, end - middle
    guides = [tuple(np.asarray(value, dtype=np.float64) for value in guide) for guide in late]
    queue.put((seconds, steady, losses, guides))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="fresh-process runs per tool; the table gives medians")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of torch and XLA")
    args = parser.parse_args()
    if args.steps <= STEADY_FROM:
        parser.error(f"--steps must exceed {STEADY_FROM}")

    runs = {tool: [] for tool in TOOLS}
    for repeat in range(args.repeats):
        for tool in TOOLS:
            runs[tool].append(fresh_process.run(_worker, tool, args.steps, args.threads, SEED + repeat))

    import torch

    x, y = make_data()
    steady_steps = args.steps - STEADY_FROM
    print(f"Bayesian logistic regression N={N} D={D}, AutoNormal, Adam({LR}), {args.steps} steps, float64, "
          f"{args.threads} thread(s), medians of {args.repeats} fresh-process runs per tool "
          f"(torch {torch.__version__})")
    print(f"{'tool':<24}{'steps/s':>10}{'steady':>10}{'final ELBO':>22}{'loss, last 50':>20}")
    rates, steady_rates = {}, {}
    for tool, results in runs.items():
        rates[tool] = args.steps / statistics.median(seconds for seconds, *_ in results)
        steadies = [steady for _, steady, *_ in results if steady is not None]
        steady_rates[tool] = steady_steps / statistics.median(steadies) if steadies else None
        # per run: the mean over the late guides (NumPyro: its final guide only)
        elbos = [statistics.mean(common_elbo(x, y, *guide) for guide in guides) for *_, guides in results]
        tail = statistics.mean(statistics.mean(losses[-50:]) for _, _, losses, _ in results)
        steady = "-" if steady_rates[tool] is None else f"{steady_rates[tool]:.0f}"
        spread = f" ± {statistics.stdev(elbos):.2f}" if len(elbos) > 1 else ""
        print(f"{tool:<24}{rates[tool]:>10.0f}{steady:>10}{statistics.mean(elbos):>14.2f}{spread:<8}{tail:>12.2f}")
    print(f"steps/s: all steps, first-use costs included (what a user waits for); steady: steps {STEADY_FROM + 1} on;")
    print(f"final ELBO: of the guides at the last {LATE_STEPS // 5 + 1} steps of 5 (NumPyro: its final guide), "
          "mean ± sd over the runs (seeds 0, 1, ...)")
    for ours, theirs in (("diffsci Trace_ELBO", "Pyro Trace_ELBO"), ("diffsci JitTrace_ELBO", "Pyro Trace_ELBO"),
                         ("diffsci JitTrace_ELBO", "Pyro JitTrace_ELBO"), ("diffsci JitTrace_ELBO", "NumPyro")):
        line = f"{ours} / {theirs}: {rates[ours] / rates[theirs]:.2f}x steps/s"
        if steady_rates[theirs] is not None:
            line += f" ({steady_rates[ours] / steady_rates[theirs]:.2f}x steady)"
        print(line)


if __name__ == "__main__":
    main()
