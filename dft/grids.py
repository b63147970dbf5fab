"""Integration grids (PySCF's, point for point) and AO values on them, in bounded-memory blocks.

``Grid(mol, level)`` builds PySCF's ``dft.gen_grid.Grids`` at that level with PySCF's defaults (Treutler-
Ahlrichs radial grids with atom-specific parameters, NWChem pruning, Becke partitioning with Treutler radii),
so points and weights are exactly those PySCF integrates over.

PySCF's SCF also drops points where the initial density is tiny (``small_rho_cutoff = 1e-7``). We keep every
point (``small_rho_cutoff = 0``): pruning by density makes the grid depend on the density, i.e. on geometry
and functional parameters, discontinuously, which breaks derivatives and makes results depend on the guess.
"""

import numpy as np
import torch
from pyscf.dft import gen_grid

# Number of AO values (points x components x orbitals) per block when evaluating; bounds peak memory.
BLOCK_VALUES = 8_000_000


def ao_values(mol, coords, deriv=1):
    """AO values (and first derivatives) at points.

    Args:
        mol: :class:`dft.Molecule`.
        coords: (N, 3) numpy array of points, Bohr.
        deriv: 0 for values only, 1 for values and gradients.

    Returns:
        (1, N, nao) [deriv=0] or (4, N, nao) [deriv=1: value, d/dx, d/dy, d/dz] float64 tensor on
        ``mol.device``; derivatives in Bohr^-1.
    """
    if deriv == 0:
        values = mol.pyscf.eval_gto("GTOval_sph", coords)[None]
    elif deriv == 1:
        values = mol.pyscf.eval_gto("GTOval_sph_deriv1", coords)
    else:
        raise ValueError(f"deriv must be 0 or 1, got {deriv}.")
    return torch.from_numpy(np.ascontiguousarray(values)).to(mol.device)


class Grid:
    """PySCF's molecular grid with AO values on it, served block by block.

    Args:
        mol: :class:`dft.Molecule`.
        level: PySCF grid level 0-9 (3 is PySCF's default).
        deriv: AO derivative order the functional needs (0 for LDA, 1 for GGA).
        max_memory: AO values are computed once and kept if they fit in this many MB, else recomputed
            block by block on every call of :meth:`blocks`.

    Attributes:
        coords: (N, 3) float64 tensor of points, Bohr.
        weights: (N,) float64 tensor of quadrature weights, Bohr^3.
    """

    def __init__(self, mol, level=3, deriv=1, max_memory=2000):
        grids = gen_grid.Grids(mol.pyscf)
        grids.level = level
        grids.build(with_non0tab=False)
        # PySCF pads the grid to a multiple of its alignment with zero-weight points; they add nothing.
        keep = grids.weights != 0
        self._points = np.ascontiguousarray(grids.coords[keep])
        self.coords = torch.from_numpy(self._points).to(mol.device)
        self.weights = torch.from_numpy(np.ascontiguousarray(grids.weights[keep])).to(mol.device)
        self.mol = mol
        self.level = level
        self.deriv = deriv
        ncomp = 4 if deriv else 1
        self.block_size = max(256, BLOCK_VALUES // (ncomp * mol.nao))
        cache_mb = len(self.weights) * ncomp * mol.nao * 8 / 1e6
        self._cache = list(self._evaluate()) if cache_mb <= max_memory else None

    def __len__(self):
        return len(self.weights)

    def _evaluate(self):
        for start in range(0, len(self), self.block_size):
            stop = start + self.block_size
            yield self.weights[start:stop], ao_values(self.mol, self._points[start:stop], self.deriv)

    def blocks(self):
        """Yield ``(weights, ao)`` per block: (Nb,) weights and (1 or 4, Nb, nao) AO values."""
        return iter(self._cache) if self._cache is not None else self._evaluate()
