"""``kl_divergence(p, q)``: torch's registry of analytic KL divergences, extended for ``ppl``'s wrappers.

Added rules (as in Pyro): Delta against anything (``-q.log_prob(p.v)``), masked against masked, Independent
against Independent with different numbers of reinterpreted dimensions, and a mean-field Normal
(``Normal(...).to_event(1)``) against a MultivariateNormal.
"""

import math

import torch
import torch.distributions as torch_dist
from torch.distributions import kl_divergence, register_kl

from ppl.distributions.delta import Delta
from ppl.distributions.distribution import Independent, MaskedDistribution

__all__ = ["kl_divergence", "register_kl"]


def _sum_rightmost(value, ndims):
    return value.reshape(value.shape[: value.dim() - ndims] + (-1,)).sum(-1)


@register_kl(Delta, torch_dist.Distribution)
def _kl_delta(p, q):
    return -q.log_prob(p.v)


@register_kl(MaskedDistribution, MaskedDistribution)
def _kl_masked_masked(p, q):
    kl = kl_divergence(p.base_dist, q.base_dist)
    for mask in (p._mask, q._mask):
        if mask is False:
            return torch.zeros_like(kl)
        if mask is not True:
            kl = torch.where(mask, kl, kl.new_zeros(()))
    return kl


@register_kl(Independent, Independent)
def _kl_independent_independent(p, q):
    shared = min(p.reinterpreted_batch_ndims, q.reinterpreted_batch_ndims)
    p_rest, q_rest = p.reinterpreted_batch_ndims - shared, q.reinterpreted_batch_ndims - shared
    p = Independent(p.base_dist, p_rest) if p_rest else p.base_dist
    q = Independent(q.base_dist, q_rest) if q_rest else q.base_dist
    return _sum_rightmost(kl_divergence(p, q), shared)


@register_kl(Independent, torch_dist.MultivariateNormal)
def _kl_independent_normal_mvn(p, q):
    if not (isinstance(p.base_dist, torch_dist.Normal) and p.reinterpreted_batch_ndims == 1):
        raise NotImplementedError(f"No analytic KL between {p} and {q}.")
    loc, scale = p.base_dist.loc, p.base_dist.scale
    dim = q.event_shape[0]
    q_precision_diagonal = q.precision_matrix.diagonal(dim1=-2, dim2=-1)
    return (
        0.5 * (scale**2 * q_precision_diagonal).sum(-1)
        - 0.5 * dim * (1 + math.log(2 * math.pi))
        - q.log_prob(loc)
        - scale.log().sum(-1)
    )
