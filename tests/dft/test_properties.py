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


@pytest.mark.parametrize("name, xc", [("H2O", "hf"), ("H2O+", "pbe")])
def test_dipole_derivatives_match_finite_differences_of_pyscf_dipoles(name, xc, device):
    """d(mu)/dR along a random direction (the dipole integrals' coordinate derivatives and the density's
    response) against central differences of PySCF's dipoles; PySCF rebuilds its grid at each geometry, so
    ours moves with the atoms too (grid_response)."""
    atom, charge, spin = MOLECULES[name]
    mol = dft.Molecule(atom, "6-31g", charge=charge, spin=spin, device=device)
    mol.coords.requires_grad_()
    mf = method(name)(mol, xc=xc, grid_level=LEVEL, grid_response=True, conv_tol=CONV_TOL)
    mf.kernel(strict=True)
    direction = torch.randn(mol.natm, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    mu = dft.dipole(mf)
    derivative = torch.stack([torch.autograd.grad(mu[x], mol.coords, retain_graph=True)[0] for x in range(3)])
    along = (derivative.cpu() * direction).sum((1, 2)).numpy()

    pmol = gto.M(atom=atom, basis="6-31g", charge=charge, spin=spin, verbose=0)
    step = 5e-4  # the difference's truncation error is ~5e-8 a.u.

    def pyscf_dipole(t):
        moved = pmol.set_geom_(pmol.atom_coords() + t * direction.numpy(), unit="bohr", inplace=False)
        # A converged-but-loose density shifts the dipole smoothly with geometry, by ~1e-6 a.u. per Bohr at
        # PySCF's default conv_tol_grad: tighten it.
        kohn_sham = pyscf_dft.UKS if spin else pyscf_dft.RKS
        ref = kohn_sham(moved, xc=xc).set(conv_tol=PYSCF_CONV_TOL, conv_tol_grad=1e-10, small_rho_cutoff=0)
        ref.grids.level = LEVEL
        ref.kernel()
        assert ref.converged
        return ref.dip_moment(unit="AU", verbose=0)

    np.testing.assert_allclose(along, (pyscf_dipole(step) - pyscf_dipole(-step)) / (2 * step), atol=3e-7)


def test_forces_in_a_field_include_the_dipole_integrals(device):
    """dE/dR in a field against a central difference of PySCF's finite-field energies (plus the nuclei's
    energy in the field), along a random direction."""
    field = np.array([0.01, -0.02, 0.015])
    atom, charge, spin = MOLECULES["HF"]
    mol = dft.Molecule(atom, "6-31g", device=device)
    mol.coords.requires_grad_()
    energy = dft.RKS(mol, xc="hf", field=field, conv_tol=1e-12, conv_tol_grad=1e-9).kernel(strict=True)
    (gradient,) = torch.autograd.grad(energy, mol.coords)
    direction = np.random.default_rng(3).normal(size=(mol.natm, 3))
    pmol = gto.M(atom=atom, basis="6-31g", verbose=0)

    def pyscf_energy(t):
        moved = pmol.set_geom_(pmol.atom_coords() + t * direction, unit="bohr", inplace=False)
        ref = pyscf_dft.RKS(moved, xc="hf").set(conv_tol=PYSCF_CONV_TOL, conv_tol_grad=1e-10)
        with moved.with_common_orig((0, 0, 0)):
            h = ref.get_hcore() + np.einsum("x,xij->ij", field, moved.intor("int1e_r"))
        ref.get_hcore = lambda *args: h
        ref.kernel()
        return ref.e_tot - field @ (moved.atom_charges() @ moved.atom_coords())

    step = 1e-4
    reference = (pyscf_energy(step) - pyscf_energy(-step)) / (2 * step)
    assert float((gradient.cpu().numpy() * direction).sum()) == pytest.approx(reference, abs=1e-7)
