"""The primitives a model is written with, and the one messenger stack that gives them meaning.

A primitive (``sample``, ``param``, ``plate``, ``deterministic``, ``factor``, ``module``) builds a *message*,
a dict describing its site, and passes it through the stack of active handlers with ``apply_stack``: each
handler's ``process_message`` runs from the innermost (most recently entered) handler outwards, then a default
fills in a missing value (a draw from the distribution, the parameter's value), then ``postprocess_message``
runs from the outermost handler inwards. A handler that sets ``msg["stop"]`` hides the site from every handler
outside it. This is NumPyro's design; the handlers themselves are in :mod:`ppl.handlers`.

Message keys (the same for every site type):

- ``type``: ``"sample"``, ``"param"``, ``"plate"`` or ``"deterministic"``; ``name``: the site name (str).
- ``fn``: the distribution of a sample site; the function computing the value of a param or plate site.
- ``args``, ``kwargs``: arguments of ``fn`` (a sample site's ``kwargs`` hold ``sample_shape``).
- ``value``: the site's value (None until something provides it); ``is_observed``: True for data.
- ``scale``: None or a factor multiplying the site's log-density; ``mask``: None, a bool or a bool tensor
  (broadcasting with the batch shape) zeroing the log-density where False.
- ``cond_indep_stack``: the ``CondIndepStackFrame(name, dim, size, full_size)`` of each enclosing plate,
  innermost first.
- ``infer``: a dict of hints for inference algorithms; ``stop``: see above.

Without any handler, ``sample`` draws with torch's global random number generator, as in Pyro;
:class:`ppl.handlers.seed` makes a run reproducible.
"""

import functools
from collections import namedtuple

import torch

from ppl import constraints
from ppl.errors import ModelError
from ppl.params import get_param_store

__all__ = [
    "CondIndepStackFrame",
    "Messenger",
    "Unit",
    "apply_stack",
    "deterministic",
    "factor",
    "module",
    "param",
    "plate",
    "sample",
]

_STACK = []

CondIndepStackFrame = namedtuple("CondIndepStackFrame", ["name", "dim", "size", "full_size"], defaults=(None,))
CondIndepStackFrame.__doc__ = """A plate enclosing a site: its name, its (negative) batch dim, its (subsample) size and
its full size (Pyro's ``full_size``; the plate's own site may be hidden, e.g. by ``block``)."""


class Messenger:
    """Base class of effect handlers: a context manager, and a wrapper of ``fn`` when one is given.

    ``with handler: ...`` applies the handler to the sites inside the block; ``handler(fn)`` (or
    ``handler(fn, ...)`` at construction) returns a callable that runs ``fn`` under it, so handlers serve as
    decorators and compose in any order. Subclasses override ``process_message`` and/or
    ``postprocess_message``. Leaving the context, normally or by an exception, removes the handler and any
    handler entered inside it, so the stack is clean after an error.
    """

    def __init__(self, fn=None):
        if fn is not None and not callable(fn):
            raise TypeError(f"{type(self).__name__} wraps a callable model, got {type(fn).__name__}.")
        self.fn = fn
        if fn is not None:
            functools.update_wrapper(self, fn, updated=[])

    def __enter__(self):
        _STACK.append(self)
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        for index in range(len(_STACK) - 1, -1, -1):
            if _STACK[index] is self:
                del _STACK[index:]
                break

    def process_message(self, msg):
        """Act on a site on its way out of the model (innermost handler first)."""

    def postprocess_message(self, msg):
        """Act on a site once it has its value (outermost handler first)."""

    def __call__(self, *args, **kwargs):
        if self.fn is None:
            if len(args) != 1 or kwargs or not callable(args[0]):
                raise TypeError(
                    f"{type(self).__name__} has no model to run: use it as a context manager, or give it the "
                    f"model, e.g. `{type(self).__name__}(model, ...)` or `{type(self).__name__}(...)(model)`."
                )
            wrapped = type(self).__new__(type(self))
            wrapped.__dict__.update(self.__dict__)
            Messenger.__init__(wrapped, args[0])
            return wrapped
        with self:
            return self.fn(*args, **kwargs)


def _message(site_type, name, fn, args=(), kwargs=None, value=None, is_observed=False, infer=None):
    if not isinstance(name, str):
        raise ModelError(f"site names are strings, got {name!r} ({type(name).__name__}) for a {site_type} site.")
    return {
        "type": site_type,
        "name": name,
        "fn": fn,
        "args": args,
        "kwargs": {} if kwargs is None else kwargs,
        "value": value,
        "is_observed": is_observed,
        "scale": None,
        "mask": None,
        "cond_indep_stack": [],
        "infer": {} if infer is None else dict(infer),
        "stop": False,
    }


def _draw(fn, sample_shape):
    return fn.rsample(sample_shape) if fn.has_rsample else fn.sample(sample_shape)


def apply_stack(msg):
    """Pass ``msg`` through the active handlers, fill in a missing value, and return ``msg``."""
    pointer = 0
    for pointer, handler in enumerate(reversed(_STACK)):
        handler.process_message(msg)
        if msg["stop"]:
            break
    if msg["value"] is None:
        if msg["type"] == "sample":
            msg["value"] = _draw(msg["fn"], msg["kwargs"]["sample_shape"])
        else:
            msg["value"] = msg["fn"](*msg["args"], **msg["kwargs"])
    for handler in _STACK[len(_STACK) - pointer - 1 :]:
        handler.postprocess_message(msg)
    return msg


def sample(name, fn, obs=None, sample_shape=(), infer=None, obs_mask=None):
    """A random variable ``name`` with distribution ``fn``; observed data when ``obs`` is given.

    Args:
        name: the site name, unique within a model run.
        fn: a :class:`torch.distributions.Distribution` (any; ``ppl.distributions`` adds Pyro's methods).
        obs: the observed value, or None for a latent variable.
        sample_shape: extra leading draws, shape ``sample_shape + batch_shape + event_shape`` (inside plates
            they become batch dimensions).
        infer: hints for inference algorithms (copied).
        obs_mask: with ``obs``, a bool tensor (broadcasting with the batch shape) that is False where ``obs`` is
            missing (Pyro's and NumPyro's semantics): the site splits into a latent site ``name + "_unobserved"``
            (its density masked to the missing entries: they are imputed) and an observed site
            ``name + "_observed"`` (masked to the observed entries), and ``name`` becomes a deterministic site
            holding ``obs`` with the missing entries imputed. The values of ``obs`` at missing entries are
            ignored (NaN is fine).

    Returns:
        the site's value: ``obs``, a value provided by a handler, or a draw (``rsample`` when the distribution
        supports it, so gradients flow through it).
    """
    if not isinstance(fn, torch.distributions.Distribution):
        raise ModelError(f"sample('{name}', fn): fn must be a torch distribution, got {type(fn).__name__}.")
    if obs_mask is not None:
        return _masked_observe(name, fn, obs, obs_mask, sample_shape, infer)
    if not _STACK:
        return obs if obs is not None else _draw(fn, torch.Size(sample_shape))
    msg = _message(
        "sample",
        name,
        fn,
        kwargs={"sample_shape": torch.Size(sample_shape)},
        value=obs,
        is_observed=obs is not None,
        infer=infer,
    )
    return apply_stack(msg)["value"]


def _masked_sample(name, fn, obs, mask, sample_shape, infer):
    if not _STACK:
        return obs if obs is not None else _draw(fn, torch.Size(sample_shape))
    msg = _message("sample", name, fn, kwargs={"sample_shape": torch.Size(sample_shape)}, value=obs,
                   is_observed=obs is not None, infer=infer)
    msg["mask"] = mask
    return apply_stack(msg)["value"]


def _masked_observe(name, fn, obs, obs_mask, sample_shape, infer):
    """``sample(..., obs_mask=...)``: an imputed latent part and an observed part, interleaved (see ``sample``)."""
    if obs is None:
        raise ModelError(f"sample('{name}', obs_mask=...): obs_mask needs obs (the data with entries missing).")
    if not isinstance(obs_mask, torch.Tensor) or obs_mask.dtype != torch.bool:
        raise ModelError(f"sample('{name}'): obs_mask must be a bool tensor, got {obs_mask!r}.")
    batch_mask = obs_mask.reshape(obs_mask.shape + (1,) * len(fn.event_shape))
    unobserved = _masked_sample(f"{name}_unobserved", fn, None, ~obs_mask, sample_shape,
                                {**(infer or {}), "_imputed_mask": obs_mask})
    # the missing entries of obs take the imputed values, so that NaN placeholders never reach a log-density
    value = torch.where(batch_mask, obs, unobserved)
    _masked_sample(f"{name}_observed", fn, value, obs_mask, sample_shape, infer)
    return deterministic(name, value)


def _read_param(name, init_value, constraint, event_dim):
    """The default value of a param site: the param store's (``event_dim`` only matters to subsampling plates)."""
    return get_param_store().get_param(name, init_value, constraint)


def param(name, init_value=None, constraint=constraints.real, event_dim=None):
    """A learnable parameter ``name`` held in the param store (:func:`ppl.get_param_store`).

    The store keeps the parameter unconstrained; this returns the constrained value, differentiable with
    respect to the stored tensor.

    Args:
        name: the parameter's name in the store.
        init_value: its initial (constrained) value, or a callable returning it; used only the first time.
        constraint: a constraint from :mod:`ppl.constraints`.
        event_dim: the number of rightmost dimensions that are not batch dimensions; inside a subsampling
            plate, a parameter with ``event_dim`` set is indexed with the plate's subsample indices.
    """
    msg = _message(
        "param",
        name,
        functools.partial(_read_param, name),
        args=(init_value,),
        kwargs={"constraint": constraint, "event_dim": event_dim},
    )
    return apply_stack(msg)["value"]


def deterministic(name, value):
    """Record ``value`` (a function of other sites) in traces under ``name``, and return it."""
    return apply_stack(_message("deterministic", name, None, value=value))["value"]


class Unit(torch.distributions.Distribution):
    """The pseudo-distribution of a ``factor`` site: an empty value (event shape ``(0,)``) of log-density
    ``log_factor`` (shape ``batch_shape``)."""

    arg_constraints = {}
    support = constraints.real

    def __init__(self, log_factor):
        if not isinstance(log_factor, torch.Tensor):
            log_factor = torch.tensor(float(log_factor))
        self.log_factor = log_factor
        super().__init__(log_factor.shape, torch.Size((0,)), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return Unit(self.log_factor.expand(batch_shape))

    def sample(self, sample_shape=torch.Size()):
        return self.log_factor.new_empty(self._extended_shape(sample_shape))

    def log_prob(self, value):
        return self.log_factor.expand(torch.broadcast_shapes(self.batch_shape, value.shape[:-1]))


def factor(name, log_factor):
    """Add ``log_factor`` (a tensor, shape the batch shape of the enclosing plates or broadcasting with it) to
    the model's log-density, as an observed site ``name``."""
    unit = Unit(log_factor)
    sample(name, unit, obs=unit.sample(), infer={"is_auxiliary": True})


def module(name, nn_module):
    """Register the parameters of ``nn_module`` (a :class:`torch.nn.Module`) in the param store.

    Each parameter is stored, as the very same tensor, under ``"{name}${parameter name}"`` (Pyro's naming), so
    optimizing the store optimizes the module. A value already in the store under that name (for example after
    :meth:`ppl.params.ParamStore.load`) is first copied into the module. Returns ``nn_module``.
    """
    store = get_param_store()
    for parameter_name, parameter in nn_module.named_parameters():
        full_name = f"{name}${parameter_name}"
        if full_name in store and store.unconstrained(full_name) is not parameter:
            with torch.no_grad():
                parameter.copy_(store[full_name])
            del store[full_name]
        param(full_name, parameter)
    return nn_module


def _subsample(size, subsample_size, device=None):
    """Random subsample indices of a plate (without replacement), or ``arange(size)`` when not subsampling."""
    if subsample_size == size:
        return _all_indices(size, None if device is None else torch.device(device))
    return torch.randperm(size, device=device)[:subsample_size]


@functools.lru_cache(maxsize=64)
def _all_indices(size, device):
    """``arange(size)``, made once per size and device (a model builds its plates at every step); shared, so
    read-only."""
    return torch.arange(size, device=device)


class plate(Messenger):
    """Conditionally independent batch dimension ``dim`` of size ``size`` (a context manager).

    Sample sites inside are broadcast (``fn.expand``) to the batch shape of all enclosing plates; a batch
    dimension that is neither 1 nor the plate's size is an error. Plates take batch dims from the right
    (-1, -2, ...; event dimensions are to the right of these), the first free one unless ``dim`` is given.
    With ``subsample_size`` the plate draws that many random indices without replacement and scales the
    log-density of the sites inside by ``size / subsample_size``. Entering returns the indices (a long tensor,
    ``arange(size)`` without subsampling, shared between runs: do not write into it) to index data with.

    Args:
        name: the plate's name (it appears in traces as a site of type ``"plate"`` whose value is the indices).
        size: the full size of the dimension.
        subsample_size: how many indices to use, or None for all.
        dim: a negative batch dimension, or None to allocate one.
        device: device of the indices.
    """

    def __init__(self, name, size, subsample_size=None, dim=None, device=None):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ModelError(f"plate('{name}'): size must be a positive integer, got {size!r}.")
        if subsample_size is None:
            subsample_size = size
        if not isinstance(subsample_size, int) or not 1 <= subsample_size <= size:
            raise ModelError(
                f"plate('{name}'): subsample_size must be an integer in [1, size={size}], got {subsample_size!r}."
            )
        if dim is not None and (not isinstance(dim, int) or dim >= 0):
            raise ModelError(f"plate('{name}'): dim must be a negative integer (counted from the right), got {dim!r}.")
        msg = _message("plate", name, _subsample, args=(size, subsample_size), kwargs={"device": device})
        msg = apply_stack(msg)
        occupied = {frame.dim: frame.name for frame in msg["cond_indep_stack"]}
        if dim is None:
            dim = -1
            while dim in occupied:
                dim -= 1
        elif dim in occupied:
            raise ModelError(
                f"plate('{name}', dim={dim}): dim {dim} is already used by the enclosing plate '{occupied[dim]}'; "
                "give each nested plate its own dim, or leave dim=None to allocate one."
            )
        self.name = name
        self.size = size
        self.dim = dim
        self.indices = msg["value"]
        self.subsample_size = self.indices.shape[0]
        super().__init__()

    def __enter__(self):
        super().__enter__()
        return self.indices

    def process_message(self, msg):
        if msg["type"] not in ("sample", "param", "plate", "deterministic"):
            return
        msg["cond_indep_stack"].append(CondIndepStackFrame(self.name, self.dim, self.subsample_size, self.size))
        if msg["type"] != "sample":
            return
        _expand_to_plates(msg)
        if self.subsample_size < self.size:
            ratio = self.size / self.subsample_size
            msg["scale"] = ratio if msg["scale"] is None else msg["scale"] * ratio

    def postprocess_message(self, msg):
        if msg["type"] != "param" or self.subsample_size == self.size or msg["kwargs"]["event_dim"] is None:
            return
        value = msg["value"]
        dim = self.dim - msg["kwargs"]["event_dim"]
        if value.dim() < -dim or value.shape[dim] == 1:
            return
        if value.shape[dim] != self.size:
            raise ModelError(
                f"param('{msg['name']}', event_dim={msg['kwargs']['event_dim']}) inside plate '{self.name}' has "
                f"size {value.shape[dim]} at the plate's dim {self.dim}, expected the plate's size {self.size}."
            )
        msg["value"] = value.index_select(dim, self.indices.to(value.device))


def _broadcast_shapes(plate_shape, dist_shape):
    """Right-aligned broadcast of two shapes, or None when they do not broadcast."""
    ndim = max(len(plate_shape), len(dist_shape))
    plate_shape = (1,) * (ndim - len(plate_shape)) + tuple(plate_shape)
    dist_shape = (1,) * (ndim - len(dist_shape)) + tuple(dist_shape)
    shape = []
    for plate_size, dist_size in zip(plate_shape, dist_shape):
        if plate_size != dist_size and plate_size != 1 and dist_size != 1:
            return None
        shape.append(dist_size if plate_size == 1 else plate_size)
    return torch.Size(shape)


def _expand_to_plates(msg):
    """Broadcast a sample site's distribution to the batch shape of its plates (NumPyro's rule)."""
    frames = msg["cond_indep_stack"]
    plate_shape = [1] * max(-frame.dim for frame in frames)
    for frame in frames:
        plate_shape[frame.dim] = frame.size
    fn = msg["fn"]
    dist_shape = msg["kwargs"]["sample_shape"] + fn.batch_shape
    batch_shape = _broadcast_shapes(plate_shape, dist_shape)
    if batch_shape is None:
        plates = ", ".join(f"'{frame.name}' (size {frame.size}, dim {frame.dim})" for frame in frames)
        raise ModelError(
            f"sample site '{msg['name']}' has batch shape {tuple(dist_shape)}, which does not broadcast with its "
            f"plates {plates}. Each batch dim must be 1 or its plate's size (with subsampling, index the data "
            "with the plate's indices)."
        )
    msg["kwargs"]["sample_shape"] = torch.Size()
    if batch_shape != fn.batch_shape:
        msg["fn"] = fn.expand(batch_shape)
