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
that stopped take steps of size 0 and are masked), with the tree bookkeeping indexed by Python ints, and the
only host synchronization is the per-step test whether any chain is still building. Subtree checks use
checkpoints per tree level (momentum sums before/after the first and last leaf of the latest node at each
level) instead of recursion.
"""

import math

import torch

from .hmc import HMC, MAX_DELTA_ENERGY
from .integrator import leapfrog, velocity


def _trailing_ones(n):
    return (~n & (n + 1)).bit_length() - 1


def _trailing_zeros(n):
    return (n & -n).bit_length() - 1


def _persist(p_sharp_a, p_sharp_b, rho):
    """Stan's no-U-turn criterion p#_a . rho > 0 and p#_b . rho > 0 (over the last dimension)."""
    return (torch.linalg.vecdot(p_sharp_a, rho) > 0) & (torch.linalg.vecdot(p_sharp_b, rho) > 0)


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
        )
        if not (isinstance(max_tree_depth, int) and 1 <= max_tree_depth <= 20):
            raise ValueError(f"NUTS: max_tree_depth must be an integer in [1, 20]; got {max_tree_depth}")
        self.max_tree_depth = max_tree_depth

    def _num_uniforms(self):
        # one per leaf (progressive sampling), one per merge and one per direction
        return 2**self.max_tree_depth - 1 + 2 * self.max_tree_depth

    def _trajectory(self, state, r, uniforms):
        potential_fn = self.potential_fn
        inv_mass = state.adapt.inverse_mass_matrix
        step_size = state.adapt.step_size
        max_depth = self.max_tree_depth
        num_leaves = 2**max_depth - 1
        log_u = uniforms.log()  # tests "u < p" as "log u < log p": the weights are logs
        going_right = uniforms.narrow(1, num_leaves + max_depth, max_depth) > 0.5

        z0, potential0, grad0 = state.z, state.potential_energy, state.grad
        p_sharp0 = velocity(inv_mass, r)
        energy0 = torch.add(potential0, torch.linalg.vecdot(p_sharp0, r), alpha=0.5)
        num_chains, dim = z0.shape

        # the trajectory so far: its two ends, momentum sum, log weight and multinomial proposal
        z_left, r_left, g_left, ps_left = z0, r, grad0, p_sharp0
        z_right, r_right, g_right, ps_right = z0, r, grad0, p_sharp0
        rho = r
        log_weight = torch.zeros_like(energy0)
        z_prop, pot_prop, grad_prop, energy_prop = z0, potential0, grad0, energy0

        sum_accept = torch.zeros_like(energy0)
        num_steps = torch.zeros(num_chains, dtype=torch.long, device=z0.device)
        depth = torch.zeros_like(num_steps)
        diverging = torch.zeros(num_chains, dtype=torch.bool, device=z0.device)
        active = torch.ones_like(diverging)
        # per tree level: (p#, momentum sum before, momentum sum after) at the first leaf of the latest node,
        # and (p#, momentum sum before) at the last leaf of the latest completed node
        begin = z0.new_empty(num_chains, max_depth, 3, dim)
        end = z0.new_empty(num_chains, max_depth, 2, dim)

        t = 0
        for d in range(max_depth):
            right = going_right.select(1, d)
            right_col = right.unsqueeze(-1)
            signed_step = torch.where(right, step_size, -step_size)
            z, r_f, grad = (torch.where(right_col, a, b) for a, b in ((z_right, z_left), (r_right, r_left), (g_right, g_left)))
            log_weight_sub = torch.full_like(energy0, -math.inf)
            rho_sub = torch.zeros_like(r)
            for n in range(2**d):
                z, r_f, potential, grad = leapfrog(potential_fn, z, r_f, grad, signed_step * active, inv_mass)
                p_sharp = velocity(inv_mass, r_f)
                energy = torch.add(potential, torch.linalg.vecdot(p_sharp, r_f), alpha=0.5)
                # log weight of the leaf, -(H - H0); a NaN energy counts as infinite (Stan)
                log_w = (energy0 - energy).nan_to_num_(nan=-math.inf, posinf=math.inf, neginf=-math.inf)
                sum_accept.add_(log_w.clamp(max=0.0).exp_().mul_(active))
                num_steps.add_(active)
                # uniform progressive sampling inside the subtree
                new_log_weight_sub = torch.logaddexp(log_weight_sub, log_w)
                if n == 0:
                    z_sub, pot_sub, grad_sub, energy_sub = z, potential, grad, energy
                else:
                    take = log_u.select(1, t) < log_w - new_log_weight_sub
                    take_col = take.unsqueeze(-1)
                    z_sub = torch.where(take_col, z, z_sub)
                    grad_sub = torch.where(take_col, grad, grad_sub)
                    pot_sub = torch.where(take, potential, pot_sub)
                    energy_sub = torch.where(take, energy, energy_sub)
                log_weight_sub = new_log_weight_sub
                rho_before = rho_sub
                rho_sub = rho_sub + r_f

                levels_begun = d if n == 0 else _trailing_zeros(n)
                begin.narrow(1, 0, levels_begun + 1).copy_(torch.stack((p_sharp, rho_before, rho_sub), 1).unsqueeze(1))
                ok = log_w >= -MAX_DELTA_ENERGY
                diverging |= active > ok
                levels_done = _trailing_ones(n)
                if levels_done:
                    ok &= _subtrees_persist(begin, end, p_sharp, rho_sub, levels_done)
                end.narrow(1, 0, levels_done + 1).copy_(torch.stack((p_sharp, rho_before), 1).unsqueeze(1))
                active = active & ok
                t += 1
                building = bool(active.any())
                if not building:
                    break
            if not building:
                break

            # the completed subtree joins the trajectory: biased progressive sampling, then the top-level checks
            take = active & (log_u.select(1, num_leaves + d) < log_weight_sub - log_weight)
            take_col = take.unsqueeze(-1)
            z_prop = torch.where(take_col, z_sub, z_prop)
            grad_prop = torch.where(take_col, grad_sub, grad_prop)
            pot_prop = torch.where(take, pot_sub, pot_prop)
            energy_prop = torch.where(take, energy_sub, energy_prop)
            log_weight = torch.logaddexp(log_weight, log_weight_sub)
            depth += active

            p_sharp_far = torch.where(right_col, ps_left, ps_right)
            p_sharp_near = torch.where(right_col, ps_right, ps_left)
            r_near = torch.where(right_col, r_right, r_left)
            first_leaf = begin.select(1, d)
            persist = (
                _persist(p_sharp_far, p_sharp, rho + rho_sub)
                & _persist(p_sharp_far, first_leaf.select(1, 0), rho + first_leaf.select(1, 2))
                & _persist(p_sharp_near, p_sharp, rho_sub + r_near)
            )
            rho = rho + rho_sub
            z_right, r_right, g_right, ps_right = (
                torch.where(right_col, a, b) for a, b in ((z, z_right), (r_f, r_right), (grad, g_right), (p_sharp, ps_right))
            )
            z_left, r_left, g_left, ps_left = (
                torch.where(right_col, b, a) for a, b in ((z, z_left), (r_f, r_left), (grad, g_left), (p_sharp, ps_left))
            )
            active = active & persist
            if not bool(active.any()):
                break

        stats = {
            "accept_prob": sum_accept / num_steps,
            "diverging": diverging,
            "num_steps": num_steps,
            "tree_depth": depth,
        }
        return z_prop, pot_prop, grad_prop, energy_prop, stats


def _subtrees_persist(begin, end, p_sharp, rho_sub, levels):
    """Checks on the nodes of levels 1..``levels`` that the current leaf completes, (C,) bool.

    A node at level j is an init half and a final half (level j-1 nodes). Stan's criterion must hold on the
    node, on the init half extended by the first leaf of the final half, and on the final half extended by the
    last leaf of the init half. ``begin``/``end``: the level checkpoints (see ``NUTS._trajectory``).
    """
    node = begin.narrow(1, 1, levels)  # first leaf of each completed node
    final = begin.narrow(1, 0, levels)  # first leaf of its final half
    init_end = end.narrow(1, 0, levels)  # last leaf of its init half (not yet overwritten by this leaf)
    node_rho_before = node.select(2, 1)
    rho_sub = rho_sub.unsqueeze(1)
    rho_node = rho_sub - node_rho_before
    rho_init_ext = final.select(2, 2) - node_rho_before
    rho_final_ext = rho_sub - init_end.select(2, 1)
    p_sharp = p_sharp.unsqueeze(1).expand_as(rho_node)
    node_ps = node.select(2, 0)
    ends = torch.stack((node_ps, p_sharp, node_ps, final.select(2, 0), init_end.select(2, 0), p_sharp), 2)
    rhos = torch.stack((rho_node, rho_node, rho_init_ext, rho_init_ext, rho_final_ext, rho_final_ext), 2)
    return (torch.linalg.vecdot(ends, rhos) > 0).flatten(1).all(-1)
