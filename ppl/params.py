"""The param store: named learnable parameters, held unconstrained, with their constraints.

``ppl.param(name, ...)`` reads and creates parameters in the default store (:func:`get_param_store`), as
``pyro.param`` does; :func:`clear_param_store` empties it. Optimizers act on the unconstrained tensors
(:meth:`ParamStore.named_parameters`). ``save``/``load`` use ``torch.save``/``torch.load(weights_only=True)``:
the file holds only tensors, numbers and strings (the unconstrained values and the constraints by name), never
pickled objects.
"""

import torch

from ppl import constraints
from ppl.errors import ModelError, PPLError
from ppl.transforms import biject_to, is_identity

__all__ = ["ParamStore", "clear_param_store", "get_param_store"]

_CONSTRAINT_ARGS = ("lower_bound", "upper_bound", "base_constraint", "reinterpreted_batch_ndims")


def _constraint_to_spec(constraint, param_name):
    """A constraint as plain data: ``{"name": ...}`` plus its arguments (bounds, base constraint, ndims)."""
    for name in constraints.__all__:
        if getattr(constraints, name) is constraint:
            return {"name": name}
    for name in constraints.__all__:
        if getattr(constraints, name) is type(constraint):
            spec = {"name": name}
            for arg in _CONSTRAINT_ARGS:
                if hasattr(constraint, arg):
                    value = getattr(constraint, arg)
                    spec[arg] = _constraint_to_spec(value, param_name) if arg == "base_constraint" else value
            return spec
    raise PPLError(
        f"cannot save param '{param_name}': its constraint {constraint!r} is not one of ppl.constraints; "
        "save and restore that parameter yourself."
    )


def _constraint_from_spec(spec):
    """The constraint a saved spec names; only names of ``ppl.constraints`` are looked up (a file is data)."""
    if not isinstance(spec, dict) or spec.get("name") not in constraints.__all__:
        shown = spec.get("name") if isinstance(spec, dict) else spec
        raise PPLError(f"param store state: unknown constraint {shown!r}; expected one of ppl.constraints' names")
    factory = getattr(constraints, spec["name"])
    args = {key: value for key, value in spec.items() if key != "name"}
    if not args:
        return factory
    if "base_constraint" in args:
        args["base_constraint"] = _constraint_from_spec(args["base_constraint"])
    return factory(**args)


class ParamStore:
    """Named parameters, each an unconstrained leaf tensor (``requires_grad=True``) plus its constraint.

    Indexing returns the constrained value ``biject_to(constraint)(unconstrained)``, differentiable with
    respect to the stored tensor.
    """

    def __init__(self):
        self._unconstrained = {}
        self._constraints = {}
        self._transforms = {}  # name -> biject_to(its constraint), None for the identity (built once)

    def _set_constraint(self, name, constraint):
        transform = biject_to(constraint)
        self._constraints[name] = constraint
        self._transforms[name] = None if is_identity(transform) else transform

    def get_param(self, name, init_value=None, constraint=constraints.real):
        """The constrained value of ``name``, created from ``init_value`` (a tensor in the support of
        ``constraint``, or a callable returning one) if the store does not hold it yet.

        A leaf tensor that requires grad (an ``nn.Parameter``) with the ``real`` constraint is stored as is, so
        the store and its owner share it; anything else is stored as a detached unconstrained copy.
        """
        if name not in self._unconstrained:
            if init_value is None:
                raise ModelError(
                    f"param('{name}') is not in the param store and has no init_value: pass init_value the first "
                    "time the parameter is used (or load a saved store)."
                )
            if callable(init_value):
                init_value = init_value()
            if not isinstance(init_value, torch.Tensor):
                init_value = torch.as_tensor(init_value, dtype=torch.get_default_dtype())
            if not bool(constraint.check(init_value).all()):
                raise ModelError(
                    f"param('{name}'): init_value is outside its constraint {constraint!r}; "
                    "give a value in the support."
                )
            with torch.no_grad():
                unconstrained = biject_to(constraint).inv(init_value)
            if not (unconstrained is init_value and init_value.is_leaf and init_value.requires_grad):
                unconstrained = unconstrained.detach().clone().requires_grad_(True)
            self._unconstrained[name] = unconstrained
            self._set_constraint(name, constraint)
        return self[name]

    def __getitem__(self, name):
        transform = self._transforms[name]
        unconstrained = self._unconstrained[name]
        return unconstrained if transform is None else transform(unconstrained)

    def __contains__(self, name):
        return name in self._unconstrained

    def __len__(self):
        return len(self._unconstrained)

    def __delitem__(self, name):
        del self._unconstrained[name]
        del self._constraints[name]
        del self._transforms[name]

    def keys(self):
        return self._unconstrained.keys()

    def items(self):
        """``(name, constrained value)`` pairs."""
        return [(name, self[name]) for name in self._unconstrained]

    def unconstrained(self, name):
        """The stored leaf tensor of ``name`` (what an optimizer updates)."""
        return self._unconstrained[name]

    def constraint(self, name):
        return self._constraints[name]

    def named_parameters(self):
        """``(name, unconstrained leaf tensor)`` pairs, for optimizers."""
        return list(self._unconstrained.items())

    def clear(self):
        self._unconstrained.clear()
        self._constraints.clear()
        self._transforms.clear()

    def get_state(self):
        """The store as plain data (Pyro's name): ``{"params": {name: unconstrained tensor (detached)},
        "constraints": {name: constraint spec}}``, safe for ``torch.save``/``torch.load(weights_only=True)``."""
        return {
            "params": {name: value.detach() for name, value in self._unconstrained.items()},
            "constraints": {name: _constraint_to_spec(c, name) for name, c in self._constraints.items()},
        }

    def set_state(self, state):
        """Add (replacing same-named ones) the parameters of a :meth:`get_state` dict; the stored tensors are
        copies, so the store never aliases ``state``."""
        for name, value in state["params"].items():
            self._unconstrained[name] = value.detach().clone().requires_grad_(True)
            self._set_constraint(name, _constraint_from_spec(state["constraints"][name]))

    def save(self, path):
        """Write :meth:`get_state` to ``path`` with ``torch.save``."""
        torch.save(self.get_state(), path)

    def load(self, path, map_location=None):
        """Add (replacing same-named ones) the parameters saved in ``path``; loads with ``weights_only=True``.

        Raises:
            PPLError: ``path`` is missing, unreadable or not a file written by :meth:`save` (the message names it).
        """
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as error:  # torch raises OS, zip-archive and unpickling errors of many kinds
            raise PPLError(
                f"ParamStore.load: {path} is not a readable param store file ({type(error).__name__}: it is missing, "
                "empty, truncated or holds more than tensors, numbers and strings); give a file written by "
                "ParamStore.save."
            ) from None
        if not isinstance(state, dict) or set(state) != {"params", "constraints"}:
            raise PPLError(f"ParamStore.load: {path} is not a param store file (one written by ParamStore.save).")
        self.set_state(state)


_PARAM_STORE = ParamStore()


def get_param_store():
    """The default param store, used by ``ppl.param``."""
    return _PARAM_STORE


def clear_param_store():
    """Remove every parameter from the default param store."""
    _PARAM_STORE.clear()
