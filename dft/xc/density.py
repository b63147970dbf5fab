"""Spin-resolved densities and libxc's screening of small densities, shared by all components.

libxc does not evaluate a functional where the density is tiny: points whose total density is below the
component's ``dens_threshold`` give zero, and in spin-polarized calculations each spin density is raised to
that threshold, with the potential reported at the raised value.  ``1 + zeta`` is kept above
``ZETA_THRESHOLD`` (machine epsilon) by the same piecewise rule.  Reproducing these rules exactly is what
makes our energies and autograd potentials agree with libxc pointwise, including at ``rho = 0`` and for fully
polarized densities.  Meta-GGAs (family "mgga") also take the kinetic-energy density tau, which libxc raises
to ``TAU_THRESHOLD`` and uses to cap each sigma_ss at the von Weizsaecker bound 8 rho_s tau_s (the Fermi-hole
curvature 1 - tau_W / tau stays >= 0).  Every masked branch is evaluated on harmless stand-in values so that no
inf or NaN reaches first or second derivatives.
"""

import torch

from .errors import XCError

ZETA_THRESHOLD = 2.220446049250313e-16  # libxc's zeta_threshold: DBL_EPSILON
TAU_THRESHOLD = 1e-20  # libxc's tau_threshold [Hartree bohr^-3], the same for every meta-GGA


def split_spin(rho, sigma, spin, family):
    """Spin-resolved inputs from the restricted or unrestricted layout.

    rho: (..., N) total density if ``spin == 0``, (2, ..., N) = (rho_a, rho_b) if ``spin == 1`` [bohr^-3].
    sigma: gradient invariants [bohr^-8]: (..., N) = |grad rho|^2 if ``spin == 0``, (3, ..., N) =
    (sigma_aa, sigma_ab, sigma_bb) if ``spin == 1``; needed when ``family`` is "gga" or "mgga".
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
        raise XCError(f"this functional is a{'' if family == 'gga' else ' meta-'} GGA: pass sigma = |grad rho|^2 "
                      "(spin=0) or (sigma_aa, sigma_ab, sigma_bb) (spin=1)")
    expected = rho.shape if spin == 0 else (3,) + rho.shape[1:]
    if tuple(sigma.shape) != tuple(expected):
        raise XCError(f"sigma must have shape {tuple(expected)} for rho of shape {tuple(rho.shape)} "
                      f"and spin={spin}; got {tuple(sigma.shape)}")
    if spin == 0:
        half, quarter = rho * 0.5, sigma * 0.25
        return half, half, quarter, quarter, quarter
    return rho[0], rho[1], sigma[0], sigma[1], sigma[2]


def split_tau(tau, rho, spin):
    """Spin-resolved kinetic-energy densities (tau_a, tau_b), each (..., N) [Hartree bohr^-3], from tau (..., N)
    total (``spin == 0``; each channel is half of it) or (2, ..., N) per spin (``spin == 1``), shaped like rho.

    tau = 1/2 sum_i occ_i |grad phi_i|^2, PySCF's and libxc's convention (``eval_rho(..., xctype='MGGA')`` row 5).
    """
    if tau is None:
        raise XCError("this functional is a meta-GGA: pass tau, the kinetic-energy density 1/2 sum_i occ_i "
                      "|grad phi_i|^2, shaped like rho (total for spin=0, (tau_a, tau_b) for spin=1)")
    if not torch.is_tensor(tau) or tuple(tau.shape) != tuple(rho.shape):
        shape = tuple(tau.shape) if torch.is_tensor(tau) else type(tau).__name__
        raise XCError(f"tau must be a tensor shaped like rho {tuple(rho.shape)} for spin={spin}; got {shape}")
    if spin == 0:
        half = tau * 0.5
        return half, half
    return tau[0], tau[1]


def screen_taus(tau_a, tau_b, spin):
    """libxc's floor on the kinetic-energy densities: tau (the total if ``spin == 0``; inputs are then its halves)
    is raised to ``TAU_THRESHOLD``, with slope 1 (see :func:`floor_at`)."""
    floor = TAU_THRESHOLD / (2 if spin == 0 else 1)
    tau_a = floor_at(tau_a, floor)
    return (tau_a, tau_a) if spin == 0 else (tau_a, floor_at(tau_b, floor))


def screen_sigmas(sigma_aa, sigma_ab, sigma_bb, threshold, spin, caps=None):
    """libxc's guards on the gradient invariants of a component with density threshold ``threshold``.

    |grad rho|^2 is raised to threshold^(8/3) (per spin channel if ``spin == 1``; inputs are then the
    channels, otherwise the quarters of the total); for a meta-GGA, ``caps`` = (8 rho_a tau_a, 8 rho_b tau_b)
    (screened densities) then caps sigma_aa and sigma_bb (the von Weizsaecker bound, libxc's
    ``XC_FLAGS_ENFORCE_FHC``); finally |sigma_ab| is kept within (sigma_aa + sigma_bb) / 2.
    """
    floor = threshold ** (8 / 3) / (4 if spin == 0 else 1)
    sigma_aa = floor_at(sigma_aa, floor)
    if caps is not None:
        sigma_aa = cap_at(sigma_aa, caps[0])
    if spin == 0:
        return sigma_aa, sigma_aa, sigma_aa
    sigma_bb = floor_at(sigma_bb, floor)
    if caps is not None:
        sigma_bb = cap_at(sigma_bb, caps[1])
    # Clamped as libxc does: the value is the bound, the potential is reported at it (slope 1 in sigma_ab).
    bound = ((sigma_aa + sigma_bb) / 2).detach()
    slope = sigma_ab - sigma_ab.detach()
    sigma_ab = torch.where(sigma_ab > bound, bound + slope, torch.where(sigma_ab < -bound, slope - bound, sigma_ab))
    return sigma_aa, sigma_ab, sigma_bb


def floor_at(x, threshold):
    """max(x, threshold) with slope 1 everywhere, as libxc raises small spin densities and gradients.

    libxc evaluates the potential at the raised value rather than zeroing it; the detached shift keeps
    exactly that value and derivative.
    """
    return x + (threshold - x).clamp(min=0).detach()


def cap_at(x, bound):
    """min(x, bound) with slope 1 in x and none in ``bound``: libxc evaluates the potential at the capped value
    and reports it as the derivative in x, as for :func:`floor_at`.  The capped value is ``bound`` exactly
    (x - (x - bound) would lose it to cancellation when bound << x)."""
    return torch.where(x > bound, bound.detach() + (x - x.detach()), x)


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
