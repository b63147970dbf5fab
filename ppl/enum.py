"""Discrete enumeration: mark sites for it, enumerate them in parallel, and declare Markov structure (Pyro's names
and semantics).

- :func:`config_enumerate` marks every latent site whose distribution has an enumerable support with
  ``infer={"enumerate": "parallel"}`` (a handler, usable as a decorator).
- :class:`enum` gives each marked site its whole support as its value, laid along a tensor dim of its own to the
  left of ``first_available_dim`` (so left of every plate dim); downstream code then computes with all values at
  once by broadcasting. Each enumerated site gets a unique id, and every sample site records which enumerated
  site occupies each dim it can see (``site["infer"]["_dim_to_id"]``), so that a dim can be reused.
- :func:`markov` declares that the sites of step ``t`` depend only on the last ``history`` steps: the dims of
  older steps' enumerated sites are free again, so an HMM of any length needs two enumeration dims.

What sums the enumerated dims out (plate-aware variable elimination) is in :mod:`ppl.contract`.
"""

import itertools

from ppl.errors import ModelError
from ppl.primitives import Messenger

__all__ = ["config_enumerate", "enum", "markov"]


def _enumerable(msg):
    return msg["type"] == "sample" and not msg["is_observed"] and getattr(msg["fn"], "has_enumerate_support", False)


class config_enumerate(Messenger):
    """Mark every latent sample site with an enumerable support (Bernoulli, Categorical, ...) for enumeration
    (``site["infer"]["enumerate"] = default``), unless the site already says how; ``@config_enumerate`` or
    ``config_enumerate(model, default="parallel")``. Only ``"parallel"`` enumeration is implemented."""

    def __init__(self, fn=None, default="parallel", expand=False):
        if default not in ("parallel", "sequential", None):
            raise ValueError(f"config_enumerate: default must be 'parallel', 'sequential' or None, got {default!r}.")
        self.default = default
        self.expand = expand
        super().__init__(fn)

    def process_message(self, msg):
        if _enumerable(msg) and "enumerate" not in msg["infer"]:
            msg["infer"]["enumerate"] = self.default
            msg["infer"].setdefault("expand", self.expand)


class _Markov(Messenger):
    """The handler behind :func:`markov`: tags each sample site with ``(self, step, history)`` in
    ``site["infer"]["_markov"]``. Re-entrant: nested entries (a recursive ``@markov`` function) are steps."""

    def __init__(self, fn=None, history=1, keep=False):
        if not isinstance(history, int) or history < 0:
            raise ValueError(f"markov: history must be an integer >= 0, got {history!r}.")
        self.history = history
        self.keep = keep
        self._depth = 0
        self._pos = -1
        super().__init__(fn)

    def __enter__(self):
        self._depth += 1
        self._pos += 1
        if self._depth == 1:
            super().__enter__()
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self._depth -= 1
        self._pos -= 1
        if self._depth == 0:
            super().__exit__(exc_type, exc_value, traceback)

    def iterate(self, iterable):
        self._depth += 1
        super().__enter__()
        try:
            for pos, value in enumerate(iterable):
                self._pos = pos
                yield value
        finally:
            self._depth -= 1
            self._pos = -1
            super().__exit__(None, None, None)

    def process_message(self, msg):
        if msg["type"] == "sample":
            msg["infer"]["_markov"] = msg["infer"].get("_markov", ()) + ((self, self._pos, self.history),)


def markov(fn=None, history=1, keep=False):
    """Markov dependence between steps (Pyro's ``pyro.markov``): sites of a step depend on those of the last
    ``history`` steps only, so the enumeration dims of older steps are reused.

    ``for t in markov(range(T)): ...`` (each item a step), ``with markov(): ...`` or ``@markov`` on a recursive
    step function (each nested entry a step). ``keep`` is accepted for Pyro's signature; neighbouring branches
    are always kept apart (a correct, if not minimal, choice of dims).
    """
    if fn is not None and not callable(fn):
        return _Markov(history=history, keep=keep).iterate(fn)
    return _Markov(fn, history=history, keep=keep)


def _hidden(markov_tags, current):
    """Whether a site tagged ``markov_tags`` is out of the Markov window of a site at ``current`` steps."""
    return any(handler in current and current[handler] - pos > history for handler, pos, history in markov_tags)


class enum(Messenger):
    """Enumerate sites marked ``infer={"enumerate": "parallel"}`` in parallel (Pyro's ``poutine.enum``).

    Each such latent site takes the value ``fn.enumerate_support(expand=False)`` moved to a dim of its own: the
    first dim at or left of ``first_available_dim`` (a negative integer, left of every plate dim: usually
    ``-max_plate_nesting - 1``) that no enumerated site visible from it occupies (see :func:`markov`). The site
    records ``infer["_enumerate_dim"]``; every sample site records ``infer["_dim_to_id"]`` (dim -> id of the
    enumerated site there).
    """

    def __init__(self, fn=None, first_available_dim=None):
        if not isinstance(first_available_dim, int) or isinstance(first_available_dim, bool) or first_available_dim >= 0:
            raise ValueError(
                f"enum: first_available_dim must be a negative integer (-max_plate_nesting - 1), got "
                f"{first_available_dim!r}."
            )
        self.first_available_dim = first_available_dim
        super().__init__(fn)

    def __enter__(self):
        self._sites = []  # (id, dim, markov tags) of each enumerated site so far
        self._ids = itertools.count()
        return super().__enter__()

    def process_message(self, msg):
        if msg["type"] != "sample":
            return
        current = {handler: pos for handler, pos, _ in msg["infer"].get("_markov", ())}
        visible = {dim: id_ for id_, dim, tags in self._sites if not _hidden(tags, current)}
        msg["infer"]["_dim_to_id"] = visible
        strategy = msg["infer"].get("enumerate")
        if strategy is None or msg["is_observed"] or msg["value"] is not None:
            return
        name = msg["name"]
        if strategy != "parallel":
            raise ModelError(
                f"site '{name}': enumerate={strategy!r} is not implemented, only 'parallel' (config_enumerate's "
                "default)."
            )
        fn = msg["fn"]
        if not getattr(fn, "has_enumerate_support", False):
            raise ModelError(
                f"site '{name}' is marked for enumeration but {type(fn).__name__} has no enumerable support; "
                "enumerate only finite discrete sites (Bernoulli, Categorical, ...)."
            )
        nesting = max((-frame.dim for frame in msg["cond_indep_stack"]), default=0)
        if nesting >= -self.first_available_dim:
            raise ModelError(
                f"site '{name}' sits in a plate at dim {-nesting}, but enumeration starts at dim "
                f"{self.first_available_dim}: raise max_plate_nesting to at least {nesting}."
            )
        dim = self.first_available_dim
        while dim in visible:
            dim -= 1
        support = fn.enumerate_support(expand=False)
        value = support.reshape((support.shape[0],) + (1,) * (-dim - 1) + tuple(fn.event_shape))
        id_ = next(self._ids)
        visible[dim] = id_
        self._sites.append((id_, dim, msg["infer"].get("_markov", ())))
        msg["value"] = value
        msg["infer"]["_enumerate_dim"] = dim
        msg["infer"]["_enumerate_id"] = id_
