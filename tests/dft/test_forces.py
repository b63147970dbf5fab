"""Nuclear forces by autograd (``E.backward()`` -> ``mol.coords.grad``) against PySCF's analytic gradients
(``mf.nuc_grad_method().kernel()``), computed in the test with the same basis, grid and auxiliary basis.

PySCF's default gradients keep the grid fixed in space (no grid response); so do ours by default.
"""

import numpy as np
import pytest
from pyscf import dft as pyscf_dft
from pyscf import gto

import dft

MOLECULES = {  # name: (atom in Angstrom, charge, spin), slightly off equilibrium so forces are not tiny
    "H2O": ("O 0 0 0.13; H 0 0.74 -0.47; H 0 -0.79 -0.45", 0, 0),
    "NH2": ("N 0 0 0.1; H 0 0.95 -0.3; H 0 -0.98 -0.32", 0, 1),
}
BASIS = "6-31g"
AUXBASIS = "def2-universal-jkfit"
LEVEL = 1
CONV_TOL = 1e-11
FORCE_TOL = 1e-6  # Ha/Bohr


def pyscf_gradient(name, xc, density_fit):
    atom, charge, spin = MOLECULES[name]
    pmol = gto.M(atom=atom, basis=BASIS, charge=charge, spin=spin, verbose=0)
    mf = (pyscf_dft.UKS if spin else pyscf_dft.RKS)(pmol, xc=xc)
    mf = mf.set(conv_tol=CONV_TOL, small_rho_cutoff=0)  # our grid keeps every point (dft/grids.py)
    if density_fit:
        mf = mf.density_fit(auxbasis=AUXBASIS)
    mf.grids.level = LEVEL
    mf.kernel()
    assert mf.converged
    return mf.e_tot, mf.nuc_grad_method().kernel()


@pytest.mark.parametrize("density_fit", [False, True], ids=["eri", "df"])
@pytest.mark.parametrize("xc", ["lda,vwn", "pbe", "b3lyp"])
@pytest.mark.parametrize("name", ["H2O", "NH2"], ids=["RKS", "UKS"])
def test_forces_match_pyscf(name, xc, density_fit, device):
    atom, charge, spin = MOLECULES[name]
    mol = dft.Molecule(atom, BASIS, charge=charge, spin=spin, device=device)
    mol.coords.requires_grad_()
    method = dft.UKS if spin else dft.RKS
    mf = method(mol, xc=xc, grid_level=LEVEL, density_fit=density_fit, auxbasis=AUXBASIS, conv_tol=CONV_TOL)
    energy = mf.kernel(strict=True)
    energy.backward()
    e_ref, grad_ref = pyscf_gradient(name, xc, density_fit)
    assert abs(energy.item() - e_ref) < 1e-7
    np.testing.assert_allclose(mol.coords.grad.cpu().numpy(), grad_ref, atol=FORCE_TOL, rtol=0)
