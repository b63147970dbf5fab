"""Particle-mesh Ewald reciprocal-space electrostatics as OpenMM's Reference platform computes it
(platforms/reference/src/SimTKReference/ReferencePME.cpp, smooth PME of Essmann et al. 1995).

Charges are spread on a periodic (nx, ny, nz) grid with cardinal B-splines of order 5, the grid is Fourier
transformed, and E_rec = 1/2 sum_{k != 0} C exp(-pi^2 m^2 / alpha^2) / (pi V m^2 b_x b_y b_z) |S(k)|^2, where m is
the reciprocal-lattice vector of grid frequency k and b the B-spline moduli. Everything is a torch function of
positions (..., N, 3) nm, charges (N,) e and the box (..., 3, 3) nm (rows a, b, c in OpenMM's reduced form), so
forces, charge derivatives and the virial come from autograd.
"""

import math

import torch

PME_ORDER = 5


def pme_parameters(cutoff, box, tolerance):
    """OpenMM's Ewald coefficient alpha (1/nm) and grid (nx, ny, nz) for a cutoff (nm), the default box (3, 3)
    nm and `ewaldErrorTolerance` (NonbondedForceImpl::calcPMEParameters): alpha = sqrt(-log(2 tol)) / cutoff,
    n_k = max(6, ceil(2 alpha L_k / (3 tol^(1/5)))) with L_k the box's diagonal entries."""
    alpha = math.sqrt(-math.log(2.0 * tolerance)) / cutoff
    grid = tuple(max(6, math.ceil(2 * alpha * float(box[k][k]) / (3 * tolerance**0.2))) for k in range(3))
    return alpha, grid


def bspline_weights(fraction, order=PME_ORDER):
    """Cardinal B-spline weights (..., order) of grid points 0..order-1 ahead of each atom, for its fractional
    offset (...,) in [0, 1) within its grid cell (Darden's recursion, as in OpenMM)."""
    data = [1 - fraction, fraction] + [torch.zeros_like(fraction)] * (order - 2)
    for k in range(3, order + 1):
        div = 1.0 / (k - 1)
        data[k - 1] = div * fraction * data[k - 2]
        for l in range(1, k - 1):
            data[k - l - 1] = div * ((fraction + l) * data[k - l - 2] + (k - l - fraction) * data[k - l - 1])
        data[0] = div * (1 - fraction) * data[0]
    return torch.stack(data, dim=-1)


def bspline_moduli(size, order=PME_ORDER):
    """|b(k)|^-2 denominators (size,) of the B-spline structure factor, as OpenMM computes them (values below
    1e-7, at the Nyquist frequency for odd orders, replaced by the mean of their neighbours)."""
    values = bspline_weights(torch.zeros((), dtype=torch.float64), order)
    spline = torch.zeros(size, dtype=torch.float64)
    spline[1:order + 1] = values[:min(order, size - 1)]
    k = torch.arange(size, dtype=torch.float64)
    angle = 2 * math.pi * k[:, None] * k[None, :] / size
    moduli = ((spline * torch.cos(angle)).sum(1) ** 2 + (spline * torch.sin(angle)).sum(1) ** 2).tolist()
    for i in range(size):
        if moduli[i] < 1e-7:
            moduli[i] = 0.5 * (moduli[(i - 1) % size] + moduli[(i + 1) % size])
    return torch.tensor(moduli, dtype=torch.float64)


class ReciprocalSpace:
    """The reciprocal-space PME energy for a fixed alpha (1/nm) and grid (nx, ny, nz), with the Coulomb
    constant `coulomb` (kJ nm / (mol e^2)); the B-spline moduli and frequency tables are built once."""

    def __init__(self, alpha, grid, coulomb, device, dtype):
        self.alpha, self.grid, self.coulomb = alpha, tuple(grid), coulomb
        moduli = [bspline_moduli(n).to(device=device, dtype=dtype) for n in self.grid]
        self.moduli = moduli[0][:, None, None] * moduli[1][None, :, None] * moduli[2][None, None, :]
        # Signed frequencies m_k of each grid index (indices in the upper half are negative frequencies).
        self.frequencies = [torch.tensor([k if k < (n + 1) // 2 else k - n for k in range(n)], dtype=dtype,
                                         device=device) for n in self.grid]
        self.stencil = torch.arange(PME_ORDER, device=device)  # grid points each atom spreads to, from its cell on

    def energy(self, positions, charges, box):
        """E_rec (...,) kJ/mol for positions (..., N, 3) nm, charges (N,) e, box (3, 3) or (..., 3, 3) nm."""
        nx, ny, nz = self.grid
        sizes = torch.tensor(self.grid, device=positions.device)
        recip = torch.linalg.inv(box)  # (..., 3, 3); fractional coordinates are x @ recip
        t = torch.matmul(positions, recip)
        t = (t - torch.floor(t.detach())) * sizes.to(positions.dtype)
        cell = torch.floor(t.detach())
        fraction = t - cell  # (..., N, 3)
        cell = torch.remainder(cell.long(), sizes)
        theta = bspline_weights(fraction)  # (..., N, 3, order)
        ix = torch.remainder(cell[..., 0, None] + self.stencil, nx)  # (..., N, order)
        iy = torch.remainder(cell[..., 1, None] + self.stencil, ny)
        iz = torch.remainder(cell[..., 2, None] + self.stencil, nz)
        index = (ix[..., :, None, None] * ny + iy[..., None, :, None]) * nz + iz[..., None, None, :]
        weight = (charges[:, None, None, None] * theta[..., 0, :, None, None] * theta[..., 1, None, :, None]
                  * theta[..., 2, None, None, :])  # (..., N, order, order, order)
        batch = positions.shape[:-2]
        count = math.prod(batch)
        points = nx * ny * nz
        index = index.reshape(count, -1) + points * torch.arange(count, device=positions.device)[:, None]
        mesh = torch.zeros(count * points, dtype=positions.dtype, device=positions.device)
        mesh = mesh.index_add(0, index.reshape(-1), weight.reshape(-1)).reshape(*batch, nx, ny, nz)
        structure = torch.fft.fftn(mesh, dim=(-3, -2, -1))
        power = structure.real**2 + structure.imag**2
        return 0.5 * (self.influence(box) * power).sum((-3, -2, -1))

    def influence(self, box):
        """C exp(-pi^2 m^2 / alpha^2) / (pi V m^2 b) on the grid (..., nx, ny, nz), zero at k = 0."""
        recip = torch.linalg.inv(box)
        mx, my, mz = self.frequencies
        mx, my, mz = mx[:, None, None], my[None, :, None], mz[None, None, :]
        r = recip[..., None, None, None, :, :]
        hx = mx * r[..., 0, 0]
        hy = mx * r[..., 1, 0] + my * r[..., 1, 1]
        hz = mx * r[..., 2, 0] + my * r[..., 2, 1] + mz * r[..., 2, 2]
        m2 = hx * hx + hy * hy + hz * hz
        volume = box[..., 0, 0] * box[..., 1, 1] * box[..., 2, 2]
        zero = m2 == 0
        m2 = torch.where(zero, torch.ones_like(m2), m2)
        term = self.coulomb * torch.exp(-(math.pi / self.alpha) ** 2 * m2) / (
            math.pi * volume[..., None, None, None] * m2 * self.moduli)
        return torch.where(zero, torch.zeros_like(term), term)


__all__ = ["PME_ORDER", "pme_parameters", "bspline_weights", "bspline_moduli", "ReciprocalSpace"]
