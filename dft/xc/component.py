"""Base classes of the functional components: spin-scaled exchange and (rho_a, rho_b) correlation.

A component is a ``torch.nn.Module`` called as ``component(rho, sigma=None, spin=0)`` and returning the
energy density per volume e [Hartree bohr^-3], shape (..., N), so that E = sum_g w_g e_g.  Subclasses
write only the formula; the spin layout and libxc's small-density screening are handled here once.
"""

import torch

from .density import floor_at, keep_mask, screen_sigmas, split_spin, stand_in, zeta

LOW_PRECISION_DENS_THRESHOLD = 1e-7  # bohr^-3; float32 keeps (rho / 2)^(-14/3) finite above it


class Component(torch.nn.Module):
    """One named functional ingredient (e.g. B88 exchange).

    Class attributes: ``family`` ("lda" or "gga": whether sigma is used), ``dens_threshold`` [bohr^-3]
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
    bohr^-3], from its density rho_s [bohr^-3] and sigma_ss = |grad rho_s|^2 [bohr^-8] (None for LDA).
    """

    def forward(self, rho, sigma=None, spin=0):
        rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb = split_spin(rho, sigma, spin, self.family)
        threshold = self.threshold(rho.dtype)
        if sigma_aa is not None:
            sigma_aa, _, sigma_bb = screen_sigmas(sigma_aa, sigma_ab, sigma_bb, threshold, spin)
        if spin == 0:
            return 2 * self._screened(rho_a, sigma_aa, threshold)
        return self._screened(rho_a, sigma_aa, threshold) + self._screened(rho_b, sigma_bb, threshold)

    def _screened(self, rho_s, sigma_ss, threshold):
        keep = keep_mask(rho_s > threshold, rho_s)
        rho_s = stand_in(rho_s, keep, 1.0)
        if sigma_ss is not None:
            sigma_ss = sigma_ss * keep
        return self.per_spin(rho_s, sigma_ss) * keep

    def per_spin(self, rho_s, sigma_ss):
        raise NotImplementedError


class Correlation(Component):
    """Correlation as a function of both spin densities.

    Subclasses define ``energy(n, z, rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb)`` [Hartree bohr^-3]: total
    density n = rho_a + rho_b (at least ``dens_threshold``), spin polarization z = (rho_a - rho_b) / n, and
    the sigmas (None for LDA).  For restricted input z is the Python float 0.0, so that spin interpolation
    can be skipped.
    """

    def forward(self, rho, sigma=None, spin=0):
        rho_a, rho_b, *sigmas = split_spin(rho, sigma, spin, self.family)
        threshold = self.threshold(rho.dtype)
        keep = keep_mask(rho_a + rho_b >= threshold, rho_a)
        if spin == 1:
            rho_a, rho_b = floor_at(rho_a, threshold), floor_at(rho_b, threshold)
        rho_a = stand_in(rho_a, keep, 0.5)
        rho_b = rho_a if spin == 0 else stand_in(rho_b, keep, 0.5)
        if sigmas[0] is not None:
            sigmas = screen_sigmas(*sigmas, threshold, spin)
            if spin == 0:
                sigmas = [sigmas[0] * keep] * 3
            else:
                sigmas = [s * keep for s in sigmas]
        n = 2 * rho_a if spin == 0 else rho_a + rho_b
        z = 0.0 if spin == 0 else zeta(rho_a, rho_b)
        return self.energy(n, z, rho_a, rho_b, *sigmas) * keep

    def energy(self, n, z, rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb):
        raise NotImplementedError
