"""Redocking: bio.dock vs the vina package (1.2.7), side by side in one run, same receptor, box and start.

Complexes 1s3v and 1ia1 from the posebusters package data. The receptor is prepared by bio.Receptor.from_pdb
(1ia1 keeps its NADPH cofactor, chain B, which lines the pocket; bio.Receptor.with_ligand) and written as PDBQT
for vina; both tools start from the same RDKit ETKDG conformer (seed 0) of the crystal ligand's graph, in a
22 Å box centred on the crystal ligand, exhaustiveness 8, 9 poses. Vina uses all cores (cpu=0) and a fixed
nonzero seed; bio runs on --device with torch's threads (--threads). RMSD: heavy atoms, symmetry-aware, no
realignment (RDKit CalcRMS) against the crystal ligand. Wall time: vina's compute_vina_maps + dock; bio.dock
whole (grid maps, search, refinement, scoring). Poses per second: bio's score + gradient evaluations of one
pose per second of bio.dock (vina does not report its count).

    OMP_NUM_THREADS=1 python benchmarks/docking.py [--device cpu|cuda] [--threads N] [--seed 0]
"""

import argparse
import os
import platform
import sys
import time
import warnings

import torch
from rdkit import Chem
from rdkit.Chem import rdMolAlign

import bio
from bio.docking import etkdg_conformer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "bio"))
from test_docking import load_complex  # noqa: E402  (the tests' complex set-up, NADPH included)


def rmsds(ligand, heavy_coords_list):
    """Symmetry-aware heavy-atom RMSDs (Å) of poses (heavy-atom coordinates by RDKit index) to the crystal."""
    reference = Chem.RemoveHs(ligand.mol)
    out = []
    for coords in heavy_coords_list:
        mol = Chem.Mol(ligand.mol)
        conformer = mol.GetConformer()
        for i, xyz in coords.items():
            conformer.SetAtomPosition(i, [float(v) for v in xyz])
        out.append(rdMolAlign.CalcRMS(Chem.RemoveHs(mol), reference))
    return out


def run_vina(receptor_path, ligand, start, center, size, seed):
    from vina import Vina

    setup = ligand.autodock()
    begin = time.perf_counter()
    v = Vina(sf_name="vina", cpu=0, seed=seed + 1, verbosity=0)
    v.set_receptor(receptor_path)
    v.set_ligand_from_string(setup.pdbqt(start))
    v.compute_vina_maps(center=center, box_size=size)
    v.dock(exhaustiveness=8, n_poses=9)
    seconds = time.perf_counter() - begin
    poses = []
    for model in v.poses(n_poses=9).split("ENDMDL")[:-1]:
        atoms = [line for line in model.splitlines() if line.startswith(("ATOM", "HETATM"))]
        poses.append({setup.order[k]: (float(l[30:38]), float(l[38:46]), float(l[46:54]))
                      for k, l in enumerate(atoms)})
    return rmsds(ligand, poses), v.energies(n_poses=9)[:, 0].tolist(), seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch threads "
          f"{torch.get_num_threads()}; device {args.device}")
    print(f"{'complex':8s} {'tool':5s} {'top-1 Å':>8s} {'best top-3 Å':>13s} {'top score':>10s} {'wall s':>8s} "
          f"{'poses/s':>9s}")
    for pdb_id in ("1s3v", "1ia1"):
        receptor, ligand, center, size = load_complex(pdb_id)
        path = f"/tmp/benchmark_docking_{pdb_id}_receptor.pdbqt"
        receptor.write_pdbqt(path)
        start = etkdg_conformer(ligand, args.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vina_rmsd, vina_scores, vina_seconds = run_vina(path, ligand, start, center, size, args.seed)
        result = bio.dock(receptor, ligand, center, size, exhaustiveness=8, num_poses=9, seed=args.seed,
                          device=args.device)
        heavy = [i for i, a in enumerate(ligand.mol.GetAtoms()) if a.GetAtomicNum() > 1]
        bio_rmsd = rmsds(ligand, [{i: result.coordinates[k, i].tolist() for i in heavy} for k in range(len(result))])
        rate = result.evaluations / result.seconds
        print(f"{pdb_id:8s} {'vina':5s} {vina_rmsd[0]:8.2f} {min(vina_rmsd[:3]):13.2f} {vina_scores[0]:10.3f} "
              f"{vina_seconds:8.1f} {'-':>9s}")
        print(f"{pdb_id:8s} {'bio':5s} {bio_rmsd[0]:8.2f} {min(bio_rmsd[:3]):13.2f} "
              f"{float(result.scores['total'][0]):10.3f} {result.seconds:8.1f} {rate:9.0f}")
        print(f"{'':8s} time ratio bio / vina: {result.seconds / vina_seconds:.2f}")


if __name__ == "__main__":
    main()
