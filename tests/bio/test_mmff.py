"""bio.mmff_energy against RDKit's MMFF94/MMFF94s force field: each term, the total and the gradients."""

import importlib.util
import os

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import rdForceFieldHelpers

import bio
from bio.mmff import TERMS

MOLECULES = {
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "caffeine": "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
    "ibuprofen": "CC(C)Cc1ccc(cc1)[C@@H](C)C(=O)O",
    "paracetamol": "CC(=O)Nc1ccc(O)cc1",
    "glycine_zwitterion": "[NH3+]CC(=O)[O-]",
    "benzamidinium": "NC(=[NH2+])c1ccccc1",
    "acetate": "CC(=O)[O-]",
    "sulfanilamide": "Nc1ccc(cc1)S(N)(=O)=O",
    "imatinib": "Cc1ccc(NC(=O)c2ccc(CN3CCN(C)CC3)cc2)cc1Nc1nccc(-c2cccnc2)n1",
    "macrolactone": "C1CCCCCCCCCCC(=O)OCC1",
    "benzonitrile": "N#Cc1ccccc1",
    "erlotinib": "COCCOc1cc2ncnc(Nc3cccc(C#C)c3)c2cc1OCCOC",
    "methyl_azide": "CN=[N+]=[N-]",
    "diazepam": "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc21",
    "penicillin_g_anion": "CC1(C)S[C@@H]2[C@H](NC(=O)Cc3ccccc3)C(=O)N2[C@H]1C(=O)[O-]",
    "nicotine": "CN1CCC[C@H]1c1cccnc1",
    "metformin_cation": "CN(C)C(=N)NC(N)=[NH2+]",
    "furosemide": "NS(=O)(=O)c1cc(C(=O)O)c(NCc2ccco2)cc1Cl",
    "metronidazole": "Cc1ncc([N+](=O)[O-])n1CCO",
    "fluoxetine_cation": "C[NH2+]CC[C@H](Oc1ccc(cc1)C(F)(F)F)c1ccccc1",
    "dimethyl_phosphate": "COP(=O)([O-])OC",
    "cyclopropyl_oxetane": "C1CC1C(=O)NC1COC1",
    "thiophene_sulfone": "CS(=O)(=O)c1cccs1",
    "methylammonium_chloride": "C[NH3+].[Cl-]",
}

# Crystal poses of PDB ligands shipped with the posebusters package (a test dependency), found through its
# installed location without importing it; from_sdf adds the missing hydrogens with coordinates.
POSEBUSTERS_LIGANDS = ("1s3v", "1ia1")


def posebusters_ligand(pdb_id):
    spec = importlib.util.find_spec("posebusters")
    if spec is None:
        pytest.skip("posebusters (a test dependency) is not installed")
    package, = spec.submodule_search_locations
    path = os.path.join(package, "datasets", "pdb", pdb_id, f"{pdb_id}_ligand.sdf")
    ligand, = bio.Ligand.from_sdf(path)
    return ligand


SWITCHES = {"bond": "SetMMFFBondTerm", "angle": "SetMMFFAngleTerm", "stretchbend": "SetMMFFStretchBendTerm",
            "oop": "SetMMFFOopTerm", "torsion": "SetMMFFTorsionTerm", "vdw": "SetMMFFVdWTerm",
            "ele": "SetMMFFEleTerm"}


def rdkit_force_field(mol, variant="MMFF94", only=None, distance_dielectric=False):
    """RDKit's MMFF force field of mol's first conformer, with every term or only the term `only`."""
    props = rdForceFieldHelpers.MMFFGetMoleculeProperties(mol, mmffVariant=variant)
    if distance_dielectric:
        props.SetMMFFDielectricModel(2)
    if only is not None:
        for term, switch in SWITCHES.items():
            getattr(props, switch)(term == only)
    return rdForceFieldHelpers.MMFFGetMoleculeForceField(mol, props)


def check_against_rdkit(ligand, variant="MMFF94", device=None):
    coords = ligand.conformers_angstrom[0].to(device).requires_grad_()
    terms = bio.mmff_energy(ligand, variant, components=True, device=device)(coords)
    assert set(terms) == set(TERMS)
    for term in TERMS:
        force_field = rdkit_force_field(ligand.mol, variant, only=term)
        gradient, = torch.autograd.grad(terms[term], coords, retain_graph=True)
        assert terms[term].device == coords.device
        assert terms[term].item() == pytest.approx(force_field.CalcEnergy(), abs=1e-4), term
        np.testing.assert_allclose(gradient.cpu().numpy().ravel(), force_field.CalcGrad(), atol=1e-4, err_msg=term)
    force_field = rdkit_force_field(ligand.mol, variant)
    total = sum(terms.values())
    gradient, = torch.autograd.grad(total, coords)
    assert total.item() == pytest.approx(force_field.CalcEnergy(), abs=1e-4)
    np.testing.assert_allclose(gradient.cpu().numpy().ravel(), force_field.CalcGrad(), atol=1e-4)


@pytest.mark.parametrize("name", MOLECULES)
def test_mmff94_matches_rdkit(name, device):
    check_against_rdkit(bio.Ligand.from_smiles(MOLECULES[name], seed=7), device=device)


@pytest.mark.parametrize("pdb_id", POSEBUSTERS_LIGANDS)
@pytest.mark.parametrize("variant", ["MMFF94", "MMFF94s"])
def test_crystal_ligands_match_rdkit(pdb_id, variant):
    ligand = posebusters_ligand(pdb_id)
    assert ligand.symbols.count("H") > 0 and torch.isfinite(ligand.conformers).all()
    check_against_rdkit(ligand, variant)


@pytest.mark.parametrize("name", ["aspirin", "imatinib", "benzamidinium", "erlotinib", "penicillin_g_anion"])
def test_mmff94s_matches_rdkit(name):
    check_against_rdkit(bio.Ligand.from_smiles(MOLECULES[name], seed=7), "MMFF94s")


def test_batched_conformers_match_rdkit_per_conformer():
    ligand = bio.Ligand.from_smiles(MOLECULES["imatinib"], num_conformers=5, seed=3)
    coords = ligand.conformers_angstrom
    energies = bio.mmff_energy(ligand)(coords)
    assert energies.shape == (5,)
    force_field = rdkit_force_field(ligand.mol)
    expected = [force_field.CalcEnergy(conformer.reshape(-1).tolist()) for conformer in coords]
    np.testing.assert_allclose(energies.numpy(), expected, atol=1e-4)
    assert len(set(np.round(expected, 3))) == 5  # the conformers really differ


def test_distance_dependent_dielectric_matches_rdkit():
    ligand = bio.Ligand.from_smiles(MOLECULES["glycine_zwitterion"], seed=1)
    terms = bio.mmff_energy(ligand, components=True, distance_dielectric=True)(ligand.conformers_angstrom[0])
    expected = rdkit_force_field(ligand.mol, only="ele", distance_dielectric=True).CalcEnergy()
    assert terms["ele"].item() == pytest.approx(expected, abs=1e-4)


def test_energy_is_differentiable_in_parameters():
    ligand = bio.Ligand.from_smiles(MOLECULES["aspirin"], seed=1)
    energy = bio.mmff_energy(ligand, components=True)
    parameters = {term: dict(values) for term, values in energy.parameters.items()}
    kb = parameters["bond"]["kb"].clone().requires_grad_()
    parameters["bond"]["kb"] = kb
    bond = energy(ligand.conformers_angstrom[0], parameters)["bond"]
    gradient, = torch.autograd.grad(bond, kb)
    assert (gradient * kb).sum().item() == pytest.approx(bond.item(), rel=1e-12)  # linear in kb


def test_parameters_on_device_in_dtype(device):
    ligand = bio.Ligand.from_smiles(MOLECULES["paracetamol"], seed=1)
    energy = bio.mmff_energy(ligand, device=device, dtype=torch.float32)
    for values in energy.parameters.values():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                assert value.device.type == device.type, name
                assert value.dtype in (torch.long, torch.bool, torch.float32), name
    coords = ligand.conformers_angstrom.to(device, torch.float32)
    result = energy(coords)
    assert result.dtype == torch.float32 and result.device.type == device.type
    expected = rdkit_force_field(ligand.mol).CalcEnergy()
    assert result.item() == pytest.approx(expected, abs=1e-2)  # float32 rounding only
    assert energy(ligand.conformers_angstrom[0].tolist()).item() == pytest.approx(expected, abs=1e-2)  # a list


def test_coords_on_another_device_are_refused():
    ligand = bio.Ligand.from_smiles("CCO")
    energy = bio.mmff_energy(ligand)
    with pytest.raises(bio.ArgumentError, match=r"coords must be a tensor on cpu.*got a tensor on meta"):
        energy(torch.zeros(len(ligand), 3, device="meta"))
    with pytest.raises(bio.ArgumentError, match=r"N = 9 atoms.*got shape \(8, 3\)"):
        energy(torch.zeros(8, 3, dtype=torch.float64))


def test_bad_device_or_dtype_is_refused():
    ligand = bio.Ligand.from_smiles("CCO")
    with pytest.raises(bio.ArgumentError, match="dtype"):
        bio.mmff_energy(ligand, dtype=torch.float16)
    with pytest.raises(bio.ArgumentError, match="device"):
        bio.mmff_energy(ligand, device="tpu")


def test_unknown_variant_is_refused():
    ligand = bio.Ligand.from_smiles("CCO")
    with pytest.raises(bio.ArgumentError, match="MMFF94s"):
        bio.mmff_energy(ligand, variant="MMFF95")


def test_molecule_without_mmff_parameters_is_refused():
    with pytest.raises(bio.ParameterizationError, match="MMFF has no parameters"):
        bio.mmff_energy(bio.Ligand.from_smiles("CB(C)C"))


def test_rdkit_mol_without_hydrogens_is_refused():
    with pytest.raises(bio.LigandError, match="implicit hydrogens"):
        bio.mmff_energy(Chem.MolFromMolBlock(Chem.MolToMolBlock(Chem.MolFromSmiles("CCO"))))
