"""Fused per-pair arithmetic for the nonbonded and GB terms, where most of the time of an energy + forces
evaluation goes.

`PairFunction` evaluates an elementwise pair function together with its analytic derivatives with respect to
the inputs that depend on positions (distances, Born radii), so that backward is one multiplication per
input instead of autograd's graph of a few dozen operations over every pair. Gradients with respect to
force-field parameters, and higher derivatives (Hessians, force matching), are recomputed through autograd from
the same value function, so they need no hand-written derivatives.

`PairCache` keeps per-pair parameter products (q_i q_j, sigma_ij, ...) between calls while the pair list and
the parameters are unchanged and need no gradient.
"""

import math

import torch

CHUNK_ELEMENTS = 1 << 15  # pair values computed at once (in float64, 256 KiB per array: fits the CPU cache)


class PairFunction(torch.autograd.Function):
    """values = pair.value(*inputs), elementwise over pairs (..., P), with fast first derivatives.

    `pair` provides `value(*inputs)` and `value_and_derivatives(*inputs) -> (value, (d value / d inputs[k] for k <
    pair.fast))`, both with plain torch operations; inputs broadcast against each other (parameters (P,),
    position-dependent inputs (..., P)). Backward multiplies by the derivatives saved in forward when only those
    inputs need gradients and no graph of the gradient is requested (create_graph=False); otherwise it
    differentiates `pair.value` with autograd, so parameter gradients and Hessians work. `pair.fast` inputs come
    first. Use as `PairFunction.apply(pair, *inputs)`.
    """

    @staticmethod
    def forward(ctx, pair, *inputs):
        value, derivatives = _in_chunks(pair.value_and_derivatives, inputs, 1 + pair.fast)
        ctx.pair = pair
        ctx.save_for_backward(*inputs, *derivatives)
        return value

    @staticmethod
    def backward(ctx, grad):
        pair = ctx.pair
        saved = ctx.saved_tensors
        inputs, derivatives = saved[:len(saved) - pair.fast], saved[len(saved) - pair.fast:]
        needs = ctx.needs_input_grad[1:]
        if not torch.is_grad_enabled() and not any(needs[pair.fast:]):
            grads = [(grad * d).sum_to_size(x.shape) if need else None
                     for x, d, need in zip(inputs, derivatives, needs)]
            return (None, *grads, *[None] * (len(inputs) - pair.fast))
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            if not create_graph:  # fresh leaves: differentiate the value function alone
                inputs = [x.detach().requires_grad_(need) for x, need in zip(inputs, needs)]
            wanted = [x for x, need in zip(inputs, needs) if need]
            found = iter(torch.autograd.grad(pair.value(*inputs), wanted, grad, create_graph=create_graph,
                                             materialize_grads=True))
        return (None, *[next(found) if need else None for need in needs])


class PairDistance(torch.autograd.Function):
    """Distances r (..., P) nm from atom i to atom j of each pair, |x_j - x_i + shift|, for positions (..., N, 3)
    nm, index tensors i, j (P,) and shift None, (..., P, 3) or (3,) nm (periodic image vectors, per pair or one
    for all).

    Forward keeps the unit vectors, so that backward is one scaled scatter-add per Cartesian component; as for
    `PairFunction`, a gradient graph (create_graph=True) is recomputed through autograd. Use as
    `PairDistance.apply(positions, i, j, shift)`.
    """

    @staticmethod
    def forward(ctx, positions, i, j, shift):
        batch, count = positions.shape[:-2], i.shape[0]
        r = positions.new_empty(*batch, count)
        unit = positions.new_empty(r.view(-1, count).shape[0], 3, count)  # components first, as gathered
        for b, part, d in _displacements(positions, i, j, shift):
            length = torch.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2], out=r.view(-1, count)[b, part])
            inverse = 1 / length
            for k in range(3):
                torch.mul(d[k], inverse, out=unit[b, k, part])
        ctx.save_for_backward(positions, i, j, shift, unit)
        return r

    @staticmethod
    def backward(ctx, grad):
        positions, i, j, shift, unit = ctx.saved_tensors
        needs = ctx.needs_input_grad[0], ctx.needs_input_grad[3]
        if torch.is_grad_enabled():  # a graph of the gradient is wanted: recompute through autograd
            with torch.enable_grad():
                d = positions.index_select(-2, j) - positions.index_select(-2, i)
                r = torch.linalg.vector_norm(d if shift is None else d + shift, dim=-1)
                wanted = [x for x, need in zip((positions, shift), needs) if need]
                found = iter(torch.autograd.grad(r, wanted, grad, create_graph=True))
            grad_positions, grad_shift = [next(found) if need else None for need in needs]
            return grad_positions, None, None, grad_shift
        count = i.shape[0]
        grad = grad.reshape(-1, count)
        to_j = positions.new_zeros(unit.shape[0], 3, positions.shape[-2]) if needs[0] else None
        to_i = torch.zeros_like(to_j) if needs[0] else None
        grad_shift = torch.empty_like(unit) if needs[1] else None
        for b, part in _pieces(unit.shape[0], count, unit.device):
            for k in range(3):
                w = grad[b, part] * unit[b, k, part]
                if to_j is not None:
                    _scatter_pair(to_j[b, k], to_i[b, k], j[part], i[part], w)
                if grad_shift is not None:
                    grad_shift[b, k, part] = w
        grad_positions = None
        if to_j is not None:
            grad_positions = to_j.sub_(to_i).transpose(-1, -2).reshape(positions.shape)
        if grad_shift is not None:
            grad_shift = grad_shift.transpose(-1, -2).reshape(*positions.shape[:-2], count, 3)
            grad_shift = grad_shift.sum_to_size(shift.shape)
        return grad_positions, None, None, grad_shift


def pair_energy(pair, positions, i, j, shift, *parameters):
    """sum_p pair.value(r_p, *parameters_p), (...,) kJ/mol, over the pairs (i, j) (P,) of positions (..., N, 3)
    nm with periodic image vectors shift None, (..., P, 3) or (3,) nm (as `PairDistance`); parameters (P,) broadcast
    per pair; `pair` as for `PairFunction`, with `pair.fast == 1` (derivatives with respect to r), and
    `pair.energy_and_scale(r2, *parameters) -> (energies, (dE/dr) / r)` from squared distances.

    When only positions need gradients, energy and forces are accumulated piece by piece (`_FusedPairEnergy`)
    without per-pair arrays, whose first writes alone cost more than the arithmetic; otherwise (parameter or box
    gradients, torch.func transforms) it is `PairFunction` of `PairDistance`.
    """
    general = (torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (shift, *parameters))
               or any(torch._C._functorch.is_functorch_wrapped_tensor(x) for x in (positions, *parameters)))
    if general:
        return PairFunction.apply(pair, PairDistance.apply(positions, i, j, shift), *parameters).sum(-1)
    return _FusedPairEnergy.apply(pair, positions, i, j, shift, *parameters)


class _FusedPairEnergy(torch.autograd.Function):
    """`pair_energy` with forces computed in forward, piece by piece; differentiable in positions only (a
    gradient graph is recomputed through `PairFunction` and `PairDistance`)."""

    @staticmethod
    def forward(ctx, pair, positions, i, j, shift, *parameters):
        batch, count = positions.shape[:-2], i.shape[0]
        flat = [p.expand(count) for p in parameters]
        energy = positions.new_zeros(math.prod(batch))
        forces = ctx.needs_input_grad[1]
        to_j = positions.new_zeros(energy.shape[0], 3, positions.shape[-2]) if forces else None
        to_i = torch.zeros_like(to_j) if forces else None
        for b, part, d in _displacements(positions, i, j, shift):
            r2 = d[0] * d[0]
            r2 = r2.addcmul_(d[1], d[1]).addcmul_(d[2], d[2])
            value, scale = pair.energy_and_scale(r2, *(p[part] for p in flat))
            energy[b] += value.sum(-1)
            if forces:
                jp, ip = j[part], i[part]
                for k in range(3):
                    _scatter_pair(to_j[b, k], to_i[b, k], jp, ip, d[k].mul_(scale))
        ctx.pair = pair
        gradient = to_j.sub_(to_i) if forces else None
        ctx.save_for_backward(positions, i, j, shift, gradient, *parameters)
        return energy.reshape(batch)

    @staticmethod
    def backward(ctx, grad):
        positions, i, j, shift, gradient, *parameters = ctx.saved_tensors
        if torch.is_grad_enabled():  # a graph of the gradient is wanted: recompute through autograd
            with torch.enable_grad():
                energy = PairFunction.apply(ctx.pair, PairDistance.apply(positions, i, j, shift), *parameters)
                (grad_positions,) = torch.autograd.grad(energy.sum(-1), positions, grad, create_graph=True)
        else:
            gradient = gradient.transpose(-1, -2).reshape(positions.shape)
            grad_positions = grad.reshape(*grad.shape, 1, 1) * gradient
        return (None, grad_positions, None, None, None, *[None] * len(parameters))


def _scatter_pair(to_j, to_i, j, i, w):
    """to_j[..., j_p] += w_p and to_i[..., i_p] += w_p over the pairs p (the gradient of atom j is then to_j - to_i):
    scatter_add_ is several times faster than index_add_ on CPUs, which has no faster path for alpha=-1 either."""
    to_j.scatter_add_(-1, j.expand_as(w), w)
    to_i.scatter_add_(-1, i.expand_as(w), w)


def _displacements(positions, i, j, shift):
    """Yields (conformation b, pair slice, [d_x, d_y, d_z]) over the `_pieces` of the pairs (on GPUs b and the
    slice take everything), d_k = x_k[j] - x_k[i] + shift_k (nm), gathered one Cartesian component at a time:
    gathering from contiguous (N,) vectors is several times faster than gathering rows of 3 values. The d_k are
    fresh tensors (callers may overwrite them). shift is None, per pair (..., P, 3) (its components are read
    fastest when it is column-major, as `NeighborList.images_of` returns it), or one vector (3,) for all pairs,
    added to the positions of the atoms j once."""
    batch, count = positions.shape[:-2], i.shape[0]
    x = positions.detach().reshape(-1, *positions.shape[-2:]).transpose(-1, -2).contiguous()  # (B, 3, N)
    shifted, shifts = x, None
    if shift is not None and shift.dim() == 1:
        shifted = x + shift.detach()[:, None]
    elif shift is not None:
        shifts = shift.detach().expand(*batch, count, 3).reshape(x.shape[0], count, 3)
    for b, part in _pieces(x.shape[0], count, x.device):
        jp, ip = j[part], i[part]
        d = [shifted[b, k].index_select(-1, jp).sub_(x[b, k].index_select(-1, ip)) for k in range(3)]
        if shifts is not None:
            s = shifts[b, part]
            d = [d[k].add_(s[..., k]) for k in range(3)]
        yield b, part, d


def _pieces(batch, count, device):
    """(conformation, slice) pieces of (batch, count) pair arrays, each small enough for the CPU cache; on GPUs
    whole arrays. A piece is one grain of torch's CPU parallelism (32768 elements): operations on it run on one
    thread, which avoids a thread barrier per operation (ruinous on a loaded machine)."""
    if device.type != "cpu":
        return [(slice(None), slice(None))]
    size = CHUNK_ELEMENTS
    return [(b, slice(start, start + size)) for b in range(batch) for start in range(0, count, size)]


def _in_chunks(function, inputs, outputs):
    """function(*inputs) -> (value, (derivatives...)) evaluated piece by piece over conformations and pairs
    (see `_pieces`), so that the dozens of intermediate arrays stay in the CPU cache: several times faster than
    operations on whole arrays."""
    shape = torch.broadcast_shapes(*(x.shape for x in inputs))
    reference = inputs[0]
    flat = [x.expand(shape).reshape(-1, shape[-1]) for x in inputs]
    pieces = _pieces(flat[0].shape[0], shape[-1], reference.device)
    if len(pieces) == 1:
        return function(*inputs)
    results = [reference.new_empty(flat[0].shape) for _ in range(outputs)]
    for b, part in pieces:
        value, derivatives = function(*(x[b, part] for x in flat))
        for result, piece in zip(results, (value, *derivatives)):
            result[b, part] = piece
    return results[0].reshape(shape), tuple(result.reshape(shape) for result in results[1:])


class PairCache:
    """Per-pair parameter values computed by `compute()`, reused while `pairs` (the same tensor object, as a
    neighbour list returns until it is rebuilt) and the values of `parameters` are unchanged.

    Nothing is cached while a parameter requires grad (so gradients reach it), or under torch.func transforms.
    """

    def __init__(self):
        self._pairs = self._parameters = self._values = None

    def __call__(self, pairs, parameters, compute):
        if any(p.requires_grad or torch._C._functorch.is_functorch_wrapped_tensor(p) for p in parameters):
            return compute()
        if not self._valid(pairs, parameters):
            self._values = compute()
            self._pairs, self._parameters = pairs, [p.detach().clone() for p in parameters]
        return self._values

    def _valid(self, pairs, parameters):
        return (self._pairs is pairs and len(parameters) == len(self._parameters)
                and all(p.shape == c.shape and p.dtype == c.dtype and p.device == c.device and torch.equal(p, c)
                        for p, c in zip(parameters, self._parameters)))


__all__ = ["PairFunction", "PairDistance", "pair_energy", "PairCache", "CHUNK_ELEMENTS"]
