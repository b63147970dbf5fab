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
    nm, index tensors i, j (P,) and shift None or (..., P, 3) nm (periodic image vectors).

    Forward keeps the unit vectors, so that backward is one scaled scatter-add onto the atoms; as for
    `PairFunction`, a gradient graph (create_graph=True) is recomputed through autograd. Use as
    `PairDistance.apply(positions, i, j, shift)`.
    """

    @staticmethod
    def forward(ctx, positions, i, j, shift):
        batch, count = positions.shape[:-2], i.shape[0]
        x = positions.reshape(-1, *positions.shape[-2:])
        shifts = None if shift is None else shift.expand(*batch, count, 3).reshape(-1, count, 3)
        r = positions.new_empty(x.shape[0], count)
        unit = positions.new_empty(x.shape[0], count, 3)
        for b, part in _pieces(x.shape[0], count, x.device):
            d = x[b].index_select(0, j[part]) - x[b].index_select(0, i[part])
            if shifts is not None:
                d = d + shifts[b, part]
            length = torch.linalg.vector_norm(d, dim=-1, out=r[b, part])
            torch.div(d, length.unsqueeze(-1), out=unit[b, part])
        ctx.save_for_backward(positions, i, j, shift, unit)
        return r.reshape(*batch, count)

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
        grad = grad.reshape(unit.shape[:-1])
        grad_positions = positions.new_zeros(unit.shape[0], *positions.shape[-2:]) if needs[0] else None
        grad_shift = torch.empty_like(unit) if needs[1] else None
        for b, part in _pieces(unit.shape[0], unit.shape[1], unit.device):
            w = grad[b, part].unsqueeze(-1) * unit[b, part]
            if grad_positions is not None:
                grad_positions[b].index_add_(0, j[part], w).index_add_(0, i[part], -w)
            if grad_shift is not None:
                grad_shift[b, part] = w
        if grad_positions is not None:
            grad_positions = grad_positions.reshape(positions.shape)
        if grad_shift is not None:
            grad_shift = grad_shift.reshape(*positions.shape[:-2], *unit.shape[1:]).sum_to_size(shift.shape)
        return grad_positions, None, None, grad_shift


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


__all__ = ["PairFunction", "PairDistance", "PairCache", "CHUNK_ELEMENTS"]
