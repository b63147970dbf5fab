"""Nuclear-coordinate derivatives of the integrals (dft.integral_grad).

Every integral Function is checked by gradcheck and gradgradcheck (first and second derivatives against finite
differences of PySCF integrals recomputed at displaced geometries), and each first derivative is compared with
PySCF's own analytic-gradient pieces (hcore_generator, get_ovlp, get_jk, DF get_jk with auxiliary response,
get_vxc and get_vxc_full_response), computed in the test.
"""

import numpy as np
import pytest
import torch
from pyscf import dft as pyscf_dft
from pyscf import gto, scf
from pyscf.df.grad import rhf as df_rhf_grad
from pyscf.dft import gen_grid
from pyscf.grad import rhf as rhf_grad
from pyscf.grad import rks as rks_grad
from torch.autograd import gradcheck, gradgradcheck

import dft
from dft import grids, integral_grad, integrals
from dft import scf as dft_scf
from dft.xc import get_functional

WATER = "O 0 0 0.117; H 0 0.757 -0.470; H 0 -0.757 -0.470"
# nondet_tol: on CUDA, index_add and scatter accumulate in nondeterministic order (differences ~1e-15 relative)
CHECK = dict(eps=1e-5, atol=1e-6, rtol=1e-5, fast_mode=True, nondet_tol=1e-10)


def water(basis="sto-3g", device="cpu"):
    return dft.Molecule(WATER, basis, device=device)


def check_derivatives(mol, integral):
    """gradcheck and gradgradcheck of coords -> integral(mol at coords)."""
    coords = mol.coords.clone().requires_grad_()

    def f(c):
        return integral(mol.with_coords(c))

    assert gradcheck(f, (coords,), **CHECK)
    assert gradgradcheck(f, (coords,), **CHECK)


@pytest.mark.parametrize("integral", [integrals.overlap, integrals.kinetic, integrals.nuclear_attraction,
                                      integrals.hcore], ids=["overlap", "kinetic", "nuclear", "hcore"])
def test_one_electron_first_and_second_derivatives(integral, device):
    check_derivatives(water(device=device), integral)


@pytest.mark.parametrize("aosym", ["s1", "s4"])
def test_eri_first_and_second_derivatives(aosym, device):
    check_derivatives(water(device=device), lambda m: integrals.eri(m, aosym=aosym))


def test_coulomb_matrix_first_and_second_derivatives(device):
    """J[D] from the coordinate-differentiable packed ERIs goes through integral_grad._Coulomb (first derivatives
    by PySCF's density-matrix contractions, second through the 4-index path): checked w.r.t. R and D together,
    with a cotangent not proportional to D (an energy's is: that case is checked against PySCF below)."""
    mol = water(device=device)
    coords = mol.coords.clone().requires_grad_()
    generator = torch.Generator().manual_seed(0)
    dm = torch.randn(mol.nao, mol.nao, dtype=torch.float64, generator=generator).to(device)
    dm = (dm + dm.T).requires_grad_()

    def f(c, d):
        return dft_scf.get_jk(integrals.eri(mol.with_coords(c), aosym="s4"), d, with_k=False)[0]

    assert type(f(coords, dm).grad_fn) is integral_grad._Coulomb._backward_cls
    assert gradcheck(f, (coords, dm), **CHECK)
    assert gradgradcheck(f, (coords, dm), **CHECK)


def test_density_fit_first_and_second_derivatives(device):
    # LiH: the factor B = L^-1 (P|ij) with (P|Q) = L L^T, 3- and 2-centre derivatives and the Cholesky together.
    mol = dft.Molecule("Li 0 0 0; H 0 0 1.595", "sto-3g", device=device)
    check_derivatives(mol, lambda m: integrals.density_fit(m, "def2-universal-jfit"))


@pytest.mark.parametrize("deriv", [0, 1])
@pytest.mark.parametrize("moving", [False, True], ids=["fixed_points", "moving_points"])
def test_ao_values_first_and_second_derivatives(deriv, moving, device):
    mol = water("6-31g", device)
    rng = np.random.default_rng(0)
    atoms = torch.as_tensor(rng.integers(0, mol.natm, 30), device=device)
    offsets = torch.as_tensor(rng.normal(size=(30, 3)), device=device)
    start = mol.coords.clone()

    def f(c):
        # Fixed points stay where they were; moving points follow their atoms.
        points = ((c.detach() if moving else start)[atoms] + offsets).cpu().numpy()
        return grids.ao_values(mol.with_coords(c), points, deriv, atoms if moving else None)

    coords = start.clone().requires_grad_()
    assert gradcheck(f, (coords,), **CHECK)
    assert gradgradcheck(f, (coords,), **CHECK)


def test_dipole_integral_derivatives(device):
    """First derivatives by gradcheck; ``response`` (the derivative of the gradient w.r.t. its cotangent, a
    directional derivative of the integrals) against a central difference; second derivatives w.r.t. the
    coordinates are refused."""
    mol = water("6-31g", device)
    coords = mol.coords.clone().requires_grad_()
    assert gradcheck(lambda c: integrals.dipole(mol.with_coords(c)), (coords,), **CHECK)

    direction = torch.randn(mol.natm, 3, dtype=torch.float64, device=device)
    derivatives = integral_grad.DipoleDerivatives(mol.pyscf, integrals.dipole(mol))
    step = 1e-5
    difference = (integrals.dipole(mol.with_coords(mol.coords + step * direction))
                  - integrals.dipole(mol.with_coords(mol.coords - step * direction))) / (2 * step)
    torch.testing.assert_close(derivatives.response(direction), difference, atol=1e-8, rtol=0)

    cotangent = torch.randn(3, mol.nao, mol.nao, dtype=torch.float64, device=device)
    (gradient,) = torch.autograd.grad((integrals.dipole(mol.with_coords(coords)) * cotangent).sum(), coords,
                                      create_graph=True)
    with pytest.raises(dft.DFTError, match="second derivatives of the dipole integrals"):
        torch.autograd.grad((gradient * direction).sum(), coords)


def test_no_graph_without_requires_grad():
    mol = water()
    for tensor in (integrals.overlap(mol), integrals.eri(mol), integrals.density_fit(mol, "weigend")):
        assert tensor.grad_fn is None
    mol.coords.requires_grad_()
    with torch.no_grad():
        assert integrals.hcore(mol).grad_fn is None
    assert integrals.hcore(mol).grad_fn is not None


def test_with_coords_rebuilds_the_pyscf_molecule():
    mol = water("6-31g")
    shifted = mol.coords + torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    moved = mol.with_coords(shifted)
    assert moved.coords is shifted
    np.testing.assert_allclose(moved.pyscf.atom_coords(), shifted.numpy(), atol=1e-14)
    np.testing.assert_allclose(mol.pyscf.atom_coords(), mol.coords.numpy(), atol=1e-14)
    assert moved.pyscf.nao == mol.nao and moved.basis == mol.basis
    with pytest.raises(dft.MoleculeError, match="expected \\(3, 3\\)"):
        mol.with_coords(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(dft.MoleculeError, match="not finite"):
        mol.with_coords(torch.full((3, 3), float("nan"), dtype=torch.float64))
    with pytest.raises(dft.MoleculeError, match="on top of each other"):
        mol.with_coords(torch.zeros(3, 3, dtype=torch.float64))


@pytest.fixture(scope="module")
def water_rhf():
    """PySCF RHF water/6-31G: a density and an energy-weighted density to contract derivatives with."""
    pmol = gto.M(atom=WATER, basis="6-31g", verbose=0)
    mf = scf.RHF(pmol).run()
    return mf, mf.make_rdm1(), mf.make_rdm1() @ mf.get_fock() @ mf.make_rdm1() / 2


def forces_of(energy, mol):
    """dE/dcoords (natm, 3) of ``energy(mol)`` by autograd."""
    coords = mol.coords.clone().requires_grad_()
    (grad,) = torch.autograd.grad(energy(mol.with_coords(coords)), coords)
    return grad.numpy()


def per_atom(pmol, matrix_by_atom):
    """PySCF's grad convention: for each atom, 2 sum_{i on A, j} M[x, i, j] D_ij."""
    return np.array([matrix_by_atom(a, p0, p1) for a, (_, _, p0, p1) in enumerate(pmol.aoslice_by_atom())])


def test_first_derivatives_match_pyscf_one_electron(water_rhf):
    mf, dm, dme = water_rhf
    mol = dft.Molecule.from_pyscf(mf.mol)
    g = rhf_grad.Gradients(mf)
    hcore_deriv = g.hcore_generator(mf.mol)
    expected = np.array([np.einsum("xij,ij->x", hcore_deriv(a), dm) for a in range(mol.natm)])
    d = torch.from_numpy(dm)
    np.testing.assert_allclose(forces_of(lambda m: (integrals.hcore(m) * d).sum(), mol), expected, atol=1e-10)
    s1 = g.get_ovlp(mf.mol)
    expected = per_atom(mf.mol, lambda a, p0, p1: 2 * np.einsum("xij,ij->x", s1[:, p0:p1], dme[p0:p1]))
    w = torch.from_numpy(dme)
    np.testing.assert_allclose(forces_of(lambda m: (integrals.overlap(m) * w).sum(), mol), expected, atol=1e-10)


def coulomb_exchange(eri, dm):
    vj, vk = dft_scf.get_jk(eri, dm)
    return 0.5 * (dm * vj).sum() - 0.25 * (dm * vk).sum()


def test_first_derivatives_match_pyscf_eri(water_rhf):
    mf, dm, _ = water_rhf
    mol = dft.Molecule.from_pyscf(mf.mol)
    vj, vk = rhf_grad.Gradients(mf).get_jk(mf.mol, dm)
    vhf = vj - 0.5 * vk
    expected = per_atom(mf.mol, lambda a, p0, p1: 2 * np.einsum("xij,ij->x", vhf[:, p0:p1], dm[p0:p1]))
    d = torch.from_numpy(dm)
    got = forces_of(lambda m: coulomb_exchange(integrals.eri(m), d), mol)
    np.testing.assert_allclose(got, expected, atol=1e-9)
    # Coulomb alone through the packed ERIs.
    vj_only = per_atom(mf.mol, lambda a, p0, p1: 2 * np.einsum("xij,ij->x", vj[:, p0:p1], dm[p0:p1]))
    got = forces_of(lambda m: 0.5 * (d * dft_scf.get_jk(integrals.eri(m, aosym="s4"), d, with_k=False)[0]).sum(),
                    mol)
    np.testing.assert_allclose(got, vj_only, atol=1e-9)


def test_first_derivatives_match_pyscf_density_fitting(water_rhf):
    mf0, dm, _ = water_rhf
    mf = mf0.density_fit(auxbasis="def2-universal-jkfit")
    mf.mo_coeff, mf.mo_occ = mf0.mo_coeff, mf0.mo_occ
    g = df_rhf_grad.Gradients(mf)
    vj, vk = g.get_jk(mf.mol, dm)
    vhf = vj - 0.5 * vk
    expected = per_atom(mf.mol, lambda a, p0, p1: 2 * np.einsum("xij,ij->x", vhf[:, p0:p1], dm[p0:p1]))
    expected += (vj.aux - 0.5 * vk.aux).sum((0, 1))  # auxiliary-basis response
    mol = dft.Molecule.from_pyscf(mf.mol)
    d = torch.from_numpy(dm)
    got = forces_of(lambda m: coulomb_exchange(integrals.density_fit(m, "def2-universal-jkfit"), d), mol)
    np.testing.assert_allclose(got, expected, atol=1e-9)


@pytest.mark.parametrize("xc", ["lda,vwn", "pbe"])
@pytest.mark.parametrize("grid_response", [False, True], ids=["fixed_grid", "grid_response"])
def test_xc_first_derivatives_match_pyscf(water_rhf, xc, grid_response):
    """d E_xc[D] / dR at fixed D: PySCF's get_vxc (grid fixed) or get_vxc_full_response (points and weights)."""
    mf, dm, _ = water_rhf
    pmol = mf.mol
    level = 1
    pgrids = gen_grid.Grids(pmol)
    pgrids.level = level
    pgrids.build()
    ni = pyscf_dft.numint.NumInt()
    if grid_response:
        exc, vmat = rks_grad.get_vxc_full_response(ni, pmol, pgrids, xc, dm)
    else:
        exc, vmat = rks_grad.get_vxc(ni, pmol, pgrids, xc, dm)
        exc = 0
    expected = per_atom(pmol, lambda a, p0, p1: 2 * np.einsum("xij,ij->x", vmat[0, p0:p1] if vmat.ndim == 4
                                                              else vmat[:, p0:p1], dm[p0:p1])) + exc
    functional = get_functional(xc)
    mol = dft.Molecule.from_pyscf(pmol)
    deriv = 1 if functional.family == "gga" else 0
    coords = mol.coords.clone().requires_grad_()
    moved = mol.with_coords(coords)
    grid = grids.Grid(moved, level, deriv=deriv, grid_response=grid_response)
    (got,) = torch.autograd.grad(dft_scf.xc_energy(functional, grid, torch.from_numpy(dm)), coords)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-9)


def test_becke_weights_match_pyscf():
    pmol = gto.M(atom="N 0 0 0.117; H 0 0.938 -0.274; H 0.812 -0.469 -0.274; H -0.812 -0.469 -0.274",
                 basis="sto-3g", verbose=0)
    pgrids = gen_grid.Grids(pmol)
    pgrids.level = 2
    pgrids.build()
    grid = grids.Grid(dft.Molecule.from_pyscf(pmol), 2, deriv=0, grid_response=True)
    weights = grids.becke_weights(grid.coords, grid.mol.coords, grid.atom_index, grid._quadrature_weights,
                                  grid._radii_adjust)
    keep = pgrids.weights != 0
    # Tiny weights (products of near-zero cell factors) differ from the C code by rounding only.
    np.testing.assert_allclose(weights.numpy(), pgrids.weights[keep], rtol=1e-12, atol=1e-14)


def test_grid_response_first_and_second_derivatives():
    """E_xc of a fixed density on a grid whose points and weights follow the atoms: finite differences rebuild
    PySCF's grid at each displaced geometry."""
    mol = dft.Molecule("H 0 0 0; H 0 0 0.74", "sto-3g")
    functional = get_functional("pbe")
    dm = torch.eye(mol.nao, dtype=torch.float64) * 0.5 + 0.1

    def f(c):
        grid = grids.Grid(mol.with_coords(c), level=0, deriv=1, grid_response=True)
        return dft_scf.xc_energy(functional, grid, dm)

    coords = mol.coords.clone().requires_grad_()
    assert gradcheck(f, (coords,), **CHECK)
    assert gradgradcheck(f, (coords,), **CHECK)
