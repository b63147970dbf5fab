"""From a model to log-densities: the joint log-density of a run, and the unconstrained potential for HMC/VI.

``log_density(model, args, kwargs, params)`` runs a model with some site values fixed and returns its joint
log-density and trace (NumPyro's function). :class:`Potential` flattens every continuous latent sample site
into one unconstrained vector ``z`` and gives the potential energy ``U(z) = -log p(x, theta(z)) - log|det J(z)|``
that ``inference`` samples (NUTS) and approximates (autoguides), batched over chains, together with the maps
between ``z`` and constrained site values and the initialization of ``z``.
"""

import contextlib
import math
from collections import namedtuple

import torch

from ppl.contract import log_joint
from ppl.enum import config_enumerate, enum
from ppl.errors import ModelError
from ppl.handlers import substitute, trace
from ppl.initialization import init_to_uniform
from ppl.primitives import Messenger
from ppl.transforms import biject_to, is_identity

__all__ = ["LatentSite", "Potential", "log_density"]


def log_density(model, model_args=(), model_kwargs=None, params=None):
    """The joint log-density of one run of ``model`` and its trace.

    Args:
        model: a model function.
        model_args, model_kwargs: its arguments.
        params: a dict of values for sample/param/deterministic sites (substituted), or None.

    Returns:
        ``(log_joint, trace)``: the sum over sample sites of their scaled, masked log-densities (0-dim tensor)
        and the :class:`ppl.handlers.Trace` of the run.
    """
    if params:
        model = substitute(model, data=params)
    model_trace = trace(model).get_trace(*model_args, **(model_kwargs or {}))
    return model_trace.log_prob_sum(), model_trace


LatentSite = namedtuple("LatentSite", ["name", "start", "stop", "shape", "unconstrained_shape"])
LatentSite.__doc__ = """A latent site's place in the flat vector: ``z[start:stop]`` reshaped to
``unconstrained_shape`` maps to the constrained value of shape ``shape``."""


def _is_latent(site):
    return site["type"] == "sample" and not site["is_observed"]


def _is_enumerable(site):
    """A discrete latent site with a finite support, not marked for another kind of enumeration."""
    return (
        site["fn"].support.is_discrete
        and getattr(site["fn"], "has_enumerate_support", False)
        and site["infer"].get("enumerate", "parallel") == "parallel"
    )


class _Unconstrain(Messenger):
    """Give each latent site the constrained value of its slice of ``z``, accumulating log|det J| (scaled like
    the site's log-density; None while every transform so far is the identity)."""

    def __init__(self, fn, sites, z):
        self.sites = sites
        # one split of z (its backward is one concatenation) rather than a slice per site (each with a backward)
        sizes = [site.stop - site.start for site in sites.values()]
        self.parts = dict(zip(sites, torch.split(z, sizes) if len(sizes) > 1 else (z,)))
        self.log_det = None
        super().__init__(fn)

    def process_message(self, msg):
        if not _is_latent(msg):
            return
        site = self.sites.get(msg["name"])
        if site is None and msg["infer"].get("enumerate") == "parallel":
            return  # summed out by enumeration
        if site is None:
            raise ModelError(
                f"latent site '{msg['name']}' did not appear when the potential was set up: a model's latent sites "
                "must be the same in every run (no random control flow over sample statements)."
            )
        transform = biject_to(msg["fn"].support)
        unconstrained = self.parts[site.name].reshape(site.unconstrained_shape)
        value = transform(unconstrained)
        msg["value"] = value
        imputed = msg["infer"].get("_imputed_mask")
        if is_identity(transform) and imputed is None:  # log|det J| = 0
            return
        batch_dim = value.dim() - len(msg["fn"].event_shape)
        log_det = transform.log_abs_det_jacobian(unconstrained, value)
        if log_det.dim() > batch_dim:
            log_det = log_det.sum(tuple(range(batch_dim, log_det.dim())))
        if imputed is not None:
            # The entries of an obs_mask site's imputed part that are observed have no density (flat and unused):
            # a standard normal there in unconstrained space keeps the potential proper, and changes no other
            # site's posterior.
            tether = -0.5 * unconstrained**2 - 0.5 * math.log(2 * math.pi)
            if tether.dim() > batch_dim:
                tether = tether.sum(tuple(range(batch_dim, tether.dim())))
            log_det = torch.where(imputed, tether, log_det)
        if msg["scale"] is not None:
            log_det = log_det * msg["scale"]
        log_det = log_det.sum()
        self.log_det = log_det if self.log_det is None else self.log_det + log_det


@contextlib.contextmanager
def unvalidated():
    """Distribution argument validation off: parameters outside their support then give NaN or infinite
    log-densities (a divergence to a sampler) instead of exceptions, and vmap works (validation branches on
    tensor values in Python). Observed data is validated once, when the potential is set up."""
    default = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(default)


def _evaluate(fn, argument, batched):
    """``fn(argument)``, or ``torch.func.vmap(fn)(argument)`` over a leading batch dimension, unvalidated."""
    with unvalidated():
        return torch.func.vmap(fn, randomness="different")(argument) if batched else fn(argument)


class Potential:
    """The potential energy of a model's latent sites in one flat unconstrained vector.

    Every continuous latent sample site (not observed) is mapped to unconstrained reals by
    ``ppl.transforms.biject_to(site support)``; ``z`` (shape ``(dim,)``) concatenates the flattened
    unconstrained values in the order the model first samples the sites (see :attr:`latent_sites`). Supports
    may depend on other sites (e.g. ``Uniform(0, a)``): the transform is taken from each run.

    ``potential(z)`` is ``U(z) = -log p(x, theta(z)) - log|det d theta / dz|``, where the log-density is the
    trace's (scaled and masked) joint log-density and ``theta(z)`` the constrained latent values; it is a
    differentiable torch function of ``z``. A batch ``z`` of shape ``(C, dim)`` (one row per chain) gives shape
    ``(C,)``, computed in one vectorized run of the model (``torch.func.vmap``: the model must not branch in
    Python on the values of latent sites). Distribution argument validation is on when the potential is set
    up (so bad observed data raises there) and off in every evaluation, where parameters outside their support
    give a NaN or infinite potential, which samplers treat as a divergence.

    Discrete latent sites with a finite support (Bernoulli, Categorical, ...) are summed out by parallel
    enumeration (``ppl.handlers.enum``, ``ppl.log_joint``), as NumPyro does: the potential is then that of the
    continuous sites with the discrete ones marginalized (:attr:`enumerated` names them), and they do not appear
    in ``z`` or in :meth:`constrain` (draw them afterwards with ``inference.discrete.infer_discrete``).
    With ``enumerate="marked"`` (what autoguides use) only sites marked ``infer={"enumerate": "parallel"}``
    (``ppl.config_enumerate``) are summed out, and other discrete sites raise.

    Args:
        model: a model function (written with ``ppl`` primitives).
        model_args, model_kwargs: the arguments it is run with (data).
        init_strategy: an initialization strategy from :mod:`ppl.initialization` (default
            ``init_to_uniform``), used by :meth:`initial_params` and to set the potential up.
        invalid_errors: the exceptions by which the model says that its density cannot be computed at a point (a
            failed Cholesky factorization, a domain error; ``inference.mcmc`` passes its ``MODEL_ERRORS``): a
            draw of the init strategy at which the model raises one is redrawn, to set the potential up (up to
            100 draws) and in :meth:`initial_params`, as a draw with a non-finite potential is. A
            :class:`ModelError` (a malformed model) always raises. Default: none.
        enumerate: ``"all"`` (default) or ``"marked"``: which discrete latent sites are summed out (see above).

    Raises:
        ModelError: a latent site is discrete without a finite support (e.g. Poisson) or its support has no
            bijection, two sites share a name, a
            site's log-density cannot be computed at setup (e.g. observed data outside the support), or the model
            raised one of ``invalid_errors`` at every draw at setup.
    """

    def __init__(self, model, model_args=(), model_kwargs=None, init_strategy=init_to_uniform, invalid_errors=(),
                 enumerate="all"):
        if enumerate not in ("all", "marked"):
            raise ValueError(f"Potential: enumerate must be 'all' or 'marked', got {enumerate!r}.")
        self.model = model
        self.model_args = tuple(model_args)
        self.model_kwargs = dict(model_kwargs or {})
        self.init_strategy = init_strategy
        self.invalid_errors = tuple(invalid_errors)
        self.latent_sites = {}
        self.enumerated = []
        self._eval_model = model
        start = 0
        setup_trace = self._setup_trace()
        for name, site in setup_trace.items():
            if site["type"] == "sample":
                try:
                    site["fn"].log_prob(site["value"])
                except ValueError as error:
                    raise ModelError(f"site '{name}': {error}") from error
            if not _is_latent(site):
                continue
            if _is_enumerable(site) and (enumerate == "all" or site["infer"].get("enumerate") == "parallel"):
                self.enumerated.append(name)
                continue
            transform = self._transform(site)
            unconstrained_shape = transform.inverse_shape(site["value"].shape)
            stop = start + math.prod(unconstrained_shape)
            self.latent_sites[name] = LatentSite(name, start, stop, site["value"].shape, unconstrained_shape)
            start = stop
        self.dim = start
        if self.enumerated:
            nesting = max((len(s["fn"].batch_shape) for s in setup_trace.values() if s["type"] == "sample"), default=0)
            self._eval_model = enum(config_enumerate(model), first_available_dim=-nesting - 1)

    @staticmethod
    def _transform(site):
        support = site["fn"].support
        if support.is_discrete and _is_enumerable(site):
            raise ModelError(
                f"latent site '{site['name']}' is discrete ({type(site['fn']).__name__}) and not marked for "
                "enumeration: mark it with ppl.config_enumerate (and fit with TraceEnum_ELBO), or leave it out of "
                "the guide (handlers.block(model, hide=[...]))."
            )
        if support.is_discrete:
            raise ModelError(
                f"latent site '{site['name']}' is discrete ({type(site['fn']).__name__}, support {support!r}) "
                "without a finite support to enumerate; the potential needs continuous latent sites: observe it, "
                "marginalize it out by hand, truncate it to a Categorical, or use a continuous relaxation."
            )
        try:
            return biject_to(support)
        except NotImplementedError as error:
            raise ModelError(f"latent site '{site['name']}': {error}") from None

    def _init_trace(self):
        model = substitute(self.model, substitute_fn=self.init_strategy)
        return trace(model).get_trace(*self.model_args, **self.model_kwargs)

    def _setup_trace(self, max_tries=100):
        """The init strategy's run that sets the potential up, redrawn while the model raises ``invalid_errors``."""
        for _ in range(max_tries):
            try:
                return self._init_trace()
            except self.invalid_errors as error:
                if isinstance(error, ModelError):
                    raise
                last = error
        raise ModelError(
            f"could not set the potential up: the model raised at all {max_tries} draws of the init strategy "
            f"{getattr(self.init_strategy, '__name__', self.init_strategy)!r} (the last: {type(last).__name__}: "
            f"{last}). Check why the model raises, or give valid values with init_to_value(values={{...}})."
        ) from last

    def _run(self, z):
        handler = _Unconstrain(self._eval_model, self.latent_sites, z)
        model_trace = trace(handler).get_trace(*self.model_args, **self.model_kwargs)
        return model_trace, handler.log_det

    def _check(self, z):
        if not isinstance(z, torch.Tensor) or z.dim() not in (1, 2) or z.shape[-1] != self.dim:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"Potential: z must have shape ({self.dim},) or (num_chains, {self.dim}), got {shape}.")
        return z.dim() == 2

    def _potential(self, z):
        model_trace, log_det = self._run(z)
        log_p = log_joint(model_trace) if self.enumerated else model_trace.log_prob_sum()
        return -(log_p if log_det is None else log_p + log_det)

    def __call__(self, z):
        """``U(z)``: shape ``()`` for ``z`` of shape ``(dim,)``, ``(C,)`` for ``(C, dim)``."""
        return _evaluate(self._potential, z, self._check(z))

    def _constrain(self, z):
        model_trace, _ = self._run(z)
        return {
            name: site["value"]
            for name, site in model_trace.items()
            if (_is_latent(site) and name not in self.enumerated) or site["type"] == "deterministic"
        }

    def constrain(self, z):
        """The constrained values of the latent sites, and the values of the deterministic sites, for ``z``
        (shape ``(dim,)``, or ``(C, dim)`` giving values with a leading dimension ``C``)."""
        return _evaluate(self._constrain, z, self._check(z))

    def _flatten(self, model_trace):
        """``z`` of the latent values in ``model_trace`` (shape ``(dim,)``)."""
        parts = []
        for name in self.latent_sites:
            site = model_trace[name]
            parts.append(biject_to(site["fn"].support).inv(site["value"]).reshape(-1))
        return torch.cat(parts) if parts else torch.zeros(0)

    def unconstrain(self, values):
        """The ``z`` of constrained latent values (a dict by site name; deterministic entries are ignored).
        Values with one more leading dimension than their site give ``z`` of shape ``(C, dim)``."""
        missing = [name for name in self.latent_sites if name not in values]
        if missing:
            raise ModelError(f"unconstrain: no value for the latent site(s) {', '.join(map(repr, missing))}.")
        latent = {name: values[name] for name in self.latent_sites}

        def flatten(latent):
            model = substitute(self.model, data=latent)
            return self._flatten(trace(model).get_trace(*self.model_args, **self.model_kwargs))

        first = next(iter(self.latent_sites.values()), None)
        return _evaluate(flatten, latent, first is not None and latent[first.name].dim() == len(first.shape) + 1)

    def initial_params(self, num_chains=None, max_tries=100):
        """Initial ``z`` from the init strategy, redrawn until the potential and its gradient are finite.

        Returns shape ``(dim,)``, or ``(num_chains, dim)`` with an independent draw per chain.

        A draw at which the model raises one of ``invalid_errors`` counts as a draw that is not finite.

        Raises:
            ModelError: no finite draw in ``max_tries``; the message names the sites whose log-density or
                gradient is not finite, and the error the model raised at the draws where it raised.
        """
        if num_chains is not None:
            return torch.stack([self.initial_params(max_tries=max_tries) for _ in range(num_chains)])
        with unvalidated():
            return self._find_initial_params(max_tries)

    def _find_initial_params(self, max_tries):
        if self.dim == 0:
            return self._flatten(self._init_trace())
        not_finite, raised = None, []  # the last draw with a potential that is not finite; the errors raised
        for _ in range(max_tries):
            try:
                z = self._flatten(self._init_trace()).detach().requires_grad_(True)
                potential = self._potential(z)
                (grad,) = torch.autograd.grad(potential, z, allow_unused=True)
            except self.invalid_errors as error:
                if isinstance(error, ModelError):
                    raise
                raised.append(error)
                continue
            grad = torch.zeros_like(z) if grad is None else grad
            if bool(torch.isfinite(potential)) and bool(torch.isfinite(grad).all()):
                return z.detach()
            not_finite = (z, grad)
        raise ModelError(self._diagnose(not_finite, raised, max_tries))

    def _diagnose(self, not_finite, raised, max_tries):
        message = (
            f"could not find initial values with a finite potential and gradient in {max_tries} tries "
            f"(init strategy {getattr(self.init_strategy, '__name__', self.init_strategy)!r}). "
        )
        if raised:
            last = raised[-1]
            message += f"The model raised at {len(raised)} of the draws (the last: {type(last).__name__}: {last}). "
        if not_finite is not None:
            z, grad = not_finite
            model_trace, _ = self._run(z.detach())
            bad_density = [
                name
                for name, site in model_trace.items()
                if site["type"] == "sample" and not bool(torch.isfinite(site["fn"].log_prob(site["value"])).all())
            ]
            bad_grad = [
                name
                for name, site in self.latent_sites.items()
                if not bool(torch.isfinite(grad[site.start : site.stop]).all())
            ]
            message += (
                f"Log-density not finite at: {', '.join(map(repr, bad_density)) or 'no site'}; "
                f"gradient not finite for: {', '.join(map(repr, bad_grad)) or 'no site'}. "
            )
        check = "those sites' parameters and supports (and the data)" if not_finite else "why the model raises"
        return message + f"Check {check}, or give valid values with init_to_value(values={{...}})."
