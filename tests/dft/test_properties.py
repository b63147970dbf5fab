"""Electric field, dipole moment, polarizability, density and orbital gap against PySCF run in the test.

PySCF's finite-field Hamiltonian is h + sum_x F_x int1e_r (its examples' convention, origin 0); its energies
omit the nuclei's energy in the field, -F . sum_A Z_A R_A, which ours includes so that mu = -dE/dF.
"""

import functools

import numpy as np
import pytest
import torch
from pyscf import dft as pyscf_dft
from pyscf import gto
from pyscf.dft import numint

import dft

MOLECULES = {  # name: (atom in Angstrom, charge, spin)
    "H2O": ("O 0 0 0.117; H 0 0.757 -0.470; H 0 -0.757 -0.470", 0, 0),
    "H2O+": ("O 0 0 0.117; H 0 0.757 -0.470; H 0 -0.757 -0.470", 1, 1),
    "HF": ("F 0 0 0; H 0.3 0.4 0.78", 0, 0),  # off-axis: every field direction couples
}
CONV_TOL = 1e-11
# PySCF's dipoles are first order in its density's error: at conv_tol 1e-11 (|g| < 3e-6) they can be off by
# 1e-7 a.u., which finite-field differences turn into 1e-4 a.u. Ours come from the fixed-point-converged density.
PYSCF_CONV_TOL = 1e-13
LEVEL = 1


def method(name):
    return dft.UKS if MOLECULES[name][2] else dft.RKS


def our_mf(name, xc, device, **options):
    atom, charge, spin = MOLECULES[name]
    mol = dft.Molecule(atom, "6-31g", charge=charge, spin=spin, device=device)
    return method(name)(mol, xc=xc, grid_level=LEVEL, conv_tol=CONV_TOL, **options)


@functools.lru_cache(maxsize=None)
def pyscf_mf(name, xc, field=(0.0, 0.0, 0.0)):
    atom, charge, spin = MOLECULES[name]
    mol = gto.M(atom=atom, basis="6-31g", charge=charge, spin=spin, verbose=0)
    mf = (pyscf_dft.UKS if spin else pyscf_dft.RKS)(mol, xc=xc).set(conv_tol=PYSCF_CONV_TOL, small_rho_cutoff=0)
    mf.grids.level = LEVEL
    with mol.with_common_orig((0, 0, 0)):
        h = mf.get_hcore() + np.einsum("x,xij->ij", field, mol.intor("int1e_r"))
    mf.get_hcore = lambda *args: h
    mf.kernel()
    assert mf.converged
    return mf


@pytest.mark.parametrize("name, xc", [("H2O", "b3lyp"), ("H2O+", "pbe")])
def test_dipole_matches_pyscf_and_is_minus_the_field_derivative_of_the_energy(name, xc, device):
    ref = pyscf_mf(name, xc)
    mf = our_mf(name, xc, device)
    mf.kernel(strict=True)
    mu = dft.dipole(mf)
    np.testing.assert_allclose(mu.cpu().numpy(), ref.dip_moment(unit="AU", verbose=0), atol=1e-6)

    field = torch.zeros(3, dtype=torch.float64, device=device, requires_grad=True)
    energy = our_mf(name, xc, device, field=field).kernel(strict=True)
    (gradient,) = torch.autograd.grad(energy, field)
    torch.testing.assert_close(-gradient, mu, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name, xc", [("HF", "b3lyp"), ("H2O+", "pbe")])
def test_energy_in_a_field_matches_pyscf_finite_field(name, xc, device):
    field = (0.002, -0.003, 0.004)
    ref = pyscf_mf(name, xc, field)
    mf = our_mf(name, xc, device, field=field)
    energy = float(mf.kernel(strict=True))
    nuclear = -np.dot(field, ref.mol.atom_charges() @ ref.mol.atom_coords())
    assert energy == pytest.approx(ref.e_tot + nuclear, abs=1e-7)
    np.testing.assert_allclose(mf.mo_energy.cpu().numpy(), np.asarray(ref.mo_energy), atol=1e-6)


@pytest.mark.parametrize("name, xc", [("HF", "pbe"), ("H2O+", "lda,vwn")])
def test_polarizability_matches_pyscf_finite_field(name, xc, device):
    step = 1e-3
    columns = []
    for axis in range(3):
        field = np.zeros(3)
        field[axis] = step
        plus = pyscf_mf(name, xc, tuple(field)).dip_moment(unit="AU", verbose=0)
        minus = pyscf_mf(name, xc, tuple(-field)).dip_moment(unit="AU", verbose=0)
        columns.append((plus - minus) / (2 * step))
    reference = np.stack(columns, axis=1)
    mf = our_mf(name, xc, device)
    mf.kernel(strict=True)
    alpha = dft.polarizability(mf)
    assert alpha.shape == (3, 3)
    np.testing.assert_allclose(alpha.cpu().numpy(), reference, atol=1e-4)
    torch.testing.assert_close(alpha, alpha.T, atol=1e-8, rtol=0)


@pytest.mark.parametrize("name", ["H2O", "H2O+"])
def test_density_and_gap_match_pyscf(name, device):
    ref = pyscf_mf(name, "pbe")
    mf = our_mf(name, "pbe", device)
    mf.kernel(strict=True)
    rho = dft.density(mf)
    ao = numint.eval_ao(ref.mol, mf.grid.coords.cpu().numpy())
    dm = ref.make_rdm1()
    expected = numint.eval_rho(ref.mol, ao, dm) if dm.ndim == 2 else np.stack([numint.eval_rho(ref.mol, ao, d)
                                                                                for d in dm])
    np.testing.assert_allclose(rho.cpu().numpy(), expected, atol=1e-6)
    electrons = (rho if rho.ndim == 1 else rho.sum(0)) @ mf.grid.weights
    assert float(electrons) == pytest.approx(mf.mol.nelectron, abs=1e-3)  # level-1 grid quadrature

    energies, occupied = np.asarray(ref.mo_energy), np.asarray(ref.mo_occ) > 0
    expected_gap = energies[~occupied].min() - energies[occupied].max()
    assert float(dft.homo_lumo_gap(mf)) == pytest.approx(expected_gap, abs=1e-6)


def test_bad_field_is_refused():
    with pytest.raises(dft.DFTError, match=r"field must be a finite \(3,\) tensor"):
        our_mf("H2O", "pbe", "cpu", field=[0.0, 0.01])
    with pytest.raises(dft.DFTError, match="finite"):
        our_mf("H2O", "pbe", "cpu", field=[0.0, float("nan"), 0.0])


def test_dipole_integrals_refuse_coordinate_derivatives():
    """Their derivatives w.r.t. nuclear positions are not implemented: refuse rather than give wrong forces."""
    mf = our_mf("H2O", "lda,vwn", "cpu", field=[0.0, 0.0, 0.01])
    mf.mol.coords.requires_grad_()
    with pytest.raises(dft.DFTError, match="derivatives w.r.t. nuclear coordinates are not implemented"):
        mf.kernel()
    mf.field = None
    mf.kernel(strict=True)
    with pytest.raises(dft.DFTError, match=r"dft.dipole uses dipole integrals.*mol.coords.detach"):
        dft.dipole(mf)
    with torch.no_grad():
        assert torch.isfinite(dft.dipole(mf)).all()
