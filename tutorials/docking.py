"""Redocking a ligand with AutoDock Vina's score in torch: receptor preparation, the score term by term, batched
docking from an RDKit conformer, and the derivatives Vina cannot give.

The complex is PDB 1s3v (human DHFR with a lipophilic antifolate; bundled from the posebusters set: the protein
with its ligand removed, and the crystal ligand). Steps:

1. prepare the receptor with PDBFixer (hydrogens at pH 7.4), type it with AutoDock's types, write its PDBQT;
2. score the crystal pose term by term (gauss1, gauss2, repulsion, hydrophobic, hydrogen bond; kcal/mol);
3. dock from an RDKit ETKDG conformer (never the crystal pose) with ``bio.dock``: many Monte Carlo chains
   advanced together as one batch, each step a batched BFGS on the score; then the symmetry-aware RMSD of every
   pose to the crystal pose;
4. derivatives: the force on every ligand atom (exact, by autograd) and the derivative of the best pose's search
   energy (inter + intra, what the docking minimizes) w.r.t. Vina's weights at that pose, which is what fitting
   scoring weights to measured affinities starts from.

Run:  .venv/bin/python tutorials/docking.py [--out DIR] [--quick]

--quick docks at exhaustiveness 2 (the tests run it so; too little search to be sure of the crystal pose); the
default uses Vina's exhaustiveness 8. Outputs go to DIR (default ./tutorial_output/docking): receptor.pdbqt,
poses.sdf.
"""

import argparse
from pathlib import Path

import torch

import bio
from bio.vina import TERMS, VINA_WEIGHTS
from diffsci.tour.binding import bundled_complex, rmsds_to_crystal

NAME = Path(__file__).stem


def main(out=None, quick=False, seed=0):
    out = Path(out or Path("tutorial_output") / NAME)
    out.mkdir(parents=True, exist_ok=True)

    # 1. The receptor: PDBFixer adds hydrogens and missing atoms at pH 7.4; heterogens are removed (with a
    # warning). The box: 22 Å on the crystal ligand's centroid.
    receptor, crystal, center, size = bundled_complex()
    receptor.write_pdbqt(out / "receptor.pdbqt")
    print(f"receptor: {len(receptor)} atoms; ligand: {crystal.mol.GetNumAtoms()} atoms, "
          f"{crystal.autodock().num_tors:g} Vina torsions")

    # 2. The crystal pose, term by term (components=True: the unweighted term sums and the totals).
    score = bio.vina_score(crystal, receptor, center=center, size=size, components=True)
    crystal_xyz = crystal.conformers_angstrom[0]
    with torch.no_grad():
        terms = {name: float(value) for name, value in score(crystal_xyz).items()}
    print("crystal pose: " + ", ".join(f"{name} {terms[name]:.3f}" for name in TERMS["vina"])
          + f"; total {terms['total']:.3f} kcal/mol")

    # 3. Dock from an RDKit conformer; rank by Vina's score; RMSD to the crystal pose (symmetry-aware).
    result = bio.dock(receptor, crystal, center, size, exhaustiveness=2 if quick else 8, num_poses=9, seed=seed,
                      progress=True)
    result.write_sdf(out / "poses.sdf")
    rmsds = rmsds_to_crystal(result, crystal)
    print(f"{'mode':>4s} {'affinity':>9s} {'RMSD to crystal':>16s}")
    for k, rmsd in enumerate(rmsds):
        print(f"{k + 1:4d} {float(result.scores['total'][k]):9.3f} {rmsd:16.2f}")

    # 4. Derivatives. Forces on the crystal pose's atoms (exact, by autograd).
    xyz = crystal_xyz.clone().requires_grad_()
    (forces,) = torch.autograd.grad(-score(xyz)["total"], xyz)
    print(f"largest force on a crystal-pose atom: {float(forces.norm(dim=-1).max()):.3f} kcal/mol/Å")
    # d(search energy)/d(weights) at the best docked pose: the partial derivative at fixed pose. At a smooth local
    # minimum it is also the derivative through the optimization (the envelope theorem); Vina's hydrophobic and
    # hydrogen-bond terms are piecewise linear, so the docked optimum often sits on a kink where it is not.
    weights = torch.tensor(VINA_WEIGHTS, dtype=torch.float64, requires_grad=True)
    best = score(result.coordinates[0], weights=weights)
    (d_weights,) = torch.autograd.grad(best["inter"] + best["intra"], weights)
    print("d(best search energy)/d(weight): " + ", ".join(f"{name} {float(g):.3f}" for name, g in
                                                          zip(TERMS["vina"], d_weights)))
    return {"terms": terms, "center": center, "size": size, "rmsd": rmsds,
            "scores": {k: v.tolist() for k, v in result.scores.items()}, "forces": forces,
            "d_weights": d_weights, "best_coordinates": result.coordinates[0],
            "files": {"receptor": out / "receptor.pdbqt", "poses": out / "poses.sdf"}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="output folder (default ./tutorial_output/docking)")
    parser.add_argument("--quick", action="store_true", help="exhaustiveness 2 (seconds)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.out, args.quick, args.seed)
