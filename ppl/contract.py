"""Summing enumerated sites out of a trace: plate-aware variable elimination in log space.

A trace run under :class:`ppl.enum.enum` holds, for each sample site, a log-density whose dims are plates and
enumerated sites (read from ``site["infer"]["_dim_to_id"]``, so that reused dims are told apart). Each becomes
a *factor*: a tensor with one named dim per plate or enumerated site of size > 1. The factors are contracted
as Pyro's ``contract_tensor_tree`` does: from the most deeply nested set of plates outwards, the enumerated
sites local to those plates are eliminated one at a time (the smallest intermediate first), then the plates
that no remaining enumerated site needs are multiplied out (their log-densities summed). A factor shared by
enumerated sites in plates that do not nest raises :class:`ModelError` (not tractable).

- :func:`log_joint` gives ``log sum_z p(x, z, ...)`` of a trace (what ``Potential`` and ``TraceEnum_ELBO`` use).
- :func:`sample_enumerated` runs the same elimination with ``max`` (temperature 0) or ``logsumexp``
  (temperature 1) and then draws every enumerated site backwards: the MAP assignment, or a posterior draw.
"""

from collections import defaultdict

import torch

from ppl.errors import ModelError

__all__ = ["log_joint", "sample_enumerated"]


class _Factor:
    """A tensor whose dims are named (``dims``: one name per dim, each of size > 1)."""

    __slots__ = ("tensor", "dims")

    def __init__(self, tensor, dims):
        self.tensor = tensor
        self.dims = tuple(dims)

    def aligned(self, names):
        """The tensor permuted to the order of ``names`` (a superset of its dims), size 1 where it lacks one."""
        order = sorted(range(len(self.dims)), key=lambda i: names.index(self.dims[i]))
        tensor = self.tensor.permute(order) if order != list(range(len(order))) else self.tensor
        shape = [1] * len(names)
        for i in order:
            shape[names.index(self.dims[i])] = self.tensor.shape[i]
        return tensor.reshape(shape)


def _combine(factors):
    """The product (sum of log-densities) of ``factors`` as one factor."""
    names = []
    for factor in factors:
        names.extend(name for name in factor.dims if name not in names)
    total = factors[0].aligned(names)
    for factor in factors[1:]:
        total = total + factor.aligned(names)
    return _Factor(total, names) if total.dim() == len(names) else _Factor(total.reshape(()), ())


def _eliminate(factor, name, op):
    axis = factor.dims.index(name)
    tensor = torch.logsumexp(factor.tensor, axis) if op == "logsumexp" else factor.tensor.amax(axis)
    return _Factor(tensor, factor.dims[:axis] + factor.dims[axis + 1 :])


def _site_factor(site, sizes):
    """The site's masked, unscaled log-density as a factor; None when none of its dims is enumerated."""
    log_prob = site["fn"].log_prob(site["value"])
    if site["mask"] is not None:
        log_prob = torch.where(torch.as_tensor(site["mask"], device=log_prob.device), log_prob, log_prob.new_zeros(()))
    dim_to_id = site["infer"].get("_dim_to_id", {})
    plates = {frame.dim: frame.name for frame in site["cond_indep_stack"] if frame.size > 1}
    names, keep = [], []
    for dim in range(-log_prob.dim(), 0):
        if log_prob.shape[dim] == 1:
            continue
        if dim in plates:
            name = ("plate", plates[dim])
        elif dim in dim_to_id:
            name = ("enum", dim_to_id[dim])
        else:
            raise ModelError(
                f"site '{site['name']}': its log-density has size {log_prob.shape[dim]} at dim {dim}, which is "
                "neither a plate nor an enumerated dim; put batch dims in plates (or use .to_event()) and set "
                "max_plate_nesting / first_available_dim left of every plate."
            )
        names.append(name)
        keep.append(dim + log_prob.dim())
        sizes[name] = log_prob.shape[dim]
    if not any(name[0] == "enum" for name in names):
        return None
    ordinal = frozenset(("plate", name) for name in plates.values())
    for name in ordinal:
        sizes.setdefault(name, next(f.size for f in site["cond_indep_stack"] if ("plate", f.name) == name))
    tensor = log_prob.reshape([log_prob.shape[axis] for axis in keep])
    return ordinal, _Factor(tensor, names)


def _factors(model_trace):
    """``(factors, rest, scale)``: the enumerated factors ``[(ordinal, factor)]``, the scaled log-density sum of
    the other sample sites, and the common scale of the enumerated factors."""
    factors, rest, scales, sizes = [], None, set(), {}
    for site in model_trace.values():
        if site["type"] != "sample":
            continue
        found = _site_factor(site, sizes)
        if found is None:
            log_prob = site["fn"].log_prob(site["value"])
            if site["mask"] is not None:
                mask = torch.as_tensor(site["mask"], device=log_prob.device)
                log_prob = torch.where(mask, log_prob, log_prob.new_zeros(()))
            if site["scale"] is not None:
                log_prob = log_prob * site["scale"]
            rest = log_prob.sum() if rest is None else rest + log_prob.sum()
            continue
        factors.append(found)
        scale = site["scale"]
        if isinstance(scale, torch.Tensor):
            if scale.dim():
                raise ModelError(f"site '{site['name']}': enumeration supports scalar scales only.")
            scale = float(scale)
        scales.add(1.0 if scale is None else float(scale))
    if len(scales) > 1:
        raise ModelError(
            f"the sites that depend on enumerated sites have different scales {sorted(scales)} (subsampling plates "
            "or scale handlers): enumeration needs one common scale; subsample only plates that hold the "
            "enumerated sites together with everything that depends on them."
        )
    return factors, rest, (scales.pop() if scales else 1.0), sizes


def _contract(factors, sizes, op, record=None):
    """Eliminate every enumerated dim of ``factors`` (``[(ordinal, factor)]``) and multiply out the plates: a
    0-dim tensor. ``record`` (a list) receives ``(name, factor)`` before each elimination, in order."""
    var_ordinal = {}
    by_ordinal = defaultdict(list)
    for ordinal, factor in factors:
        by_ordinal[ordinal].append(factor)
        for name in factor.dims:
            if name[0] == "enum":
                var_ordinal[name] = var_ordinal.get(name, ordinal) & ordinal
    total = None
    while by_ordinal:
        leaf = max(by_ordinal, key=lambda o: (len(o), sorted(o)))
        terms = by_ordinal.pop(leaf)
        local = {name for term in terms for name in term.dims if var_ordinal.get(name) == leaf}
        while local:
            def cost(name):
                names = {n for term in terms if name in term.dims for n in term.dims}
                size = 1
                for n in names:
                    size *= sizes[n]
                return size, name[1]

            name = min(local, key=cost)
            local.discard(name)
            group = [term for term in terms if name in term.dims]
            terms = [term for term in terms if name not in term.dims]
            combined = _combine(group)
            if record is not None:
                record.append((name, combined))
            terms.append(_eliminate(combined, name, op))
        for term in terms:
            pending = [name for name in term.dims if name[0] == "enum"]
            parent = frozenset().union(*(var_ordinal[name] for name in pending))
            if pending and parent == leaf:
                plates = ", ".join(sorted(str(p[1]) for p in leaf))
                raise ModelError(
                    f"enumerated sites in plates that do not nest share a factor in plates {plates}: summing them "
                    "out is not tractable. Enumerate only sites whose plates nest, or sample some in a guide."
                )
            tensor, dims = term.tensor, list(term.dims)
            for plate in leaf - parent:
                if plate in dims:
                    axis = dims.index(plate)
                    tensor = tensor.sum(axis)
                    dims.pop(axis)
                else:
                    tensor = tensor * sizes[plate]
            if pending:
                by_ordinal[parent].append(_Factor(tensor, dims))
            else:
                total = tensor if total is None else total + tensor
    return total


def log_joint(model_trace):
    """``log sum_z p(...)``: the trace's joint log-density with its enumerated sites summed out (a 0-dim tensor;
    scaled and masked as :meth:`ppl.handlers.Trace.log_prob_sum`)."""
    factors, rest, scale, sizes = _factors(model_trace)
    total = rest if rest is not None else torch.zeros(())
    if factors:
        contracted = _contract(factors, sizes, "logsumexp")
        total = total + (contracted * scale if scale != 1.0 else contracted)
    return total


def _gather(factor, values):
    """``factor`` with its dims named in ``values`` indexed at those values (each a factor of indices)."""
    for name, value in values.items():
        if name not in factor.dims:
            continue
        names = list(factor.dims)
        names.extend(n for n in value.dims if n not in names)
        tensor = factor.aligned(names)
        index = value.aligned(names)
        shape = torch.broadcast_shapes(tensor.shape, index.shape)
        axis = names.index(name)
        index_shape = list(shape)
        index_shape[axis] = 1
        tensor = tensor.expand(shape[:axis] + (tensor.shape[axis],) + shape[axis + 1 :])
        tensor = tensor.gather(axis, index.expand(index_shape)).squeeze(axis)
        names.pop(axis)
        factor = _Factor(tensor, names)
    return factor


def sample_enumerated(model_trace, temperature=1, generator=None):
    """Draw every enumerated site of ``model_trace`` (run under :class:`ppl.enum.enum`) from its posterior given
    the rest of the trace: jointly at ``temperature=1``, the joint MAP at ``temperature=0`` (Pyro's
    ``infer_discrete``). Masks apply, scales do not.

    Returns:
        ``{site name: value}``: each value indexes the site's enumerated support (of the site's shape, its plate
        dims in place, size 1 where the posterior does not vary).
    """
    if temperature not in (0, 1):
        raise ValueError(f"temperature must be 0 (MAP) or 1 (sample), got {temperature!r}.")
    factors, _, _, sizes = _factors(model_trace)
    record = []
    if factors:
        _contract(factors, sizes, "max" if temperature == 0 else "logsumexp", record)
    values = {}
    for name, factor in reversed(record):
        factor = _gather(factor, values)
        axis = factor.dims.index(name)
        logits = factor.tensor.movedim(axis, -1)
        if temperature == 0:
            index = logits.argmax(-1)
        else:
            probs = torch.softmax(logits, -1)
            index = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
            index = index.reshape(probs.shape[:-1])
        values[name] = _Factor(index, factor.dims[:axis] + factor.dims[axis + 1 :])
    result = {}
    for site in model_trace.values():
        if site["type"] != "sample" or "_enumerate_id" not in site["infer"]:
            continue
        name = ("enum", site["infer"]["_enumerate_id"])
        fn = site["fn"]
        support = site["value"].reshape((-1,) + tuple(fn.event_shape))
        plates = {frame.name: frame.dim for frame in site["cond_indep_stack"]}
        nesting = max((-dim for dim in plates.values()), default=0)
        if name not in values:  # no factor depends on it: a draw from its own support is not defined here
            raise ModelError(f"site '{site['name']}' was enumerated but no log-density depends on it.")
        index = values[name]
        order = sorted(index.dims, key=lambda n: plates[n[1]])
        tensor = index.aligned(order) if order else index.tensor
        shape = [1] * nesting
        for n, size in zip(order, tensor.shape):
            shape[plates[n[1]]] = size
        result[site["name"]] = support[tensor.reshape(shape)]
    return result
