"""A normalizing-flow guide: inverse autoregressive flows (Kingma et al., NeurIPS 2016) over the latent vector.

``AutoIAFNormal`` draws ``eps ~ N(0, I)`` and pushes it through ``num_transforms`` affine autoregressive layers
``x -> mu(x) + exp(log_sigma(x)) * x`` (``mu_i``, ``log_sigma_i`` depend on ``x_<i`` only, through a MADE
network; the variable order is reversed from one layer to the next), then through the elementwise affine map
``loc + scale * x``. Each layer's Jacobian is triangular, ``log|det J| = sum_i log_sigma_i``, so drawing and
scoring a draw cost one network pass per layer. The output layers start at zero, so the initial guide is
``AutoDiagonalNormal``'s.
"""

import torch
from torch import nn
from torch.distributions import TransformedDistribution
from torch.distributions.transforms import AffineTransform, Transform

from inference.autoguide.continuous import AutoContinuous
from ppl import constraints
from ppl.distributions import Normal
from ppl.initialization import init_to_median
from ppl.primitives import module

__all__ = ["AffineAutoregressive", "AutoIAFNormal", "MADE"]


class _MaskedLinear(nn.Linear):
    def __init__(self, mask):
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask)

    def forward(self, x):
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """A masked autoregressive network (Germain et al., ICML 2015): ``x`` of shape ``(..., dim)`` to
    ``(mu, log_sigma)``, each ``(..., dim)``, where output ``i`` depends only on the inputs before ``i`` in the
    order ``0, 1, ..., dim-1`` (reversed with ``reverse=True``). ReLU hidden layers of sizes ``hidden_dims``."""

    def __init__(self, dim, hidden_dims, reverse=False):
        super().__init__()
        degrees = torch.arange(1, dim + 1)
        if reverse:
            degrees = degrees.flip(0)
        layers, previous = [], degrees
        for width in hidden_dims:
            hidden = torch.arange(width) % max(dim - 1, 1) + 1
            layers += [_MaskedLinear((hidden[:, None] >= previous[None, :]).to(torch.get_default_dtype())), nn.ReLU()]
            previous = hidden
        output_mask = (degrees[:, None] > previous[None, :]).to(torch.get_default_dtype())
        self.hidden = nn.Sequential(*layers)
        self.output = _MaskedLinear(torch.cat([output_mask, output_mask]))
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, x):
        mu, log_sigma = self.output(self.hidden(x)).chunk(2, dim=-1)
        return mu, log_sigma


class AffineAutoregressive(Transform):
    """The bijection ``y = mu(x) + exp(log_sigma(x)) * x`` of a :class:`MADE` (Pyro's ``AffineAutoregressive``;
    ``log_sigma`` clamped to [-5, 3]). Forward and ``log_abs_det_jacobian`` cost one network pass; the inverse
    costs ``dim`` passes."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = +1

    def __init__(self, made, cache_size=1):
        super().__init__(cache_size=cache_size)
        self.made = made
        self._cached_log_sigma = None

    def _params(self, x):
        mu, log_sigma = self.made(x)
        return mu, log_sigma.clamp(-5.0, 3.0)

    def _call(self, x):
        mu, log_sigma = self._params(x)
        self._cached_log_sigma = (x, log_sigma)
        return mu + log_sigma.exp() * x

    def _inverse(self, y):
        x = torch.zeros_like(y)
        for _ in range(y.shape[-1]):
            mu, log_sigma = self._params(x)
            x = (y - mu) * (-log_sigma).exp()
        return x

    def log_abs_det_jacobian(self, x, y):
        if self._cached_log_sigma is not None and self._cached_log_sigma[0] is x:
            log_sigma = self._cached_log_sigma[1]
        else:
            log_sigma = self._params(x)[1]
        return log_sigma.sum(-1)


class AutoIAFNormal(AutoContinuous):
    """An inverse-autoregressive-flow guide over the flat latent vector (Pyro's ``AutoIAFNormal``, see the
    module docstring).

    Args:
        model, init_loc_fn, init_scale, name: as for :class:`AutoContinuous`; ``loc`` starts at the init
            values and ``scale`` at ``init_scale``.
        hidden_dim: the hidden layer sizes of each MADE (an int or a list; default ``[3 * latent_dim + 10]``).
        num_transforms: the number of autoregressive layers.

    Parameters ``"{name}.loc"``, ``"{name}.scale"`` and the networks' ``"{name}.flow{k}${parameter}"``.
    Median and quantiles are estimated from ``num_summary_samples`` draws (no closed form).
    """

    num_summary_samples = 4000

    def __init__(self, model, *, hidden_dim=None, init_loc_fn=init_to_median, init_scale=0.1, num_transforms=1,
                 name=None):
        if not isinstance(num_transforms, int) or num_transforms < 1:
            raise ValueError(f"AutoIAFNormal: num_transforms must be a positive integer, got {num_transforms!r}.")
        super().__init__(model, init_loc_fn=init_loc_fn, init_scale=init_scale, name=name)
        self.hidden_dim = [hidden_dim] if isinstance(hidden_dim, int) else hidden_dim
        self.num_transforms = num_transforms

    def _setup_prototype(self, *args, **kwargs):
        super()._setup_prototype(*args, **kwargs)
        hidden = self.hidden_dim or [3 * self.latent_dim + 10]
        self.flows = nn.ModuleList(
            MADE(self.latent_dim, hidden, reverse=bool(k % 2)) for k in range(self.num_transforms)
        ).to(dtype=self._init_loc.dtype, device=self._init_loc.device)

    def get_posterior(self, *args, **kwargs):
        self._setup(args, kwargs)
        loc, scale = self._loc(), self._scale()
        transforms = [AffineAutoregressive(module(f"{self.name}.flow{k}", made)) for k, made in enumerate(self.flows)]
        transforms.append(AffineTransform(loc, scale, event_dim=1))
        base = Normal(torch.zeros_like(loc), torch.ones_like(loc)).to_event(1)
        return TransformedDistribution(base, transforms)

    def _draws(self, args, kwargs):
        return self.sample_posterior(self.num_summary_samples, *args, **kwargs)

    def median(self, *args, **kwargs):
        return {name: draws.median(0).values for name, draws in self._draws(args, kwargs).items()}

    def quantiles(self, quantiles, *args, **kwargs):
        draws = self._draws(args, kwargs)
        q = torch.as_tensor(quantiles, dtype=self._init_loc.dtype, device=self._init_loc.device)
        return {name: torch.quantile(value, q, dim=0) for name, value in draws.items()}
