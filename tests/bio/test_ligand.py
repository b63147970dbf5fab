"""bio.Ligand: building from SMILES, reading SD and MOL2 files, and the errors for bad input."""

import pytest
import torch
from rdkit import Chem, rdBase
from rdkit.Chem import rdDistGeom

import bio

METHANOL_MOL2 = """@<TRIPOS>MOLECULE
methanol
 6 5 0 0 0
SMALL
NO_CHARGES

@<TRIPOS>ATOM
      1 C1         -0.7480    0.0170    0.0000 C.3       1 MOL       0.0000
      2 O1          0.6660   -0.0660    0.0000 O.3       1 MOL       0.0000
      3 H1         -1.1290    1.0390    0.0000 H         1 MOL       0.0000
      4 H2         -1.1430   -0.4920    0.8810 H         1 MOL       0.0000
      5 H3         -1.1430   -0.4920   -0.8810 H         1 MOL       0.0000
      6 H4          0.9560    0.8600    0.0000 H         1 MOL       0.0000
@<TRIPOS>BOND
     1     1     2    1
     2     1     3    1
     3     1     4    1
     4     1     5    1
     5     2     6    1
"""


def embedded(smiles, name, hydrogens=True):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    rdDistGeom.EmbedMolecule(mol, randomSeed=1)
    mol = mol if hydrogens else Chem.RemoveHs(mol)
    mol.SetProp("_Name", name)
    return mol


def test_from_smiles_embeds_conformers_in_nm_with_hydrogens():
    ligand = bio.Ligand.from_smiles("CC(=O)[O-]", num_conformers=3, seed=0)
    assert ligand.symbols == ["C", "C", "O", "O", "H", "H", "H"]
    assert ligand.formal_charges.tolist() == [0, 0, 0, -1, 0, 0, 0]
    assert ligand.conformers.shape == (3, 7, 3) and ligand.conformers.dtype == torch.float64
    assert ligand.positions.shape == (7, 3)
    carbon_carbon = (ligand.positions[0] - ligand.positions[1]).norm().item()
    assert 0.14 < carbon_carbon < 0.16  # nm
    torch.testing.assert_close(ligand.conformers_angstrom, ligand.conformers * 10)


def test_from_smiles_is_reproducible_and_keeps_stereo():
    smiles = "C[C@H](N)C(=O)O"
    first, second = bio.Ligand.from_smiles(smiles, seed=5), bio.Ligand.from_smiles(smiles, seed=5)
    torch.testing.assert_close(first.conformers, second.conformers)
    mol = Chem.Mol(first.mol)
    Chem.AssignStereochemistryFrom3D(mol)
    assert Chem.MolToSmiles(Chem.RemoveHs(mol)) == Chem.MolToSmiles(Chem.MolFromSmiles(smiles))


@pytest.mark.parametrize("smiles, reason", [("C1CC(", "syntax error"), ("N(C)(C)(C)(C)C", "Explicit valence")])
def test_unparsable_smiles_says_rdkits_reason(smiles, reason):
    with pytest.raises(bio.LigandError, match=reason):
        bio.Ligand.from_smiles(smiles)


def test_rdkit_reason_without_capture_error_log(monkeypatch):
    monkeypatch.delattr(rdBase, "CaptureErrorLog", raising=False)
    with pytest.raises(bio.LigandError, match="syntax error"):
        bio.Ligand.from_smiles("C1CC(")


def test_ligand_error_is_a_structure_error():
    assert issubclass(bio.LigandError, bio.StructureError)
    with pytest.raises(bio.ArgumentError, match="num_conformers"):
        bio.Ligand.from_smiles("CCO", num_conformers=0)


def test_from_sdf_reads_every_record_and_adds_missing_hydrogens(tmp_path):
    path = tmp_path / "ligands.sdf"
    with Chem.SDWriter(str(path)) as writer:
        writer.write(embedded("CCO", "ethanol"))
        writer.write(embedded("c1ccccc1O", "phenol", hydrogens=False))
    ethanol, phenol = bio.Ligand.from_sdf(path)
    assert ethanol.name == "ethanol" and len(ethanol) == 9
    assert phenol.name == "phenol" and len(phenol) == 13 and phenol.symbols.count("H") == 6
    assert torch.isfinite(phenol.conformers).all()


def test_from_sdf_skips_a_bad_record_and_warns_with_file_and_record(tmp_path):
    good = Chem.MolToMolBlock(embedded("CCO", "ethanol"))
    bad = good.replace("V2000", "V9999").replace("ethanol", "broken")
    path = tmp_path / "mixed.sdf"
    path.write_text("".join(f"{record}$$$$\n" for record in (good, bad, good)))
    with pytest.warns(UserWarning, match=r"mixed\.sdf: record\(s\) 2 could not be parsed"):
        ligands = bio.Ligand.from_sdf(path)
    assert [ligand.name for ligand in ligands] == ["ethanol", "ethanol"]


def test_from_sdf_errors(tmp_path):
    with pytest.raises(bio.LigandError, match="no such SD file"):
        bio.Ligand.from_sdf(tmp_path / "missing.sdf")
    path = tmp_path / "junk.sdf"
    path.write_text("not a molecule\n$$$$\n")
    with pytest.raises(bio.LigandError, match=r"junk\.sdf: record\(s\) 1 could not be parsed"):
        bio.Ligand.from_sdf(path)


def test_from_mol2_and_from_rdkit(tmp_path):
    path = tmp_path / "methanol.mol2"
    path.write_text(METHANOL_MOL2)
    ligand = bio.Ligand.from_mol2(path)
    assert ligand.symbols == ["C", "O", "H", "H", "H", "H"]
    assert ligand.positions[0, 0].item() == pytest.approx(-0.0748)
    with pytest.raises(bio.LigandError, match="no such MOL2 file"):
        bio.Ligand.from_mol2(tmp_path / "missing.mol2")
    with pytest.raises(bio.LigandError, match="no conformer"):
        bio.Ligand.from_rdkit(Chem.MolFromSmiles("CCO"))
