"""Tour stage 5: drug binding. Redocking a bundled ligand with the differentiable Vina score arrives with the
ligand/Vina-score and docking work; until then this stage says so and does nothing else."""

from diffsci.tour.report import Section

TITLE = "Drug binding: redocking a ligand (not built yet)"
MESSAGE = ("Not built yet: ligands (RDKit, MMFF94 in torch), the differentiable AutoDock Vina score and batched "
           "docking are the next pieces of bio. This stage will redock a bundled ligand, print the score table "
           "and the RMSD to the crystal pose, and write the poses as SDF.")


def run(ctx):
    ctx.echo(MESSAGE)
    return Section(f"## {TITLE}\n\n{MESSAGE}", [], {"built": False})
