"""bio.TorsionTree (poses <-> coordinates) and bio.dock (batched Monte Carlo + BFGS on Vina's score): redocking
the posebusters complexes 1s3v and 1ia1 from an RDKit ETKDG conformer, with symmetry-aware heavy-atom RMSD
(RDKit's CalcRMS, no realignment) against the crystal ligand.

1ia1's NADPH cofactor (chain B, the one lining the ligand's pocket) is kept in the receptor, typed by Meeko as a
ligand is (bio.Receptor.with_ligand): without it the pocket is open and the score's minimum moves (REFERENCES.md).
"""

import math
import warnings

import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem, rdMolAlign

import bio
from test_vina import posebusters_path

NADPH = "NC(=O)C1=CN(C=CC1)C1OC(COP(O)(=O)OP(O)(=O)OCC2OC(C(OP(O)(O)=O)C2O)n2cnc3c(N)ncnc23)C(O)C1O"


def cofactor(path, residue, chain, smiles):
    """A HETATM group of a PDB file as a bio.Ligand, bond orders from `smiles`, hydrogens added."""
    with open(path) as handle:
        lines = [line for line in handle if line.startswith("HETATM") and line[17:20] == residue
                 and line[21] == chain]
    mol = Chem.MolFromPDBBlock("".join(lines) + "END\n", removeHs=False)
    mol = AllChem.AssignBondOrdersFromTemplate(Chem.MolFromSmiles(smiles), mol)
    return bio.Ligand.from_rdkit(mol, name=residue)


def load_complex(pdb_id):
    """(receptor, crystal ligand, box center (Å), box size (Å)) as the Vina measurements in REFERENCES.md."""
    path = posebusters_path(pdb_id, "protein_one_lig_removed.pdb")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        receptor = bio.Receptor.from_pdb(path, ph=7.4)
        if pdb_id == "1ia1":
            receptor = receptor.with_ligand(cofactor(path, "NDP", "B", NADPH))
    ligand, = bio.Ligand.from_sdf(posebusters_path(pdb_id, "ligand.sdf"))
    return receptor, ligand, ligand.conformers_angstrom[0].mean(0).tolist(), [22.0, 22.0, 22.0]


@pytest.fixture(scope="module", params=("1s3v", "1ia1"))
def complex_(request):
    return (request.param,) + load_complex(request.param)


def rmsd(mol, reference):
    return rdMolAlign.CalcRMS(Chem.RemoveHs(mol), Chem.RemoveHs(reference.mol))


def test_pose_round_trip_is_exact(complex_):
    pdb_id, receptor, ligand, center, size = complex_
    tree = bio.TorsionTree(ligand)
    x = ligand.conformers_angstrom[0]
    pose = tree.pose(x[None])
    torch.testing.assert_close(tree.coordinates(pose)[0], x, atol=1e-10, rtol=0)
    random = tree.random_pose(6, center, size, torch.Generator().manual_seed(1))
    coords = tree.coordinates(random)
    back = tree.pose(coords)
    torch.testing.assert_close(tree.coordinates(back), coords, atol=1e-10, rtol=0)
    torch.testing.assert_close(back.position, random.position, atol=1e-10, rtol=0)
    sign = torch.sign((back.orientation * random.orientation).sum(-1, keepdim=True))
    torch.testing.assert_close(sign * back.orientation, random.orientation, atol=1e-10, rtol=0)
    wrapped = torch.remainder(back.torsions - random.torsions + math.pi, 2 * math.pi) - math.pi
    assert wrapped.abs().max() < 1e-10
    bonds = torch.tensor(ligand.autodock().bonds)
    lengths = (coords[:, bonds[:, 0]] - coords[:, bonds[:, 1]]).norm(dim=-1)
    torch.testing.assert_close(lengths, (x[bonds[:, 0]] - x[bonds[:, 1]]).norm(dim=-1).expand_as(lengths))


def test_pose_gradients_match_finite_differences(complex_):
    pdb_id, receptor, ligand, center, size = complex_
    tree = bio.TorsionTree(ligand)
    pose = tree.random_pose(2, center, size, torch.Generator().manual_seed(2))
    inputs = tuple(t.clone().requires_grad_() for t in pose)
    assert torch.autograd.gradcheck(lambda *p: tree.coordinates(bio.Pose(*p)), inputs)


def test_grid_score_is_close_to_the_explicit_score(complex_):
    pdb_id, receptor, ligand, center, size = complex_
    from bio.docking import GridMaps

    setup = ligand.autodock()
    heavy = [i for i, t in enumerate(setup.xs_types) if t is not None]
    grid = GridMaps([setup.xs_types[i] for i in heavy], receptor, center, size, "cpu", torch.float64)
    x = ligand.conformers_angstrom[0]
    inter = bio.vina_score(ligand, receptor, center=center, size=size, components=True)(x)["inter"]
    assert abs(grid(x[None, heavy])[0].item() - inter.item()) < 1.0   # trilinear error; vina grid vs explicit ~0.5
    outside = x + torch.tensor([size[0], 0.0, 0.0])                      # out-of-box penalty pushes back in
    assert grid(outside[None, heavy])[0].item() > 100.0


def test_redocking_finds_the_crystal_pose(complex_, tmp_path):
    pdb_id, receptor, ligand, center, size = complex_
    result = bio.dock(receptor, ligand, center, size, exhaustiveness=8, num_poses=9, seed=0,
                      num_steps=None if pdb_id == "1s3v" else 15)
    top = result.to_mols()[0]
    assert rmsd(top, ligand) < 2.0, (pdb_id, [rmsd(m, ligand) for m in result.to_mols()],
                                     result.scores["total"].tolist())
    totals = result.scores["total"]
    assert (totals[1:] - totals[:-1] >= -1e-9).all()
    # the top pose's reported score is bio.vina_score's total (exact, explicit atoms)
    exact = bio.vina_score(ligand, receptor, center=center, size=size)(result.coordinates[0])
    assert totals[0].item() == pytest.approx(exact.item(), abs=1e-9)
    path = tmp_path / "poses.sdf"
    result.write_sdf(path)
    back = [m for m in Chem.SDMolSupplier(str(path), removeHs=False)]
    assert len(back) == len(result)
    assert back[0].GetDoubleProp("vina_total") == pytest.approx(totals[0].item(), abs=1e-6)
    pdbqt = tmp_path / "poses.pdbqt"
    result.write_pdbqt(pdbqt)
    assert pdbqt.read_text().count("MODEL") == len(result)


def test_docking_is_deterministic_for_a_seed():
    receptor, ligand, center, size = load_complex("1ia1")
    runs = [bio.dock(receptor, ligand, center, size, exhaustiveness=1, chains_per_unit=8, num_steps=2, seed=3)
            for _ in range(2)]
    torch.testing.assert_close(runs[0].coordinates, runs[1].coordinates, atol=0, rtol=0)
    other = bio.dock(receptor, ligand, center, size, exhaustiveness=1, chains_per_unit=8, num_steps=2, seed=4)
    assert not torch.equal(other.coordinates[:1], runs[0].coordinates[:1])


@pytest.mark.parametrize("kwargs, name", [(dict(box_size=(22, -1, 22)), "box_size"),
                                          (dict(center=(0, 0)), "center"),
                                          (dict(exhaustiveness=0), "exhaustiveness"),
                                          (dict(num_poses=0), "num_poses")])
def test_bad_arguments_are_named(kwargs, name):
    ligand = bio.Ligand.from_smiles("CCO")
    receptor = bio.Receptor(torch.zeros(1, 3), ["C"], [], ["C"], ["CA"], ["ALA A 1"])
    arguments = dict(center=(0, 0, 0), box_size=(10, 10, 10))
    arguments.update(kwargs)
    with pytest.raises(bio.ArgumentError, match=name):
        bio.dock(receptor, ligand, **arguments)
