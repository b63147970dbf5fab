"""Evidence lower bounds: the losses SVI minimizes (Pyro's ``Trace_ELBO`` family, same names and semantics).

Every ELBO runs the guide, replays the model against the guide's draws, and estimates
``ELBO = E_q[log p(x, z) - log q(z)]`` from the two traces, with site log-densities scaled by subsampling
plates (so a minibatch gives an unbiased estimate of the full-data ELBO) and masked by ``mask``.

- Particles: ``num_particles`` draws are averaged. With ``vectorize_particles=True`` they are drawn in one run
  of guide and model inside an outer plate ``"num_particles_vectorized"`` at dim ``-(max_plate_nesting + 1)``
  (the model must then broadcast over a leading batch dimension, as for Pyro's vectorized particles);
  otherwise in a Python loop. ``max_plate_nesting`` is found from one blocked run when not given.
- Gradients: reparameterized draws (``rsample``) carry pathwise gradients. A guide site whose distribution
  cannot ``rsample`` (e.g. a Bernoulli) adds the score-function (REINFORCE) surrogate term
  ``log q(z_s) * stop_grad(log r)`` (``log q`` unscaled, ``log r`` the scaled ``log p - log q``), where ``log r``
  keeps only what can depend on ``z_s``: Trace_ELBO sums it over the plates the site is not in (Pyro's
  ``sum_to``); TraceGraph_ELBO further drops the terms upstream of the site and subtracts baselines.
- Distribution argument validation is on in the first evaluation (bad data raises there) and off afterwards,
  which saves its cost on every step.

Compiled versions for static models, several times faster on small models, are in :mod:`inference.vi.jit`.
"""

import contextlib
import math
import warnings

import torch

from inference.errors import InferenceError
from ppl.distributions import Delta, kl_divergence
from ppl.handlers import block, replay, site_log_prob, trace
from ppl.log_density import unvalidated
from ppl.primitives import Messenger, plate
from ppl.vectorize import max_plate_nesting

__all__ = ["ELBO", "RenyiELBO", "TraceGraph_ELBO", "TraceMeanField_ELBO", "Trace_ELBO"]


class _ParamNames(Messenger):
    """Record the names of the param sites that reach it, in order (what a step optimizes)."""

    def __init__(self):
        super().__init__()
        self.names = {}

    def postprocess_message(self, msg):
        if msg["type"] == "param":
            self.names[msg["name"]] = None


def _is_latent(site):
    return site["type"] == "sample" and not site["is_observed"]


def _is_auxiliary(site):
    return bool(site["infer"].get("is_auxiliary"))


def _log_weight(model_lp, guide_lp, particle_dim):
    """log p(x, z) - log q(z) per particle: the sum of the model's and minus the guide's site log-densities."""
    total = None
    for value in model_lp.values():
        total = _reduce(value, particle_dim) if total is None else total + _reduce(value, particle_dim)
    for value in guide_lp.values():
        total = -_reduce(value, particle_dim) if total is None else total - _reduce(value, particle_dim)
    return 0.0 if total is None else total


def _reduce(value, particle_dim):
    """Sum ``value`` over every dimension but the particle dimension: shape ``(P,)``, or ``()`` when
    ``particle_dim`` is None."""
    if particle_dim is None:
        return value.sum() if value.dim() else value
    keep = value.dim() + particle_dim
    if keep < 0:
        return value.sum()
    return value.sum([dim for dim in range(value.dim()) if dim != keep])


def _sum_to(value, frames, target_dims):
    """Sum a log-density term (batch dims aligned right, ``frames`` its plates) over every dim except the plate
    dims it shares with ``target_dims``, keeping dims so that it broadcasts with the target site's batch."""
    keep = {frame.dim for frame in frames} & target_dims
    dims = [dim for dim in range(-value.dim(), 0) if dim not in keep]
    return value.sum(dims, keepdim=True) if dims else value


class ELBO:
    """Base class: particles, traces and the checks shared by every ELBO.

    Args:
        num_particles: the number of draws averaged in each estimate.
        max_plate_nesting: the number of plate dims the model uses; None to find it from one run.
        vectorize_particles: draw all particles in one vectorized run (see the module docstring).

    Subclasses define ``_particle_terms(model_trace, guide_trace, particle_dim) -> (elbo, surrogate_elbo)``,
    each summed to shape ``(P,)`` (vectorized) or ``()``.
    """

    def __init__(self, num_particles=1, max_plate_nesting=None, vectorize_particles=True):
        if not isinstance(num_particles, int) or isinstance(num_particles, bool) or num_particles < 1:
            raise ValueError(f"{type(self).__name__}: num_particles must be a positive integer, got {num_particles!r}.")
        if max_plate_nesting is not None and (not isinstance(max_plate_nesting, int) or max_plate_nesting < 0):
            raise ValueError(
                f"{type(self).__name__}: max_plate_nesting must be None or >= 0, got {max_plate_nesting!r}."
            )
        self.num_particles = num_particles
        self.max_plate_nesting = max_plate_nesting
        self.vectorize_particles = vectorize_particles
        self._checked = False

    def _validation(self):
        return unvalidated() if self._checked else contextlib.nullcontext()

    def _guess_max_plate_nesting(self, model, guide, args, kwargs):
        with block(), torch.no_grad():
            guide_trace = trace(guide).get_trace(*args, **kwargs)
            model_trace = trace(replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        return max(max_plate_nesting(model_trace), max_plate_nesting(guide_trace))

    def _get_trace(self, model, guide, args, kwargs):
        with trace() as guide_trace:
            guide(*args, **kwargs)
        with trace() as model_trace, replay(trace=guide_trace):
            model(*args, **kwargs)
        if not self._checked:
            _check_model_guide(model_trace, guide_trace)
        return model_trace, guide_trace

    def _traces(self, model, guide, args, kwargs):
        """A list of ``(model_trace, guide_trace, particle_dim)``, one per batch of particles."""
        if self.num_particles == 1 or not self.vectorize_particles:
            return [(*self._get_trace(model, guide, args, kwargs), None) for _ in range(self.num_particles)]
        if self.max_plate_nesting is None:
            self.max_plate_nesting = self._guess_max_plate_nesting(model, guide, args, kwargs)
        particle_dim = -self.max_plate_nesting - 1
        with plate("num_particles_vectorized", self.num_particles, dim=particle_dim):
            model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        return [(model_trace, guide_trace, particle_dim)]

    def _estimate(self, model, guide, args, kwargs):
        """``(elbo, surrogate_elbo)``: the particle averages (0-dim tensors)."""
        terms = [self._particle_terms(*traces) for traces in self._traces(model, guide, args, kwargs)]
        if self.num_particles == 1:
            return terms[0]
        elbo = sum(particle_elbo.sum() for particle_elbo, _ in terms) / self.num_particles
        surrogate = sum(particle_surrogate.sum() for _, particle_surrogate in terms) / self.num_particles
        return elbo, surrogate

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """The surrogate loss (a 0-dim tensor) whose gradient is an unbiased estimate of ``-grad ELBO``."""
        with self._validation():
            _, surrogate = self._estimate(model, guide, args, kwargs)
        self._checked = True
        return -surrogate

    def loss(self, model, guide, *args, **kwargs):
        """An estimate of ``-ELBO`` (a float), without gradients."""
        with torch.no_grad(), self._validation():
            elbo, _ = self._estimate(model, guide, args, kwargs)
        self._checked = True
        return -float(elbo)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """An estimate of ``-ELBO`` (a float); accumulates the surrogate loss's gradients into the parameters."""
        with self._validation():
            elbo, surrogate = self._estimate(model, guide, args, kwargs)
            if torch.is_tensor(surrogate) and surrogate.requires_grad:
                (-surrogate).backward()
        self._checked = True
        return -float(elbo.detach())

    def state_dict(self):
        """State carried between steps (baselines), for checkpoints: plain tensors by name."""
        return {}

    def load_state_dict(self, state):
        """Restore a :meth:`state_dict`."""


def _check_model_guide(model_trace, guide_trace):
    for name, site in guide_trace.items():
        if not _is_latent(site) or _is_auxiliary(site):
            continue
        model_site = model_trace.get(name)
        if model_site is None or model_site["type"] != "sample":
            raise InferenceError(
                f"guide sample site '{name}' is not a sample site of the model: rename it to match a latent site "
                "of the model, or mark it infer={'is_auxiliary': True} if it is a helper variable of the guide."
            )
        if model_site["is_observed"]:
            raise InferenceError(
                f"guide samples '{name}', which the model observes: a guide samples the model's latent sites only."
            )
    missing = [
        name
        for name, site in model_trace.items()
        if _is_latent(site) and name not in guide_trace and "_enumerate_dim" not in site["infer"]
    ]
    if missing:
        warnings.warn(
            f"latent site(s) {', '.join(map(repr, missing))} of the model are not in the guide: they are drawn "
            "from the prior in every step.",
            stacklevel=4,
        )


def _log_probs(model_trace, guide_trace):
    """Scaled, masked log-densities: of every model sample site, and of every latent guide site."""
    model_lp = {name: site_log_prob(site) for name, site in model_trace.items() if site["type"] == "sample"}
    guide_lp = {name: site_log_prob(site) for name, site in guide_trace.items() if _is_latent(site)}
    return model_lp, guide_lp


def _nonreparam_sites(guide_trace):
    return [site for site in guide_trace.values() if _is_latent(site) and not site["fn"].has_rsample]


def _score(site):
    """The score-function factor of a site: its unscaled, unmasked log-density (what the draw came from)."""
    return site["fn"].log_prob(site["value"])


class Trace_ELBO(ELBO):
    """The standard ELBO estimator: reparameterized gradients, plus score-function terms for guide sites that
    cannot be reparameterized (Pyro's ``Trace_ELBO``; ``num_particles``, ``max_plate_nesting`` and
    ``vectorize_particles`` as in :class:`ELBO`)."""

    def _particle_terms(self, model_trace, guide_trace, particle_dim):
        model_lp, guide_lp = _log_probs(model_trace, guide_trace)
        elbo = _log_weight(model_lp, guide_lp, particle_dim)
        surrogate = elbo
        nonreparam = _nonreparam_sites(guide_trace)
        if nonreparam:
            log_r = [
                (model_trace[name]["cond_indep_stack"], (value - guide_lp.get(name, 0.0)).detach())
                for name, value in model_lp.items()
            ]
            for site in nonreparam:
                target = {frame.dim for frame in site["cond_indep_stack"]}
                cost = sum(_sum_to(value, frames, target) for frames, value in log_r)
                surrogate = surrogate + _reduce(_score(site) * cost, particle_dim)
        return elbo, surrogate


class TraceMeanField_ELBO(ELBO):
    """The ELBO with analytic KL divergences: for each latent site, ``KL(q(z) || p(z | parents))`` from
    :func:`ppl.distributions.kl_divergence` where a formula is registered (not for point masses), the Monte Carlo
    term ``log p - log q`` elsewhere (Pyro's ``TraceMeanField_ELBO``). Exact in expectation for any guide;
    lowest variance for mean-field guides. Every guide site must be reparameterizable."""

    def _particle_terms(self, model_trace, guide_trace, particle_dim):
        elbo = 0.0
        for name, site in guide_trace.items():
            if _is_latent(site) and not site["fn"].has_rsample:
                raise InferenceError(
                    f"TraceMeanField_ELBO: guide site '{name}' ({type(site['fn']).__name__}) cannot be "
                    "reparameterized; use Trace_ELBO or TraceGraph_ELBO for score-function gradients."
                )
        for name, site in model_trace.items():
            if site["type"] != "sample":
                continue
            guide_site = guide_trace.get(name)
            kl = None if site["is_observed"] or guide_site is None else _analytic_kl(guide_site, site)
            if kl is not None:
                elbo = elbo - _reduce(kl, particle_dim)
                continue
            elbo = elbo + _reduce(site_log_prob(site), particle_dim)
            if guide_site is not None and not site["is_observed"]:
                elbo = elbo - _reduce(site_log_prob(guide_site), particle_dim)
        for name, site in guide_trace.items():
            if _is_latent(site) and name not in model_trace:
                elbo = elbo - _reduce(site_log_prob(site), particle_dim)
        return elbo, elbo


def _analytic_kl(guide_site, model_site):
    """``KL(q || p)`` with the guide site's scale and mask, or None where no formula applies."""
    if isinstance(guide_site["fn"], Delta):
        return None
    try:
        kl = kl_divergence(guide_site["fn"], model_site["fn"])
    except NotImplementedError:
        return None
    if guide_site["mask"] is not None:
        kl = torch.where(torch.as_tensor(guide_site["mask"], device=kl.device), kl, kl.new_zeros(()))
    if guide_site["scale"] is not None:
        kl = kl * guide_site["scale"]
    return kl


class TraceGraph_ELBO(ELBO):
    """The ELBO with Rao-Blackwellized score-function terms (Pyro's ``TraceGraph_ELBO``).

    For a guide site ``z_s`` that cannot be reparameterized, the cost multiplying ``grad log q(z_s)`` keeps only
    the terms downstream of it: ``log p - log q`` of ``z_s`` and of the guide sites drawn after it, plus ``log p``
    of every model site from the first of those onwards (programs are taken as dense dependency graphs in
    execution order, as Pyro does), each summed over the plates ``z_s`` is not in. A baseline ``b`` is
    subtracted when the guide site asks for one with ``infer={"baseline": {...}}``:

    - ``"use_decaying_avg_baseline": True`` (and ``"baseline_beta"``, default 0.90): ``b`` is a decaying
      average of past costs (averaged over particles), kept in :meth:`state_dict`;
    - ``"baseline_value": tensor``: ``b`` given by the guide (e.g. a neural network's output); the loss then
      includes ``(cost - b)^2`` so that ``b`` is trained.
    """

    def __init__(self, num_particles=1, max_plate_nesting=None, vectorize_particles=True):
        super().__init__(num_particles, max_plate_nesting, vectorize_particles)
        self._baselines = {}

    def _particle_terms(self, model_trace, guide_trace, particle_dim):
        model_lp, guide_lp = _log_probs(model_trace, guide_trace)
        elbo = _log_weight(model_lp, guide_lp, particle_dim)
        surrogate = elbo
        model_order = {name: index for index, name in enumerate(model_lp)}
        guide_names = list(guide_lp)
        for site in _nonreparam_sites(guide_trace):
            downstream_guide = guide_names[guide_names.index(site["name"]) :]
            first = min(model_order[name] for name in downstream_guide if name in model_order)
            terms = [(model_trace[name]["cond_indep_stack"], model_lp[name]) for name in model_order
                     if model_order[name] >= first]
            terms += [(guide_trace[name]["cond_indep_stack"], -guide_lp[name]) for name in downstream_guide]
            target = {frame.dim for frame in site["cond_indep_stack"]}
            cost = sum(_sum_to(value.detach(), frames, target) for frames, value in terms)
            baseline, baseline_loss = self._baseline(site, cost, particle_dim)
            surrogate = surrogate + _reduce(_score(site) * (cost - baseline), particle_dim) - baseline_loss
        return elbo, surrogate

    def _baseline(self, site, cost, particle_dim):
        """The baseline subtracted from ``cost`` and the (surrogate-ELBO) penalty that trains a given one."""
        options = site["infer"].get("baseline", {})
        unknown = set(options) - {"use_decaying_avg_baseline", "baseline_beta", "baseline_value"}
        if unknown:
            raise InferenceError(
                f"TraceGraph_ELBO: site '{site['name']}' has unknown baseline option(s) {sorted(unknown)}; the "
                "options are use_decaying_avg_baseline, baseline_beta and baseline_value."
            )
        baseline, penalty = 0.0, 0.0
        if options.get("use_decaying_avg_baseline"):
            beta = options.get("baseline_beta", 0.90)
            average = cost.mean(cost.dim() + particle_dim, keepdim=True) if particle_dim is not None else cost
            old = self._baselines.get(site["name"])
            if old is None or old.shape != average.shape:
                old = torch.zeros_like(average)
            baseline = old
            if torch.is_grad_enabled():  # loss() only evaluates: the average moves with the training steps
                self._baselines[site["name"]] = beta * old + (1 - beta) * average
        if "baseline_value" in options:
            value = options["baseline_value"]
            squared = (cost - value) ** 2
            penalty = _reduce(squared.expand(torch.broadcast_shapes(cost.shape, value.shape)), particle_dim)
            baseline = baseline + value.detach()
        return baseline, penalty

    def state_dict(self):
        return {"baselines": {name: value.clone() for name, value in self._baselines.items()}}

    def load_state_dict(self, state):
        self._baselines = {name: value.clone() for name, value in state.get("baselines", {}).items()}


class RenyiELBO(ELBO):
    """The Rényi-alpha bound (Li & Turner 2016; Pyro's ``RenyiELBO``):
    ``L_alpha = 1/(1 - alpha) * log mean_k exp((1 - alpha) * (log p(x, z_k) - log q(z_k)))`` over ``K =
    num_particles`` draws. ``alpha = 0`` is the importance-weighted bound (IWAE, Burda et al. 2016), which
    tightens as K grows; ``alpha -> 1`` is the ELBO (use :class:`Trace_ELBO`). Non-reparameterizable guide sites
    add the score-function term ``L * sum_k log q(z_k)``.
    """

    def __init__(self, alpha=0.0, num_particles=2, max_plate_nesting=None, vectorize_particles=True):
        if alpha == 1:
            raise ValueError("RenyiELBO: alpha = 1 is the ordinary ELBO; use Trace_ELBO.")
        super().__init__(num_particles, max_plate_nesting, vectorize_particles)
        self.alpha = alpha

    def _particle_terms(self, model_trace, guide_trace, particle_dim):
        model_lp, guide_lp = _log_probs(model_trace, guide_trace)
        elbo = _log_weight(model_lp, guide_lp, particle_dim)
        score = 0.0
        for site in _nonreparam_sites(guide_trace):
            score = score + _reduce(_score(site), particle_dim)
        return elbo, score

    def _estimate(self, model, guide, args, kwargs):
        elbos, score = [], 0.0
        for model_trace, guide_trace, particle_dim in self._traces(model, guide, args, kwargs):
            elbo, particle_score = self._particle_terms(model_trace, guide_trace, particle_dim)
            elbos.append(elbo.reshape(-1))
            score = score + particle_score.sum() if torch.is_tensor(particle_score) else score
        log_weights = (1 - self.alpha) * torch.cat(elbos)
        bound = (torch.logsumexp(log_weights, 0) - math.log(self.num_particles)) / (1 - self.alpha)
        return bound, bound + bound.detach() * score
