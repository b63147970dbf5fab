"""bio.vina_score against the vina package's explicit-atom score(), receptor preparation and PDBQT, bad input.

vina's Vina.score() evaluates the ligand-receptor terms on explicit receptor atoms (its non_cache, not the grid
maps; the maps are only required to exist), so totals and, with one-hot weights, single terms compare directly.
"""

import importlib.util
import math
import os
import warnings

import numpy as np
import pytest
import torch

import bio

COMPLEXES = ("1s3v", "1ia1")
TERMS = ("gauss1", "gauss2", "repulsion", "hydrophobic", "hydrogen")
TOLERANCE = 0.01  # kcal/mol


def posebusters_path(pdb_id, name):
    spec = importlib.util.find_spec("posebusters")
    if spec is None:
        pytest.skip("posebusters (a test dependency) is not installed")
    package, = spec.submodule_search_locations
    return os.path.join(package, "datasets", "pdb", pdb_id, f"{pdb_id}_{name}")


@pytest.fixture(scope="module", params=COMPLEXES)
def complex_(request, tmp_path_factory):
    pdb_id = request.param
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        receptor = bio.Receptor.from_pdb(posebusters_path(pdb_id, "protein_one_lig_removed.pdb"), ph=7.4)
    ligand, = bio.Ligand.from_sdf(posebusters_path(pdb_id, "ligand.sdf"))
    path = str(tmp_path_factory.mktemp(pdb_id) / "receptor.pdbqt")
    receptor.write_pdbqt(path)
    center = ligand.conformers_angstrom[0].mean(0).tolist()
    return pdb_id, receptor, ligand, path, center, [24.0, 24.0, 24.0]


def vina_reference(ligand, path, center, size, coords, weights=None):
    """vina's score() columns [total, lig_inter, ..., lig_intra (5), ...] for the ligand at coords (Å)."""
    vina = pytest.importorskip("vina")
    v = vina.Vina(sf_name="vina", cpu=1, seed=1, verbosity=0)
    if weights is not None:
        v.set_weights(weights)
    v.set_receptor(path)
    v.set_ligand_from_string(ligand.autodock().pdbqt(coords))
    v.compute_vina_maps(center=center, box_size=size, spacing=1.0)
    return v.score()


def rotate_branch(ligand, coords, branch, angle):
    """Turn the child side of a rotatable bond (a branch of Meeko's torsion tree) by `angle` radians."""
    setup = ligand.autodock()
    a, b = branch[0], branch[1]
    neighbors = {i: set() for i in range(len(ligand))}
    for i, j in setup.bonds:
        neighbors[i].add(j)
        neighbors[j].add(i)
    side, stack = {b}, [b]
    while stack:
        for j in neighbors[stack.pop()] - {a}:
            if j not in side:
                side.add(j)
                stack.append(j)
    axis = (coords[b] - coords[a]) / (coords[b] - coords[a]).norm()
    k = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], dtype=coords.dtype)
    rotation = torch.eye(3, dtype=coords.dtype) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k
    out = coords.clone()
    index = sorted(side)
    out[index] = (coords[index] - coords[b]) @ rotation.T + coords[b]
    return out


def poses(ligand):
    """Crystal pose, translated, rotated about the centroid, and with two torsions turned; rounded to the
    PDBQT's 0.001 Å so both codes see the same coordinates."""
    x = ligand.conformers_angstrom[0]
    c = x.mean(0)
    theta = 0.3
    rz = torch.tensor([[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1]],
                      dtype=x.dtype)
    branches = ligand.autodock().branches
    twisted = rotate_branch(ligand, x, branches[0], 0.6)
    twisted = rotate_branch(ligand, twisted, branches[-1], -0.8)
    out = {"crystal": x, "translated": x + torch.tensor([0.4, -0.3, 0.25], dtype=x.dtype),
           "rotated": (x - c) @ rz.T + c, "torsions": twisted}
    return {name: torch.round(p * 1000) / 1000 for name, p in out.items()}


def test_total_inter_and_intra_match_vina(complex_):
    pdb_id, receptor, ligand, path, center, size = complex_
    score = bio.vina_score(ligand, receptor, center=center, size=size, components=True)
    named = poses(ligand)
    batch = score(torch.stack(list(named.values())))
    for k, (name, x) in enumerate(named.items()):
        reference = vina_reference(ligand, path, center, size, x)
        for key, column in (("total", 0), ("inter", 1), ("intra", 5)):
            assert abs(batch[key][k].item() - reference[column]) < TOLERANCE, (pdb_id, name, key)


@pytest.mark.parametrize("term", range(5), ids=TERMS)
def test_each_term_matches_vina_with_one_hot_weights(complex_, term):
    pdb_id, receptor, ligand, path, center, size = complex_
    weights = torch.zeros(6, dtype=torch.float64)
    weights[term] = 1.0
    x = poses(ligand)["torsions"]
    ours = bio.vina_score(ligand, receptor, center=center, size=size, components=True)(x, weights=weights)
    vina_weights = [0.0] * 5 + [50.0, 0.0]
    vina_weights[term] = 1.0
    reference = vina_reference(ligand, path, center, size, x, vina_weights)
    # One-hot weights scale a term up to 1/|w| (up to 200x for gauss2); compare at Vina's weight.
    scale = abs(bio.vina.VINA_WEIGHTS[term])
    assert abs(ours["inter"].item() - reference[1]) * scale < TOLERANCE
    assert abs(ours["intra"].item() - reference[5]) * scale < TOLERANCE
    assert ours["total"].item() == pytest.approx(ours["inter"].item())  # rotatable weight 0


def test_torsion_count_and_pdbqt_match_vina(complex_):
    pdb_id, receptor, ligand, path, center, size = complex_
    setup = ligand.autodock()
    text = ligand.to_pdbqt()
    assert text.count("BRANCH") // 2 == len(setup.branches)
    assert sum(t is not None for t in setup.xs_types) == sum(
        1 for a in bio.read_pdbqt(text) if a.ad_type not in ("H", "HD"))
    x = ligand.conformers_angstrom[0]
    reference = vina_reference(ligand, path, center, size, x)
    inter = reference[1]
    assert reference[0] == pytest.approx(inter / (1 + 0.05846 * setup.num_tors), abs=2e-3)


def test_gradients_match_finite_differences(complex_):
    pdb_id, receptor, ligand, path, center, size = complex_
    score = bio.vina_score(ligand, receptor, center=center, size=size)
    x = poses(ligand)["translated"].clone().requires_grad_()
    weights = torch.tensor(bio.vina.VINA_WEIGHTS, dtype=torch.float64, requires_grad=True)
    receptor_coords = receptor.positions_angstrom.clone()
    index = score.receptor_index[:40]
    moved = receptor_coords[index].clone().requires_grad_()

    def f(x, moved, weights):
        r = receptor_coords.index_put((index,), moved)
        return score(x, receptor_coords=r, weights=weights)

    assert torch.autograd.gradcheck(f, (x, moved, weights), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_batched_score_equals_single_and_follows_dtype(complex_):
    pdb_id, receptor, ligand, path, center, size = complex_
    x = torch.stack(list(poses(ligand).values()))
    score = bio.vina_score(ligand, receptor, center=center, size=size)
    batch = score(x)
    assert batch.shape == (4,)
    torch.testing.assert_close(torch.stack([score(p) for p in x]), batch)
    single = bio.vina_score(ligand, receptor, center=center, size=size, dtype=torch.float32)(x.float())
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), batch, atol=2e-3, rtol=0)


def test_vinardo_is_available(complex_):
    pdb_id, receptor, ligand, path, center, size = complex_
    if pdb_id != "1s3v":
        pytest.skip("one complex is enough")
    x = ligand.conformers_angstrom[0]
    x = torch.round(x * 1000) / 1000
    vina = pytest.importorskip("vina")
    v = vina.Vina(sf_name="vinardo", cpu=1, seed=1, verbosity=0)
    v.set_receptor(path)
    v.set_ligand_from_string(ligand.autodock().pdbqt(x))
    v.compute_vina_maps(center=center, box_size=size, spacing=1.0)
    reference = v.score()
    ours = bio.vina_score(ligand, receptor, center=center, size=size, scoring="vinardo", components=True)(x)
    assert abs(ours["total"].item() - reference[0]) < TOLERANCE
    assert abs(ours["intra"].item() - reference[5]) < TOLERANCE


def test_receptor_typing_and_pdbqt_round_trip(complex_):
    pdb_id, receptor, ligand, path, center, size = complex_
    assert "HD" in receptor.ad_types and "OA" in receptor.ad_types and "A" in receptor.ad_types
    assert all(t is None for t, e in zip(receptor.xs_types, receptor.elements) if e == "H")
    back = bio.Receptor.from_pdbqt(path)
    assert back.ad_types == [t for t in receptor.ad_types if t != "H"]
    heavy = [t for t in receptor.xs_types if t is not None]
    assert [t for t in back.xs_types if t is not None] == heavy   # Vina's distance bonds give the same types
    pocket = receptor.pocket(ligand=ligand, margin=6.0)
    assert 0 < len(pocket) < len(receptor)
    boxed = receptor.pocket(center=center, size=size, margin=0.0)
    assert 0 < len(boxed) < len(receptor)


def test_ligand_element_vina_cannot_type():
    ligand = bio.Ligand.from_smiles("OB(O)c1ccccc1", name="phenylboronic acid")
    with pytest.raises(bio.LigandError, match=r"atom 1 \(B\).*'B'.*Vina cannot type"):
        ligand.autodock()


def test_box_without_receptor_atoms(complex_):
    pdb_id, receptor, ligand, path, center, size = complex_
    with pytest.raises(bio.StructureError, match="no receptor heavy atom"):
        bio.vina_score(ligand, receptor, center=(500.0, 500.0, 500.0), size=(10.0, 10.0, 10.0))
    with pytest.raises(bio.StructureError, match="no receptor heavy atom"):
        receptor.pocket(center=(500.0, 500.0, 500.0), size=(10.0, 10.0, 10.0), margin=1.0)


def test_missing_residue_is_named(tmp_path):
    source = posebusters_path("1s3v", "protein_one_lig_removed.pdb")
    residues, lines = [], []
    with open(source) as handle:
        for line in handle:
            if line.startswith("ATOM") and line[21] == "A":
                key = (line[17:20], int(line[22:26]))
                if key not in residues:
                    residues.append(key)
                if len(residues) > 8:
                    break
                if len(residues) != 5:  # drop the fifth residue
                    lines.append(line)
    names = " ".join(name for name, _ in residues[:8])
    seqres = f"SEQRES   1 A    8  {names}\n"
    path = tmp_path / "gap.pdb"
    path.write_text(seqres + "".join(lines) + "END\n")
    gone = residues[4]
    with pytest.raises(bio.StructureError, match=rf"chain A: 1 residue\(s\) {gone[0]} missing between .* "
                                                 r"it cannot repair distorted geometry"):
        bio.Receptor.from_pdb(path)
    built = bio.Receptor.from_pdb(path, missing_residues="build")
    assert sum(1 for r in built.topology.residues()) == 8
    with pytest.raises(bio.ArgumentError, match="missing_residues"):
        bio.Receptor.from_pdb(path, missing_residues="maybe")
