"""OpenMM's CMAPTorsionForce: a correction energy E(phi, psi) tabulated on a periodic grid and interpolated by
bicubic patches exactly as OpenMM builds them (CMAPTorsionForceImpl::calcMapDerivatives).

Grid derivatives come from periodic cubic splines through each grid row/column, which is a linear map of the
grid energies, so the patch coefficients (and the energy) stay differentiable w.r.t. the map energies.
"""

import math

import torch

from ..errors import UnsupportedForceError
from .geometry import dihedral
from .units import strip

# Bicubic interpolation weights (Numerical Recipes' wt table, as in OpenMM): coefficients = W @ rhs, where rhs
# holds the 4 corner energies, then 4 d/dphi, 4 d/dpsi and 4 d2/dphi dpsi (scaled by the patch width).
_WT = [
    1, 0, -3, 2, 0, 0, 0, 0, -3, 0, 9, -6, 2, 0, -6, 4,
    0, 0, 0, 0, 0, 0, 0, 0, 3, 0, -9, 6, -2, 0, 6, -4,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, -6, 0, 0, -6, 4,
    0, 0, 3, -2, 0, 0, 0, 0, 0, 0, -9, 6, 0, 0, 6, -4,
    0, 0, 0, 0, 1, 0, -3, 2, -2, 0, 6, -4, 1, 0, -3, 2,
    0, 0, 0, 0, 0, 0, 0, 0, -1, 0, 3, -2, 1, 0, -3, 2,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -3, 2, 0, 0, 3, -2,
    0, 0, 0, 0, 0, 0, 3, -2, 0, 0, -6, 4, 0, 0, 3, -2,
    0, 1, -2, 1, 0, 0, 0, 0, 0, -3, 6, -3, 0, 2, -4, 2,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 3, -6, 3, 0, -2, 4, -2,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -3, 3, 0, 0, 2, -2,
    0, 0, -1, 1, 0, 0, 0, 0, 0, 0, 3, -3, 0, 0, -2, 2,
    0, 0, 0, 0, 0, 1, -2, 1, 0, -2, 4, -2, 0, 1, -2, 1,
    0, 0, 0, 0, 0, 0, 0, 0, 0, -1, 2, -1, 0, 1, -2, 1,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, -1, 0, 0, -1, 1,
    0, 0, 0, 0, 0, 0, -1, 1, 0, 0, 2, -2, 0, 0, -1, 1,
]


def periodic_spline_derivative(size, device, dtype):
    """(size, size) matrix D with D @ y = the slopes at the knots of the periodic cubic spline through y
    sampled at spacing 2 pi / size (per radian)."""
    h = 2 * math.pi / size
    eye = torch.eye(size, dtype=torch.float64)
    up = torch.roll(eye, 1, dims=1)  # (up @ y)_i = y_{i+1}
    down = up.T
    # Second derivatives m of the spline: m_{i-1} + 4 m_i + m_{i+1} = 6/h^2 (y_{i+1} - 2 y_i + y_{i-1}).
    second = torch.linalg.solve(down + 4 * eye + up, 6 / h**2 * (up - 2 * eye + down))
    slope = (up - eye) / h - h / 6 * (2 * eye + up) @ second
    return slope.to(device=device, dtype=dtype)


def cmap_coefficients(maps):
    """Bicubic patch coefficients (M, S, S, 16) from map energies (M, S, S) in kJ/mol, maps[m, i, j] being
    E(phi = i * 2 pi/S, psi = j * 2 pi/S); coefficient 4 a + b multiplies u^a v^b in patch (i, j)."""
    size = maps.shape[-1]
    delta = 2 * math.pi / size
    d = periodic_spline_derivative(size, maps.device, maps.dtype)
    d1 = torch.einsum("ik,mkj->mij", d, maps)
    d2 = torch.einsum("jk,mik->mij", d, maps)
    d12 = torch.einsum("ik,mkj->mij", d, d2)

    def corners(grid):  # (M, S, S, 4): values at (i, j), (i+1, j), (i+1, j+1), (i, j+1)
        nxt = torch.roll(grid, -1, dims=1)
        return torch.stack([grid, nxt, torch.roll(nxt, -1, dims=2), torch.roll(grid, -1, dims=2)], dim=-1)

    rhs = torch.cat([corners(maps), corners(d1) * delta, corners(d2) * delta, corners(d12) * delta**2], dim=-1)
    wt = torch.tensor(_WT, dtype=maps.dtype, device=maps.device).reshape(16, 16)  # wt[m, k] = _WT[k + 16 m]
    return rhs @ wt


def cmap_energy(positions, atoms, map_index, coefficients, box=None):
    """sum of bicubic-interpolated CMAP energies over torsion pairs.

    positions (..., N, 3) nm; atoms (8, M): the phi then the psi torsion; map_index (M,);
    coefficients (maps, S, S, 16) from `cmap_coefficients` -> (...,) kJ/mol.
    """
    size = coefficients.shape[1]
    delta = 2 * math.pi / size
    phi = torch.remainder(dihedral(positions, *atoms[:4], box), 2 * math.pi) / delta
    psi = torch.remainder(dihedral(positions, *atoms[4:], box), 2 * math.pi) / delta
    s = phi.detach().floor().clamp(max=size - 1).long()
    t = psi.detach().floor().clamp(max=size - 1).long()
    c = coefficients[map_index, s, t].unflatten(-1, (4, 4))  # (..., M, 4, 4): c[a, b] multiplies u^a v^b
    u, v = phi - s, psi - t
    powers = torch.arange(4, device=positions.device, dtype=positions.dtype)
    upow = u.unsqueeze(-1) ** powers
    vpow = v.unsqueeze(-1) ** powers
    return torch.einsum("...ma,...mab,...mb->...", upow, c, vpow)


class CMAPTorsionForce:
    """OpenMM CMAPTorsionForce; parameter 'maps' (M, S, S) kJ/mol with maps[m, i, j] = E(phi_i, psi_j)."""

    name = "CMAPTorsionForce"

    def __init__(self, force, device, dtype):
        grids = []
        for m in range(force.getNumMaps()):
            size, energy = force.getMapParameters(m)
            grids.append(torch.tensor(strip(energy), dtype=dtype, device=device).reshape(size, size).T)
        if len({g.shape for g in grids}) > 1:
            raise UnsupportedForceError("CMAPTorsionForce: maps of different grid sizes are not supported yet.")
        self.parameters = {"maps": torch.stack(grids) if grids else torch.zeros(0, 1, 1, dtype=dtype,
                                                                                 device=device)}
        rows = [force.getTorsionParameters(t) for t in range(force.getNumTorsions())]
        self.map_index = torch.tensor([r[0] for r in rows], dtype=torch.long, device=device)
        self.atoms = torch.tensor([[r[1 + a] for r in rows] for a in range(8)], dtype=torch.long,
                                  device=device).reshape(8, -1)
        self.periodic = force.usesPeriodicBoundaryConditions()

    def energy(self, positions, parameters, box=None):
        coefficients = cmap_coefficients(parameters["maps"])
        return cmap_energy(positions, self.atoms, self.map_index, coefficients, box if self.periodic else None)
