"""Integration grids (PySCF's, point for point) and AO values on them, in bounded-memory blocks.

``Grid(mol, level)`` builds PySCF's ``dft.gen_grid.Grids`` at that level with PySCF's defaults (Treutler-
Ahlrichs radial grids with atom-specific parameters, NWChem pruning, Becke partitioning with Treutler radii),
so points and weights are exactly those PySCF integrates over.

PySCF's SCF also drops points where the initial density is tiny (``small_rho_cutoff = 1e-7``). We keep every
point (``small_rho_cutoff = 0``): pruning by density makes the grid depend on the density, i.e. on geometry
and functional parameters, discontinuously, which breaks derivatives and makes results depend on the guess.

Nuclear-coordinate derivatives (``mol.coords`` requiring grad): AO values are differentiable to second order
(``dft.integral_grad``). By default the grid stays fixed in space, as in PySCF's analytic gradients and
Hessians (``grid_response=False``), so energies are not exactly translation invariant (a few 1e-6 Ha/Bohr at
level 3). With ``grid_response=True`` each point moves with its atom and the Becke weights follow the atoms
(PySCF's ``grid_response=True``), through a torch re-implementation of PySCF's Becke partition.
"""

import numpy as np
import torch
from pyscf.dft import gen_grid

from inference.optim import check_number

from . import integral_grad
from .errors import OptionError

# PySCF's grid levels (rows of ``gen_grid.RAD_GRIDS``).
LEVELS = range(len(gen_grid.RAD_GRIDS))

# Number of AO values (points x components x orbitals) per block when evaluating; bounds peak memory.
BLOCK_VALUES = 8_000_000


def _evaluate_ao(mol, points, deriv):
    if deriv not in (0, 1):
        raise ValueError(f"deriv must be 0 or 1, got {deriv}.")
    values = mol.pyscf.eval_gto("GTOval_sph_deriv1" if deriv else "GTOval_sph", points)
    return torch.from_numpy(np.ascontiguousarray(values.reshape(-1, *values.shape[-2:]))).to(mol.device)


def _attach_ao(mol, points, value, point_atoms):
    return integral_grad.attach(mol, value, lambda v: integral_grad.AOValueDerivatives(
        mol, points, v, point_atoms, block_values=BLOCK_VALUES))


def ao_values(mol, coords, deriv=1, point_atoms=None):
    """AO values (and first derivatives) at points.

    Args:
        mol: :class:`dft.Molecule`.
        coords: (N, 3) numpy array of points, Bohr.
        deriv: 0 for values only, 1 for values and gradients.
        point_atoms: for derivatives with respect to ``mol.coords``: None keeps the points fixed in space; an
            (N,) long tensor on ``mol.device`` makes each point move with that atom.

    Returns:
        (1, N, nao) [deriv=0] or (4, N, nao) [deriv=1: value, d/dx, d/dy, d/dz] float64 tensor on
        ``mol.device``; derivatives in Bohr^-1.
    """
    return _attach_ao(mol, coords, _evaluate_ao(mol, coords, deriv), point_atoms)


def becke_weights(points, atom_coords, point_atoms, quadrature_weights, radii_adjust):
    """PySCF's Becke partition weights (``gen_grid.get_partition`` with ``original_becke``) as a torch function.

    w_g = q_g P_A(r_g) / sum_B P_B(r_g) for a point g of atom A, P_A = prod_{B != A} (1/2 - s(nu_AB)/2),
    nu_AB = mu + a_AB (1 - mu^2), mu = (|r - R_A| - |r - R_B|) / |R_A - R_B|, s Becke's thrice-iterated
    polynomial f(x) = (3 - x^2) x / 2.

    Args:
        points: (N, 3) Bohr. atom_coords: (natm, 3) Bohr. point_atoms: (N,) long.
        quadrature_weights: (N,) radial x angular weights, Bohr^3. radii_adjust: (natm, natm) a_AB.

    Returns:
        (N,) weights, Bohr^3.
    """
    natm = len(atom_coords)
    if natm == 1:
        return quadrature_weights
    distance = (points[None] - atom_coords[:, None]).norm(dim=-1)  # (natm, N)
    i, j = torch.triu_indices(natm, natm, offset=1, device=points.device)
    separation = (atom_coords[i] - atom_coords[j]).norm(dim=-1)
    mu = (distance[i] - distance[j]) / separation[:, None]
    s = mu + radii_adjust[i, j][:, None] * (1 - mu * mu)
    for _ in range(3):
        s = (3 - s * s) * s / 2
    factors = torch.ones(natm, natm, len(points), dtype=points.dtype, device=points.device)
    factors = factors.index_put((i, j), (1 - s) / 2).index_put((j, i), (1 + s) / 2)
    cell = factors.prod(1)  # (natm, N)
    return quadrature_weights * cell.gather(0, point_atoms[None])[0] / cell.sum(0)


class Grid:
    """PySCF's molecular grid with AO values on it, served block by block.

    Args:
        mol: :class:`dft.Molecule`.
        level: PySCF grid level 0-9 (3 is PySCF's default).
        deriv: AO derivative order the functional needs (0 for LDA, 1 for GGA and meta-GGA: grad rho, tau).
        max_memory: AO values are computed once and kept if they fit in this many MB, else recomputed
            block by block on every call of :meth:`blocks`.
        grid_response: when ``mol.coords`` requires grad, move points and Becke weights with the atoms (see the
            module docstring); default False, PySCF's default.

    Attributes:
        coords: (N, 3) float64 tensor of points, Bohr.
        weights: (N,) float64 tensor of quadrature weights, Bohr^3.
        atom_index: (N,) long tensor, the atom each point belongs to.
    """

    def __init__(self, mol, level=3, deriv=1, max_memory=2000, grid_response=False):
        level = check_number("Grid", "grid_level", level, integer=True, at_least=LEVELS[0], at_most=LEVELS[-1],
                             error=OptionError)
        grids = gen_grid.Grids(mol.pyscf)
        grids.level = level
        grids.build(with_non0tab=False)
        # PySCF pads the grid to a multiple of its alignment with zero-weight points; they add nothing.
        keep = grids.weights != 0
        self._points = np.ascontiguousarray(grids.coords[keep])
        self.coords = torch.from_numpy(self._points).to(mol.device)
        self.weights = torch.from_numpy(np.ascontiguousarray(grids.weights[keep])).to(mol.device)
        self.atom_index = torch.from_numpy(grids.atm_idx[keep].astype(np.int64)).to(mol.device)
        self.mol = mol
        self.level = level
        self.deriv = deriv
        self.grid_response = grid_response
        if grid_response:
            self._quadrature_weights = torch.from_numpy(grids.quadrature_weights[keep]).to(mol.device)
            adjust = grids.radii_adjust(mol.pyscf, grids.atomic_radii)
            self._radii_adjust = torch.tensor([[adjust(a, b, 0.0) for b in range(mol.natm)]
                                               for a in range(mol.natm)], dtype=torch.float64, device=mol.device)
            self._offsets = self.coords - mol.coords.detach()[self.atom_index]
        ncomp = 4 if deriv else 1
        self.block_size = max(256, BLOCK_VALUES // (ncomp * mol.nao))
        self._slices = [slice(start, start + self.block_size) for start in range(0, len(self), self.block_size)]
        cache_mb = len(self.weights) * ncomp * mol.nao * 8 / 1e6
        self._cache = [self._values(b) for b in self._slices] if cache_mb <= max_memory else None

    def __len__(self):
        return len(self.weights)

    def _values(self, block):
        return _evaluate_ao(self.mol, self._points[block], self.deriv)

    def _weights(self, block):
        """Becke weights of a block as a torch function of ``mol.coords`` (grid response)."""
        atoms = self.atom_index[block]
        points = self.mol.coords[atoms] + self._offsets[block]
        return becke_weights(points, self.mol.coords, atoms, self._quadrature_weights[block], self._radii_adjust)

    def blocks(self):
        """Yield ``(weights, ao)`` per block: (Nb,) weights and (1 or 4, Nb, nao) AO values."""
        differentiable = torch.is_grad_enabled() and self.mol.coords.requires_grad
        for n, block in enumerate(self._slices):
            ao = self._cache[n] if self._cache is not None else self._values(block)
            weights = self.weights[block]
            if differentiable:
                atoms = self.atom_index[block] if self.grid_response else None
                ao = _attach_ao(self.mol, self._points[block], ao, atoms)
                if self.grid_response:
                    weights = self._weights(block)
            yield weights, ao
