"""Kohn-Sham SCF (RKS/UKS) against PySCF run in the same test, same basis, grid level and functional.

Total energies within 1e-6 Ha and orbital energies within 1e-5 Ha; the building blocks (J/K, V_xc, grids)
checked one by one against PySCF's own routines.
"""

import functools
import warnings

import numpy as np
import pytest
import torch
from pyscf import df as pyscf_df
from pyscf import dft as pyscf_dft
from pyscf import gto
from pyscf.scf import hf as pyscf_hf

import dft
from dft import integrals, scf
from dft.grids import Grid
from dft.xc import get_functional

MOLECULES = {  # name: (atom in Angstrom, charge, spin)
    "H2": ("H 0 0 0; H 0 0 0.74", 0, 0),
    "LiH": ("Li 0 0 0; H 0 0 1.595", 0, 0),
    "N2": ("N 0 0 0; N 0 0 1.098", 0, 0),
    "CO": ("C 0 0 0; O 0 0 1.128", 0, 0),
    "H2O": ("O 0 0 0.117; H 0 0.757 -0.470; H 0 -0.757 -0.470", 0, 0),
    "NH3": ("N 0 0 0.117; H 0 0.938 -0.274; H 0.812 -0.469 -0.274; H -0.812 -0.469 -0.274", 0, 0),
    "CH4": ("C 0 0 0; H 0.629 0.629 0.629; H -0.629 -0.629 0.629; H -0.629 0.629 -0.629; H 0.629 -0.629 -0.629",
            0, 0),
    "HF": ("F 0 0 0; H 0 0 0.917", 0, 0),
    "C2H4": ("C 0 0 0.667; C 0 0 -0.667; H 0 0.923 1.238; H 0 -0.923 1.238; H 0 0.923 -1.238; H 0 -0.923 -1.238",
             0, 0),
    "HCN": ("H 0 0 -1.064; C 0 0 0; N 0 0 1.156", 0, 0),
    "H3O+": ("O 0 0 0.1; H 0 0.94 -0.23; H 0.81 -0.47 -0.23; H -0.81 -0.47 -0.23", 1, 0),
    "OH-": ("O 0 0 0; H 0 0 0.97", -1, 0),
    "O2": ("O 0 0 0; O 0 0 1.208", 0, 2),
    "NO": ("N 0 0 0; O 0 0 1.151", 0, 1),
    "OH": ("O 0 0 0; H 0 0 0.97", 0, 1),
    "CH3": ("C 0 0 0; H 1.079 0 0; H -0.5395 0.9344 0; H -0.5395 -0.9344 0", 0, 1),
    "H2O+": ("O 0 0 0.117; H 0 0.757 -0.470; H 0 -0.757 -0.470", 1, 1),
}
FUNCTIONALS = ["lda,vwn", "lda,vwn_rpa", "slater", "pbe", "blyp", "b3lyp", "b3lyp5", "pbe0", "hf"]


def pyscf_mol(name, basis):
    atom, charge, spin = MOLECULES[name]
    return gto.M(atom=atom, basis=basis, charge=charge, spin=spin, verbose=0)


def our_mol(name, basis, device="cpu"):
    atom, charge, spin = MOLECULES[name]
    return dft.Molecule(atom, basis, charge=charge, spin=spin, device=device)


# Tight, but not so tight that the open shells' flat symmetry-breaking modes stall DIIS (OH at 1e-11 does).
CONV_TOL = 1e-10


@functools.lru_cache(maxsize=None)  # one reference per case, shared by the device parametrizations
def run_pyscf(name, basis, xc, level, unrestricted, density_fit=False):
    # Same grid as ours: PySCF's density-based pruning off (see dft/grids.py).
    mf = (pyscf_dft.UKS if unrestricted else pyscf_dft.RKS)(pyscf_mol(name, basis), xc=xc)
    mf = mf.set(conv_tol=CONV_TOL, small_rho_cutoff=0)
    if density_fit:
        mf = mf.density_fit()  # after xc is set: PySCF picks the auxiliary basis by functional
    mf.grids.level = level
    mf.kernel()
    assert mf.converged
    return mf


def check_against_pyscf(name, basis, xc, device, level=1, density_fit=False, start_from_reference=False):
    unrestricted = MOLECULES[name][2] != 0
    ref = run_pyscf(name, basis, xc, level, unrestricted, density_fit)
    # Both sides converged tightly: components and orbital energies are first order in the density error.
    mf = (dft.UKS if unrestricted else dft.RKS)(our_mol(name, basis, device), xc=xc, grid_level=level,
                                                density_fit=density_fit, conv_tol=CONV_TOL)
    dm0 = torch.as_tensor(np.asarray(ref.make_rdm1()), device=device) if start_from_reference else None
    energy = mf.kernel(dm0=dm0, strict=True)
    assert torch.is_tensor(energy) and energy.ndim == 0 and energy.device.type == device.type
    assert mf.converged
    assert abs(float(energy) - ref.e_tot) < 1e-6
    np.testing.assert_allclose(mf.mo_energy.cpu().numpy(), np.asarray(ref.mo_energy), atol=1e-5)
    parts = {k: float(v) for k, v in mf.energy_components.items()}
    summary = ref.scf_summary
    assert parts["nuclear"] == pytest.approx(summary["nuc"], abs=1e-8)
    assert parts["one_electron"] == pytest.approx(summary["e1"], abs=1e-5)
    assert parts["coulomb"] == pytest.approx(summary["coul"], abs=1e-5)
    assert parts["xc"] + parts["exact_exchange"] == pytest.approx(summary["exc"], abs=1e-5)
    assert sum(parts.values()) == pytest.approx(float(energy), abs=1e-10)
    return mf, ref


# Every molecule with one functional (every functional appears), small bases, low grid levels.
MOLECULE_CASES = [
    ("H2", "sto-3g", "lda,vwn", 1), ("LiH", "6-31g", "pbe", 1), ("N2", "6-31g", "b3lyp", 1),
    ("CO", "def2-svp", "pbe0", 1), ("H2O", "def2-svp", "b3lyp5", 2), ("NH3", "6-31g", "blyp", 1),
    ("CH4", "6-31g", "lda,vwn_rpa", 0), ("HF", "6-31g", "slater", 1), ("C2H4", "sto-3g", "pbe", 0),
    ("HCN", "6-31g", "hf", 1), ("H3O+", "6-31g", "pbe", 1), ("OH-", "6-31g", "b3lyp", 1),
    ("O2", "6-31g", "pbe", 1), ("NO", "6-31g", "b3lyp", 1), ("OH", "6-31g", "pbe", 1),
    ("CH3", "6-31g", "lda,vwn", 1), ("H2O+", "6-31g", "blyp", 1),
]


@pytest.mark.parametrize("name, basis, xc, level", MOLECULE_CASES, ids=[c[0] for c in MOLECULE_CASES])
def test_molecules_match_pyscf(name, basis, xc, level, device):
    # OH's hole may sit in any mix of the two pi orbitals: such UKS solutions differ by up to ~1e-5 Ha and DIIS
    # drifts between them slowly, so where an SCF stops depends on rounding. Start from PySCF's solution to
    # compare the same state (the other open shells run from the guess).
    check_against_pyscf(name, basis, xc, device, level, start_from_reference=name == "OH")


@pytest.mark.parametrize("xc", FUNCTIONALS)
@pytest.mark.parametrize("name", ["H2O", "CH3"])
def test_functionals_match_pyscf(name, xc, device):
    check_against_pyscf(name, "6-31g", xc, device, level=0)


@pytest.mark.parametrize("name, xc", [("H2O", "pbe"), ("H2O", "b3lyp"), ("O2", "b3lyp"), ("O2", "pbe")])
def test_density_fitting_matches_pyscf(name, xc, device):
    mf, ref = check_against_pyscf(name, "def2-svp", xc, device, level=0, density_fit=True)
    assert ref.with_df.auxbasis == integrals.auxiliary_basis(mf.mol, hybrid=xc == "b3lyp")
    assert mf.eri.shape[0] == ref.with_df.get_naoaux()


def test_default_grid_level_matches_pyscf(device):
    check_against_pyscf("H2O", "sto-3g", "pbe", device, level=3)


def test_level_shift_and_damping_reach_the_same_state(device):
    mf = dft.RKS(our_mol("H2O", "6-31g", device), xc="pbe", grid_level=0, level_shift=0.3, damp=0.3)
    energy = mf.kernel(strict=True)
    assert abs(float(energy) - run_pyscf("H2O", "6-31g", "pbe", 0, False).e_tot) < 1e-6


def test_not_converged_warns_or_raises(device):
    mf = dft.UKS(our_mol("OH", "6-31g", device), xc="pbe", grid_level=0, max_cycle=2)
    with pytest.warns(dft.SCFNotConvergedWarning, match=r"not converged in 2 cycles.*cycle 2: E=.*level_shift"):
        energy = mf.kernel()
    assert not mf.converged and torch.isfinite(energy)
    with pytest.raises(dft.SCFNotConvergedError, match=r"not converged in 2 cycles.*max_cycle"):
        mf.kernel(strict=True)


def test_silent_by_default_and_open_shell_rks_is_refused(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dft.RKS(our_mol("H2", "sto-3g"), xc="hf").kernel()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    with pytest.raises(dft.DFTError, match="use dft.UKS"):
        dft.RKS(our_mol("OH", "sto-3g"))


def test_verbose_shows_progress(capsys):
    dft.RKS(our_mol("H2", "sto-3g"), xc="hf", verbose=True).kernel()
    assert "SCF" in capsys.readouterr().err


def test_eri_memory_guard_suggests_density_fitting():
    with pytest.raises(dft.DFTError, match=r"needs .* MB \(> max_memory=0.001 MB\); use density_fit=True"):
        dft.RKS(our_mol("H2O", "sto-3g"), xc="b3lyp", max_memory=0.001)


def test_grid_is_pyscf_grid(device):
    mol = our_mol("H2O", "6-31g", device)
    grid = Grid(mol, level=2, deriv=1, max_memory=0)  # no cache: blocks computed on the fly
    ref = pyscf_dft.gen_grid.Grids(mol.pyscf)
    ref.level = 2
    ref.build()
    nonzero = ref.weights != 0
    np.testing.assert_array_equal(grid.coords.cpu().numpy(), ref.coords[nonzero])
    np.testing.assert_array_equal(grid.weights.cpu().numpy(), ref.weights[nonzero])
    ao = torch.cat([a for _, a in grid.blocks()], dim=1)
    np.testing.assert_allclose(ao.cpu().numpy(), mol.pyscf.eval_gto("GTOval_sph_deriv1", ref.coords[nonzero]))


def test_jk_matches_pyscf(device):
    mol = our_mol("H2O", "def2-svp", device)
    dm = pyscf_hf.init_guess_by_minao(mol.pyscf)
    dms = np.stack([dm * 0.6, dm * 0.4])
    ref_j, ref_k = pyscf_hf.get_jk(mol.pyscf, dms)
    vj, vk = scf.get_jk(integrals.eri(mol), torch.as_tensor(dms, device=device))
    np.testing.assert_allclose(vj.cpu().numpy(), ref_j, atol=1e-11)
    np.testing.assert_allclose(vk.cpu().numpy(), ref_k, atol=1e-11)

    vj, vk = scf.get_jk(integrals.eri(mol, aosym="s4"), torch.as_tensor(dms, device=device), with_k=False)
    np.testing.assert_allclose(vj.cpu().numpy(), ref_j, atol=1e-11)
    assert vk is None
    with pytest.raises(dft.DFTError, match="exact exchange needs the full or 8-fold packed ERI"):
        scf.get_jk(integrals.eri(mol, aosym="s4"), torch.as_tensor(dm, device=device))
    if device == "cpu":
        vj, vk = scf.get_jk(integrals.eri(mol, aosym="s8"), torch.as_tensor(dms))
        np.testing.assert_allclose(vj.numpy(), ref_j, atol=1e-11)
        np.testing.assert_allclose(vk.numpy(), ref_k, atol=1e-11)

    ref_df = pyscf_df.DF(mol.pyscf, auxbasis=integrals.auxiliary_basis(mol, hybrid=True))
    ref_j, ref_k = ref_df.get_jk(dms)
    vj, vk = scf.get_jk(integrals.density_fit(mol), torch.as_tensor(dms, device=device))
    np.testing.assert_allclose(vj.cpu().numpy(), ref_j, atol=1e-10)
    np.testing.assert_allclose(vk.cpu().numpy(), ref_k, atol=1e-10)


def test_incore_jk_from_8fold_eris_is_differentiable_to_any_order():
    """J and K from the 8-fold packed ERIs (PySCF's incore contraction) for a non-symmetric D match PySCF's
    hermi=0 build; their backward (the same linear maps applied to the cotangent) passes gradcheck and
    gradgradcheck. The 8-fold form carries no coordinate derivatives and says so."""
    mol = our_mol("H2", "6-31g")
    eri = integrals.eri(mol, aosym="s8")
    dm = torch.randn(2, mol.nao, mol.nao, dtype=torch.float64, requires_grad=True)
    ref_j, ref_k = pyscf_hf.get_jk(mol.pyscf, dm.detach().numpy(), hermi=0)
    vj, vk = scf.get_jk(eri, dm)
    np.testing.assert_allclose(vj.detach().numpy(), ref_j, atol=1e-12)
    np.testing.assert_allclose(vk.detach().numpy(), ref_k, atol=1e-12)
    for with_j, with_k in [(True, True), (True, False), (False, True)]:
        def f(d):
            return [v for v in scf.get_jk(eri, d, with_j=with_j, with_k=with_k) if v is not None]

        # nondet_tol: PySCF's OpenMP threads sum J and K in a varying order (differences ~1e-16)
        assert torch.autograd.gradcheck(f, (dm,), fast_mode=True, nondet_tol=1e-12)
        assert torch.autograd.gradgradcheck(f, (dm,), fast_mode=True, nondet_tol=1e-12)
    moving = mol.with_coords(mol.coords.clone().requires_grad_())
    with pytest.raises(dft.DFTError, match="without coordinate derivatives"):
        integrals.eri(moving, aosym="s8")


def _water_grids(xc, device):
    """Water/6-31g with our level-1 grid and PySCF's (same grid), the functional and PySCF's NumInt."""
    mol = our_mol("H2O", "6-31g", device)
    functional = get_functional(xc)
    grid = Grid(mol, level=1, deriv=1 if functional.family == "gga" else 0)
    ref_grid = pyscf_dft.gen_grid.Grids(mol.pyscf)
    ref_grid.level = 1
    ref_grid.build()
    return mol, functional, grid, ref_grid, pyscf_dft.numint.NumInt()


@pytest.mark.parametrize("xc", ["lda,vwn", "pbe", "b3lyp"])
def test_vxc_by_autograd_matches_pyscf(xc, device):
    mol, functional, grid, ref_grid, ni = _water_grids(xc, device)
    dm = pyscf_hf.init_guess_by_minao(mol.pyscf)

    _, exc_ref, vxc_ref = ni.nr_rks(mol.pyscf, ref_grid, xc, dm)
    exc, vxc = scf.get_vxc(functional, grid, torch.as_tensor(dm, device=device))
    assert float(exc) == pytest.approx(exc_ref, abs=1e-10)
    np.testing.assert_allclose(vxc.cpu().numpy(), vxc_ref, atol=1e-10)
    assert float(scf.xc_energy(functional, grid, torch.as_tensor(dm, device=device))) == pytest.approx(exc_ref,
                                                                                                        abs=1e-10)

    dms = np.stack([dm * 0.6, dm * 0.4])
    _, exc_ref, vxc_ref = ni.nr_uks(mol.pyscf, ref_grid, xc, dms)
    exc, vxc = scf.get_vxc(functional, grid, torch.as_tensor(dms, device=device))
    assert float(exc) == pytest.approx(exc_ref, abs=1e-10)
    np.testing.assert_allclose(vxc.cpu().numpy(), vxc_ref, atol=1e-10)


@pytest.mark.parametrize("xc", ["lda,vwn", "pbe"])
@pytest.mark.parametrize("spin", [0, 1])
def test_vxc_response_matches_pyscf_fxc(xc, spin, device):
    """The first derivative of V_xc (the XC kernel applied once, kept for repeated backward) against PySCF's
    nr_rks_fxc / nr_uks_fxc; the second backward (through autograd of the functional) by finite differences."""
    mol, functional, grid, ref_grid, ni = _water_grids(xc, device)
    dm0 = pyscf_hf.init_guess_by_minao(mol.pyscf)
    rng = np.random.default_rng(0)
    dm1 = rng.normal(size=dm0.shape) * 0.1
    dm1 = dm1 + dm1.T
    if spin:
        dm0, dm1 = np.stack([dm0 * 0.6, dm0 * 0.4]), np.stack([dm1, 0.5 * dm1 @ dm1])
        ref = ni.nr_uks_fxc(mol.pyscf, ref_grid, xc, dm0, dm1, hermi=1)
    else:
        ref = ni.nr_rks_fxc(mol.pyscf, ref_grid, xc, dm0, dm1, hermi=1)
    dm = torch.as_tensor(dm0, device=device).requires_grad_()
    _, vxc = scf.get_vxc(functional, grid, dm)
    cotangent = torch.as_tensor(dm1, device=device)
    for _ in range(2):  # the second backward reuses the kernel of the first
        (response,) = torch.autograd.grad(vxc, dm, cotangent, retain_graph=True)
        np.testing.assert_allclose(((response + response.mT) / 2).cpu().numpy(), ref, atol=1e-9)
    if device == "cpu" and not spin:
        small = our_mol("H2", "6-31g", device)
        small_grid = Grid(small, level=0, deriv=1 if functional.family == "gga" else 0)
        d = torch.as_tensor(pyscf_hf.init_guess_by_minao(small.pyscf), device=device).requires_grad_()

        def potential(d):
            return scf.get_vxc(functional, small_grid, (d + d.mT) / 2)[1]

        assert torch.autograd.gradcheck(potential, (d,))
        assert torch.autograd.gradgradcheck(potential, (d,))


def test_energy_is_differentiable_in_the_density_matrix(device):
    """The functional core is torch: dE/dD from autograd equals the Fock matrix at the converged density."""
    mf = dft.RKS(our_mol("H2O", "6-31g", device), xc="b3lyp", grid_level=0)
    mf.kernel(strict=True)
    dm = mf.make_rdm1().clone().requires_grad_()
    energy = mf.energy_tot(dm)
    assert float(energy.detach()) == pytest.approx(float(mf.e_tot), abs=1e-10)
    (grad,) = torch.autograd.grad(energy, dm)
    with torch.no_grad():
        fock = mf.hcore + mf.get_veff(mf.make_rdm1()).matrix
    torch.testing.assert_close((grad + grad.T) / 2, fock, atol=1e-9, rtol=0)
