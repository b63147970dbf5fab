"""Tour stage 5: drug binding. Redock the ligand of PDB 1s3v (bundled, from the posebusters set: the protein with
its ligand removed, and the crystal ligand) from an RDKit conformer with bio.dock, the AutoDock Vina score in
torch: score table, symmetry-aware RMSD to the crystal pose, poses written as SDF. Then what Vina cannot give:
the exact gradient of the score w.r.t. every ligand atom, and a batch of poses scored in one call.
"""

import time
from pathlib import Path

from diffsci.tour.report import Section, markdown_table, text_table

TITLE = "Drug binding: redocking the 1s3v ligand with the AutoDock Vina score in torch"
DATA = Path(__file__).parent / "data"
BOX = 22.0  # Å, edge of the cubic box centred on the crystal ligand (as the Vina measurements in REFERENCES)


def bundled_complex():
    """The bundled 1s3v complex: (receptor prepared with PDBFixer at pH 7.4, crystal ligand, box center (3,) Å at
    the crystal ligand's centroid, box size (3,) Å)."""
    import warnings

    import bio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PDBFixer's notes on the removed heterogens
        receptor = bio.Receptor.from_pdb(DATA / "1s3v_protein.pdb", ph=7.4)
    (crystal,) = bio.Ligand.from_sdf(DATA / "1s3v_ligand.sdf")
    return receptor, crystal, crystal.conformers_angstrom[0].mean(0).tolist(), [BOX] * 3


def rmsds_to_crystal(result, crystal):
    """Heavy-atom RMSD [Å] of every docked pose of ``result`` to the ``crystal`` pose: symmetry-aware, without
    realignment (RDKit's CalcRMS), as redocking success is judged."""
    from rdkit import Chem
    from rdkit.Chem import rdMolAlign

    reference = Chem.RemoveHs(crystal.mol)
    return [rdMolAlign.CalcRMS(Chem.RemoveHs(mol), reference) for mol in result.to_mols()]


def run(ctx):
    import torch

    import bio

    receptor, crystal, center, size = bundled_complex()
    ctx.echo(f"1s3v: receptor {len(receptor)} atoms (PDBFixer, pH 7.4), ligand {crystal.mol.GetNumAtoms()} "
             f"atoms, {crystal.autodock().num_tors:g} torsions; box {BOX:g} Å on the crystal ligand")
    exhaustiveness = 2 if ctx.quick else 8
    result = bio.dock(receptor, crystal, center, size, exhaustiveness=exhaustiveness, num_poses=9, seed=ctx.seed,
                      device=ctx.device, progress=True)
    rmsds = rmsds_to_crystal(result, crystal)
    poses = ctx.out / "binding_poses.sdf"
    result.write_sdf(poses)
    rows = [[k + 1, f"{float(result.scores['total'][k]):.2f}", f"{float(result.scores['inter'][k]):.2f}",
             f"{float(result.scores['intra'][k]):.2f}", f"{rmsds[k]:.2f}"] for k in range(len(result))]
    header = ["rank", "Vina score (kcal/mol)", "inter", "intra", "RMSD to crystal (Å)"]
    ctx.echo(text_table(header, rows))
    ctx.echo(f"docked in {result.seconds:.1f} s (exhaustiveness {exhaustiveness}, {result.evaluations} pose "
             f"evaluations); top pose {rmsds[0]:.2f} Å from the crystal pose; poses written to {poses}")

    # What Vina cannot do: exact gradients of the score, and many poses scored in one batched call.
    score = bio.vina_score(crystal, receptor, center=center, size=size, components=True)
    crystal_xyz = crystal.conformers_angstrom[0].to(ctx.device).clone().requires_grad_()
    crystal_terms = score(crystal_xyz)
    (gradient,) = torch.autograd.grad(crystal_terms["total"], crystal_xyz)
    batch = result.coordinates.to(ctx.device).repeat(64, 1, 1)
    start = time.perf_counter()
    with torch.no_grad():
        batch_scores = score(batch)["total"]
    rate = len(batch) / (time.perf_counter() - start)
    crystal_total = float(crystal_terms['total'].detach())
    ctx.echo(f"crystal pose: Vina score {crystal_total:.2f} kcal/mol; |dE/dx| up to "
             f"{float(gradient.norm(dim=-1).max()):.2f} kcal/mol/Å on its atoms (exact, by autograd); "
             f"{len(batch)} poses scored in one batched call at {rate:.0f} poses/s")
    ctx.echo("AutoDock Vina scores one pose at a time on a grid; diffsci's score is exact, batched and differentiable.")
    markdown = "\n\n".join([
        f"## {TITLE}",
        f"The ligand of 1s3v redocked from an RDKit ETKDG conformer into the receptor prepared with PDBFixer "
        f"(box {BOX:g} Å, exhaustiveness {exhaustiveness}, seed {ctx.seed}) in {result.seconds:.1f} s; poses in "
        f"`{poses.name}`. RMSD: heavy atoms, symmetry-aware, no realignment.",
        markdown_table(header, rows),
        f"The crystal pose scores {crystal_total:.2f} kcal/mol; its exact gradient w.r.t. every "
        f"ligand atom comes from autograd, and {len(batch)} poses are scored in one batched call "
        f"({rate:.0f} poses/s) — Vina scores one pose at a time on a grid approximation.",
    ])
    results = {"rmsd": rmsds, "scores": {k: v.tolist() for k, v in result.scores.items()},
               "crystal_total": crystal_total, "crystal_gradient": gradient.cpu(),
               "batch_scores": batch_scores.cpu(), "poses": poses, "center": center, "size": size, "built": True}
    return Section(markdown, [], results)
