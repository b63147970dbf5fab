"""Stan's warm-up: dual-averaging step size, windowed mass-matrix estimation, step-size re-search.

Constants and schedule as Stan (and NumPyro, whose ``hmc_util`` this mirrors): dual averaging with t0 = 10,
kappa = 0.75, gamma = 0.05 and prox centre mu = log(10 eps0); windows of an initial fast buffer of 75
iterations, slow windows of 25 doubling in length, and a terminal fast buffer of 50, the last slow window
stretched to meet the terminal buffer. The mass matrix is the Welford (co)variance of the draws of each slow
window, regularized towards 1e-3 with weight 5 / (n + 5); after each slow window the step size is re-searched
and dual averaging restarts.

All state is batched over chains: step sizes (C,), inverse mass matrices (C, D) or (C, D, D); counters are
Python ints (every chain sits at the same iteration).
"""

import math
from functools import lru_cache
from typing import NamedTuple

import torch

from .integrator import kinetic_energy, leapfrog, mass_matrix_sqrt, momentum


@lru_cache(maxsize=16)
def build_adaptation_schedule(num_steps):
    """Warm-up windows as (start, end) iteration pairs, inclusive, exactly as Stan/NumPyro.

    The first and last windows are the fast buffers (step size only); the ones between are the slow windows
    at whose ends the mass matrix is updated. Fewer than 20 warm-up steps give one window (no mass adaptation).
    """
    if num_steps < 20:
        return ((0, num_steps - 1),)
    start_buffer, end_buffer, init_window = 75, 50, 25
    if start_buffer + end_buffer + init_window > num_steps:
        start_buffer = int(0.15 * num_steps)
        end_buffer = int(0.1 * num_steps)
        init_window = num_steps - start_buffer - end_buffer
    schedule = [(0, start_buffer - 1)]
    end_window_start = num_steps - end_buffer
    next_size, next_start = init_window, start_buffer
    while next_start < end_window_start:
        start, size = next_start, next_size
        if 3 * size <= end_window_start - start:
            next_size = 2 * size
        else:  # too little room for a doubled window after this one: stretch this one to the end buffer
            size = end_window_start - start
        next_start = start + size
        schedule.append((start, next_start - 1))
    schedule.append((end_window_start, num_steps - 1))
    return tuple(schedule)


class AdaptState(NamedTuple):
    """Warm-up state of C chains. Tensors are per chain; ints are shared."""

    step_size: torch.Tensor  # (C,)
    inverse_mass_matrix: torch.Tensor  # (C, D) diagonal or (C, D, D) dense
    mass_matrix_sqrt: torch.Tensor  # same shape; see integrator.mass_matrix_sqrt
    log_step_size: torch.Tensor  # dual averaging x_t, (C,)
    log_step_size_avg: torch.Tensor  # dual averaging x-bar_t, (C,)
    grad_avg: torch.Tensor  # dual averaging g-bar_t, (C,)
    prox_center: torch.Tensor  # dual averaging mu, (C,)
    da_count: int  # dual averaging t
    welford_mean: torch.Tensor  # (C, D)
    welford_m2: torch.Tensor  # (C, D) or (C, D, D)
    welford_count: int
    window_idx: int


def dual_averaging_update(state, g, t0=10.0, kappa=0.75, gamma=0.05):
    """One dual-averaging step with statistic g = target - accept_prob, (C,); returns the new state."""
    t = state.da_count + 1
    grad_avg = (1 - 1 / (t + t0)) * state.grad_avg + g / (t + t0)
    log_step = state.prox_center - math.sqrt(t) / gamma * grad_avg
    weight = t**-kappa
    log_step_avg = (1 - weight) * state.log_step_size_avg + weight * log_step
    return state._replace(log_step_size=log_step, log_step_size_avg=log_step_avg, grad_avg=grad_avg, da_count=t)


def welford_update(state, z):
    """Add draws z, (C, D), to the running mean and (co)variance sums."""
    n = state.welford_count + 1
    delta_pre = z - state.welford_mean
    mean = state.welford_mean + delta_pre / n
    delta_post = z - mean
    if state.welford_m2.dim() == 2:
        m2 = state.welford_m2 + delta_pre * delta_post
    else:
        m2 = state.welford_m2 + delta_post.unsqueeze(-1) * delta_pre.unsqueeze(-2)
    return state._replace(welford_mean=mean, welford_m2=m2, welford_count=n)


def welford_covariance(state, regularize=True):
    """Sample (co)variance of the window, shrunk towards 1e-3 with weight 5 / (n + 5) when ``regularize``."""
    n = state.welford_count
    cov = state.welford_m2 / (n - 1)
    if regularize:
        cov = (n / (n + 5)) * cov
        shrinkage = 1e-3 * (5 / (n + 5))
        if cov.dim() == 2:
            cov = cov + shrinkage
        else:
            cov = cov + shrinkage * torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    return cov


def find_reasonable_step_size(evaluate, z, potential, grad, step_size, inverse_mass_matrix, noise_fn):
    """Double or halve each chain's step size until one leapfrog step's acceptance crosses 0.8.

    As NumPyro's ``find_reasonable_step_size`` (Hoffman & Gelman 2014, Alg. 4): a chain starts at its
    ``step_size``, (C,), moves in the direction of its first acceptance test (up if exp(-dH) > 0.8, else down;
    NaN counts as down, as does a position where the model raised) and stops at the first step size whose test
    points the other way, or at the float range's limit. ``evaluate``: positions -> (potential, gradient), an
    ``integrator.PotentialAndGrad``. ``noise_fn(chains)`` returns standard-normal momentum noise (len(chains), D)
    for the listed chains (each chain draws only while it searches). Returns the new step sizes, (C,).
    """
    finfo = torch.finfo(z.dtype)
    log_target = math.log(0.8)
    sqrt_mass = mass_matrix_sqrt(inverse_mass_matrix)
    steps = step_size.tolist()
    last_dir = [0] * len(steps)
    direction = [0] * len(steps)
    searching = list(range(len(steps)))
    while searching:
        idx = torch.tensor(searching, device=z.device)
        for c in searching:
            steps[c] = steps[c] * 2.0 ** direction[c]
        h = torch.tensor([steps[c] for c in searching], dtype=z.dtype, device=z.device)
        inv_mass = inverse_mass_matrix[idx]
        r = momentum(sqrt_mass[idx], noise_fn(searching))
        _, r_new, potential_new, _ = leapfrog(evaluate, z[idx], r, grad[idx], h, inv_mass)
        delta = (potential_new + kinetic_energy(inv_mass, r_new)) - (potential[idx] + kinetic_energy(inv_mass, r))
        going_up = (log_target < -delta).tolist()
        still = []
        for c, up in zip(searching, going_up):
            last_dir[c], direction[c] = direction[c], 1 if up else -1
            not_extreme = (steps[c] > finfo.tiny or direction[c] >= 0) and (steps[c] < finfo.max or direction[c] <= 0)
            if not_extreme and (last_dir[c] == 0 or direction[c] == last_dir[c]):
                still.append(c)
        searching = still
    return torch.tensor(steps, dtype=z.dtype, device=z.device)


class WarmupAdapter:
    """Stan's windowed adaptation for C chains (``init`` once, ``update`` after every warm-up iteration).

    Args:
        num_warmup: number of warm-up iterations.
        adapt_step_size: dual-averaging step-size adaptation (with step-size searches).
        adapt_mass_matrix: estimate the mass matrix in the slow windows.
        dense_mass: dense (True) or diagonal (False) mass matrix.
        target_accept_prob: the mean acceptance probability dual averaging aims at.
        regularize_mass_matrix: shrink the estimate towards 1e-3 (Stan's regularization).
    """

    def __init__(
        self,
        num_warmup,
        adapt_step_size=True,
        adapt_mass_matrix=True,
        dense_mass=False,
        target_accept_prob=0.8,
        regularize_mass_matrix=True,
    ):
        self.num_warmup = num_warmup
        self.adapt_step_size = adapt_step_size
        self.adapt_mass_matrix = adapt_mass_matrix
        self.dense_mass = dense_mass
        self.target_accept_prob = target_accept_prob
        self.regularize_mass_matrix = regularize_mass_matrix
        self.schedule = build_adaptation_schedule(num_warmup) if num_warmup > 0 else ()

    def init(self, step_size, inverse_mass_matrix, search):
        """Initial state. step_size: (C,); inverse_mass_matrix: (C, D) or (C, D, D);
        ``search(step_size, inverse_mass_matrix)`` returns re-searched step sizes (C,)."""
        if self.adapt_step_size:
            step_size = search(step_size, inverse_mass_matrix)
        zeros = torch.zeros_like(step_size)
        return AdaptState(
            step_size=step_size,
            inverse_mass_matrix=inverse_mass_matrix,
            mass_matrix_sqrt=mass_matrix_sqrt(inverse_mass_matrix),
            log_step_size=zeros,
            log_step_size_avg=zeros,
            grad_avg=zeros,
            prox_center=math.log(10) + step_size.log(),
            da_count=0,
            welford_mean=torch.zeros_like(inverse_mass_matrix[..., 0] if self.dense_mass else inverse_mass_matrix),
            welford_m2=torch.zeros_like(inverse_mass_matrix),
            welford_count=0,
            window_idx=0,
        )

    def update(self, state, t, accept_prob, z, search):
        """State after warm-up iteration t (0-based) which ended at z, (C, D), with mean acceptance
        probability ``accept_prob``, (C,)."""
        step_size = state.step_size
        if self.adapt_step_size:
            state = dual_averaging_update(state, self.target_accept_prob - accept_prob)
            log_step = state.log_step_size_avg if t == self.num_warmup - 1 else state.log_step_size
            finfo = torch.finfo(log_step.dtype)
            step_size = log_step.exp().clamp(finfo.tiny, finfo.max)
            state = state._replace(step_size=step_size)
        window_idx = state.window_idx
        in_slow_window = 0 < window_idx < len(self.schedule) - 1
        if self.adapt_mass_matrix and in_slow_window:
            state = welford_update(state, z)
        at_window_end = t == self.schedule[window_idx][1]
        state = state._replace(window_idx=window_idx + int(at_window_end))
        if at_window_end and in_slow_window:
            if self.adapt_mass_matrix:
                inverse_mass_matrix = welford_covariance(state, self.regularize_mass_matrix)
                state = state._replace(
                    inverse_mass_matrix=inverse_mass_matrix,
                    mass_matrix_sqrt=mass_matrix_sqrt(inverse_mass_matrix),
                    welford_mean=torch.zeros_like(state.welford_mean),
                    welford_m2=torch.zeros_like(state.welford_m2),
                    welford_count=0,
                )
            if self.adapt_step_size:
                step_size = search(step_size, state.inverse_mass_matrix)
                zeros = torch.zeros_like(step_size)
                state = state._replace(
                    step_size=step_size,
                    log_step_size=zeros,
                    log_step_size_avg=zeros,
                    grad_avg=zeros,
                    prox_center=math.log(10) + step_size.log(),
                    da_count=0,
                )
        return state
