"""Particle-mesh Ewald reciprocal-space electrostatics as OpenMM's Reference platform computes it
(platforms/reference/src/SimTKReference/ReferencePME.cpp, smooth PME of Essmann et al. 1995).

Charges are spread on a periodic (nx, ny, nz) grid with cardinal B-splines of order 5, the grid is Fourier
transformed, and E_rec = 1/2 sum_{k != 0} C exp(-pi^2 m^2 / alpha^2) / (pi V m^2 b_x b_y b_z) |S(k)|^2, where m is
the reciprocal-lattice vector of grid frequency k and b the B-spline moduli. Everything is a torch function of
positions (..., N, 3) nm, charges (N,) e and the box (..., 3, 3) nm (rows a, b, c in OpenMM's reduced form).
When only positions and charges need first derivatives, `_ReciprocalEnergy` computes them with the energy, as
PME codes do (the derivative of the energy with respect to the mesh is the electrostatic potential on the mesh,
one inverse FFT away); otherwise (box derivatives, i.e. the virial, higher derivatives, torch.func) autograd
differentiates the same functions.
"""

import math

import torch

from .pairwise import PairCache

PME_ORDER = 5


def pme_parameters(cutoff, box, tolerance):
    """OpenMM's Ewald coefficient alpha (1/nm) and grid (nx, ny, nz) for a cutoff (nm), the default box (3, 3)
    nm and `ewaldErrorTolerance` (NonbondedForceImpl::calcPMEParameters): alpha = sqrt(-log(2 tol)) / cutoff,
    n_k = max(6, ceil(2 alpha L_k / (3 tol^(1/5)))) with L_k the box's diagonal entries."""
    alpha = math.sqrt(-math.log(2.0 * tolerance)) / cutoff
    grid = tuple(max(6, math.ceil(2 * alpha * float(box[k][k]) / (3 * tolerance**0.2))) for k in range(3))
    return alpha, grid


def bspline_weights(fraction, order=PME_ORDER, derivatives=False):
    """Cardinal B-spline weights (..., order) of grid points 0..order-1 ahead of each atom, for its fractional
    offset (...,) in [0, 1) within its grid cell (Darden's recursion, as in OpenMM); with derivatives=True also
    their derivatives with respect to the offset, (..., order), from the splines of order - 1 as OpenMM."""
    data = [1 - fraction, fraction] + [torch.zeros_like(fraction)] * (order - 2)
    for k in range(3, order):
        data = _bspline_step(data, fraction, k)
    slopes = [-data[0]] + [data[j - 1] - data[j] for j in range(1, order)] if derivatives else None
    data = torch.stack(_bspline_step(data, fraction, order), dim=-1)
    return (data, torch.stack(slopes, dim=-1)) if derivatives else data


def _bspline_step(data, fraction, k):
    """Weights of order k from those of order k - 1 (a list of `order` tensors, the last ones zero)."""
    data = list(data)
    div = 1.0 / (k - 1)
    data[k - 1] = div * fraction * data[k - 2]
    for l in range(1, k - 1):
        data[k - l - 1] = div * ((fraction + l) * data[k - l - 2] + (k - l - fraction) * data[k - l - 1])
    data[0] = div * (1 - fraction) * data[0]
    return data


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
    constant `coulomb` (kJ nm / (mol e^2)); the B-spline moduli and frequency tables are built once.

    The mesh is transformed with a real FFT (nz // 2 + 1 planes along z): the other half of the structure factor
    is the complex conjugate of this one, so each plane 0 < k_z < nz/2 counts twice in the energy.
    """

    def __init__(self, alpha, grid, coulomb, device, dtype):
        self.alpha, self.grid, self.coulomb = alpha, tuple(grid), coulomb
        nx, ny, nz = self.grid
        half = nz // 2 + 1
        moduli = [bspline_moduli(n).to(device=device, dtype=dtype) for n in self.grid]
        self.moduli = moduli[0][:, None, None] * moduli[1][None, :, None] * moduli[2][None, None, :half]
        # Signed frequencies m_k of each grid index (indices in the upper half are negative frequencies).
        self.frequencies = [torch.tensor([k if k < (n + 1) // 2 else k - n for k in range(n)], dtype=dtype,
                                         device=device) for n in self.grid]
        self.frequencies[2] = self.frequencies[2][:half]
        self.multiplicity = torch.full((half,), 2.0, dtype=dtype, device=device)
        self.multiplicity[0] = 1.0
        if nz % 2 == 0:
            self.multiplicity[-1] = 1.0
        self.stencil = torch.arange(PME_ORDER, device=device)  # grid points each atom spreads to, from its cell on
        self._influence = PairCache()  # `influence` of the last box

    def energy(self, positions, charges, box):
        """E_rec (...,) kJ/mol for positions (..., N, 3) nm, charges (N,) e, box (3, 3) or (..., 3, 3) nm."""
        general = (torch.is_grad_enabled() and box.requires_grad
                   or any(torch._C._functorch.is_functorch_wrapped_tensor(x) for x in (positions, charges, box)))
        if general:
            return self.energy_autograd(positions, charges, box)
        return _ReciprocalEnergy.apply(self, positions, charges, box)

    def energy_autograd(self, positions, charges, box):
        """`energy`, differentiated by autograd in everything (positions, charges, box), to any order."""
        index, theta, _ = self.splines(positions, box)
        structure = torch.fft.rfftn(self.spread(index, charges, theta), dim=(-3, -2, -1))
        return self.energy_of(structure, self.influence(box)).reshape(positions.shape[:-2])

    def splines(self, positions, box, derivatives=False):
        """The mesh points and B-spline weights of each atom.

        Returns index, one (order, order, B * N) long tensor per x plane a of the stencils: index[a][b, c] is the
        point [a, b, c] of an atom's stencil in the flattened meshes (B * nx * ny * nz) of the B conformations;
        theta (3, order, B * N) weights along each axis (differentiable in positions and box); and with
        derivatives=True (dt/dx (..., 3, 3), [c, a] = d t_a / d x_c for the mesh coordinates t_a (n_a times the
        fractional coordinates), dtheta/dt (3, order, B * N)), else None. Atoms come last so that every operation
        over the stencil runs along contiguous vectors of atoms; weights and potentials are handled one x plane
        at a time, so that no array of order^3 floats per atom is allocated (large temporaries are slow)."""
        sizes = torch.tensor(self.grid, device=positions.device)
        recip = torch.linalg.inv(box)  # (..., 3, 3); fractional coordinates are x @ recip
        t = torch.matmul(positions, recip)
        t = (t - torch.floor(t.detach())) * sizes.to(positions.dtype)
        cell = torch.floor(t.detach())
        fraction = (t - cell).reshape(-1, 3).T  # (3, B * N)
        cell = torch.remainder(cell.long(), sizes).reshape(-1, 3).T
        weights = bspline_weights(fraction, derivatives=derivatives)
        theta, slopes = [w.transpose(-1, -2).contiguous() for w in weights] if derivatives else (
            weights.transpose(-1, -2).contiguous(), None)
        nx, ny, nz = self.grid
        n = positions.shape[-2]
        first = (nx * ny * nz) * torch.div(torch.arange(cell.shape[1], device=cell.device), n, rounding_mode="floor")
        stencil = self.stencil[:, None]
        ix = torch.remainder(cell[0] + stencil, nx) * (ny * nz) + first  # (order, B * N)
        iyz = torch.remainder(cell[1] + stencil, ny)[:, None] * nz + torch.remainder(cell[2] + stencil, nz)
        index = [iyz + ix[a] for a in range(PME_ORDER)]
        if derivatives:
            return index, theta, (recip * sizes.to(positions.dtype), slopes)
        return index, theta, None

    def spread(self, index, charges, theta):
        """The charge meshes (B, nx, ny, nz) e: the charges (N,) of each conformation spread with their weights
        theta (3, order, B * N) onto the points index (see `splines`)."""
        count = theta.shape[-1] // charges.shape[0]
        tx, ty, tz = theta
        qx = charges.repeat(count) * tx
        tyz = ty[:, None] * tz
        mesh = theta.new_zeros(count * math.prod(self.grid))
        for plane, q in zip(index, qx):
            mesh.scatter_add_(0, plane.reshape(-1), (tyz * q).reshape(-1))
        return mesh.reshape(count, *self.grid)

    def energy_of(self, structure, influence):
        """1/2 sum_k influence |S(k)|^2 (...,) kJ/mol from the real FFT S (..., nx, ny, nz // 2 + 1) of the mesh."""
        power = structure.real**2 + structure.imag**2
        return 0.5 * (influence * self.multiplicity * power).sum((-3, -2, -1))

    def influence(self, box):
        """C exp(-pi^2 m^2 / alpha^2) / (pi V m^2 b) on the grid (..., nx, ny, nz // 2 + 1), zero at k = 0."""
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


class _ReciprocalEnergy(torch.autograd.Function):
    """`ReciprocalSpace.energy` with its derivatives with respect to positions and charges computed in forward:
    with the potential phi = dE/dQ on the mesh (an inverse real FFT of influence * S, times the number of mesh
    points), dE/dq_i = sum_s theta_s phi_s and dE/dt_ia = q_i sum_s dtheta_s/dt_ia phi_s over atom i's stencil s.
    Box derivatives and gradient graphs (create_graph=True) go through `ReciprocalSpace.energy_autograd`."""

    @staticmethod
    def forward(ctx, space, positions, charges, box):
        index, theta, (scale, slopes) = space.splines(positions, box, derivatives=True)
        structure = torch.fft.rfftn(space.spread(index, charges, theta), dim=(-3, -2, -1))
        influence = space._influence(space.moduli, (box,), lambda: space.influence(box))
        energy = space.energy_of(structure, influence).reshape(positions.shape[:-2])
        ctx.space = space
        if not any(ctx.needs_input_grad[1:3]):
            return energy
        points = math.prod(space.grid)
        potential = torch.fft.irfftn(influence * structure, s=space.grid, dim=(-3, -2, -1)) * points
        (tx, ty, tz), (dx, dy, dz) = theta, slopes  # each (order, B * N)
        at_x, at_dx = (torch.zeros_like(index[0], dtype=potential.dtype) for _ in range(2))
        potential = potential.reshape(-1)
        for plane, t, d in zip(index, tx, dx):  # sum over the stencil's x planes, with and without d/dt_x
            at = potential.index_select(0, plane.reshape(-1)).reshape(plane.shape)  # [y, z, atom]
            at_x.addcmul_(at, t)
            at_dx.addcmul_(at, d)
        at_xy, at_xdy, at_dxy = (at_x * ty[:, None]).sum(0), (at_x * dy[:, None]).sum(0), (at_dx * ty[:, None]).sum(0)
        potential_at = (at_xy * tz).sum(0).reshape(positions.shape[:-1])  # sum theta phi = dE/dq, (..., N)
        d_t = torch.stack([(at_dxy * tz).sum(0), (at_xdy * tz).sum(0), (at_xy * dz).sum(0)], dim=-1)
        d_t = d_t.reshape(positions.shape) * charges[:, None]  # dE/dt (..., N, 3)
        ctx.save_for_backward(positions, charges, box, torch.matmul(d_t, scale.mT), potential_at)
        return energy

    @staticmethod
    def backward(ctx, grad):
        positions, charges, box, position_grad, charge_grad = ctx.saved_tensors  # dE/dx (..., N, 3), dE/dq (..., N)
        needs = ctx.needs_input_grad[1:3]
        if torch.is_grad_enabled():  # a graph of the gradient is wanted: recompute through autograd
            with torch.enable_grad():
                energy = ctx.space.energy_autograd(positions, charges, box)
                wanted = [x for x, need in zip((positions, charges), needs) if need]
                found = iter(torch.autograd.grad(energy, wanted, grad, create_graph=True))
            return (None, *[next(found) if need else None for need in needs], None)
        grad = grad[..., None]
        grad_positions = grad[..., None] * position_grad if needs[0] else None
        grad_charges = (grad * charge_grad).sum_to_size(charges.shape) if needs[1] else None
        return None, grad_positions, grad_charges, None


__all__ = ["PME_ORDER", "pme_parameters", "bspline_weights", "bspline_moduli", "ReciprocalSpace"]
