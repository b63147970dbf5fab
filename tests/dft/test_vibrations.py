"""Nuclear Hessians and harmonic frequencies against PySCF's analytic Hessian (``mf.Hessian().kernel()``) and
``pyscf.hessian.thermo.harmonic_analysis``, computed in the test with the same basis and grid.

PySCF's analytic Hessian keeps the grid fixed in space (no grid response); so does ours by default.
"""

import functools

import numpy as np
import pytest
import torch
from pyscf import dft as pyscf_dft
from pyscf import gto
from pyscf.hessian import thermo

import dft

MOLECULES = {  # name: (atom in Angstrom, spin), off equilibrium
    "H2O": ("O 0 0 0.13; H 0 0.74 -0.47; H 0 -0.79 -0.45", 0),
    "NH2": ("N 0 0 0.1; H 0 0.95 -0.3; H 0 -0.98 -0.32", 1),
    "CO": ("C 0 0 0; O 0 0 1.13", 0),  # linear: 3 natm - 5 modes
}
BASIS = "sto-3g"
LEVEL = 1
CONV_TOL = 1e-12
HESSIAN_TOL = 1e-5  # Hartree/Bohr^2


@functools.lru_cache(maxsize=None)
def pyscf_hessian(name, xc):
    atom, spin = MOLECULES[name]
    mol = gto.M(atom=atom, basis=BASIS, spin=spin, verbose=0)
    mf = (pyscf_dft.UKS if spin else pyscf_dft.RKS)(mol, xc=xc).set(conv_tol=CONV_TOL, small_rho_cutoff=0)
    mf.grids.level = LEVEL
    mf.kernel()
    assert mf.converged
    return mol, mf.Hessian().kernel()


def our_mf(name, xc, device):
    atom, spin = MOLECULES[name]
    mol = dft.Molecule(atom, BASIS, spin=spin, device=device)
    mf = (dft.UKS if spin else dft.RKS)(mol, xc=xc, grid_level=LEVEL, conv_tol=CONV_TOL)
    mf.kernel(strict=True)
    return mf


@pytest.mark.parametrize("name, xc", [("H2O", "lda,vwn"), ("H2O", "pbe"), ("H2O", "b3lyp"), ("NH2", "pbe")],
                         ids=["RKS-lda", "RKS-pbe", "RKS-b3lyp", "UKS-pbe"])
def test_hessian_matches_pyscf(name, xc, device):
    _, reference = pyscf_hessian(name, xc)
    mf = our_mf(name, xc, device)
    hess = dft.hessian(mf)
    assert hess.shape == (3, 3, 3, 3) and not hess.requires_grad
    np.testing.assert_allclose(hess.cpu().numpy(), reference.transpose(0, 2, 1, 3), atol=HESSIAN_TOL, rtol=0)
    assert mf.mol.coords.grad is None  # mf was left alone


@pytest.mark.parametrize("name", ["H2O", "CO"])
def test_frequencies_match_pyscf_harmonic_analysis(name, device):
    mol, reference_hessian = pyscf_hessian(name, "lda,vwn")
    reference = thermo.harmonic_analysis(mol, reference_hessian)
    mf = our_mf(name, "lda,vwn", device)
    frequencies = dft.frequencies(mf)
    np.testing.assert_allclose(frequencies.cpu().numpy(), reference["freq_wavenumber"].real, atol=0.1, rtol=0)

    # The analysis alone, on PySCF's Hessian: modes (up to sign) and reduced masses.
    analysis = dft.harmonic_analysis(mf.mol, torch.as_tensor(reference_hessian.transpose(0, 2, 1, 3), device=device))
    np.testing.assert_allclose(analysis.frequencies.cpu().numpy(), reference["freq_wavenumber"].real, atol=1e-6)
    np.testing.assert_allclose(analysis.reduced_masses.cpu().numpy(), reference["reduced_mass"], rtol=1e-8)
    modes = analysis.modes.cpu().numpy()
    signs = np.sign(np.einsum("izr,izr->i", modes, reference["norm_mode"]))
    np.testing.assert_allclose(modes * signs[:, None, None], reference["norm_mode"], atol=1e-8)


def test_hessian_needs_a_converged_calculation_and_no_field():
    atom, _ = MOLECULES["H2O"]
    mf = dft.RKS(dft.Molecule(atom, BASIS), xc="lda,vwn", grid_level=LEVEL, field=[0.0, 0.0, 0.01])
    with pytest.raises(dft.DFTError, match=r"run mf.kernel\(\)"):
        dft.hessian(mf)
    mf.kernel(strict=True)
    with pytest.raises(dft.DFTError, match="Hessian in an electric field cannot be computed"):
        dft.hessian(mf)
