"""Local (spin-)density approximation components: Slater exchange, VWN5, VWN-RPA and PW92 correlation.

Formulas and constants follow libxc (LDA_X, LDA_C_VWN, LDA_C_VWN_RPA, LDA_C_PW), so that energies agree
with ``pyscf.dft.libxc`` to rounding.  Densities in bohr^-3, energy densities in Hartree bohr^-3.
"""

import math

import torch

from .component import Correlation, Exchange
from .density import cbrt, f_zeta

SLATER_C = 0.75 * (6 / math.pi) ** (1 / 3)  # e_x of one spin channel is -SLATER_C rho_s^(4/3)
RS_FACTOR = (3 / (4 * math.pi)) ** (1 / 3)  # r_s = RS_FACTOR n^(-1/3)


def wigner_seitz_radius(n):
    """r_s = (3 / (4 pi n))^(1/3) [bohr] from the total density n [bohr^-3]."""
    return RS_FACTOR / cbrt(n)


class Slater(Exchange):
    """Slater (Dirac) exchange, libxc LDA_X: e_x = -(3/4)(6/pi)^(1/3) sum_s rho_s^(4/3)."""

    def per_spin(self, rho_s, sigma_ss):
        return -SLATER_C * rho_s * cbrt(rho_s)


# Vosko-Wilk-Nusair fits (Hartree): rows paramagnetic, ferromagnetic, spin stiffness; columns A, b, c, x0.
VWN5_PARAMS = ((0.0310907, 3.72744, 12.9352, -0.10498),
               (0.01554535, 7.06042, 18.0578, -0.32500),
               (-1 / (6 * math.pi ** 2), 1.13107, 13.0045, -0.0047584))
VWN_RPA_PARAMS = ((0.0310907, 13.0720, 42.7198, -0.409286),
                  (0.01554535, 20.1231, 101.578, -0.743294),
                  (-1 / (6 * math.pi ** 2), 1.06835, 11.4813, -0.228344))
_FPP = 4 / (9 * (2 ** (1 / 3) - 1))  # f''(0) of f_zeta


def vwn_fit(rs, A, b, c, x0):
    """The VWN interpolation formula [Hartree per electron] at Wigner-Seitz radius rs [bohr]."""
    x = rs.sqrt()
    X = rs + b * x + c
    Q = math.sqrt(4 * c - b * b)
    f2 = b * x0 / (x0 * x0 + b * x0 + c)
    f3 = 2 * (2 * x0 + b) / Q
    d = x - x0
    return A * (torch.log(rs / X) + (2 * b / Q - f2 * f3) * torch.atan(Q / (2 * x + b))
                - f2 * torch.log(d * d / X))


class VWN5(Correlation):
    """VWN5 correlation (libxc LDA_C_VWN): fit V with the spin-stiffness interpolation."""

    def energy(self, n, z, rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb):
        rs = wigner_seitz_radius(n)
        para = vwn_fit(rs, *VWN5_PARAMS[0])
        if isinstance(z, float):  # restricted: zeta = 0
            return n * para
        ferro, stiffness = (vwn_fit(rs, *p) for p in VWN5_PARAMS[1:])
        fz, z4 = f_zeta(z), z ** 4
        return n * (para + stiffness * fz * (1 - z4) / _FPP + (ferro - para) * fz * z4)


class VWNRPA(Correlation):
    """VWN-RPA correlation (libxc LDA_C_VWN_RPA, PySCF "vwn_rpa" = "vwn3"): RPA fits, f(zeta) interpolation."""

    def energy(self, n, z, rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb):
        rs = wigner_seitz_radius(n)
        para = vwn_fit(rs, *VWN_RPA_PARAMS[0])
        if isinstance(z, float):  # restricted: zeta = 0
            return n * para
        ferro = vwn_fit(rs, *VWN_RPA_PARAMS[1])
        fz = f_zeta(z)
        return n * (para * (1 - fz) + ferro * fz)


# Perdew-Wang 1992 fits: rows paramagnetic, ferromagnetic, -spin stiffness; columns A, alpha1, beta1..beta4.
PW92_PARAMS = ((0.031091, 0.21370, 7.5957, 3.5876, 1.6382, 0.49294),
               (0.015545, 0.20548, 14.1189, 6.1977, 3.3662, 0.62517),
               (0.016887, 0.11125, 10.357, 3.6231, 0.88026, 0.49671))
PW92_FZ20 = 1.709921
# The more precise A and f''(0) that PBE correlation uses (libxc LDA_C_PW_MOD).
PW92_MOD_PARAMS = ((0.0310907,) + PW92_PARAMS[0][1:],
                   (0.01554535,) + PW92_PARAMS[1][1:],
                   (0.0168869,) + PW92_PARAMS[2][1:])
PW92_MOD_FZ20 = 1.709920934161365617563962776245


def pw92_eps(rs, z, params=PW92_PARAMS, fz20=PW92_FZ20):
    """PW92 correlation energy per electron [Hartree] at rs [bohr] and spin polarization z (a tensor, or
    the float 0.0 for restricted densities)."""
    def g(A, alpha1, beta1, beta2, beta3, beta4):
        x = rs.sqrt()
        den = 2 * A * x * (beta1 + x * (beta2 + x * (beta3 + beta4 * x)))
        # log(1 + y) rather than log1p(y), as libxc writes it: at rs ~ 1e4 (rho ~ 1e-12) the two differ by
        # ~1e-10 relative, and pointwise parity with libxc is what the SCF is checked against.
        return -2 * A * (1 + alpha1 * rs) * torch.log(1 + 1 / den)

    para = g(*params[0])
    if isinstance(z, float):  # restricted: zeta = 0
        return para
    ferro, stiffness = g(*params[1]), g(*params[2])
    fz = f_zeta(z)
    return para + z ** 4 * fz * (ferro - para + stiffness / fz20) - fz * stiffness / fz20


class PW92(Correlation):
    """Perdew-Wang 1992 correlation (libxc LDA_C_PW, PySCF "pw")."""

    def energy(self, n, z, rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb):
        return n * pw92_eps(wigner_seitz_radius(n), z)
