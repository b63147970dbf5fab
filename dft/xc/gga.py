"""Generalized-gradient components: B88 and PBE exchange, PBE and LYP correlation.

Formulas and constants follow libxc (GGA_X_B88, GGA_X_PBE, GGA_C_PBE, GGA_C_LYP).  The constants a later
XC-learning step may want to fit are module buffers (float64; cast to the input's dtype and device on use).
Densities in bohr^-3, sigma = |grad rho|^2 in bohr^-8, energy densities in Hartree bohr^-3.
"""

import math

import torch

from .component import Correlation, Exchange
from .density import cbrt, keep_mask, opz_pow, phi, stand_in
from .lda import PW92_MOD_FZ20, PW92_MOD_PARAMS, RS_FACTOR, SLATER_C, pw92_eps, wigner_seitz_radius

X2S = 1 / (2 * (6 * math.pi ** 2) ** (1 / 3))  # s = X2S * x for the spin-channel reduced gradient x
_SERIES_BELOW = 1e-8  # x^2 below which x asinh(x) = x^2 - x^4/6 to double precision


def x_asinh_x(x2):
    """x asinh(x) as a smooth function of x^2, with finite derivatives at x = 0."""
    large = keep_mask(x2 >= _SERIES_BELOW, x2)
    safe = stand_in(x2, large, 1.0)
    x = safe.sqrt()
    # asinh(x) = log1p(x + x^2 / (1 + sqrt(1 + x^2))): accurate, and faster than torch.asinh on CPU
    asinh = torch.log1p(x + safe / (1 + (1 + safe).sqrt()))
    return torch.addcmul((x2 - x2 * x2 / 6) * (1 - large), x * asinh, large)


def rho43_and_x2(rho_s, sigma_ss):
    """rho_s^(4/3) [bohr^-4] and the squared reduced gradient x^2 = sigma_ss / rho_s^(8/3) of one spin channel."""
    rho43 = rho_s * cbrt(rho_s)
    return rho43, sigma_ss / (rho43 * rho43)


class _GGAComponent:
    """Mixin: a component that uses sigma, with float64 parameter buffers read in the input's dtype."""

    family = "gga"

    def _buffers_as(self, like, *names):
        return [getattr(self, name).to(like) for name in names]


class B88(_GGAComponent, Exchange):
    """Becke 1988 exchange including the Slater part (libxc GGA_X_B88); beta = 0.0042, gamma = 6."""

    def __init__(self, beta=0.0042, gamma=6.0):
        super().__init__()
        self.register_buffer("beta", torch.tensor(beta, dtype=torch.float64))
        self.register_buffer("gamma", torch.tensor(gamma, dtype=torch.float64))

    def per_spin(self, rho_s, sigma_ss):
        beta, gamma = self._buffers_as(rho_s, "beta", "gamma")
        rho43, x2 = rho43_and_x2(rho_s, sigma_ss)
        enhancement = 1 + beta / SLATER_C * x2 / (1 + gamma * beta * x_asinh_x(x2))
        return -SLATER_C * rho43 * enhancement


class PBEExchange(_GGAComponent, Exchange):
    """PBE exchange (libxc GGA_X_PBE): F(s) = 1 + kappa - kappa^2 / (kappa + mu s^2)."""

    def __init__(self, kappa=0.804, mu=0.2195149727645171):
        super().__init__()
        self.register_buffer("kappa", torch.tensor(kappa, dtype=torch.float64))
        self.register_buffer("mu", torch.tensor(mu, dtype=torch.float64))

    def per_spin(self, rho_s, sigma_ss):
        kappa, mu = self._buffers_as(rho_s, "kappa", "mu")
        rho43, x2 = rho43_and_x2(rho_s, sigma_ss)
        s2 = X2S ** 2 * x2
        return -SLATER_C * rho43 * (1 + kappa - kappa * kappa / (kappa + mu * s2))


class PBECorrelation(_GGAComponent, Correlation):
    """PBE correlation (libxc GGA_C_PBE) on top of PW92 with libxc's PW_MOD constants."""

    dens_threshold = 1e-12
    GAMMA = (1 - math.log(2)) / math.pi ** 2

    def __init__(self, beta=0.06672455060314922):
        super().__init__()
        self.register_buffer("beta", torch.tensor(beta, dtype=torch.float64))

    def energy(self, n, z, rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb):
        (beta,) = self._buffers_as(n, "beta")
        gamma = self.GAMMA
        rs = wigner_seitz_radius(n)
        eps = pw92_eps(rs, z, PW92_MOD_PARAMS, PW92_MOD_FZ20)
        phi_z = phi(z)
        phi3 = phi_z ** 3
        n_m13 = rs / RS_FACTOR
        n_m23 = n_m13 * n_m13
        n_m43 = n_m23 * n_m23
        n_m83 = n_m43 * n_m43
        t2 = (sigma_aa + 2 * sigma_ab + sigma_bb) * n_m83 / (16 * 2 ** (2 / 3) * phi_z * phi_z * rs)
        A = beta / (gamma * torch.expm1(-eps / (gamma * phi3)))
        f1 = t2 + A * t2 * t2
        H = gamma * phi3 * torch.log1p(beta * f1 / (gamma * (1 + A * f1)))
        return n * (eps + H)


class LYP(_GGAComponent, Correlation):
    """Lee-Yang-Parr correlation (libxc GGA_C_LYP); a, b, c, d = 0.04918, 0.132, 0.2533, 0.349."""

    dens_threshold = 1e-14
    CF = 0.3 * (3 * math.pi ** 2) ** (2 / 3)

    def __init__(self, a=0.04918, b=0.132, c=0.2533, d=0.349):
        super().__init__()
        for name, value in (("a", a), ("b", b), ("c", c), ("d", d)):
            self.register_buffer(name, torch.tensor(value, dtype=torch.float64))

    def energy(self, n, z, rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb):
        a, b, c, d = self._buffers_as(n, "a", "b", "c", "d")
        rr = 1 / cbrt(n)
        inv_drr = 1 / (1 + d * rr)
        omega = b * torch.exp(-c * rr) * inv_drr
        delta = (c + d * inv_drr) * rr
        rr2 = rr * rr
        rr4 = rr2 * rr2
        if isinstance(z, float):  # restricted: zeta = 0 and the spin channels are equal
            # The general expression below at zeta = 0, x_a^2 = x_b^2 = 2^(2/3) x_t^2, collected by hand.
            xt2 = 4 * sigma_aa * (rr4 * rr4)
            return n * a * (omega * (xt2 * (3 + 7 * delta) / 72 - self.CF) - inv_drr)
        xt2 = (sigma_aa + 2 * sigma_ab + sigma_bb) * (rr4 * rr4)
        _, xa2 = rho43_and_x2(rho_a, sigma_aa)
        _, xb2 = rho43_and_x2(rho_b, sigma_bb)
        up83, dn83 = opz_pow(z, 8 / 3), opz_pow(-z, 8 / 3)
        up113, dn113 = opz_pow(z, 11 / 3), opz_pow(-z, 11 / 3)
        aux6 = 2 ** (-8 / 3)
        aux4 = aux6 / 4
        aux5 = aux4 / 18
        one_z2 = 1 - z * z
        t1 = -one_z2 * inv_drr
        t2 = -xt2 * (one_z2 * (47 - 7 * delta) / 72 - 2 / 3)
        t3 = -self.CF / 2 * one_z2 * (up83 + dn83)
        t4 = aux4 * one_z2 * (2.5 - delta / 18) * (xa2 * up83 + xb2 * dn83)
        t5 = aux5 * one_z2 * (delta - 11) * (xa2 * up113 + xb2 * dn113)
        t6 = -aux6 * (2 / 3 * (xa2 * up83 + xb2 * dn83)
                      - opz_pow(z, 2) * xb2 * dn83 / 4 - opz_pow(-z, 2) * xa2 * up83 / 4)
        return n * a * (t1 + omega * (t2 + t3 + t4 + t5 + t6))
