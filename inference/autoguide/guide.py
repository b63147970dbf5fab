"""Automatic guides over the unconstrained latent space of a model (Pyro's ``pyro.infer.autoguide`` names).

An autoguide is built from a model and called with the model's arguments; the first call runs the model once
(hidden from every outer handler) to find its continuous latent sites, their supports, shapes and plates, and
their initial values from ``init_loc_fn`` (a strategy of :mod:`ppl.initialization`; the layout and
initialization are :class:`ppl.Potential`'s). Each latent site is approximated in unconstrained space, where
``ppl.transforms.biject_to(support)`` maps it to the support; the guide's density includes the Jacobian of
that map. Parameters live in the param store under ``"{name}.{...}"`` (``name`` defaults to the class name:
give two guides of one class different names). A call returns the drawn constrained values by site name.

To fit only some sites, build the guide from a blocked model (``AutoNormal(block(model, expose=[...]))``) and
combine guides with :class:`AutoGuideList`.
"""

import contextlib
import math
from collections import namedtuple

import torch
from torch.distributions import TransformedDistribution
from torch.distributions.utils import _standard_normal

from inference.predictive import Predictive
from ppl import constraints
from ppl.distributions import Delta, Normal
from ppl.handlers import block
from ppl.initialization import init_to_median
from ppl.log_density import Potential, log_density
from ppl.primitives import param, plate, sample
from ppl.transforms import biject_to, is_identity

__all__ = ["AutoDelta", "AutoGuide", "AutoGuideList", "AutoNormal"]

_Site = namedtuple("_Site", ["transform", "identity", "event_dim", "unconstrained_event_dim", "frames", "init"])
_Site.__doc__ = """A latent site as a guide sees it: its bijection from unconstrained space (and whether that is
the identity), its event dims (constrained and unconstrained), its plates, and its initial unconstrained value
at the plates' full sizes."""


def _batch_log_det(transform, unconstrained, value, event_dim):
    """log|det d value / d unconstrained| summed to the batch shape ``value.shape[:value.dim() - event_dim]``."""
    log_det = transform.log_abs_det_jacobian(unconstrained, value)
    batch_dim = value.dim() - event_dim
    if log_det.dim() > batch_dim:
        log_det = log_det.sum(tuple(range(batch_dim, log_det.dim())))
    return log_det


class _ReparamNormal(Normal):
    """A normal that remembers its latest draw ``loc + scale * eps``: its log-density there is computed as
    ``-eps^2/2 - log(scale) - log(2 pi)/2``, the same function of ``(loc, scale)`` as the general formula (so the
    same value and gradients) in fewer operations. The draws are torch's ``Normal.rsample``'s."""

    def rsample(self, sample_shape=torch.Size()):
        eps = _standard_normal(self._extended_shape(sample_shape), dtype=self.loc.dtype, device=self.loc.device)
        value = self.loc + eps * self.scale
        self._draw = (value, eps)
        return value

    def log_prob(self, value):
        draw = getattr(self, "_draw", None)
        if draw is None or draw[0] is not value:
            return super().log_prob(value)
        eps = draw[1]
        return (-0.5 * eps * eps - 0.5 * math.log(2 * math.pi)) - self.scale.log()  # constants first: one op in the graph


class AutoGuide:
    """Base class of the autoguides: the prototype run, the plates, and the posterior summaries.

    Args:
        model: the model function.
        init_loc_fn: an initialization strategy (default :func:`ppl.init_to_median`).
        name: the prefix of the guide's parameters in the param store (default: the class name).
    """

    def __init__(self, model, *, init_loc_fn=init_to_median, name=None):
        if not callable(model):
            raise TypeError(f"{type(self).__name__} needs a model function, got {type(model).__name__}.")
        self.model = model
        self.init_loc_fn = init_loc_fn
        self.name = name or type(self).__name__
        self.prototype_trace = None

    def _setup_prototype(self, *args, **kwargs):
        # block: the setup runs happen inside the first step's traces and must not show in them; the initial
        # values are checked with a gradient even when the first call comes without gradients
        with block(), torch.enable_grad():
            potential = Potential(self.model, args, kwargs, init_strategy=self.init_loc_fn, enumerate="marked")
            z = potential.initial_params()
            _, self.prototype_trace = log_density(self.model, args, kwargs, potential.constrain(z))
        # the sizes from the sites' frames: a blocked model (block(model, expose=[...])) hides its plate sites
        self._plate_sizes = {
            frame.name: (frame.full_size, frame.size)
            for site in self.prototype_trace.values()
            for frame in site["cond_indep_stack"]
        }
        self._sites = {}
        for name, latent in potential.latent_sites.items():
            site = self.prototype_trace[name]
            event_dim = len(site["fn"].event_shape)
            unconstrained_event_dim = event_dim + len(latent.unconstrained_shape) - len(latent.shape)
            init = z[latent.start : latent.stop].reshape(latent.unconstrained_shape).detach()
            for frame in site["cond_indep_stack"]:
                size, subsample_size = self._plate_sizes[frame.name]
                if size != subsample_size:  # a subsampled plate: repeat the initial values to the full size
                    index = torch.arange(size, device=init.device) % subsample_size
                    init = init.index_select(frame.dim - unconstrained_event_dim + init.dim(), index)
            transform = biject_to(site["fn"].support)
            self._sites[name] = _Site(
                transform, is_identity(transform), event_dim, unconstrained_event_dim, site["cond_indep_stack"], init
            )

    def _setup(self, args, kwargs):
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)

    def _create_plates(self):
        """The plates of the guide's sites, entered by each site (dims and sizes as in the model)."""
        frames = {frame.name: frame for site in self._sites.values() for frame in site.frames}
        return {
            name: plate(name, *self._plate_sizes[name], dim=frame.dim) for name, frame in frames.items()
        }

    def _site_plates(self, plates, site):
        if not site.frames:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        for frame in site.frames:
            stack.enter_context(plates[frame.name])
        return stack

    def __call__(self, *args, **kwargs):
        """Sample every latent site from :meth:`_site_distribution`, inside the plates the site sits in."""
        self._setup(args, kwargs)
        plates = self._create_plates()
        result = {}
        for name, site in self._sites.items():
            with self._site_plates(plates, site):
                result[name] = sample(name, self._site_distribution(name, site))
        return result

    def _site_distribution(self, name, site):
        """The guide's distribution of one latent site (per-site guides define it)."""
        raise NotImplementedError

    def median(self, *args, **kwargs):
        """The posterior median of each latent site (constrained values, detached), by name."""
        raise NotImplementedError

    def quantiles(self, quantiles, *args, **kwargs):
        """Posterior quantiles of each latent site: ``{name: tensor of shape (len(quantiles),) + site shape}``."""
        raise NotImplementedError

    def sample_posterior(self, num_samples, *args, **kwargs):
        """``num_samples`` draws of each latent site from the guide, in one vectorized run:
        ``{name: tensor of shape (num_samples,) + site shape}`` (detached)."""
        self._setup(args, kwargs)
        return Predictive(self, num_samples=num_samples, return_sites=list(self._sites))(*args, **kwargs)

    def _normal_quantiles(self, loc, scale, quantiles):
        """``transform(loc + scale * Phi^-1(q))`` per site for unconstrained marginal normals."""
        q = torch.as_tensor(quantiles, dtype=next(iter(loc.values())).dtype, device=next(iter(loc.values())).device)
        z = Normal(q.new_zeros(()), q.new_ones(())).icdf(q)
        result = {}
        with torch.no_grad():
            for name, site in self._sites.items():
                shift = z.reshape((-1,) + (1,) * loc[name].dim())
                result[name] = site.transform(loc[name] + scale[name] * shift).detach()
        return result


class AutoNormal(AutoGuide):
    """A mean-field normal in unconstrained space, one independent ``Normal(loc, scale)`` per latent entry
    (Pyro's ``AutoNormal``). Local sites in subsampled plates get parameters at the plates' full sizes, indexed
    by the subsample, so minibatch ELBOs stay unbiased. Parameters ``"{name}.locs.{site}"`` and
    ``"{name}.scales.{site}"`` (scales start at ``init_scale``). Sites with real support are sampled directly
    from the normal (so ``TraceMeanField_ELBO`` uses the analytic KL); others through their bijection."""

    def __init__(self, model, *, init_loc_fn=init_to_median, init_scale=0.1, name=None):
        if not init_scale > 0:
            raise ValueError(f"AutoNormal: init_scale must be positive, got {init_scale!r}.")
        super().__init__(model, init_loc_fn=init_loc_fn, name=name)
        self.init_scale = init_scale

    def _loc_scale(self, name, site):
        loc = param(f"{self.name}.locs.{name}", site.init, event_dim=site.unconstrained_event_dim)
        scale = param(
            f"{self.name}.scales.{name}",
            lambda: torch.full_like(site.init, self.init_scale),
            constraint=constraints.positive,
            event_dim=site.unconstrained_event_dim,
        )
        return loc, scale

    def _site_distribution(self, name, site):
        loc, scale = self._loc_scale(name, site)
        fn = _ReparamNormal(loc, scale).to_event(site.unconstrained_event_dim)
        return fn if site.identity else TransformedDistribution(fn, [site.transform.with_cache(1)])

    def _params(self, *args, **kwargs):
        self._setup(args, kwargs)
        with block():
            return {name: self._loc_scale(name, site) for name, site in self._sites.items()}

    def median(self, *args, **kwargs):
        params = self._params(*args, **kwargs)
        return {name: self._sites[name].transform(loc).detach() for name, (loc, _) in params.items()}

    def quantiles(self, quantiles, *args, **kwargs):
        params = self._params(*args, **kwargs)
        locs = {name: loc for name, (loc, _) in params.items()}
        scales = {name: scale for name, (_, scale) in params.items()}
        return self._normal_quantiles(locs, scales, quantiles)


class AutoDelta(AutoGuide):
    """A point mass at a learnable value per latent site: SVI with it finds the MAP estimate in the
    constrained space (Pyro's ``AutoDelta``). Parameters ``"{name}.{site}"`` (constrained to the site's
    support), at the plates' full sizes."""

    def _value(self, name, site):
        return param(
            f"{self.name}.{name}",
            lambda: site.transform(site.init),
            constraint=self.prototype_trace[name]["fn"].support,
            event_dim=site.event_dim,
        )

    def _site_distribution(self, name, site):
        return Delta(self._value(name, site), event_dim=site.event_dim)

    def median(self, *args, **kwargs):
        self._setup(args, kwargs)
        with block():
            return {name: self._value(name, site).detach() for name, site in self._sites.items()}

    def quantiles(self, quantiles, *args, **kwargs):
        count = len(quantiles)
        medians = self.median(*args, **kwargs)
        return {name: value.expand((count,) + value.shape).clone() for name, value in medians.items()}


class AutoGuideList(AutoGuide):
    """Several guides for disjoint sets of a model's sites (Pyro's ``AutoGuideList``): typically autoguides of
    blocked copies of the model, ``AutoNormal(block(model, expose=[...]))``, and hand-written guides (functions
    with the model's signature). A call runs each part and merges the values they return; the summaries merge
    those of the autoguide parts."""

    def __init__(self, model, *, name=None):
        super().__init__(model, name=name)
        self.parts = []

    def append(self, part):
        """Add a guide (an autoguide or a guide function)."""
        if not callable(part):
            raise TypeError(f"AutoGuideList.append needs a guide, got {type(part).__name__}.")
        self.parts.append(part)

    def __call__(self, *args, **kwargs):
        result = {}
        for part in self.parts:
            values = part(*args, **kwargs)
            if isinstance(values, dict):
                result.update(values)
        return result

    def _merged(self, method, *args, **kwargs):
        result = {}
        for part in self.parts:
            if isinstance(part, AutoGuide):
                result.update(getattr(part, method)(*args, **kwargs))
        return result

    def median(self, *args, **kwargs):
        return self._merged("median", *args, **kwargs)

    def quantiles(self, quantiles, *args, **kwargs):
        return self._merged("quantiles", quantiles, *args, **kwargs)

    def sample_posterior(self, num_samples, *args, **kwargs):
        return self._merged("sample_posterior", num_samples, *args, **kwargs)
