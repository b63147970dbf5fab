"""Autoguides over the whole flat unconstrained latent vector ``z`` (Pyro's ``AutoContinuous`` family).

The layout of ``z`` (shape ``(latent_dim,)``) is :class:`ppl.Potential`'s: the model's latent sites flattened
in the order it samples them. A call draws ``z`` from the guide's posterior as an auxiliary site
``"_{name}_latent"``, then gives each latent site the value ``biject_to(support)(z slice)`` as a point mass
whose log-density is ``-log|det J|``, so the guide's density is that of ``z`` pushed through the bijections.
Sites in subsampled plates are not supported (use :class:`AutoNormal`).
"""

import torch

from inference.autoguide.guide import AutoGuide, _batch_log_det
from inference.errors import InferenceError
from ppl import constraints
from ppl.distributions import Delta, LowRankMultivariateNormal, MultivariateNormal, Normal
from ppl.handlers import block
from ppl.initialization import init_to_median
from ppl.log_density import Potential
from ppl.params import get_param_store
from ppl.primitives import param, sample

__all__ = [
    "AutoContinuous",
    "AutoDiagonalNormal",
    "AutoLaplaceApproximation",
    "AutoLowRankMultivariateNormal",
    "AutoMultivariateNormal",
]


class AutoContinuous(AutoGuide):
    """Base class of the guides over the flat latent vector: subclasses define :meth:`get_posterior` (a
    distribution with event shape ``(latent_dim,)``) and ``_loc_scale()`` (the unconstrained marginal centre and
    spread used by :meth:`median` and :meth:`quantiles`).

    Args:
        model, init_loc_fn, name: as for :class:`AutoGuide`.
        init_scale: the initial standard deviation of each coordinate of ``z``.
    """

    def __init__(self, model, *, init_loc_fn=init_to_median, init_scale=0.1, name=None):
        if not init_scale > 0:
            raise ValueError(f"{type(self).__name__}: init_scale must be positive, got {init_scale!r}.")
        super().__init__(model, init_loc_fn=init_loc_fn, name=name)
        self.init_scale = init_scale

    def _setup_prototype(self, *args, **kwargs):
        super()._setup_prototype(*args, **kwargs)
        for name, site in self._sites.items():
            for frame in site.frames:
                size, subsample_size = self._plate_sizes[frame.name]
                if size != subsample_size:
                    raise InferenceError(
                        f"{type(self).__name__}: latent site '{name}' is in the subsampled plate '{frame.name}' "
                        f"({subsample_size} of {size}); guides over the joint latent vector need every value at "
                        "once: use AutoNormal (or AutoDelta) for local latent variables."
                    )
        if not self._sites:
            raise InferenceError(f"{type(self).__name__}: the model has no continuous latent site to approximate.")
        self._slices = {}
        start = 0
        for name, site in self._sites.items():
            self._slices[name] = (start, start + site.init.numel(), site.init.shape)
            start += site.init.numel()
        self.latent_dim = start
        self._init_loc = torch.cat([site.init.reshape(-1) for site in self._sites.values()])

    def get_posterior(self, *args, **kwargs):
        """The guide's distribution of the flat unconstrained latent vector (event shape ``(latent_dim,)``)."""
        raise NotImplementedError

    def _loc_scale(self):
        raise NotImplementedError(f"{type(self).__name__} has no closed-form marginals.")

    def _unpack(self, latent):
        """Each site's unconstrained value from ``latent`` (shape ``batch_shape + (latent_dim,)``); the batch dims
        (e.g. vectorized particles) stay left of the site's plate dims."""
        batch_shape = latent.shape[:-1]
        for name, (start, stop, shape) in self._slices.items():
            event_dim = self._sites[name].unconstrained_event_dim
            shape = torch.broadcast_shapes(shape, batch_shape + (1,) * event_dim)
            yield name, latent[..., start:stop].reshape(shape)

    def __call__(self, *args, **kwargs):
        self._setup(args, kwargs)
        latent = sample(f"_{self.name}_latent", self.get_posterior(), infer={"is_auxiliary": True})
        plates = self._create_plates()
        result = {}
        for name, unconstrained in self._unpack(latent):
            site = self._sites[name]
            value = site.transform(unconstrained)
            log_density = 0.0
            if not site.identity:
                log_density = -_batch_log_det(site.transform, unconstrained, value, site.event_dim)
            with self._site_plates(plates, site):
                result[name] = sample(name, Delta(value, log_density=log_density, event_dim=site.event_dim))
        return result

    def _summary_params(self, args, kwargs):
        self._setup(args, kwargs)
        with block(), torch.no_grad():
            return self._loc_scale()

    def median(self, *args, **kwargs):
        loc, _ = self._summary_params(args, kwargs)
        return {name: self._sites[name].transform(z).detach() for name, z in self._unpack(loc)}

    def quantiles(self, quantiles, *args, **kwargs):
        loc, scale = self._summary_params(args, kwargs)
        return self._normal_quantiles(dict(self._unpack(loc)), dict(self._unpack(scale)), quantiles)

    def _loc(self):
        return param(f"{self.name}.loc", self._init_loc)

    def _scale(self):
        """Per-coordinate scales ``"{name}.scale"``, starting at ``init_scale``."""
        init = lambda: torch.full_like(self._init_loc, self.init_scale)  # noqa: E731
        return param(f"{self.name}.scale", init, constraint=constraints.positive)


class AutoDiagonalNormal(AutoContinuous):
    """A normal with diagonal covariance over ``z`` (Pyro's ``AutoDiagonalNormal``); parameters
    ``"{name}.loc"`` and ``"{name}.scale"``."""

    def _loc_scale(self):
        return self._loc(), self._scale()

    def get_posterior(self, *args, **kwargs):
        self._setup(args, kwargs)
        return Normal(*self._loc_scale()).to_event(1)


class AutoMultivariateNormal(AutoContinuous):
    """A normal with full covariance over ``z`` (Pyro's ``AutoMultivariateNormal``), Cholesky factor
    ``diag(scale) @ scale_tril``: parameters ``"{name}.loc"``, ``"{name}.scale"`` (positive, initially
    ``init_scale``) and ``"{name}.scale_tril"`` (unit lower-triangular, initially ``I``). Pyro's factorization: the
    off-diagonal entries are relative to each row's scale, so a step of the optimizer cannot make the factor
    ill-conditioned the way a step on the raw Cholesky factor can (that diverged at lr 0.05 with 200 latents)."""

    def _scale_tril(self):
        scale = param(f"{self.name}.scale", lambda: torch.full_like(self._init_loc, self.init_scale),
                      constraint=constraints.positive)
        unit = param(f"{self.name}.scale_tril",
                     lambda: torch.eye(self.latent_dim, dtype=self._init_loc.dtype, device=self._init_loc.device),
                     constraint=constraints.unit_lower_cholesky)
        return scale[..., None] * unit

    def _loc_scale(self):
        return self._loc(), self._scale_tril().pow(2).sum(-1).sqrt()

    def get_posterior(self, *args, **kwargs):
        self._setup(args, kwargs)
        return MultivariateNormal(self._loc(), scale_tril=self._scale_tril())


class AutoLowRankMultivariateNormal(AutoContinuous):
    """A normal over ``z`` with covariance ``diag(s) (W W^T + I) diag(s)``, ``W`` of shape ``(latent_dim, rank)``
    (Pyro's ``AutoLowRankMultivariateNormal`` and its initialization: ``W ~ N(0, 1/rank)``,
    ``s = sqrt(1/2) * init_scale``); ``rank`` defaults to ``round(sqrt(latent_dim))``. Parameters
    ``"{name}.loc"``, ``"{name}.cov_factor"``, ``"{name}.scale"``."""

    def __init__(self, model, *, init_loc_fn=init_to_median, init_scale=0.1, rank=None, name=None):
        if rank is not None and (not isinstance(rank, int) or rank < 1):
            raise ValueError(f"AutoLowRankMultivariateNormal: rank must be a positive integer, got {rank!r}.")
        super().__init__(model, init_loc_fn=init_loc_fn, init_scale=init_scale, name=name)
        self.rank = rank

    def _factors(self):
        rank = self.rank or max(1, round(self.latent_dim**0.5))
        cov_factor = param(
            f"{self.name}.cov_factor",
            lambda: self._init_loc.new_empty(self.latent_dim, rank).normal_(0, rank**-0.5),
        )
        scale = param(
            f"{self.name}.scale",
            lambda: torch.full_like(self._init_loc, 0.5**0.5 * self.init_scale),
            constraint=constraints.positive,
        )
        return cov_factor, scale

    def _loc_scale(self):
        cov_factor, scale = self._factors()
        return self._loc(), scale * (cov_factor.pow(2).sum(-1) + 1).sqrt()

    def get_posterior(self, *args, **kwargs):
        self._setup(args, kwargs)
        cov_factor, scale = self._factors()
        return LowRankMultivariateNormal(self._loc(), cov_factor * scale[:, None], scale * scale)


class AutoLaplaceApproximation(AutoContinuous):
    """The Laplace approximation (Pyro's ``AutoLaplaceApproximation``): fit it with SVI as a point mass at
    ``"{name}.loc"`` in unconstrained space (the mode of the potential ``U(z)`` of :class:`ppl.Potential`,
    Jacobian included), then :meth:`laplace_approximation` gives the normal ``N(loc, H^-1)``,
    ``H`` the Hessian of ``U`` at ``loc``."""

    def _loc_scale(self):
        loc = self._loc()
        return loc, torch.zeros_like(loc)

    def get_posterior(self, *args, **kwargs):
        self._setup(args, kwargs)
        return Delta(self._loc(), event_dim=1)

    def laplace_approximation(self, *args, **kwargs):
        """An :class:`AutoMultivariateNormal` (named ``"{name}.laplace"``) with mean ``loc`` and covariance the
        inverse Hessian of the potential at ``loc``, computed with the model's arguments.

        Raises:
            InferenceError: the Hessian is not positive definite (``loc`` is not at a mode: optimize longer).
        """
        loc, _ = self._summary_params(args, kwargs)
        with block():
            potential = Potential(self.model, args, kwargs, enumerate="marked")
            hessian = torch.autograd.functional.hessian(potential, loc)
        hessian_tril, info = torch.linalg.cholesky_ex(hessian)
        if bool(info):
            raise InferenceError(
                "laplace_approximation: the Hessian of the potential at loc is not positive definite, so loc is "
                "not at a mode; run SVI longer (or from another init_loc_fn) before the Laplace approximation."
            )
        scale_tril = torch.linalg.cholesky(torch.cholesky_inverse(hessian_tril))
        guide = AutoMultivariateNormal(self.model, init_loc_fn=self.init_loc_fn, name=f"{self.name}.laplace")
        store = get_param_store()
        scale = scale_tril.diagonal()  # the factor as AutoMultivariateNormal holds it: diag(scale) @ unit triangle
        fitted = {"loc": (loc, constraints.real), "scale": (scale, constraints.positive),
                  "scale_tril": (scale_tril / scale[:, None], constraints.unit_lower_cholesky)}
        for suffix, (value, constraint) in fitted.items():
            key = f"{guide.name}.{suffix}"
            if key in store:
                del store[key]
            store.get_param(key, value.detach(), constraint)
        return guide
