"""The MCMC driver: runs an HMC/NUTS kernel for several chains, collects draws, checkpoints and resumes.

A kernel built from a ``ppl`` model (``NUTS(model)``) is bound to the model's potential at each ``run(*args,
**kwargs)`` (``model.ModelPotential``): draws come back as constrained values by site name, and ``to_arviz``
adds the pointwise log-likelihood and the observed data.

Randomness: chain c draws from its own ``torch.Generator``, seeded from ``numpy.random.SeedSequence(seed)``'s
c-th child (a model's initial values from an independent stream of the same child), so a chain's draws do not
depend on how many chains run beside it or whether they run vectorized or sequentially (up to floating-point
differences of batched arithmetic in the potential).
"""

import os
import warnings

import numpy as np
import torch
from tqdm.auto import tqdm

from inference import checkpoint as checkpoints
from inference import diagnostics

from .hmc import state_from_dict, state_to_dict
from .model import ModelPotential

CHECKPOINT_VERSION = 2
# the kernel's attributes that change what a run draws (jit_compile does not; init_strategy only sets z0, which
# the checkpoint holds)
KERNEL_SETTINGS = ("step_size", "trajectory_length", "num_steps", "inverse_mass_matrix", "adapt_step_size",
                   "adapt_mass_matrix", "dense_mass", "target_accept_prob", "regularize_mass_matrix",
                   "max_tree_depth")
POSTFIX_EVERY = 10  # iterations between updates of the progress bar's numbers
EXTRA_FIELDS = ("diverging", "accept_prob", "step_size", "tree_depth", "num_steps", "energy", "potential_energy")


class MCMC:
    """Run ``kernel`` for ``num_chains`` chains: ``num_warmup`` adapting iterations, then ``num_samples`` kept.

    Args:
        kernel: an ``HMC`` or ``NUTS`` kernel, built from a ``ppl`` model or a potential function.
        num_warmup, num_samples: iterations per chain (NumPyro's names and order). Pyro's keyword
            ``warmup_steps`` is accepted for ``num_warmup``; given neither, warm-up is ``num_samples`` long (Pyro's
            default).
        num_chains: number of chains.
        chain_method: "vectorized" (all chains advance together as one batch) or "sequential" (one after another).
        thinning: keep every ``thinning``-th draw after warm-up.
        seed: integer seed; None draws one from torch's global generator.
        progress_bar: show a tqdm bar per run (phase, step size, divergences, mean tree depth).
        postprocess_fn: maps unconstrained draws (..., D) to a dict of constrained values (..., *shape);
            default: the model's latent and deterministic sites for a kernel built from a model, else
            ``{"z": draws}``.
        checkpoint: file to save the run to every ``checkpoint_every`` iterations (``run(resume_from=...)``
            continues it bit-for-bit). It records what it continues (see ``inference.checkpoint``): these
            settings and the kernel's, the dimension and dtype of the positions and, for a model, its latent
            sites' names and shapes and hashes of its arguments.
    """

    def __init__(
        self,
        kernel,
        num_warmup=None,
        num_samples=None,
        num_chains=1,
        chain_method="vectorized",
        thinning=1,
        seed=None,
        progress_bar=True,
        postprocess_fn=None,
        checkpoint=None,
        checkpoint_every=100,
        *,
        warmup_steps=None,
    ):
        if warmup_steps is not None:
            if num_warmup is not None:
                raise ValueError("MCMC: give num_warmup (NumPyro's name) or warmup_steps (Pyro's), not both")
            num_warmup = warmup_steps
        if num_samples is None:
            raise ValueError("MCMC: num_samples is required")
        if num_warmup is None:
            num_warmup = num_samples
        if chain_method not in ("vectorized", "sequential"):
            raise ValueError(f"MCMC: chain_method must be 'vectorized' or 'sequential'; got {chain_method!r}")
        for name, value, low in (("num_warmup", num_warmup, 0), ("num_samples", num_samples, 1),
                                 ("num_chains", num_chains, 1), ("thinning", thinning, 1),
                                 ("checkpoint_every", checkpoint_every, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"MCMC: {name} must be an integer >= {low}; got {value!r}")
        self.kernel = kernel
        self.num_warmup = num_warmup
        self.num_samples = num_samples
        self.num_chains = num_chains
        self.chain_method = chain_method
        self.thinning = thinning
        self.seed = int(torch.randint(0, 2**62, ()).item()) if seed is None else int(seed)
        self.progress_bar = progress_bar
        self.postprocess_fn = postprocess_fn
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self._z = None
        self._extra = None
        self._model_errors = None  # per chain: proposals rejected because the model raised (set by run())
        self._model = None  # the ModelPotential of the last run, for a kernel built from a model
        self._fingerprint = None  # what the run's checkpoints continue (set by run())
        self.last_state = None  # kernel state at the end of run() (of the last chain group when sequential)

    def _config(self):
        return {
            "num_warmup": self.num_warmup,
            "num_samples": self.num_samples,
            "num_chains": self.num_chains,
            "chain_method": self.chain_method,
            "thinning": self.thinning,
            "seed": self.seed,
            "kernel": type(self.kernel).__name__,
        }

    def _chain_seeds(self, purpose):
        """One integer seed per chain from ``numpy.random.SeedSequence(seed)``'s c-th child: the sampler's
        generator (purpose 0) or the model's initialization (purpose 1, an independent stream)."""
        seeds = []
        for child in np.random.SeedSequence(self.seed).spawn(self.num_chains):
            source = child if purpose == 0 else child.spawn(purpose)[-1]
            seeds.append(int(source.generate_state(1, np.uint64)[0]))
        return seeds

    def _generators(self, device):
        return [torch.Generator(device=device).manual_seed(s) for s in self._chain_seeds(0)]

    def run(self, *model_args, init_params=None, resume_from=None, **model_kwargs):
        """Sample.

        With a kernel built from a model (``NUTS(model)``), ``model_args`` / ``model_kwargs`` are the model's
        arguments and each chain starts where the kernel's ``init_strategy`` puts it (redrawn until the
        potential is finite). With a kernel built from ``potential_fn``, ``init_params`` gives the initial
        unconstrained positions, (D,) (shared) or (num_chains, D). ``resume_from``: a checkpoint file of this
        same run (settings, kernel, model and data); the run continues from it and produces the draws the
        uninterrupted run would have.

        Where the model (or ``potential_fn``) raises one of ``integrator.MODEL_ERRORS`` (a failed Cholesky
        factorization, a domain error), only the chains that raise reject their proposal, which counts as a
        divergence (as in Stan and NumPyro); a ``RuntimeWarning`` at the end says how many proposals of each chain
        were rejected so (in this call, warm-up included) and shows the latest error. Other exceptions raise.

        Raises:
            CheckpointError: ``resume_from`` is unreadable, or was written for another run (the message names
                what differs: a setting, a site's shape, an argument's hash, the potential at its positions).
        """
        self._model = None
        if self.kernel.model is not None:
            if init_params is not None:
                raise ValueError(
                    "MCMC.run: init_params is for kernels built from potential_fn; for a model give the kernel "
                    "init_strategy=ppl.init_to_value(values={...}) instead"
                )
            init_seeds = self._chain_seeds(1)
            self._model = ModelPotential(
                self.kernel.model, model_args, model_kwargs, self.kernel.init_strategy, init_seeds[0]
            )
            z0 = self._model.initial_positions(init_seeds)
            self.kernel.potential_fn = self._model
        else:
            z0 = self._initial_positions(init_params)
        if self.checkpoint is not None or resume_from is not None:
            self._fingerprint = self._fingerprint_of(z0)
        generators = self._generators(z0.device)
        num_kept = -(-self.num_samples // self.thinning)
        z_draws = z0.new_zeros(self.num_chains, num_kept, z0.shape[1])
        extra = {}
        self._model_errors = torch.zeros(self.num_chains, dtype=torch.long, device=z0.device)
        group, state = 0, None
        if resume_from is not None:
            group, state, z0, z_draws, extra = self._load(resume_from, generators)
        chains = range(self.num_chains)
        groups = [list(chains)] if self.chain_method == "vectorized" else [[c] for c in chains]
        for g in range(group, len(groups)):
            chains = groups[g]
            gens = [generators[c] for c in chains]
            if state is None:
                state = self.kernel.init(z0[chains], self.num_warmup, gens)
            state = self._run_chains(g, chains, gens, generators, state, z0, z_draws, extra)
            self.last_state = state
            state = None
        self._z, self._extra = z_draws, extra
        self._warn_model_errors()

    def _initial_positions(self, init_params):
        if init_params is None:
            raise ValueError("MCMC.run: pass init_params (D,) or (num_chains, D) for a kernel built from potential_fn")
        z0 = torch.as_tensor(init_params)
        if not z0.is_floating_point():
            z0 = z0.to(torch.get_default_dtype())
        if z0.dim() == 1:
            z0 = z0.expand(self.num_chains, -1)
        if z0.dim() != 2 or z0.shape[0] != self.num_chains:
            raise ValueError(
                f"MCMC.run: init_params must be (D,) or (num_chains={self.num_chains}, D); got {tuple(z0.shape)}"
            )
        return z0.detach().clone()

    def _run_chains(self, group, chains, gens, generators, state, z0, z_draws, extra):
        total = self.num_warmup + self.num_samples
        label = f"chains {chains[0]}-{chains[-1]}" if len(chains) > 1 else f"chain {chains[0]}"
        rows = slice(chains[0], chains[-1] + 1)  # a group's chains are consecutive
        divergences = torch.zeros(len(chains), dtype=torch.long, device=z0.device)
        depth_sum = torch.zeros(len(chains), dtype=torch.long, device=z0.device)
        with tqdm(total=total, initial=state.iteration, desc=label, disable=not self.progress_bar) as bar:
            while state.iteration < total:
                i = state.iteration
                state, stats = self.kernel.sample(state, gens)
                self._model_errors[rows] += stats["model_error"]
                kept = i - self.num_warmup
                if kept >= 0 and kept % self.thinning == 0:
                    z_draws[rows, kept // self.thinning] = state.z
                    for name in EXTRA_FIELDS:
                        value = stats[name]
                        if name not in extra:
                            extra[name] = value.new_zeros(self.num_chains, z_draws.shape[1])
                        extra[name][rows, kept // self.thinning] = value
                if self.progress_bar:
                    if i == self.num_warmup:  # the bar's counts restart with the sampling phase
                        divergences.zero_()
                        depth_sum.zero_()
                    divergences += stats["diverging"]
                    depth_sum += stats["tree_depth"]
                    # the numbers are read out every few iterations (each read waits for the device)
                    if state.iteration % POSTFIX_EVERY == 0 or state.iteration in (self.num_warmup, total):
                        done = i + 1 - (self.num_warmup if i >= self.num_warmup else 0)
                        bar.set_postfix(
                            phase="warmup" if i < self.num_warmup else "sample",
                            step_size=f"{state.adapt.step_size.mean().item():.3g}",
                            divergences=int(divergences.sum()),
                            tree_depth=f"{depth_sum.sum().item() / (done * len(chains)):.2f}",
                            refresh=False,
                        )
                    bar.update(1)
                if self.checkpoint is not None and state.iteration % self.checkpoint_every == 0:
                    self._save(group, state, generators, z0, z_draws, extra)
        return state

    def _warn_model_errors(self):
        """One warning for the proposals that the kernel rejected because the model raised (see ``run``)."""
        counts = self._model_errors.tolist()
        if not any(counts):
            return
        error = self.kernel.last_model_error
        per_chain = ", ".join(f"chain {c}: {n}" for c, n in enumerate(counts) if n)
        warnings.warn(
            f"MCMC: {sum(counts)} proposals rejected because the model raised ({per_chain}; of "
            f"{self.num_warmup + self.num_samples} iterations per chain, warm-up included); each counts as a "
            "divergence, as in Stan and NumPyro. Many mean that the model cannot be evaluated in part of the "
            "posterior (a kernel matrix may need jitter on its diagonal). The latest error: "
            f"{type(error).__name__}: {error}",
            RuntimeWarning,
            stacklevel=3,
        )

    # -- checkpoints ---------------------------------------------------------------------------------------

    def _fingerprint_of(self, z0):
        """What a checkpoint of this run continues: the run's and the kernel's settings, the positions'
        dimension and dtype and, for a model, its latent sites' shapes and its arguments' hashes."""
        fingerprint = {**self._config(), "dimension": z0.shape[1], "dtype": str(z0.dtype)}
        for name in KERNEL_SETTINGS:
            if hasattr(self.kernel, name):
                fingerprint[f"kernel {name}"] = checkpoints.plain(getattr(self.kernel, name))
        if self._model is not None:
            for name, site in self._model.potential.latent_sites.items():
                fingerprint[f"the shape of site '{name}'"] = tuple(site.shape)
            fingerprint.update(
                checkpoints.argument_digests(self.kernel.model, self._model.model_args, self._model.model_kwargs)
            )
        return fingerprint

    def _save(self, group, state, generators, z0, z_draws, extra):
        payload = {
            "group": group,
            "state": state_to_dict(state),
            "generators": [g.get_state() for g in generators],
            "z0": z0,
            "z_draws": z_draws,
            "extra": dict(extra),
        }
        checkpoints.save(self.checkpoint, "MCMC", CHECKPOINT_VERSION, self._fingerprint, payload)

    def _load(self, path, generators):
        payload = checkpoints.load(path, "MCMC", CHECKPOINT_VERSION, map_location=generators[0].device)
        checkpoints.check(path, payload, self._fingerprint, "Resume with the model, data and settings it was "
                          "written for, or start afresh without resume_from.")
        state = state_from_dict(payload["state"])
        self._check_potential(path, state)
        for g, g_state in zip(generators, payload["generators"]):
            g.set_state(g_state)
        return payload["group"], state, payload["z0"], payload["z_draws"], payload["extra"]

    def _check_potential(self, path, state):
        """The potential at the checkpoint's positions must be the one the checkpoint holds: this identifies a
        ``potential_fn`` (and what it closes over), which the fingerprint cannot hash."""
        potential = self.kernel.potential_fn(state.z).detach()
        if not torch.allclose(potential, state.potential_energy, rtol=1e-6, atol=1e-9, equal_nan=True):
            raise checkpoints.CheckpointError(
                f"checkpoint {os.fspath(path)} was written for another potential: at its positions the potential "
                f"energy is {state.potential_energy.tolist()} in the checkpoint, {potential.tolist()} here. Resume "
                "with the potential function (and data) it was written for, or start afresh without resume_from."
            )

    # -- results -------------------------------------------------------------------------------------------

    def _require_run(self):
        if self._z is None:
            raise RuntimeError("MCMC: call run() before asking for samples")

    def get_samples(self, group_by_chain=False):
        """Dict of draws: site -> (num_chains, num_kept, *shape), or (num_chains * num_kept, *shape) pooled."""
        self._require_run()
        postprocess = self.postprocess_fn or (self._model.postprocess if self._model else lambda z: {"z": z})
        samples = postprocess(self._z)
        if group_by_chain:
            return samples
        return {k: v.reshape(-1, *v.shape[2:]) for k, v in samples.items()}

    def get_extra_fields(self, group_by_chain=False):
        """Per-draw sampler statistics: diverging, accept_prob, step_size, tree_depth, num_steps, energy,
        potential_energy; each (num_chains, num_kept) or pooled (num_chains * num_kept,)."""
        self._require_run()
        if group_by_chain:
            return dict(self._extra)
        return {k: v.reshape(-1) for k, v in self._extra.items()}

    def summary(self, prob=0.9, print_table=True):
        """Mean, sd, (1 -/+ prob)/2 quantiles, MCSE, bulk/tail ESS and R-hat of every site (see
        ``diagnostics.summary``); prints the table and the number of divergences, and returns the data."""
        stats = diagnostics.summary(self.get_samples(group_by_chain=True), prob=prob)
        if print_table:
            diagnostics.print_summary(stats)
            print(f"Number of divergences: {int(self._extra['diverging'].sum())}")
        return stats

    def print_summary(self, prob=0.9):
        """Print the summary table (NumPyro's ``MCMC.print_summary``; see :meth:`summary`)."""
        self.summary(prob=prob, print_table=True)

    def to_arviz(self):
        """ArviZ ``InferenceData``: posterior, ArviZ-named sample statistics and, for a kernel built from a
        model, the pointwise log-likelihood of each observed site (for ``arviz.loo`` / ``waic``; see
        ``ModelPotential.log_likelihood``) and the observed data."""
        try:
            import arviz as az
        except ImportError as err:  # optional dependency
            raise ImportError("MCMC.to_arviz needs arviz: pip install arviz") from err
        as_np = lambda v: v.detach().cpu().numpy()  # noqa: E731
        extra = self.get_extra_fields(group_by_chain=True)
        sample_stats = {
            "diverging": as_np(extra["diverging"]),
            "acceptance_rate": as_np(extra["accept_prob"]),
            "step_size": as_np(extra["step_size"]),
            "tree_depth": as_np(extra["tree_depth"]),
            "n_steps": as_np(extra["num_steps"]),
            "energy": as_np(extra["energy"]),
            "lp": -as_np(extra["potential_energy"]),
        }
        samples = self.get_samples(group_by_chain=True)
        groups = {"posterior": {k: as_np(v) for k, v in samples.items()}, "sample_stats": sample_stats}
        if self._model is not None:
            try:
                log_likelihood = self._model.log_likelihood(samples)
            except (RuntimeError, ValueError) as error:  # the model does not broadcast over the draws
                warnings.warn(
                    f"MCMC.to_arviz: no log_likelihood group ({type(error).__name__}: {error}); the pointwise "
                    "log-likelihood needs a model that broadcasts over an extra leading dimension (see "
                    "ppl.vectorized_trace)",
                    RuntimeWarning,
                    stacklevel=2,
                )
            else:
                groups["log_likelihood"] = {k: as_np(v) for k, v in log_likelihood.items()}
            groups["observed_data"] = {k: as_np(v) for k, v in self._model.observed_data().items()}
        return az.from_dict(**groups)
