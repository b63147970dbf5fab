"""Meta-GGA components: TPSS, SCAN and r2SCAN exchange and correlation.

Formulas and constants follow libxc 7.0 (MGGA_X_TPSS, MGGA_C_TPSS, MGGA_X_SCAN, MGGA_C_SCAN, MGGA_X_R2SCAN,
MGGA_C_R2SCAN), including its screening (see ``density``: the tau floor and the cap sigma_ss <= 8 rho_s tau_s).
Inputs: densities in bohr^-3, sigma = |grad rho|^2 in bohr^-8, the kinetic-energy density tau =
1/2 sum_i occ_i |grad phi_i|^2 in Hartree bohr^-3 (libxc's and PySCF's convention, with the 1/2); energy
densities in Hartree bohr^-3.  Exchange obeys exact spin scaling (a ``per_spin`` formula).  The constants a
fit may want to vary are float64 buffers, made trainable with ``make_trainable``.

Reduced variables of a spin channel: x^2 = sigma_ss / rho_s^(8/3), t = tau_s / rho_s^(5/3), s^2 = p =
X2S^2 x^2, and the iso-orbital indicator alpha = (t - x^2 / 8) / K_FACTOR_C = (tau - tau_W) / tau_unif.
"""

import math

import torch

from .component import Correlation, Exchange
from .density import ZETA_THRESHOLD, cbrt, f_zeta, keep_mask, opz_pow, phi, stand_in
from .gga import X2S
from .lda import PW92_MOD_FZ20, PW92_MOD_PARAMS, RS_FACTOR, SLATER_C, pw92_eps, wigner_seitz_radius

K_FACTOR_C = 0.3 * (6 * math.pi ** 2) ** (2 / 3)  # tau_unif of one spin channel is K_FACTOR_C rho_s^(5/3)
MU_GE = 10 / 81  # second-order gradient-expansion coefficient of exchange
PBE_GAMMA = (1 - math.log(2)) / math.pi ** 2
_DBL_EPSILON = 2.220446049250313e-16
_SCAN_A1 = 4.9479  # g_x(s) = 1 - exp(-a1 / sqrt(s))
_GX_ONE_BELOW = (_SCAN_A1 / 700) ** 2  # s below which exp(-a1 / sqrt(s)) underflows: g_x = 1 exactly


class _MGGAComponent:
    """Mixin: a component that uses sigma and tau, with float64 parameter buffers read in the input's dtype."""

    family = "mgga"

    def _register(self, **constants):
        for name, value in constants.items():
            self.register_buffer(name, torch.tensor(value, dtype=torch.float64))

    def _buffers_as(self, like, *names):
        return [getattr(self, name).to(like) for name in names]


def _reduced(rho_s, sigma_ss, tau_s):
    """rho_s^(4/3) [bohr^-4], x^2 = sigma_ss / rho_s^(8/3) and t = tau_s / rho_s^(5/3) of one spin channel."""
    cube = cbrt(rho_s)
    rho43 = rho_s * cube
    return rho43, sigma_ss / (rho43 * rho43), tau_s / (rho43 * cube)


def _safe_sqrt(x):
    """sqrt(x) for x >= 0, with finite derivatives where x underflows to 0."""
    return x.clamp(min=torch.finfo(x.dtype).tiny).sqrt()


class TPSSExchange(_MGGAComponent, Exchange):
    """Tao-Perdew-Staroverov-Scuseria exchange (libxc MGGA_X_TPSS): b, c, e, kappa, mu = 0.40, 1.59096, 1.537,
    0.804, 0.21951 (Eq. 10 of Tao et al., PRL 91, 146401 (2003))."""

    def __init__(self, b=0.40, c=1.59096, e=1.537, kappa=0.804, mu=0.21951):
        super().__init__()
        self._register(b=b, c=c, e=e, kappa=kappa, mu=mu)

    def per_spin(self, rho_s, sigma_ss, tau_s):
        b, c, e, kappa, mu = self._buffers_as(rho_s, "b", "c", "e", "kappa", "mu")
        rho43, x2, t = _reduced(rho_s, sigma_ss, tau_s)
        p = X2S ** 2 * x2
        z = x2 / (8 * t)
        alpha = (t - x2 / 8) / K_FACTOR_C
        qb = 0.45 * (alpha - 1) / (1 + b * alpha * (alpha - 1)).sqrt() + 2 * p / 3
        z2 = z * z
        sqrt_e = e.sqrt()
        numerator = ((MU_GE + c * z2 / (1 + z2) ** 2) * p + 146 / 2025 * qb * qb
                     - 73 / 405 * qb * _safe_sqrt(0.5 * (0.36 * z2 + p * p)) + MU_GE ** 2 / kappa * p * p
                     + 2 * sqrt_e * MU_GE * 0.36 * z2 + e * mu * p * p * p)
        fx = numerator / (1 + sqrt_e * p) ** 2
        return -SLATER_C * rho43 * (1 + kappa * (1 - kappa / (kappa + fx)))


def _scan_f_alpha(alpha, c1, c2, d):
    """SCAN's interpolation f(alpha) = exp(-c1 alpha / (1 - alpha)) for alpha < 1, -d exp(c2 / (1 - alpha))
    for alpha > 1, each set to 0 where its exponential is below machine epsilon (libxc's cutoffs)."""
    log_eps = math.log(_DBL_EPSILON)
    left_cut = (-log_eps / (-log_eps + c1)).detach()
    log_eps_d = torch.log(_DBL_EPSILON / d.detach().abs())
    right_cut = (-log_eps_d + c2.detach()) / -log_eps_d
    a_left = torch.minimum(alpha, left_cut)
    a_right = torch.maximum(alpha, right_cut)
    left = torch.exp(-c1 * a_left / (1 - a_left)) * keep_mask(alpha <= left_cut, alpha)
    right = -d * torch.exp(c2 / (1 - a_right)) * keep_mask(alpha >= right_cut, alpha)
    return left + right


def _scan_gx(p):
    """g_x(s) = 1 - exp(-a1 / sqrt(s)) of SCAN exchange, from p = s^2; exactly 1 where the exponential
    underflows (s -> 0), with zero derivative there."""
    large = keep_mask(p >= _GX_ONE_BELOW, p)
    root_s = stand_in(p, large, 1.0).sqrt().sqrt()
    return 1 - torch.exp(-_SCAN_A1 / root_s) * large


def _h1x(y, k1):
    return 1 + k1 * (1 - k1 / (k1 + y))


class SCANExchange(_MGGAComponent, Exchange):
    """SCAN exchange of Sun, Ruzsinszky and Perdew, PRL 115, 036402 (2015) (libxc MGGA_X_SCAN): c1, c2, d, k1 =
    0.667, 0.8, 1.24, 0.065; h0x = 1.174."""

    dens_threshold = 1e-15
    H0X = 1.174

    def __init__(self, c1=0.667, c2=0.8, d=1.24, k1=0.065):
        super().__init__()
        self._register(c1=c1, c2=c2, d=d, k1=k1)

    def per_spin(self, rho_s, sigma_ss, tau_s):
        c1, c2, d, k1 = self._buffers_as(rho_s, "c1", "c2", "d", "k1")
        rho43, x2, t = _reduced(rho_s, sigma_ss, tau_s)
        p = X2S ** 2 * x2
        alpha = (t - x2 / 8) / K_FACTOR_C
        b2 = math.sqrt(5913 / 405000)
        b1 = 511 / 13500 / (2 * b2)
        b4 = MU_GE ** 2 / k1 - 1606 / 18225 - b1 ** 2
        one_minus = 1 - alpha
        bracket = b1 * p + b2 * one_minus * torch.exp(-0.5 * one_minus * one_minus)
        y = MU_GE * p + b4 * p * p * torch.exp(-b4 * p / MU_GE) + bracket * bracket
        h1x = _h1x(y, k1)
        f_alpha = _scan_f_alpha(alpha, c1, c2, d)
        return -SLATER_C * rho43 * (h1x + f_alpha * (self.H0X - h1x)) * _scan_gx(p)


# rSCAN's polynomial f(alpha) for 0 <= alpha <= 2.5, coefficients of alpha^0 .. alpha^7 (exchange, correlation).
RSCAN_FX = (1.0, -0.667, -0.4445555, -0.663086601049, 1.451297044490, -0.887998041597, 0.234528941479,
            -0.023185843322)
RSCAN_FC = (1.0, -0.64, -0.4352, -1.535685604549, 3.061560252175, -1.915710236206, 0.516884468372,
            -0.051848879792)


def _r2scan_f_alpha(alpha, coefficients, c1, c2, d):
    """r2SCAN's f(alpha): exp(-c1 alpha / (1 - alpha)) for alpha <= 0, rSCAN's polynomial up to 2.5 and
    -d exp(c2 / (1 - alpha)) above."""
    negative = keep_mask(alpha <= 0, alpha)
    large = keep_mask(alpha > 2.5, alpha)
    middle = 1 - negative - large
    a_neg = alpha.clamp(max=0)
    a_mid = alpha.clamp(min=0, max=2.5)
    a_large = alpha.clamp(min=2.5)
    poly = coefficients[-1]
    for coefficient in coefficients[-2::-1]:
        poly = poly * a_mid + coefficient
    return (negative * torch.exp(-c1 * a_neg / (1 - a_neg)) + middle * poly
            + large * -d * torch.exp(c2 / (1 - a_large)))


class R2SCANExchange(_MGGAComponent, Exchange):
    """r2SCAN exchange of Furness et al., JPCL 11, 8208 (2020) (libxc MGGA_X_R2SCAN): c1, c2, d, k1, eta, dp2 =
    0.667, 0.8, 1.24, 0.065, 0.001, 0.361; alpha regularized as (t - x^2/8) / (K_FACTOR_C + eta x^2/8)."""

    dens_threshold = 1e-11
    H0X = 1.174

    def __init__(self, c1=0.667, c2=0.8, d=1.24, k1=0.065, eta=0.001, dp2=0.361):
        super().__init__()
        self._register(c1=c1, c2=c2, d=d, k1=k1, eta=eta, dp2=dp2)

    def per_spin(self, rho_s, sigma_ss, tau_s):
        c1, c2, d, k1, eta, dp2 = self._buffers_as(rho_s, "c1", "c2", "d", "k1", "eta", "dp2")
        rho43, x2, t = _reduced(rho_s, sigma_ss, tau_s)
        p = X2S ** 2 * x2
        alpha = (t - x2 / 8) / (K_FACTOR_C + eta * x2 / 8)
        # C2 = -sum_{i=1..8} i c_{i-1} (1 - h0x), libxc's eqn S12 with its indexing.
        c2_coefficient = -sum(i * c for i, c in enumerate(RSCAN_FX, start=1)) * (1 - self.H0X)
        cn = 20 / 27 + eta * 5 / 3
        dp2_4 = dp2 ** 4
        y = (cn * c2_coefficient * torch.exp(-p * p / dp2_4) + MU_GE) * p
        h1x = _h1x(y, k1)
        f_alpha = _r2scan_f_alpha(alpha, RSCAN_FX, c1, c2, d)
        return -SLATER_C * rho43 * (h1x + f_alpha * (self.H0X - h1x)) * _scan_gx(p)


# ---------------------------------------------------------------------------------------------------------------
# Correlation

_PHI_FULL = (2 ** (2 / 3) + ZETA_THRESHOLD ** (2 / 3)) / 2  # phi(zeta = 1) with libxc's zeta threshold
_FZ_FULL = (2 ** (4 / 3) + ZETA_THRESHOLD ** (4 / 3) - 2) / (2 ** (4 / 3) - 2)  # f_zeta(1)


def _pw_mod(rs, z):
    """PW92 correlation per electron (libxc's PW_MOD constants) [Hartree] at spin polarization z: a tensor,
    0.0 (restricted) or 1.0 (a fully polarized channel)."""
    if isinstance(z, float) and z == 1.0:
        para = pw92_eps(rs, 0.0, PW92_MOD_PARAMS, PW92_MOD_FZ20)
        ferro = pw92_eps(rs, 0.0, PW92_MOD_PARAMS[1:2] * 3, PW92_MOD_FZ20)
        return para + _FZ_FULL * (ferro - para)
    return pw92_eps(rs, z, PW92_MOD_PARAMS, PW92_MOD_FZ20)


def _phi(z):
    return _PHI_FULL if isinstance(z, float) and z == 1.0 else phi(z)


def _pbe_eps(rs, z, xt2, beta):
    """PBE correlation per electron [Hartree] (libxc GGA_C_PBE with a given beta) from rs [bohr], spin
    polarization z (as :func:`_pw_mod`) and the total reduced gradient xt^2 = sigma / n^(8/3)."""
    eps = _pw_mod(rs, z)
    phi_z = _phi(z)
    phi3 = phi_z ** 3
    t2 = xt2 / (16 * 2 ** (2 / 3) * phi_z * phi_z * rs)
    A = beta / (PBE_GAMMA * torch.expm1(-eps / (PBE_GAMMA * phi3)))
    f1 = t2 + A * t2 * t2
    return eps + PBE_GAMMA * phi3 * torch.log1p(beta * f1 / (PBE_GAMMA * (1 + A * f1)))


def _spin_sum(z, a, b, power):
    """a ((1 + z)/2)^power + b ((1 - z)/2)^power (libxc's t_total), z a tensor or the float 0.0."""
    if isinstance(z, float):
        return (a + b) * 0.5 ** power
    return (a * opz_pow(z, power) + b * opz_pow(-z, power)) * 0.5 ** power


class TPSSCorrelation(_MGGAComponent, Correlation):
    """TPSS correlation (libxc MGGA_C_TPSS): PBE correlation (beta = 0.06672455060314922) made self-interaction
    free by the revPKZB construction; d = 2.8, C(zeta, 0) = 0.53 + 0.87 zeta^2 + 0.50 zeta^4 + 2.26 zeta^6."""

    dens_threshold = 1e-15

    def __init__(self, beta=0.06672455060314922, d=2.8, c0=0.53, c1=0.87, c2=0.50, c3=2.26):
        super().__init__()
        self._register(beta=beta, d=d, c0=c0, c1=c1, c2=c2, c3=c3)

    def energy(self, n, z, rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb, tau_a, tau_b):
        beta, d, c0, c1, c2, c3 = self._buffers_as(n, "beta", "d", "c0", "c1", "c2", "c3")
        threshold = self.threshold(n.dtype)
        rs = wigner_seitz_radius(n)
        n_m13 = rs / RS_FACTOR
        n_m43 = n_m13 / n
        sigma = sigma_aa + 2 * sigma_ab + sigma_bb
        xt2 = sigma * n_m43 * n_m43
        eps = _pbe_eps(rs, z, xt2, beta)
        tau_w_over_tau = (xt2 / (8 * (tau_a + tau_b) * n_m43 * n_m13)).clamp(max=1)
        # sum_s (rho_s / n) max(eps_c^PBE(rho_s, 0), eps_c^PBE(rho_a, rho_b)) (Eq. 12 of Tao et al.), each max taken
        # after the weighting as libxc takes it; eps_c^PBE(rho_s, 0) is fully polarized PBE at rho_s (Stoll).
        if isinstance(z, float):  # restricted: the channels are equal, and C(0, xi) = c0
            stoll = self._stoll(rho_a, sigma_aa, n, threshold, beta)
            same_spin = 2 * torch.maximum(stoll, eps / 2)
            c_zeta = c0
        else:
            same_spin = (torch.maximum(self._stoll(rho_a, sigma_aa, n, threshold, beta), eps * (1 + z) / 2)
                         + torch.maximum(self._stoll(rho_b, sigma_bb, n, threshold, beta), eps * (1 - z) / 2))
            xa2 = sigma_aa / (rho_a * cbrt(rho_a)) ** 2
            xb2 = sigma_bb / (rho_b * cbrt(rho_b)) ** 2
            xi2 = (1 - z * z) * (_spin_sum(z, xa2, xb2, 5 / 3) - xt2) / (4 * (3 * math.pi ** 2) ** (2 / 3))
            z2 = z * z
            c_zeta = ((c0 + z2 * (c1 + z2 * (c2 + z2 * c3)))
                      / (1 + xi2 * (opz_pow(z, -4 / 3) + opz_pow(-z, -4 / 3)) / 2) ** 4)
        ratio2 = tau_w_over_tau * tau_w_over_tau
        eps_pkzb = eps * (1 + c_zeta * ratio2) - (1 + c_zeta) * ratio2 * same_spin
        return n * eps_pkzb * (1 + d * eps_pkzb * ratio2 * tau_w_over_tau)

    @staticmethod
    def _stoll(rho_s, sigma_ss, n, threshold, beta):
        """eps_c^PBE(rho_s, 0, grad rho_s, 0) rho_s / n, 0 where rho_s <= threshold (libxc's gga_stoll_par)."""
        keep = keep_mask(rho_s > threshold, rho_s)
        rho_s = stand_in(rho_s, keep, 1.0)
        rho43 = rho_s * cbrt(rho_s)
        eps = _pbe_eps(wigner_seitz_radius(rho_s), 1.0, sigma_ss / (rho43 * rho43), beta)
        return eps * rho_s / n * keep


_SCAN_B1C, _SCAN_B2C, _SCAN_B3C = 0.0285764, 0.0889, 0.125541
_SCAN_CHI_INF = 0.12802585262625815
_SCAN_G_CNST = 2.363  # 2.3631 in the paper; libxc's value


def _beta_hu_langreth(rs):
    return 0.066724550603149220 * (1 + 0.1 * rs) / (1 + 0.1778 * rs)


def _scan_lsda0(rs, z):
    """eps_c^LDA0(rs) G_c(zeta): the alpha = 0 LSDA of SCAN correlation, and G_c [Hartree]."""
    eclda0 = -_SCAN_B1C / (1 + _SCAN_B2C * rs.sqrt() + _SCAN_B3C * rs)
    if isinstance(z, float):
        return eclda0, eclda0, 1.0
    z2 = z * z
    z4 = z2 * z2
    gc = (1 - _SCAN_G_CNST * (2 ** (1 / 3) - 1) * f_zeta(z)) * (1 - z4 * z4 * z4)
    return eclda0 * gc, eclda0, gc


def _scan_ec0(rs, z, s2):
    """SCAN's alpha = 0 correlation energy per electron eps_c^0 [Hartree] at reduced gradient s^2."""
    _, eclda0, gc = _scan_lsda0(rs, z)
    g_inf = (1 + 4 * _SCAN_CHI_INF * s2) ** -0.25
    h0 = _SCAN_B1C * torch.log(1 + torch.expm1(-eclda0 / _SCAN_B1C) * (1 - g_inf))
    return (eclda0 + h0) * gc


def _total_reduced(n, z, sigma_aa, sigma_ab, sigma_bb, tau_a, tau_b):
    """rs [bohr], xt^2 = sigma / n^(8/3), tau / n^(5/3) and d_s(zeta) = ((1 + z)^(5/3) + (1 - z)^(5/3)) / 2^(5/3)."""
    rs = wigner_seitz_radius(n)
    n_m13 = rs / RS_FACTOR
    n_m43 = n_m13 / n
    xt2 = (sigma_aa + 2 * sigma_ab + sigma_bb) * n_m43 * n_m43
    t_total = (tau_a + tau_b) * n_m43 * n_m13
    return rs, xt2, t_total, _spin_sum(z, 1.0, 1.0, 5 / 3)


class SCANCorrelation(_MGGAComponent, Correlation):
    """SCAN correlation (libxc MGGA_C_SCAN): eps_c^1 + f_c(alpha) (eps_c^0 - eps_c^1), with f_c's c1, c2, d =
    0.64, 1.5, 0.7 and eps_c^1 PBE-like with Hu-Langreth beta(rs)."""

    dens_threshold = 1e-15

    def __init__(self, c1=0.64, c2=1.5, d=0.7):
        super().__init__()
        self._register(c1=c1, c2=c2, d=d)

    def energy(self, n, z, rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb, tau_a, tau_b):
        c1, c2, d = self._buffers_as(n, "c1", "c2", "d")
        rs, xt2, t_total, ds = _total_reduced(n, z, sigma_aa, sigma_ab, sigma_bb, tau_a, tau_b)
        eps = _pw_mod(rs, z)
        phi_z = phi(z)
        phi3 = phi_z ** 3
        beta = _beta_hu_langreth(rs)
        t2 = xt2 / (16 * 2 ** (2 / 3) * phi_z * phi_z * rs)
        A = beta / (PBE_GAMMA * torch.expm1(-eps / (PBE_GAMMA * phi3)))
        g = (1 + 4 * A * t2) ** -0.25
        ec1 = eps + PBE_GAMMA * phi3 * torch.log(1 + beta * (1 - g) / (PBE_GAMMA * A))
        ec0 = _scan_ec0(rs, z, X2S ** 2 * 2 ** (2 / 3) * xt2)
        alpha = (t_total - xt2 / 8) / (K_FACTOR_C * ds)
        return n * (ec1 + _scan_f_alpha(alpha, c1, c2, d) * (ec0 - ec1))


def _pw_mod_drs(rs, z):
    """d eps_c^PW92(rs, z) / d rs (libxc's PW_MOD constants), in closed form [Hartree bohr^-1]."""
    x = rs.sqrt()

    def g_and_drs(A, alpha1, beta1, beta2, beta3, beta4):
        q = 2 * A * x * (beta1 + x * (beta2 + x * (beta3 + beta4 * x)))
        dq = A * (beta1 / x + 2 * beta2 + 3 * beta3 * x + 4 * beta4 * rs)
        log = torch.log(1 + 1 / q)
        return -2 * A * (1 + alpha1 * rs) * log, -2 * A * alpha1 * log + 2 * A * (1 + alpha1 * rs) * dq / (q * (q + 1))

    _, d_para = g_and_drs(*PW92_MOD_PARAMS[0])
    if isinstance(z, float):
        return d_para
    (_, d_ferro), (_, d_stiff) = g_and_drs(*PW92_MOD_PARAMS[1]), g_and_drs(*PW92_MOD_PARAMS[2])
    fz = f_zeta(z)
    z4 = z ** 4
    return d_para + z4 * fz * (d_ferro - d_para + d_stiff / PW92_MOD_FZ20) - fz * d_stiff / PW92_MOD_FZ20


class R2SCANCorrelation(_MGGAComponent, Correlation):
    """r2SCAN correlation (libxc MGGA_C_R2SCAN): SCAN correlation with the regularized alpha (eta = 0.001), rSCAN's
    polynomial f_c(alpha) and the gradient-expansion correction Delta y (dp2 = 0.361)."""

    dens_threshold = 1e-15

    def __init__(self, c1=0.64, c2=1.5, d=0.7, eta=0.001, dp2=0.361):
        super().__init__()
        self._register(c1=c1, c2=c2, d=d, eta=eta, dp2=dp2)

    def energy(self, n, z, rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb, tau_a, tau_b):
        c1, c2, d, eta, dp2 = self._buffers_as(n, "c1", "c2", "d", "eta", "dp2")
        rs, xt2, t_total, ds = _total_reduced(n, z, sigma_aa, sigma_ab, sigma_bb, tau_a, tau_b)
        eps = _pw_mod(rs, z)
        phi_z = phi(z)
        phi3 = phi_z ** 3
        gamma_phi3 = PBE_GAMMA * phi3
        w1 = torch.expm1(-eps / gamma_phi3)
        s2 = X2S ** 2 * 2 ** (2 / 3) * xt2
        t2 = xt2 / (16 * 2 ** (2 / 3) * phi_z * phi_z * rs)
        y = _beta_hu_langreth(rs) * t2 / (PBE_GAMMA * w1)
        # Delta y (eqn S34): from the difference of the two LSDAs and its rs derivative.
        elsda0, _, gc = _scan_lsda0(rs, z)
        sqrt_rs = rs.sqrt()
        d_elsda0 = _SCAN_B1C * (_SCAN_B2C / (2 * sqrt_rs) + _SCAN_B3C) / (
            1 + _SCAN_B2C * sqrt_rs + _SCAN_B3C * rs) ** 2 * gc
        d_elsda1 = _pw_mod_drs(rs, z)
        dfc2 = sum(i * c for i, c in enumerate(RSCAN_FC[1:], start=1))
        d_z = 1.0 if isinstance(z, float) else (opz_pow(z, 5 / 3) + opz_pow(-z, 5 / 3)) / 2
        dy = (dfc2 / (27 * PBE_GAMMA * d_z * phi3 * w1)
              * (20 * rs * (d_elsda0 - d_elsda1) - 45 * eta * (elsda0 - eps))
              * s2 * torch.exp(-s2 * s2 / dp2 ** 4))
        g = (1 + 4 * (y - dy)) ** -0.25
        ec1 = eps + gamma_phi3 * torch.log(1 + w1 * (1 - g))
        ec0 = _scan_ec0(rs, z, s2)
        alpha = (t_total - xt2 / 8) / (K_FACTOR_C * ds + eta * xt2 / 8)
        return n * (ec1 + _r2scan_f_alpha(alpha, RSCAN_FC, c1, c2, d) * (ec0 - ec1))
