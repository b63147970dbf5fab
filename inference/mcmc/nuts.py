"""The No-U-Turn Sampler as Stan implements it, built iteratively and vectorized over chains.

Per iteration each chain doubles its trajectory in a random direction (new subtrees of 1, 2, 4, ... leapfrog
steps) until the generalized no-U-turn criterion fails, a step diverges (energy error > 1000) or the tree reaches
``max_tree_depth``. Draws are multinomial: uniform progressive sampling within a subtree, biased progressive
sampling when a subtree joins the trajectory (Betancourt 2017, A.3). The criterion is Stan's (>= 2.21):
p#_minus . rho > 0 and p#_plus . rho > 0 (p# = M^{-1} p, rho the momentum sum) on every merged subtree, plus the
two extra checks across each merge (left half with the first point of the right half, and the last point of the
left half with the right half).

Iterative and vectorized: every chain starts its tree at the same time and subtrees double, so the tree shape at
global step t is the same for all chains (subtree depth d with 2^d - 1 <= t < 2^(d+1) - 1) and only the directions
and the stopping times differ. The loop runs one batched leapfrog step per global step for all chains (chains
that stopped take steps of size 0 and are masked), and the only host synchronization is the per-step test
whether any chain is still building. Subtree checks use checkpoints per tree level (momentum sums before/after
the first and last leaf of the latest node at each level) instead of recursion.

Each step is a pure function of tensors, ``_leaf`` (one leapfrog step and its bookkeeping; which tree levels it
touches comes in as masks, so one function serves every step, in two variants: the leaves at odd positions of
their subtree also check the nodes they complete) and ``_merge`` (a completed subtree joins the trajectory), so
that under ``jit_compile`` each is traced once into a graph (``jit.py``). Operations per step are what a traced
step costs (a few microseconds each on a CPU): the potential's log-densities are written to be few and the tree
bookkeeping batches its dot products.
"""

import functools
import math

import torch

from .hmc import HMC, MAX_DELTA_ENERGY
from .integrator import leapfrog, velocity


def _trailing_ones(n):
    return (~n & (n + 1)).bit_length() - 1


def _trailing_zeros(n):
    return (n & -n).bit_length() - 1


def _persist(p_sharps, rhos, dim):
    """Stan's no-U-turn criterion p#_a . rho > 0 and p#_b . rho > 0 on several spans at once: ``p_sharps`` holds
    p#_a and p#_b of each span in turn and ``rhos`` the span's momentum sum for each of them, all of one shape;
    True where every span passes. They are stacked at ``dim`` (the span axis of the dot products), so that all
    the dot products are one multiplication and one sum."""
    dots = torch.linalg.vecdot(torch.stack(p_sharps, dim), torch.stack(rhos, dim))
    return (dots > 0).all(dim)


class NUTS(HMC):
    """No-U-Turn Sampler (Hoffman & Gelman 2014; multinomial, Betancourt 2017), adapted as Stan.

    Args: as ``HMC`` (without trajectory_length / num_steps), plus
        max_tree_depth: the most doublings per iteration (at most 2^max_tree_depth - 1 leapfrog steps).
    """

    def __init__(
        self,
        model=None,
        *,
        potential_fn=None,
        step_size=1.0,
        inverse_mass_matrix=None,
        adapt_step_size=True,
        adapt_mass_matrix=True,
        dense_mass=False,
        target_accept_prob=0.8,
        max_tree_depth=10,
        regularize_mass_matrix=True,
        init_strategy=None,
        jit_compile=None,
    ):
        super().__init__(
            model,
            potential_fn=potential_fn,
            step_size=step_size,
            inverse_mass_matrix=inverse_mass_matrix,
            adapt_step_size=adapt_step_size,
            adapt_mass_matrix=adapt_mass_matrix,
            dense_mass=dense_mass,
            target_accept_prob=target_accept_prob,
            regularize_mass_matrix=regularize_mass_matrix,
            init_strategy=init_strategy,
            jit_compile=jit_compile,
        )
        if not (isinstance(max_tree_depth, int) and 1 <= max_tree_depth <= 20):
            raise ValueError(f"NUTS: max_tree_depth must be an integer in [1, 20]; got {max_tree_depth}")
        self.max_tree_depth = max_tree_depth

    def _num_uniforms(self):
        # one per leaf (progressive sampling), one per merge and one per direction
        return 2**self.max_tree_depth - 1 + 2 * self.max_tree_depth

    def _trajectory(self, state, r, uniforms):
        inv_mass = state.adapt.inverse_mass_matrix
        step_size = state.adapt.step_size
        max_depth = self.max_tree_depth
        num_leaves = 2**max_depth - 1
        log_u = uniforms.log()  # tests "u < p" as "log u < log p": the weights are logs
        going_right = uniforms.narrow(1, num_leaves + max_depth, max_depth) > 0.5
        # leaves with an even index within their subtree complete no node, so they skip the subtree checks
        leaf_steps = (self._step("leaf", _leaf), self._step("leaf and checks", _leaf_and_checks))
        merge_step = self._step("merge", _merge)
        masks = _level_masks(max_depth, state.z.device)

        z0, potential0, grad0 = state.z, state.potential_energy, state.grad
        p_sharp0 = velocity(inv_mass, r)
        energy0 = torch.add(potential0, torch.linalg.vecdot(p_sharp0, r), alpha=0.5)
        num_chains, dim = z0.shape

        # the trajectory so far: its two ends, momentum sum, log weight and multinomial proposal, and the
        # per-chain counters (see _merge)
        ends = (z0, r, grad0, p_sharp0) * 2  # left end (z, r, grad, p#), right end
        rho = r
        log_weight = torch.zeros_like(energy0)
        proposal = (z0, potential0, grad0, energy0)
        counts = (
            torch.zeros_like(energy0),  # sum of acceptance probabilities
            torch.zeros(num_chains, dtype=torch.long, device=z0.device),  # leapfrog steps
            torch.zeros(num_chains, dtype=torch.long, device=z0.device),  # tree depth
            torch.zeros(num_chains, dtype=torch.bool, device=z0.device),  # diverging
        )
        active = torch.ones_like(counts[3])
        # per tree level: (p#, momentum sum before, momentum sum after) at the first leaf of the latest node,
        # and (p#, momentum sum before) at the last leaf of the latest completed node
        levels = (z0.new_zeros(num_chains, max_depth, 3, dim), z0.new_zeros(num_chains, max_depth, 2, dim))

        # every subtree starts empty (its first leaf is always taken, so the proposal's initial values are unused)
        empty_subtree = (torch.full_like(energy0, -math.inf), z0, potential0, grad0, energy0, torch.zeros_like(r))
        signed_steps = torch.where(going_right, step_size.unsqueeze(1), -step_size.unsqueeze(1))
        t = 0
        for d in range(max_depth):
            right = going_right.select(1, d)
            right_col = right.unsqueeze(-1)
            signed_step = signed_steps.select(1, d)
            # the subtree grows from the end of the trajectory on its side: (z, r, grad)
            leaf = tuple(torch.where(right_col, ends[4 + k], ends[k]) for k in range(3))
            subtree = empty_subtree
            for n in range(2**d):
                leaf, p_sharp, subtree, levels, counts, active, building = leaf_steps[n & 1](
                    inv_mass, energy0, signed_step, log_u.select(1, t), *masks[t], leaf, subtree, levels, counts, active
                )
                t += 1
                if not bool(building):
                    break
            if not bool(building):  # every chain stopped inside the subtree: it does not join the trajectory
                break
            ends, rho, log_weight, proposal, counts, active, building = merge_step(
                p_sharp, right, log_u.select(1, num_leaves + d), leaf, subtree, levels[0].select(1, d),
                ends, rho, log_weight, proposal, counts, active,
            )
            if not bool(building):
                break

        sum_accept, num_steps, depth, diverging = counts
        stats = {
            "accept_prob": sum_accept / num_steps,
            "diverging": diverging,
            "num_steps": num_steps,
            "tree_depth": depth,
        }
        z_prop, pot_prop, grad_prop, energy_prop = proposal
        return z_prop, pot_prop, grad_prop, energy_prop, stats


@functools.lru_cache(maxsize=8)
def _level_masks(max_depth, device):
    """Per global leaf index t: whether it is the first leaf of its subtree (0-dim); the levels whose latest node
    begins at this leaf, (L, 1, 1); the levels 1..L-1 whose node this leaf does not complete, (L - 1,); the
    levels whose latest completed node ends at this leaf, (L, 1, 1)."""
    masks = []
    level = torch.arange(max_depth)
    for d in range(max_depth):
        for n in range(2**d):
            begun = d if n == 0 else _trailing_zeros(n)
            done = _trailing_ones(n)
            masks.append(
                tuple(
                    m.to(device)
                    for m in (torch.tensor(n == 0), (level <= begun)[:, None, None], level[1:] > done,
                              (level <= done)[:, None, None])
                )
            )
    return masks


def _leaf_and_checks(evaluate, *args):
    """``_leaf`` at a leaf that completes nodes of the subtree: with the no-U-turn checks on those nodes."""
    return _leaf(evaluate, *args, check=True)


def _leaf(evaluate, inv_mass, energy0, signed_step, log_u, first, begin_mask, not_done_mask, end_mask,
          leaf, subtree, levels, counts, active, check=False):
    """One leapfrog step of every chain from the end of its subtree, and the subtree's bookkeeping.

    evaluate: the potential and its gradient (``integrator.PotentialAndGrad``: a chain where the model raised
    gets an infinite potential, so its leaf diverges); leaf: (z, r, grad) (C, D) at the subtree's end; subtree:
    (log weight (C,), proposal z (C, D), potential, grad, energy, momentum sum (C, D)); levels: the checkpoints
    (C, L, 3, D) and (C, L, 2, D) (see ``NUTS._trajectory``); counts: (sum of acceptance probabilities, steps,
    depth, diverging), (C,) each; active: (C,) bool, the chains still building; log_u: (C,) log uniforms for
    progressive sampling; the masks come from ``_level_masks``; ``check``: test the nodes this leaf completes
    (none at an even index in the subtree). Returns the updated (leaf, p# (C, D), subtree, levels, counts,
    active) and whether any chain is still building (0-dim bool).
    """
    z, r, grad = leaf
    log_weight_sub, z_sub, pot_sub, grad_sub, energy_sub, rho_sub = subtree
    begin, end = levels
    sum_accept, num_steps, depth, diverging = counts

    # (where, not products with the bool mask: those cast it to a new tensor at every step)
    z, r, potential, grad = leapfrog(evaluate, z, r, grad, torch.where(active, signed_step, 0.0), inv_mass)
    p_sharp = velocity(inv_mass, r)
    energy = torch.add(potential, torch.linalg.vecdot(p_sharp, r), alpha=0.5)
    # log weight of the leaf, -(H - H0); a NaN energy counts as infinite (Stan)
    log_w = (energy0 - energy).nan_to_num(nan=-math.inf, posinf=math.inf, neginf=-math.inf)
    sum_accept = sum_accept + torch.where(active, log_w.clamp(max=0.0).exp(), 0.0)
    num_steps = torch.where(active, num_steps + 1, num_steps)
    # uniform progressive sampling inside the subtree (its first leaf is always taken)
    new_log_weight_sub = torch.logaddexp(log_weight_sub, log_w)
    take = first | (log_u < log_w - new_log_weight_sub)
    take_col = take.unsqueeze(-1)
    z_sub = torch.where(take_col, z, z_sub)
    grad_sub = torch.where(take_col, grad, grad_sub)
    pot_sub = torch.where(take, potential, pot_sub)
    energy_sub = torch.where(take, energy, energy_sub)
    rho_before = rho_sub
    rho_sub = rho_sub + r

    begin = torch.where(begin_mask, torch.stack((p_sharp, rho_before, rho_sub), 1).unsqueeze(1), begin)
    ok = log_w >= -MAX_DELTA_ENERGY
    diverging = diverging | (active > ok)
    if check:
        ok = ok & _subtrees_persist(begin, end, p_sharp, rho_sub, not_done_mask)
    end = torch.where(end_mask, torch.stack((p_sharp, rho_before), 1).unsqueeze(1), end)
    active = active & ok
    return (
        (z, r, grad),
        p_sharp,
        (new_log_weight_sub, z_sub, pot_sub, grad_sub, energy_sub, rho_sub),
        (begin, end),
        (sum_accept, num_steps, depth, diverging),
        active,
        active.any(),
    )


def _merge(evaluate, p_sharp, right, log_u, leaf, subtree, first_leaf, ends, rho, log_weight, proposal, counts,
           active):
    """A completed subtree joins the trajectory: biased progressive sampling, then the no-U-turn checks across
    the merge. ``right``: (C,) bool, the side it grew on; ``first_leaf``: the level checkpoint (C, 3, D) of its
    first leaf; other arguments as in ``_leaf`` and ``NUTS._trajectory``. Returns the updated (ends, rho, log
    weight, proposal, counts, active) and whether any chain is still building. (``evaluate`` is unused: every
    step is bound to it.)"""
    z, r, grad = leaf
    log_weight_sub, z_sub, pot_sub, grad_sub, energy_sub, rho_sub = subtree
    z_left, r_left, g_left, ps_left, z_right, r_right, g_right, ps_right = ends
    sum_accept, num_steps, depth, diverging = counts
    right_col = right.unsqueeze(-1)

    take = active & (log_u < log_weight_sub - log_weight)
    take_col = take.unsqueeze(-1)
    z_prop, pot_prop, grad_prop, energy_prop = proposal
    proposal = (
        torch.where(take_col, z_sub, z_prop),
        torch.where(take, pot_sub, pot_prop),
        torch.where(take_col, grad_sub, grad_prop),
        torch.where(take, energy_sub, energy_prop),
    )
    log_weight = torch.logaddexp(log_weight, log_weight_sub)
    depth = torch.where(active, depth + 1, depth)

    p_sharp_far = torch.where(right_col, ps_left, ps_right)
    p_sharp_near = torch.where(right_col, ps_right, ps_left)
    r_near = torch.where(right_col, r_right, r_left)
    rho_merged = rho + rho_sub
    rho_init_ext = rho + first_leaf.select(1, 2)
    rho_final_ext = rho_sub + r_near
    persist = _persist(
        (p_sharp_far, p_sharp, p_sharp_far, first_leaf.select(1, 0), p_sharp_near, p_sharp),
        (rho_merged, rho_merged, rho_init_ext, rho_init_ext, rho_final_ext, rho_final_ext),
        1,
    )
    rho = rho_merged
    new = (z, r, grad, p_sharp)
    left = (z_left, r_left, g_left, ps_left)
    right_end = (z_right, r_right, g_right, ps_right)
    ends = tuple(torch.where(right_col, b, a) for a, b in zip(new, left)) + tuple(
        torch.where(right_col, a, b) for a, b in zip(new, right_end)
    )
    active = active & persist
    return ends, rho, log_weight, proposal, (sum_accept, num_steps, depth, diverging), active, active.any()


def _subtrees_persist(begin, end, p_sharp, rho_sub, not_done_mask):
    """Checks on the nodes that the current leaf completes (levels 1..L-1 where ``not_done_mask``, (L-1,) bool,
    is False), (C,) bool.

    A node at level j is an init half and a final half (level j-1 nodes). Stan's criterion must hold on the
    node, on the init half extended by the first leaf of the final half, and on the final half extended by the
    last leaf of the init half. ``begin``/``end``: the level checkpoints (see ``NUTS._trajectory``).
    """
    node = begin.narrow(1, 1, begin.shape[1] - 1)  # first leaf of each completed node
    final = begin.narrow(1, 0, begin.shape[1] - 1)  # first leaf of its final half
    init_end = end.narrow(1, 0, end.shape[1] - 1)  # last leaf of its init half (not yet overwritten by this leaf)
    node_rho_before = node.select(2, 1)
    rho_sub = rho_sub.unsqueeze(1)
    rho_node = rho_sub - node_rho_before
    rho_init_ext = final.select(2, 2) - node_rho_before
    rho_final_ext = rho_sub - init_end.select(2, 1)
    p_sharp = p_sharp.unsqueeze(1).expand_as(rho_node)
    node_ps = node.select(2, 0)
    persist = _persist(
        (node_ps, p_sharp, node_ps, final.select(2, 0), init_end.select(2, 0), p_sharp),
        (rho_node, rho_node, rho_init_ext, rho_init_ext, rho_final_ext, rho_final_ext),
        2,
    )
    return (persist | not_done_mask).all(-1)
