"""Effect handlers: each changes what the primitives of a model do, in a few lines.

Every handler is a :class:`ppl.primitives.Messenger`: use it as a context manager (``with trace() as tr:``),
wrap a model with it (``trace(model).get_trace(*args)``, ``seed(model, rng_seed=0)``) or as a decorator
(``@scale(scale=2.0)``). Handlers compose in any order; the innermost one sees a site first.
Names and semantics follow Pyro's ``poutine`` and NumPyro's ``handlers``.
"""

import torch

from ppl.errors import ModelError
from ppl.enum import config_enumerate, enum, markov
from ppl.primitives import Messenger, apply_stack

__all__ = [
    "Trace",
    "block",
    "condition",
    "config_enumerate",
    "do",
    "enum",
    "lift",
    "markov",
    "mask",
    "reparam",
    "replay",
    "scale",
    "seed",
    "site_log_prob",
    "substitute",
    "trace",
    "uncondition",
]


def site_log_prob(site):
    """The log-density of a sample site, with its mask and scale applied; shape ``batch_shape``
    (``sample_shape + batch_shape`` outside plates)."""
    log_prob = site["fn"].log_prob(site["value"])
    if site["mask"] is not None:
        log_prob = torch.where(torch.as_tensor(site["mask"], device=log_prob.device), log_prob, log_prob.new_zeros(()))
    if site["scale"] is not None:
        log_prob = log_prob * site["scale"]
    return log_prob


class Trace(dict):
    """The sites of one model run, by name, in the order they ran: each a message dict
    (keys described in :mod:`ppl.primitives`)."""

    def compute_log_prob(self):
        """Store :func:`site_log_prob` of every sample site under its ``"log_prob"`` key."""
        for site in self.values():
            if site["type"] == "sample":
                site["log_prob"] = site_log_prob(site)

    def log_prob_sum(self):
        """The joint log-density: the sum of every sample site's scaled, masked log-density (a 0-dim tensor)."""
        total = None
        for site in self.values():
            if site["type"] == "sample":
                log_prob = site_log_prob(site).sum()
                total = log_prob if total is None else total + log_prob
        return torch.as_tensor(0.0) if total is None else total


class trace(Messenger):
    """Record every site into a :class:`Trace` (``with trace() as tr`` or ``trace(model).get_trace(*args)``).

    Two sample or deterministic sites with the same name raise :class:`ppl.ModelError`.
    """

    def __enter__(self):
        super().__enter__()
        self.trace = Trace()
        return self.trace

    def postprocess_message(self, msg):
        name = msg["name"]
        if msg["type"] in ("sample", "deterministic") and name in self.trace:
            raise ModelError(
                f"two sites are named '{name}' (a {self.trace[name]['type']} and a {msg['type']} site): "
                "site names must be unique within a model run."
            )
        self.trace[name] = msg.copy()

    def get_trace(self, *args, **kwargs):
        """Run the model with ``args``/``kwargs`` and return its trace."""
        self(*args, **kwargs)
        return self.trace


class seed(Messenger):
    """Make the random draws inside reproducible: torch's global generators (CPU, and CUDA when initialized)
    are seeded with ``rng_seed`` on entry and restored on exit, so code outside sees an untouched stream.

    (``torch.distributions`` draw from the global generators and accept no ``torch.Generator``, hence
    reseeding them for the duration of the handler.)
    """

    def __init__(self, fn=None, rng_seed=None):
        if not isinstance(rng_seed, int) or isinstance(rng_seed, bool):
            raise TypeError(f"seed needs an integer rng_seed, got {rng_seed!r}.")
        self.rng_seed = rng_seed
        self._saved_states = []
        super().__init__(fn)

    def __enter__(self):
        cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self._saved_states.append((torch.get_rng_state(), cuda_states))
        torch.manual_seed(self.rng_seed)
        return super().__enter__()

    def __exit__(self, exc_type, exc_value, traceback):
        cpu_state, cuda_states = self._saved_states.pop()
        torch.set_rng_state(cpu_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        super().__exit__(exc_type, exc_value, traceback)


def _data_or_fn(handler, data, fn):
    if (data is None) == (fn is None):
        raise ValueError(f"{handler} needs exactly one of a data dict or a function of the site.")
    if data is not None:
        return lambda msg: data.get(msg["name"])
    return fn


class condition(Messenger):
    """Observe sample sites: ``data[name]`` (or ``condition_fn(site)`` when not None) becomes the site's value,
    and the site becomes observed."""

    def __init__(self, fn=None, data=None, condition_fn=None):
        self.condition_fn = _data_or_fn("condition", data, condition_fn)
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] != "sample":
            return
        value = self.condition_fn(msg)
        if value is not None:
            msg["value"] = value
            msg["is_observed"] = True


class substitute(Messenger):
    """Fix the values of sample, param, plate and deterministic sites to ``data[name]`` (or
    ``substitute_fn(site)`` when not None); unlike ``condition``, latent sites stay latent."""

    def __init__(self, fn=None, data=None, substitute_fn=None):
        self.substitute_fn = _data_or_fn("substitute", data, substitute_fn)
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] not in ("sample", "param", "plate", "deterministic"):
            return
        value = self.substitute_fn(msg)
        if value is not None:
            msg["value"] = value


class replay(Messenger):
    """Give latent sample sites (and plates' subsample indices) the values they have in ``trace``
    (e.g. a guide's trace)."""

    def __init__(self, fn=None, trace=None):
        if trace is None:
            raise ValueError("replay needs a trace to replay.")
        self.trace = trace
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] not in ("sample", "plate") or msg["name"] not in self.trace or msg["is_observed"]:
            return
        site = self.trace[msg["name"]]
        if site["type"] != msg["type"] or site["is_observed"]:
            raise ModelError(
                f"replay: site '{msg['name']}' is a latent {msg['type']} site but in the replayed trace it is "
                f"{'an observed' if site['is_observed'] else 'a'} {site['type']} site."
            )
        msg["value"] = site["value"]
        msg["infer"] = dict(site["infer"])


class block(Messenger):
    """Hide sites from the handlers outside this one: those for which ``hide_fn(site)`` is true, those named in
    ``hide``, all but those named in ``expose``, or (given none of these) all of them."""

    def __init__(self, fn=None, hide_fn=None, hide=None, expose=None):
        if sum(arg is not None for arg in (hide_fn, hide, expose)) > 1:
            raise ValueError("block takes at most one of hide_fn, hide and expose.")
        if hide is not None:
            self.hide_fn = lambda msg: msg["name"] in hide
        elif expose is not None:
            self.hide_fn = lambda msg: msg["name"] not in expose
        else:
            self.hide_fn = hide_fn or (lambda msg: True)
        super().__init__(fn)

    def process_message(self, msg):
        if self.hide_fn(msg):
            msg["stop"] = True


class mask(Messenger):
    """Zero the log-density of sample sites where ``mask`` (a bool, or a bool tensor broadcasting with the
    sites' batch shapes) is False; combines with inner masks by logical and."""

    def __init__(self, fn=None, mask=True):
        if not (isinstance(mask, bool) or (isinstance(mask, torch.Tensor) and mask.dtype == torch.bool)):
            raise TypeError(f"mask must be a bool or a bool tensor, got {mask!r}; convert it with `.bool()`.")
        self.mask = mask
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample":
            msg["mask"] = self.mask if msg["mask"] is None else self.mask & msg["mask"]


class scale(Messenger):
    """Multiply the log-density of sample sites by ``scale`` (a positive number or tensor broadcasting with the
    sites' batch shapes), e.g. to weight a minibatch."""

    def __init__(self, fn=None, scale=1.0):
        if not isinstance(scale, torch.Tensor) and not scale > 0:
            raise ValueError(f"scale must be positive, got {scale!r}.")
        self.scale = scale
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample":
            msg["scale"] = self.scale if msg["scale"] is None else self.scale * msg["scale"]


class do(Messenger):
    """Intervene: the model sees ``data[name]`` at those sample sites, while the site itself is still sampled
    and recorded under its name (Pyro's semantics); the intervened copy, named ``name + "__CF"``, is hidden
    from outer handlers."""

    def __init__(self, fn=None, data=None):
        if data is None:
            raise ValueError("do needs a data dict of interventions.")
        self.data = data
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] != "sample" or msg["name"] not in self.data or msg.get("_intervened_by") is self:
            return
        original = dict(msg, cond_indep_stack=[], scale=None, mask=None, infer=dict(msg["infer"]), _intervened_by=self)
        apply_stack(original)
        msg["name"] = msg["name"] + "__CF"
        msg["value"] = self.data[original["name"]]
        msg["is_observed"] = True
        msg["stop"] = True


class uncondition(Messenger):
    """Turn observed sample sites into latent ones (their data is kept in ``site["infer"]["obs"]``)."""

    def process_message(self, msg):
        if msg["type"] == "sample" and msg["is_observed"]:
            msg["infer"]["was_observed"] = True
            msg["infer"]["obs"] = msg["value"]
            msg["is_observed"] = False
            msg["value"] = None


class lift(Messenger):
    """Turn param sites into sample sites drawn from a prior: ``prior`` is a distribution (for every param) or a
    dict of distributions by param name. A scalar prior is expanded to the parameter's ``init_value`` shape."""

    def __init__(self, fn=None, prior=None):
        if prior is None:
            raise ValueError("lift needs a prior: a distribution or a dict of distributions by param name.")
        self.prior = prior
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] != "param":
            return
        prior = self.prior.get(msg["name"]) if isinstance(self.prior, dict) else self.prior
        if prior is None:
            return
        init_value = msg["args"][0]
        if isinstance(init_value, torch.Tensor):
            shape = init_value.shape
            if prior.batch_shape + prior.event_shape != shape:
                prior = prior.expand(shape[: len(shape) - len(prior.event_shape)])
        msg.update(type="sample", fn=prior, args=(), kwargs={"sample_shape": torch.Size()}, is_observed=False)


class reparam(Messenger):
    """Reparameterize sample sites: ``config`` maps site names to reparameterizers (or is a function of the site
    returning one or None). A reparameterizer ``r(name, fn, obs) -> (new_fn, value)`` adds its own sample sites;
    when it returns ``new_fn=None`` the original site becomes a deterministic site holding ``value``
    (see :mod:`ppl.reparam`)."""

    def __init__(self, fn=None, config=None):
        if config is None:
            raise ValueError("reparam needs a config: a dict of reparameterizers by site name, or a function.")
        self.config = config
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] != "sample":
            return
        reparameterizer = self.config.get(msg["name"]) if isinstance(self.config, dict) else self.config(msg)
        if reparameterizer is None:
            return
        new_fn, value = reparameterizer(msg["name"], msg["fn"], msg["value"])
        if new_fn is None:
            msg.update(type="deterministic", fn=None, value=value, is_observed=False, scale=None, mask=None)
            return
        if value is not None and msg["value"] is None:
            msg["is_observed"] = True
        msg["fn"] = new_fn
        msg["value"] = value

