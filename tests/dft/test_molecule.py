"""dft.Molecule: construction from strings, lists, XYZ files, PySCF and ASE, checked against PySCF's Mole;
clear errors for bad input."""

import math

import numpy as np
import pytest
import torch
from pyscf import gto

import dft

WATER = "O 0 0 0.117; H 0 0.757 -0.470; H 0 -0.757 -0.470"


def reference(atom, basis="sto-3g", **kwargs):
    return gto.M(atom=atom, basis=basis, verbose=0, **kwargs)


def test_string_input_matches_pyscf(device):
    mol = dft.Molecule(WATER, "def2-svp", device=device)
    ref = reference(WATER, "def2-svp")
    assert mol.symbols == ["O", "H", "H"]
    assert mol.coords.dtype == torch.float64 and mol.coords.device.type == device.type
    np.testing.assert_allclose(mol.coords.cpu().numpy(), ref.atom_coords(), atol=1e-12)
    assert (mol.nao, mol.nelectron, mol.nelec) == (ref.nao, ref.nelectron, ref.nelec)
    assert float(mol.energy_nuc()) == pytest.approx(ref.energy_nuc(), abs=1e-10)


def test_list_input_bohr_and_labels():
    atoms = [("O", (0.0, 0.0, 0.0)), ("h1", [0.0, 1.43, 1.1]), (1, (0.0, -1.43, 1.1))]
    mol = dft.Molecule(atoms, "sto-3g", unit="bohr")
    assert mol.symbols == ["O", "H", "H"]
    np.testing.assert_allclose(mol.coords.numpy(), np.array([a[1] for a in atoms], dtype=float))


def test_open_shell_charge_and_spin():
    mol = dft.Molecule("O 0 0 0; H 0 0 0.97", "6-31g", spin=1)
    assert mol.nelec == reference("O 0 0 0; H 0 0 0.97", "6-31g", spin=1).nelec
    cation = dft.Molecule(WATER, "6-31g", charge=1, spin=1)
    assert cation.nelec == (5, 4)


def test_energy_nuc_is_differentiable_in_coords():
    mol = dft.Molecule(WATER, "sto-3g")
    coords = mol.coords.clone().requires_grad_()
    mol.coords = coords
    (grad,) = torch.autograd.grad(mol.energy_nuc(), coords)
    from pyscf.grad.rhf import grad_nuc
    np.testing.assert_allclose(grad.numpy(), grad_nuc(reference(WATER)), atol=1e-10)


def test_from_xyz(tmp_path):
    path = tmp_path / "water.xyz"
    path.write_text("3\nwater\nO 0 0 0.117\nH 0 0.757 -0.470\nH 0 -0.757 -0.470\n\n")
    mol = dft.Molecule.from_xyz(path, basis="sto-3g")
    np.testing.assert_allclose(mol.coords.numpy(), reference(WATER).atom_coords(), atol=1e-12)


def test_from_pyscf_and_ase():
    ref = reference(WATER, "6-31g", charge=1, spin=1)
    mol = dft.Molecule.from_pyscf(ref)
    assert (mol.basis, mol.charge, mol.spin, mol.nao) == ("6-31g", 1, 1, ref.nao)
    np.testing.assert_allclose(mol.coords.numpy(), ref.atom_coords(), atol=1e-12)

    ase = pytest.importorskip("ase")
    atoms = ase.Atoms("OH2", positions=[(0, 0, 0.117), (0, 0.757, -0.470), (0, -0.757, -0.470)])
    mol = dft.Molecule.from_ase(atoms, basis="sto-3g")
    np.testing.assert_allclose(mol.coords.numpy(), reference(WATER).atom_coords(), atol=1e-12)


@pytest.mark.parametrize("atom, match", [
    ("Xq 0 0 0; H 0 0 1", r"atom 1: unknown element 'Xq'"),
    ("O 0 0 0; Hh 0 0 1", r"atom 2: unknown element 'Hh'"),
    ("O 0 0 0; H 0 0 nan", r"atom 2 \(H\).*not finite"),
    ("O 0 0 0; H 0 0 1; H 0 0 1.01", r"atoms 2 \(H\) and 3 \(H\).*on top of each other"),
    ("O 0 0 0; H 0 1", r"atom 2 .*expected 'symbol x y z'"),
    ("", r"no atoms"),
])
def test_bad_atoms(atom, match):
    with pytest.raises(dft.MoleculeError, match=match):
        dft.Molecule(atom, "sto-3g")


def test_inconsistent_spin_and_charge():
    with pytest.raises(dft.MoleculeError, match=r"9 electrons cannot have spin=0.*odd"):
        dft.Molecule("O 0 0 0; H 0 0 0.97", "sto-3g")
    with pytest.raises(dft.MoleculeError, match=r"10 electrons cannot have spin=1"):
        dft.Molecule(WATER, "sto-3g", spin=1)
    with pytest.raises(dft.MoleculeError, match="charge is too large"):
        dft.Molecule("H 0 0 0", "sto-3g", charge=1, spin=0)


def test_unknown_basis_lists_close_matches():
    with pytest.raises(dft.BasisError, match=r"unknown basis set 'def2-svpp'.*def2svp"):
        dft.Molecule(WATER, "def2-svpp")
    with pytest.raises(dft.BasisError, match=r"no functions for element Xe"):
        dft.Molecule("Xe 0 0 0", "6-31g")
    with pytest.raises(dft.BasisError, match=r"no entry for element H"):
        dft.Molecule(WATER, {"O": "sto-3g"})


@pytest.mark.parametrize("text, match", [
    ("3\nwater\nO 0 0 0\nH 0 0 0.96\n", r"water.xyz: line 1 announces 3 atoms but only 2"),
    ("three\nwater\n", r"water.xyz:1: expected the number of atoms"),
    ("2\nwater\nO 0 0 0\nH 0 zero 0.96\n", r"water.xyz:4: coordinates must be numbers"),
    ("2\nwater\nO 0 0 0\nH 0 0.96\n", r"water.xyz:4: expected 'symbol x y z'"),
    ("2\nwater\nO 0 0 0\nQq 0 0 0.96\n", r"water.xyz:4: unknown element 'Qq'"),
    ("2\nwater\nO 0 0 0\nH 0 0 inf\n", r"water.xyz:4: coordinates of H are not finite"),
    ("1\nwater\nO 0 0 0\nH 0 0 0.96\n", r"water.xyz:4: more atom lines than the 1 announced"),
    ("", r"water.xyz:1: empty XYZ file"),
])
def test_bad_xyz(tmp_path, text, match):
    path = tmp_path / "water.xyz"
    path.write_text(text)
    with pytest.raises(dft.MoleculeError, match=match):
        dft.Molecule.from_xyz(path, basis="sto-3g")


def test_to_device_shares_pyscf_mole(device):
    mol = dft.Molecule(WATER, "sto-3g")
    moved = mol.to(device)
    assert moved.pyscf is mol.pyscf and moved.coords.device.type == device.type
    assert math.isclose(float(moved.energy_nuc()), float(mol.energy_nuc()), abs_tol=1e-12)
