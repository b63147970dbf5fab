"""Holonomic distance constraints (bonds to hydrogen, rigid waters) for dynamics and minimization.

Rigid 3-site waters are handled by SETTLE (Miyamoto & Kollman, J. Comput. Chem. 13, 952 (1992)), analytic for
positions and an exact 3x3 solve for velocities; every other constraint by SHAKE (Ryckaert, Ciccotti &
Berendsen, J. Comput. Phys. 23, 327 (1977)) for positions and RATTLE (Andersen, J. Comput. Phys. 52, 24 (1983))
for velocities, iterated on all constraints at once (relaxed when the updates overshoot) until each is within
tolerance: a few iterations for bonds to hydrogen, tens for all bonds, hundreds for 'hangles'. OpenMM's
Reference platform uses SETTLE and CCMA; both converge to the same constrained state (displacements along the
old bond vectors).

Positions may carry a leading batch dimension, (..., N, 3) nm; velocities likewise in nm/ps.
"""

import math

import torch

from .errors import BioError, ConstraintError
from .terms.units import strip

# SETTLE's velocity step: constraint c of a water joins local atoms (i_c, j_c) = (O,H1), (O,H2), (H1,H2); row c
# of this matrix is -1 at i_c and +1 at j_c.
_WATER_SIGNS = ((-1.0, 1.0, 0.0), (-1.0, 0.0, 1.0), (0.0, -1.0, 1.0))


class Constraints:
    """The distance constraints of a system, split into SETTLE waters and SHAKE/RATTLE pairs.

    Attributes:
        pairs: (C, 2) atom indices and distances: (C,) nm, every constraint (waters included).
        waters: (W, 3) atom indices (O, H, H) of rigid waters, settled analytically.
        n_constraints: number of constraints C.

    Tolerances follow OpenMM's: positions are constrained when every |r - d| / d <= tolerance; velocities
    when every |r . v_rel| / d^2 <= tolerance (the relative rate of change of each length, 1/ps).
    """

    def __init__(self, pairs, distances, masses, settle=True, max_iterations=1000):
        """pairs: (C, 2) atom indices; distances: (C,) nm; masses: (N,) amu (0 = fixed particle).
        settle=False handles rigid waters by SHAKE/RATTLE too."""
        self.masses = masses
        self.inverse_masses = torch.where(masses > 0, 1.0 / masses.clamp_min(torch.finfo(masses.dtype).tiny), 0.0)
        self.pairs = torch.as_tensor(pairs, dtype=torch.long, device=masses.device).reshape(-1, 2)
        self.distances = torch.as_tensor(distances, dtype=masses.dtype, device=masses.device).reshape(-1)
        self.max_iterations = max_iterations
        massless = (self.inverse_masses[self.pairs] == 0).all(-1)
        if bool(massless.any()):
            a, b = self.pairs[int(massless.nonzero()[0])].tolist()
            raise BioError(f"constraint between atoms {a} and {b} joins two massless (fixed) particles; remove it.")
        waters, others = (_find_waters(self.pairs.tolist(), self.distances.tolist(), masses.tolist()) if settle
                          else ([], list(range(self.pairs.shape[0]))))
        self.waters = torch.tensor(waters, dtype=torch.long, device=masses.device).reshape(-1, 3)
        self._shake = self.pairs[others]
        self._shake_distances = self.distances[others]
        if waters:
            oh = {(min(a, b), max(a, b)): d for (a, b), d in zip(self.pairs.tolist(), self.distances.tolist())}
            self._water_oh = torch.tensor([oh[min(o, h), max(o, h)] for o, h, _ in waters], dtype=masses.dtype,
                                          device=masses.device)
            self._water_hh = torch.tensor([oh[min(h, k), max(h, k)] for _, h, k in waters], dtype=masses.dtype,
                                          device=masses.device)

    @classmethod
    def from_system(cls, system, settle=True, max_iterations=1000):
        """The constraints of a `bio.System` (read from its `openmm_system`), on the system's device/dtype."""
        rows = [system.openmm_system.getConstraintParameters(k)
                for k in range(system.openmm_system.getNumConstraints())]
        return cls([(a, b) for a, b, _ in rows], [strip(d) for _, _, d in rows], system.masses, settle,
                   max_iterations)

    @property
    def n_constraints(self):
        return self.pairs.shape[0]

    def max_error(self, positions):
        """Largest relative constraint violation max |r - d| / d (a float; 0.0 without constraints)."""
        if self.n_constraints == 0:
            return 0.0
        r = (positions[..., self.pairs[:, 0], :] - positions[..., self.pairs[:, 1], :]).norm(dim=-1)
        return float(((r - self.distances).abs() / self.distances).max())

    def apply(self, old, new, tolerance=1e-5):
        """Constrain `new` positions (nm), moving each atom along the bond vectors of `old` (which satisfy the
        constraints; pass old = new to project an arbitrary structure). Returns new positions."""
        if self.n_constraints == 0:
            return new
        new = new.clone()
        if self.waters.shape[0]:
            new[..., self.waters, :] = self._settle(old[..., self.waters, :], new[..., self.waters, :])
        if self._shake.shape[0]:
            new = self._shake_positions(old, new, tolerance)
        return new

    def apply_to_velocities(self, positions, velocities, tolerance=1e-5):
        """Remove the velocity components (nm/ps) along constrained bonds of constrained `positions` (nm)."""
        if self.n_constraints == 0:
            return velocities
        velocities = velocities.clone()
        if self.waters.shape[0]:
            velocities[..., self.waters, :] = self._settle_velocities(positions[..., self.waters, :],
                                                                      velocities[..., self.waters, :])
        if self._shake.shape[0]:
            velocities = self._rattle_velocities(positions, velocities, tolerance)
        return velocities

    # ---- SHAKE / RATTLE --------------------------------------------------------------------------------

    def _shake_positions(self, old, new, tolerance):
        i, j = self._shake[:, 0], self._shake[:, 1]
        w_i, w_j = self.inverse_masses[i, None], self.inverse_masses[j, None]
        d2 = self._shake_distances ** 2
        reference = old[..., i, :] - old[..., j, :]
        relaxation, previous = 1.0, math.inf
        for _ in range(self.max_iterations):
            s = new[..., i, :] - new[..., j, :]
            s2 = (s * s).sum(-1)
            error = float(((s2.sqrt() - self._shake_distances).abs() / self._shake_distances).max())
            if error <= tolerance:
                return new
            relaxation, previous = _relax(relaxation, error, previous)
            g = relaxation * (d2 - s2) / (2 * (w_i + w_j)[:, 0] * (s * reference).sum(-1))
            step = g[..., None] * reference
            new = new.index_add(-2, i, w_i * step).index_add(-2, j, -w_j * step)
        raise self._not_converged("SHAKE", new)

    def _rattle_velocities(self, positions, velocities, tolerance):
        i, j = self._shake[:, 0], self._shake[:, 1]
        w_i, w_j = self.inverse_masses[i, None], self.inverse_masses[j, None]
        r = positions[..., i, :] - positions[..., j, :]
        r2 = (r * r).sum(-1)
        d2 = self._shake_distances ** 2
        relaxation, previous = 1.0, math.inf
        for _ in range(self.max_iterations):
            rv = (r * (velocities[..., i, :] - velocities[..., j, :])).sum(-1)
            error = float((rv.abs() / d2).max())
            if error <= tolerance:
                return velocities
            relaxation, previous = _relax(relaxation, error, previous)
            step = (relaxation * rv / ((w_i + w_j)[:, 0] * r2))[..., None] * r
            velocities = velocities.index_add(-2, i, -w_i * step).index_add(-2, j, w_j * step)
        raise self._not_converged("RATTLE", positions)

    def _not_converged(self, name, positions):
        return ConstraintError(
            f"{name} did not converge in {self.max_iterations} iterations (largest relative constraint error "
            f"{self.max_error(positions):.3g}): the structure has moved too far in one step. Lower the step size, "
            "minimize the energy first, or check for overlapping atoms.")

    # ---- SETTLE -----------------------------------------------------------------------------------------

    def _masses_oh(self):
        m = self.masses[self.waters]
        return m[:, 0], m[:, 1]

    def _settle(self, old, new):
        """Miyamoto & Kollman's analytic solution; old/new (..., W, 3 atoms, 3) -> settled new."""
        m_o, m_h = self._masses_oh()
        total = m_o + 2 * m_h
        a0, b0, c0 = old.unbind(-2)
        com = (m_o[:, None] * new[..., 0, :] + m_h[:, None] * (new[..., 1, :] + new[..., 2, :])) / total[:, None]
        a1, b1, c1 = (new - com[..., None, :]).unbind(-2)
        # A frame with z normal to the old plane and x normal to the new O position (about the centre of mass).
        z = _unit(torch.linalg.cross(b0 - a0, c0 - a0, dim=-1))
        x = _unit(torch.linalg.cross(a1, z, dim=-1))
        y = torch.linalg.cross(z, x, dim=-1)
        frame = torch.stack([x, y, z], dim=-2)  # (..., W, 3 axes, 3)

        def local(v):
            return (frame @ v[..., None])[..., 0].unbind(-1)

        _, _, za1 = local(a1)
        xb1, yb1, zb1 = local(b1)
        xc1, yc1, zc1 = local(c1)
        xb0, yb0, _ = local(b0 - a0)
        xc0, yc0, _ = local(c0 - a0)
        # The canonical triangle (O on +y, centre of mass at the origin), rotated by phi about x and psi about y
        # so that its z coordinates are those of the new positions (constraint forces lie in the old plane).
        rc = 0.5 * self._water_hh
        height = (self._water_oh ** 2 - rc ** 2).sqrt()
        ra = 2 * m_h * height / total
        rb = height - ra
        sin_phi = za1 / ra
        cos_phi = (1 - sin_phi ** 2).clamp_min(0).sqrt()
        sin_psi = (zb1 - zc1) / (2 * rc * cos_phi)
        cos_psi = (1 - sin_psi ** 2).clamp_min(0).sqrt()
        ya2 = ra * cos_phi
        xb2 = -rc * cos_psi
        yb2 = -rb * cos_phi - rc * sin_psi * sin_phi
        yc2 = -rb * cos_phi + rc * sin_psi * sin_phi
        zb2 = -rb * sin_phi + rc * sin_psi * cos_phi
        zc2 = -rb * sin_phi - rc * sin_psi * cos_phi
        # The rotation theta about z at which the constraint forces exert no torque about it.
        alpha = xb2 * (xb0 - xc0) + yb0 * yb2 + yc0 * yc2
        beta = xb2 * (yc0 - yb0) + xb0 * yb2 + xc0 * yc2
        gamma = xb0 * yb1 - xb1 * yb0 + xc0 * yc1 - xc1 * yc0
        a2b2 = alpha ** 2 + beta ** 2
        sin_theta = (alpha * gamma - beta * (a2b2 - gamma ** 2).clamp_min(0).sqrt()) / a2b2
        cos_theta = (1 - sin_theta ** 2).clamp_min(0).sqrt()
        settled = torch.stack([
            torch.stack([-ya2 * sin_theta, ya2 * cos_theta, ra * sin_phi], -1),
            torch.stack([xb2 * cos_theta - yb2 * sin_theta, xb2 * sin_theta + yb2 * cos_theta, zb2], -1),
            torch.stack([-xb2 * cos_theta - yc2 * sin_theta, -xb2 * sin_theta + yc2 * cos_theta, zc2], -1),
        ], dim=-2)  # (..., W, 3 atoms, 3) in the frame
        return com[..., None, :] + settled @ frame

    def _settle_velocities(self, positions, velocities):
        """Exact velocity constraints of each water: one 3x3 linear solve for the three bond impulses."""
        m_o, m_h = self._masses_oh()
        w = torch.stack([1 / m_o, 1 / m_h, 1 / m_h], -1)  # (W, 3)
        signs = torch.tensor(_WATER_SIGNS, dtype=positions.dtype, device=positions.device)
        r = -signs @ positions  # (..., W, 3 constraints, 3): x_i - x_j
        coupling = (signs * w[:, None, :]) @ signs.T  # (W, 3, 3)
        matrix = coupling * (r @ r.transpose(-1, -2))
        rhs = (r * (-signs @ velocities)).sum(-1)
        impulses = torch.linalg.solve(matrix, rhs[..., None])  # (..., W, 3, 1)
        return velocities + w[..., None] * (signs.T @ (impulses * r))


def _relax(relaxation, error, previous):
    """Halve the relaxation factor of the simultaneous (Jacobi) updates whenever the error grows: strongly
    coupled constraints (angles, rings) make full updates overshoot. (new relaxation, error to compare next.)"""
    return (0.5 * relaxation if error > previous else relaxation), error


def _unit(v):
    return v / v.norm(dim=-1, keepdim=True)


def _find_waters(pairs, distances, masses):
    """Split constraints into SETTLE waters and the rest.

    A water is three atoms joined by exactly three constraints among themselves and no others, with a centre
    atom whose two constraints have equal lengths to partners of equal mass (OpenMM's rule for SETTLE).
    Returns (list of (centre, h, h), indices of the remaining constraints).
    """
    partners = {}
    for k, (a, b) in enumerate(pairs):
        partners.setdefault(a, {})[b] = k
        partners.setdefault(b, {})[a] = k
    waters, used = [], set()
    for a, bonded in partners.items():
        if len(bonded) != 2 or a in used:
            continue
        b, c = bonded
        if set(partners[b]) != {a, c} or set(partners[c]) != {a, b}:
            continue
        same_lengths = math.isclose(distances[bonded[b]], distances[bonded[c]], rel_tol=1e-9)
        if same_lengths and masses[b] == masses[c] and masses[a] > 0 and masses[b] > 0:
            waters.append((a, b, c))
            used.update((a, b, c))
    in_water = {k for a in used for k in partners[a].values()}
    return waters, [k for k in range(len(pairs)) if k not in in_water]


__all__ = ["Constraints"]
