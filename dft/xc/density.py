"""Spin-resolved densities and libxc's screening of small densities, shared by all components.

libxc does not evaluate a functional where the density is tiny: points whose total density is below the
component's ``dens_threshold`` give zero, and in spin-polarized calculations each spin density is raised to
that threshold, with the potential reported at the raised value.  ``1 + zeta`` is kept above
``ZETA_THRESHOLD`` (machine epsilon) by the same piecewise rule.  Reproducing these rules exactly is what
makes our energies and autograd potentials agree with libxc pointwise, including at ``rho = 0`` and for fully
polarized densities.  Every masked branch is evaluated on harmless stand-in values so that no inf or NaN
reaches first or second derivatives.
"""

import torch

from .errors import XCError

ZETA_THRESHOLD = 2.220446049250313e-16  # libxc's zeta_threshold: DBL_EPSILON


def split_spin(rho, sigma, spin, family):
    """Spin-resolved inputs from the restricted or unrestricted layout.

    rho: (..., N) total density if ``spin == 0``, (2, ..., N) = (rho_a, rho_b) if ``spin == 1`` [bohr^-3].
    sigma: gradient invariants [bohr^-8]: (..., N) = |grad rho|^2 if ``spin == 0``, (3, ..., N) =
    (sigma_aa, sigma_ab, sigma_bb) if ``spin == 1``; needed only when ``family == "gga"``.
    Returns (rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb), each (..., N); the sigmas are None for LDA.
    """
    if not torch.is_tensor(rho) or not rho.is_floating_point():
        raise XCError(f"rho must be a floating-point torch tensor, got {type(rho).__name__}"
                      f"{'' if not torch.is_tensor(rho) else ' of dtype ' + str(rho.dtype)}")
    if spin not in (0, 1):
        raise XCError(f"spin must be 0 (restricted, rho is the total density) or 1 (unrestricted, "
                      f"rho = (rho_a, rho_b)), got {spin!r}")
    if spin == 1 and (rho.dim() < 2 or rho.shape[0] != 2):
        raise XCError(f"with spin=1, rho must have shape (2, ..., N) = (rho_a, rho_b); got {tuple(rho.shape)}")
    if family == "lda":
        if spin == 0:
            half = rho * 0.5
            return half, half, None, None, None
        return rho[0], rho[1], None, None, None
    if sigma is None:
        raise XCError("this functional is a GGA: pass sigma = |grad rho|^2 (spin=0) or "
                      "(sigma_aa, sigma_ab, sigma_bb) (spin=1)")
    expected = rho.shape if spin == 0 else (3,) + rho.shape[1:]
    if tuple(sigma.shape) != tuple(expected):
        raise XCError(f"sigma must have shape {tuple(expected)} for rho of shape {tuple(rho.shape)} "
                      f"and spin={spin}; got {tuple(sigma.shape)}")
    if spin == 0:
        half, quarter = rho * 0.5, sigma * 0.25
        return half, half, quarter, quarter, quarter
    return rho[0], rho[1], sigma[0], sigma[1], sigma[2]


def screen_sigmas(sigma_aa, sigma_ab, sigma_bb, threshold, spin):
    """libxc's guards on the gradient invariants of a component with density threshold ``threshold``.

    |grad rho|^2 is raised to threshold^(8/3) (per spin channel if ``spin == 1``; inputs are then the
    channels, otherwise the quarters of the total), and |sigma_ab| is kept within (sigma_aa + sigma_bb) / 2.
    """
    floor = threshold ** (8 / 3) / (4 if spin == 0 else 1)
    sigma_aa = floor_at(sigma_aa, floor)
    if spin == 0:
        return sigma_aa, sigma_aa, sigma_aa
    sigma_bb = floor_at(sigma_bb, floor)
    bound = (sigma_aa + sigma_bb) / 2
    sigma_ab = torch.where(sigma_ab > bound, bound, torch.where(sigma_ab < -bound, -bound, sigma_ab))
    return sigma_aa, sigma_ab, sigma_bb


def floor_at(x, threshold):
    """max(x, threshold) with slope 1 everywhere, as libxc raises small spin densities and gradients.

    libxc evaluates the potential at the raised value rather than zeroing it; the detached shift keeps
    exactly that value and derivative.
    """
    return x + (threshold - x).clamp(min=0).detach()


def cbrt(x):
    """x^(1/3) for positive x, as exp(log(x) / 3): a few times faster than a float ``pow`` on CPU, with
    cheaper derivatives, and accurate to a few ulp.  Other powers p/3 are built from it by multiplication."""
    return torch.exp(torch.log(x) / 3)


def keep_mask(keep, like):
    """The boolean mask ``keep`` as 0/1 values in ``like``'s dtype.

    ``x * mask`` and ``stand_in(x, mask, value)`` replace ``torch.where`` on the hot path: they are much faster
    elementwise kernels on CPU, and give the same values and derivatives wherever ``x`` is finite (the masked
    branches are always evaluated on finite stand-ins).
    """
    return keep.to(like.dtype)


def stand_in(x, mask, value):
    """x where ``mask`` is 1 and the constant ``value`` where it is 0 (``mask`` from ``keep_mask``)."""
    return torch.addcmul((1 - mask) * value, x, mask)


def zeta(rho_a, rho_b):
    """Spin polarization (rho_a - rho_b) / (rho_a + rho_b), rounded as libxc computes it."""
    return (rho_a - rho_b) * (1 / (rho_a + rho_b))


def opz_pow(z, n):
    """(1 + z)^n with libxc's zeta threshold: constant (ZETA_THRESHOLD^n) where 1 + z <= ZETA_THRESHOLD.

    z: tensor, or a Python float (0.0 for restricted densities), for which a float is returned.
    """
    if not torch.is_tensor(z):
        return (1 + z) ** n
    opz = 1 + z
    small = opz <= ZETA_THRESHOLD
    return torch.where(small, ZETA_THRESHOLD ** n, torch.where(small, 1.0, opz) ** n)


def f_zeta(z):
    """The spin-interpolation function f(zeta) of Perdew and Wang (their Eq. 9)."""
    return (opz_pow(z, 4 / 3) + opz_pow(-z, 4 / 3) - 2) / (2 ** (4 / 3) - 2)


def phi(z):
    """The spin-scaling factor phi(zeta) = ((1 + zeta)^(2/3) + (1 - zeta)^(2/3)) / 2 of PBE correlation."""
    return (opz_pow(z, 2 / 3) + opz_pow(-z, 2 / 3)) / 2
