"""Hamiltonian Monte Carlo on a potential function of flat, batched positions, with Stan's warm-up.

``HMC`` is also the base of ``NUTS``: both share the state, the initialization, the per-iteration randomness and
the warm-up; they differ only in ``_trajectory`` (fixed-length leapfrog with a Metropolis test here, a
no-U-turn tree in ``nuts.py``).

Chains are vectorized: the potential takes positions (C, D) and returns energies (C,), chains independent;
every chain has its own step size, mass matrix and trajectory, and its own ``torch.Generator``, from which it
draws the same numbers whether it runs alone or batched with others.

Model errors: where the potential raises one of ``integrator.MODEL_ERRORS`` (a Cholesky factorization that fails,
a domain error), only the chains that raise are affected: their proposal is rejected and counted as divergent, as
Stan and NumPyro do, and the iteration's ``model_error`` statistic says so (see ``integrator.PotentialAndGrad``).
"""

import functools
import math
from typing import NamedTuple

import torch

from inference.errors import NonFiniteError

from .adaptation import AdaptState, WarmupAdapter, find_reasonable_step_size
from .integrator import PotentialAndGrad, kinetic_energy, leapfrog, momentum
from .jit import JitStep

MAX_DELTA_ENERGY = 1000.0  # a trajectory whose energy error exceeds this diverged (Stan, NumPyro)


class HMCState(NamedTuple):
    """The sampler's state for C chains after ``iteration`` iterations (warm-up included)."""

    iteration: int
    num_warmup: int
    z: torch.Tensor  # (C, D) unconstrained position
    potential_energy: torch.Tensor  # (C,)
    grad: torch.Tensor  # (C, D) dU/dz
    adapt: AdaptState


def state_to_dict(state):
    """A nested dict of tensors and ints (what ``torch.load(weights_only=True)`` reads back)."""
    return {**state._asdict(), "adapt": state.adapt._asdict()}


def state_from_dict(d):
    return HMCState(**{**d, "adapt": AdaptState(**d["adapt"])})


def per_chain_normal(generators, chains, size, like):
    """Standard normal draws (len(chains), size), chain c drawing from ``generators[c]``."""
    return torch.stack(
        [torch.randn(size, generator=generators[c], dtype=like.dtype, device=like.device) for c in chains]
    )


def per_chain_uniform(generators, size, like):
    """Uniform [0, 1) draws (C, size), one row per generator."""
    return torch.stack([torch.rand(size, generator=g, dtype=like.dtype, device=like.device) for g in generators])


class HMC:
    """Hamiltonian Monte Carlo with a fixed trajectory length (Neal 2011), adapted as Stan.

    Args:
        model: a ``ppl`` model; ``MCMC.run(*args, **kwargs)`` turns it into the potential of its continuous
            latent sites (``inference.mcmc.model``). Give either ``model`` or ``potential_fn``.
        potential_fn: U(z), positions (C, D) -> potential energies (C,) (negative log density up to a
            constant); chains must not interact. Where it raises one of ``integrator.MODEL_ERRORS``, the chains
            that raise reject their proposal (a divergence); it may name exceptions that must raise all the same
            in an attribute ``errors_to_raise`` (see ``integrator.PotentialAndGrad``).
        step_size: initial leapfrog step size (in the unit of z).
        trajectory_length: integration time per iteration; the number of steps is ceil(length / step size)
            and the step size is then shrunk so that steps x size = length (as NumPyro).
        num_steps: a fixed number of leapfrog steps instead of ``trajectory_length``.
        inverse_mass_matrix: initial M^{-1}, (D,) or (D, D), shared by the chains; default identity.
        adapt_step_size, adapt_mass_matrix, dense_mass, target_accept_prob, regularize_mass_matrix: warm-up
            options, see ``adaptation.WarmupAdapter``.
        init_strategy: a ``ppl`` initialization strategy for a model (default ``ppl.init_to_uniform``);
            unused with ``potential_fn``.
        jit_compile: trace each integration step (leapfrog, potential and gradient, tree bookkeeping) once
            into a TorchScript graph and replay it (see ``inference.mcmc.jit``: checked against the Python step,
            which it falls back to). None (default): on for a model, whose potential is pure torch by
            construction; off for a ``potential_fn``, which may call out of torch.

    Attributes:
        last_model_error: the exception behind the latest proposal rejected because the potential raised (see
            ``sample``'s ``model_error``), or None.
    """

    def __init__(
        self,
        model=None,
        *,
        potential_fn=None,
        step_size=1.0,
        trajectory_length=2 * math.pi,
        num_steps=None,
        inverse_mass_matrix=None,
        adapt_step_size=True,
        adapt_mass_matrix=True,
        dense_mass=False,
        target_accept_prob=0.8,
        regularize_mass_matrix=True,
        init_strategy=None,
        jit_compile=None,
    ):
        if (model is None) == (potential_fn is None):
            raise ValueError(f"{type(self).__name__}: give exactly one of `model` or `potential_fn`")
        if not step_size > 0:
            raise ValueError(f"{type(self).__name__}: step_size must be positive; got {step_size}")
        if not 0 < target_accept_prob < 1:
            raise ValueError(f"{type(self).__name__}: target_accept_prob must lie in (0, 1); got {target_accept_prob}")
        if num_steps is not None and num_steps < 1:
            raise ValueError(f"HMC: num_steps must be a positive integer; got {num_steps}")
        self.model = model
        self.potential_fn = potential_fn
        self.step_size = float(step_size)
        self.trajectory_length = trajectory_length
        self.num_steps = num_steps
        self.inverse_mass_matrix = inverse_mass_matrix
        self.adapt_step_size = adapt_step_size
        self.adapt_mass_matrix = adapt_mass_matrix
        self.dense_mass = dense_mass
        self.target_accept_prob = target_accept_prob
        self.regularize_mass_matrix = regularize_mass_matrix
        self.init_strategy = init_strategy
        self.jit_compile = jit_compile
        self.last_model_error = None
        self._evaluate = None
        self._steps = {}

    # -- state ---------------------------------------------------------------------------------------------

    def init(self, z, num_warmup, generators):
        """Initial state of C chains at positions z, (C, D); runs the first step-size search."""
        name = type(self).__name__
        if z.dim() != 2 or not z.is_floating_point():
            raise ValueError(f"{name}: initial positions must be a floating tensor (C, D); "
                             f"got {tuple(z.shape)}, {z.dtype}")
        evaluate = self._evaluator()
        evaluate.raised.clear()
        potential, grad = evaluate(z)
        if potential.dtype != z.dtype:
            raise ValueError(
                f"{name}: potential_fn returned {potential.dtype} energies for {z.dtype} positions; give positions "
                "in the dtype the potential computes in"
            )
        if potential.shape != z.shape[:1]:
            raise ValueError(
                f"{name}: potential_fn must map positions (C, D) = {tuple(z.shape)} to energies (C,); "
                f"it returned shape {tuple(potential.shape)}"
            )
        bad = (~(potential.isfinite() & grad.isfinite().all(-1))).nonzero().flatten().tolist()
        if bad:
            raised = "".join(
                f"; chain {c} raised {type(error).__name__}: {error}" for c, error in evaluate.raised.items()
            )
            raise NonFiniteError(
                f"{name}: the potential or its gradient is not finite at the initial positions of chain(s) {bad} "
                f"(potential {potential[bad].tolist()}{raised}); start those chains inside the support"
            )
        adapter = self._adapter(num_warmup)
        step_size = torch.full_like(potential, self.step_size)
        search = self._search(z, potential, grad, generators)
        adapt = adapter.init(step_size, self._initial_inverse_mass_matrix(z), search)
        return HMCState(0, num_warmup, z.detach(), potential, grad, adapt)

    def _initial_inverse_mass_matrix(self, z):
        """The given (D,) or (D, D) inverse mass matrix (default identity), in the kernel's structure, per chain."""
        num_chains, dim = z.shape
        given = self.inverse_mass_matrix
        given = torch.ones(dim) if given is None else given
        given = torch.as_tensor(given, dtype=z.dtype, device=z.device)
        if given.shape not in ((dim,), (dim, dim)):
            raise ValueError(
                f"{type(self).__name__}: inverse_mass_matrix must be (D,) or (D, D) with D = {dim}; "
                f"got {tuple(given.shape)}"
            )
        if self.dense_mass and given.dim() == 1:
            given = torch.diag(given)
        elif not self.dense_mass and given.dim() == 2:
            given = given.diagonal()
        return given.expand(num_chains, *given.shape).clone()

    def _adapter(self, num_warmup):
        return WarmupAdapter(
            num_warmup,
            adapt_step_size=self.adapt_step_size,
            adapt_mass_matrix=self.adapt_mass_matrix,
            dense_mass=self.dense_mass,
            target_accept_prob=self.target_accept_prob,
            regularize_mass_matrix=self.regularize_mass_matrix,
        )

    def _search(self, z, potential, grad, generators):
        def noise(chains):
            return per_chain_normal(generators, chains, z.shape[1], z)

        def search(step_size, inverse_mass_matrix):
            return find_reasonable_step_size(
                self._evaluator(), z, potential, grad, step_size, inverse_mass_matrix, noise
            )

        return search

    def _evaluator(self):
        """The ``PotentialAndGrad`` of the current potential (one per potential: it collects ``raised``)."""
        if self._evaluate is None or self._evaluate.potential_fn is not self.potential_fn:
            self._evaluate = PotentialAndGrad(self.potential_fn)
        return self._evaluate

    def _step(self, name, fn):
        """``fn(evaluate, *tensors)`` bound to the current potential's evaluator; a ``JitStep`` under jit_compile."""
        evaluate = self._evaluator()
        cached = self._steps.get(name)
        if cached is None or cached[0] is not evaluate:
            bound = functools.partial(fn, evaluate)
            use_jit = self.model is not None if self.jit_compile is None else self.jit_compile
            step = JitStep(bound, f"{type(self).__name__} {name}") if use_jit else bound
            cached = self._steps[name] = (evaluate, step)
        return cached[1]

    # -- one iteration -------------------------------------------------------------------------------------

    def sample(self, state, generators):
        """One iteration for all chains; adapts while ``state.iteration < state.num_warmup``.

        Returns (new state, stats) with stats a dict of (C,) tensors: ``accept_prob``, ``diverging``,
        ``num_steps``, ``tree_depth`` (NUTS; 0 for HMC), ``step_size`` (used in this iteration), ``energy``
        (Hamiltonian at the new state), ``potential_energy``, ``model_error`` (the potential raised one of
        ``integrator.MODEL_ERRORS`` in the trajectory, which rejected that position as a divergence).
        """
        adapt = state.adapt
        noise = per_chain_normal(generators, range(len(generators)), state.z.shape[1], state.z)
        uniforms = per_chain_uniform(generators, self._num_uniforms(), state.z)
        r = momentum(adapt.mass_matrix_sqrt, noise)
        raised = self._evaluator().raised
        raised.clear()
        z, potential, grad, energy, stats = self._trajectory(state, r, uniforms)
        model_error = torch.zeros_like(stats["diverging"])
        if raised:
            model_error[list(raised)] = True
            self.last_model_error = next(iter(raised.values()))
        stats.update(step_size=adapt.step_size, energy=energy, potential_energy=potential, model_error=model_error)
        if state.iteration < state.num_warmup:
            search = self._search(z, potential, grad, generators)
            adapt = self._adapter(state.num_warmup).update(adapt, state.iteration, stats["accept_prob"], z, search)
        return HMCState(state.iteration + 1, state.num_warmup, z, potential, grad, adapt), stats

    def _num_uniforms(self):
        """Uniform draws per chain per iteration (a fixed count, so each chain's stream is batch-independent)."""
        return 1

    def _trajectory(self, state, r, uniforms):
        adapt = state.adapt
        inv_mass = adapt.inverse_mass_matrix
        if self.num_steps is not None:
            steps = torch.full_like(adapt.step_size, float(self.num_steps))
        else:
            steps = torch.ceil(self.trajectory_length / adapt.step_size)
        step_size = adapt.step_size if self.num_steps is not None else self.trajectory_length / steps
        energy0 = state.potential_energy + kinetic_energy(inv_mass, r)
        z, r_new, potential, grad = state.z, r, state.potential_energy, state.grad
        step = self._step("leapfrog", leapfrog)
        for k in range(int(steps.max())):
            h = torch.where(steps > k, step_size, 0.0)
            z, r_new, potential, grad = step(z, r_new, grad, h, inv_mass)
        energy = potential + kinetic_energy(inv_mass, r_new)
        delta = energy - energy0
        delta = torch.where(delta.isnan(), math.inf, delta)
        accept_prob = torch.exp(-delta).clamp(max=1.0)
        accept = uniforms[:, 0] < accept_prob
        stats = {
            "accept_prob": accept_prob,
            "diverging": delta > MAX_DELTA_ENERGY,
            "num_steps": steps.long(),
            "tree_depth": torch.zeros_like(steps, dtype=torch.long),
        }
        keep = accept.unsqueeze(-1)
        return (
            torch.where(keep, z, state.z),
            torch.where(accept, potential, state.potential_energy),
            torch.where(keep, grad, state.grad),
            torch.where(accept, energy, energy0),
            stats,
        )
