"""Base classes of the functional components: spin-scaled exchange and (rho_a, rho_b) correlation.

A component is a ``torch.nn.Module`` called as ``component(rho, sigma=None, spin=0, tau=None)`` and returning
the energy density per volume e [Hartree bohr^-3], shape (..., N), so that E = sum_g w_g e_g.  Its ``family``
says which inputs it uses: "lda" (rho), "gga" (rho, sigma) or "mgga" (rho, sigma and the kinetic-energy density
tau = 1/2 sum_i occ_i |grad phi_i|^2 [Hartree bohr^-3], shaped like rho); LDA and GGA components ignore tau.
Subclasses write only the formula; the spin layout and libxc's small-density screening are handled here once.
"""

import torch

from .density import floor_at, keep_mask, screen_sigmas, screen_taus, split_spin, split_tau, stand_in, zeta

LOW_PRECISION_DENS_THRESHOLD = 1e-7  # bohr^-3; float32 keeps (rho / 2)^(-14/3) finite above it


class Component(torch.nn.Module):
    """One named functional ingredient (e.g. B88 exchange).

    Class attributes: ``family`` ("lda", "gga" or "mgga": whether sigma, and tau, are used), ``dens_threshold`` [bohr^-3]
    (libxc's default for the component; densities below it are screened as libxc does).
    """

    family = "lda"
    dens_threshold = 1e-15

    def threshold(self, dtype):
        """The density threshold used for inputs of ``dtype``: libxc's in float64, and at least
        ``LOW_PRECISION_DENS_THRESHOLD`` in lower precision, where rho^(8/3) and the inverse powers in the
        potentials' derivatives would underflow or overflow."""
        if dtype == torch.float64:
            return self.dens_threshold
        return max(self.dens_threshold, LOW_PRECISION_DENS_THRESHOLD)

    def make_trainable(self, *names):
        """Turn the named constants (buffers, e.g. PBE's ``"kappa"``, ``"mu"``) into ``nn.Parameter``s in place,
        so that optimizers see them; returns ``self``."""
        for name in names:
            if name not in self._buffers:
                raise AttributeError(f"{type(self).__name__} has no constant {name!r}; it has "
                                     f"{sorted(self._buffers)}.")
            value = self._buffers.pop(name)
            self.register_parameter(name, torch.nn.Parameter(value.clone()))
        return self

    def extra_repr(self):
        return f"family={self.family!r}"


class Exchange(Component):
    """Exchange obeying the spin-scaling relation E_x[rho_a, rho_b] = (E_x[2 rho_a] + E_x[2 rho_b]) / 2.

    Subclasses define ``per_spin(rho_s, sigma_ss)``: the energy density of one spin channel [Hartree
    bohr^-3], from its density rho_s [bohr^-3] and sigma_ss = |grad rho_s|^2 [bohr^-8] (None for LDA); a
    meta-GGA defines ``per_spin(rho_s, sigma_ss, tau_s)`` with the channel's tau_s [Hartree bohr^-3].
    """

    def forward(self, rho, sigma=None, spin=0, tau=None):
        rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb = split_spin(rho, sigma, spin, self.family)
        threshold = self.threshold(rho.dtype)
        taus = caps = None
        if self.family == "mgga":
            taus = screen_taus(*split_tau(tau, rho, spin), spin)
            caps = [8 * floor_at(r, threshold) * t for r, t in zip((rho_a, rho_b), taus)]
        if sigma_aa is not None:
            sigma_aa, _, sigma_bb = screen_sigmas(sigma_aa, sigma_ab, sigma_bb, threshold, spin, caps)
        taus = taus or (None, None)
        if spin == 0:
            return 2 * self._screened(rho_a, sigma_aa, taus[0], threshold)
        return (self._screened(rho_a, sigma_aa, taus[0], threshold)
                + self._screened(rho_b, sigma_bb, taus[1], threshold))

    def _screened(self, rho_s, sigma_ss, tau_s, threshold):
        keep = keep_mask(rho_s > threshold, rho_s)
        rho_s = stand_in(rho_s, keep, 1.0)
        if tau_s is not None:  # meta-GGA: screened points see rho = sigma = tau = 1, inside every bound
            return self.per_spin(rho_s, stand_in(sigma_ss, keep, 1.0), stand_in(tau_s, keep, 1.0)) * keep
        if sigma_ss is not None:
            sigma_ss = sigma_ss * keep
        return self.per_spin(rho_s, sigma_ss) * keep

    def per_spin(self, rho_s, sigma_ss, tau_s=None):
        raise NotImplementedError


class Correlation(Component):
    """Correlation as a function of both spin densities.

    Subclasses define ``energy(n, z, rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb)`` [Hartree bohr^-3]: total
    density n = rho_a + rho_b (at least ``dens_threshold``), spin polarization z = (rho_a - rho_b) / n, and
    the sigmas (None for LDA); a meta-GGA's ``energy`` also takes ``tau_a, tau_b`` [Hartree bohr^-3].  For
    restricted input z is the Python float 0.0, so that spin interpolation can be skipped.
    """

    def forward(self, rho, sigma=None, spin=0, tau=None):
        rho_a, rho_b, *sigmas = split_spin(rho, sigma, spin, self.family)
        threshold = self.threshold(rho.dtype)
        keep = keep_mask(rho_a + rho_b >= threshold, rho_a)
        if spin == 1:
            rho_a, rho_b = floor_at(rho_a, threshold), floor_at(rho_b, threshold)
        rho_a = stand_in(rho_a, keep, 0.5)
        rho_b = rho_a if spin == 0 else stand_in(rho_b, keep, 0.5)
        taus, caps = [], None
        if self.family == "mgga":
            taus = [stand_in(t, keep, 1.0) for t in screen_taus(*split_tau(tau, rho, spin), spin)]
            caps = (8 * rho_a * taus[0], 8 * rho_b * taus[1])
        if sigmas[0] is not None:
            sigmas = screen_sigmas(*sigmas, threshold, spin, caps)
            if spin == 0:
                sigmas = [sigmas[0] * keep] * 3
            else:
                sigmas = [s * keep for s in sigmas]
        n = 2 * rho_a if spin == 0 else rho_a + rho_b
        z = 0.0 if spin == 0 else zeta(rho_a, rho_b)
        return self.energy(n, z, rho_a, rho_b, *sigmas, *taus) * keep

    def energy(self, n, z, rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb):
        raise NotImplementedError
