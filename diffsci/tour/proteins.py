"""Tour stage 4: villin headpiece in implicit solvent (amber14 + OBC2) — energy components next to OpenMM's,
a minimization, a short Langevin run, and what only a differentiable force field gives: a batch of
conformations in one call and the gradient of the energy w.r.t. the partial charges."""

import numpy as np

from diffsci.tour import plots
from diffsci.tour.report import Section, markdown_table, text_table

TITLE = "Proteins: villin headpiece (amber14 + OBC2) next to OpenMM"


def villin():
    """Villin headpiece from OpenMM's bundled test.pdb, water and ions removed: (topology, positions), 582 atoms."""
    import os

    import openmm.app as app

    pdb = app.PDBFile(os.path.join(os.path.dirname(app.__file__), "data", "test.pdb"))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.deleteWater()
    modeller.delete([residue for residue in modeller.topology.residues() if len(residue) == 1])  # Cl- ions
    return modeller.topology, modeller.positions


def run(ctx):
    import openmm.app as app
    import torch

    import bio

    topology, positions = villin()
    forcefield = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
    openmm_system = forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    system = bio.System.from_openmm(openmm_system, topology, positions, device=ctx.device)
    x0 = system.positions
    ours = {name: float(value) for name, value in system.energy_components(x0).items()}
    reference = bio.openmm_energy_components(openmm_system, positions)
    rows = [[name, f"{ours[name]:.4f}", f"{reference[name]:.4f}", f"{abs(ours[name] - reference[name]):.1e}"]
            for name in reference if name in ours]
    total, total_ref = sum(ours.values()), sum(reference.values())
    rows.append(["total", f"{total:.4f}", f"{total_ref:.4f}", f"{abs(total - total_ref):.1e}"])
    header = ["force (kJ/mol)", "diffsci", "OpenMM (Reference)", "|difference|"]
    ctx.echo(f"villin headpiece: {system.n_atoms} atoms")
    ctx.echo(text_table(header, rows))

    # what a differentiable force field adds: many conformations in one call, gradients w.r.t. parameters
    generator = torch.Generator(device="cpu").manual_seed(ctx.seed)
    batch = x0 + 0.002 * torch.randn((16, *x0.shape), generator=generator, dtype=x0.dtype).to(ctx.device)
    batch_energies = system.energy(batch)
    charges = system.parameters["NonbondedForce"]["charge"]
    charges.requires_grad_()
    (d_charge,) = torch.autograd.grad(system.energy(x0), charges)
    charges.requires_grad_(False)
    ctx.echo(f"16 perturbed conformations in one call: energies {float(batch_energies.min()):.1f} .. "
             f"{float(batch_energies.max()):.1f} kJ/mol; dE/dq by autograd, largest "
             f"|dE/dq| = {float(d_charge.abs().max()):.1f} kJ/mol/e (OpenMM has no gradient w.r.t. parameters)")

    max_steps = 50 if ctx.quick else 0  # per constraint-stiffening round
    result = bio.minimize(system, x0, tolerance=10.0, max_steps=max_steps, progress=True)
    history = result.optimize_result.history["fun"].cpu().numpy()
    ctx.echo(f"minimization (L-BFGS, OpenMM's criterion RMS gradient <= 10 kJ/mol/nm): "
             f"{float(result.initial_energy):.1f} -> {float(result.energy):.1f} kJ/mol in {result.n_steps} steps "
             f"({'converged' if result.converged else 'step limit of the quick run'})")
    minimization = plots.curves({"potential energy": (range(len(history)), history)},
                                ctx.plot_path("proteins_minimization.png"), "L-BFGS step", "kJ/mol",
                                "villin: minimization")

    steps, interval = (200, 10) if ctx.quick else (5000, 50)
    csv = ctx.out / "proteins_md.csv"
    sim = bio.Simulation(system, bio.LangevinMiddleIntegrator(300.0, 1.0, 0.002), result.positions, seed=ctx.seed)
    sim.set_velocities_to_temperature(300.0)
    with bio.StateDataReporter(csv, interval, step=True, potential_energy=True, temperature=True) as reporter:
        sim.reporters.append(reporter)
        sim.step(steps, progress=True)
    data = np.loadtxt(csv, delimiter=",", comments="#", ndmin=2)
    time_ps = data[:, 0] * 0.002
    dynamics = plots.panels({"potential (kJ/mol)": (time_ps, data[:, 1]), "temperature (K)": (time_ps, data[:, 2])},
                            ctx.plot_path("proteins_md.png"), "time (ps)", "villin: Langevin dynamics, 300 K, 2 fs")
    ctx.echo(f"Langevin dynamics, 2 fs steps with h-bond constraints: {steps} steps, mean temperature "
             f"{data[len(data) // 2:, 2].mean():.0f} K over the second half")

    markdown = "\n\n".join([
        f"## {TITLE}",
        "OpenMM parameterizes the protein (amber14 + OBC2, h-bond constraints); diffsci's torch terms give the same "
        "energy per force, next to OpenMM's Reference platform computed in the run:",
        markdown_table(header, rows),
        f"16 perturbed conformations were scored in one batched call, and dE/dq for all {charges.numel()} partial "
        f"charges came from one backward pass.",
        f"Minimization: {float(result.initial_energy):.1f} → {float(result.energy):.1f} kJ/mol in {result.n_steps} "
        f"L-BFGS steps. Langevin dynamics: {steps} steps of 2 fs at 300 K.",
        f"![minimization]({minimization}) ![dynamics]({dynamics})",
    ])
    results = {"energies": ours, "openmm_energies": reference, "batch_energies": batch_energies.cpu().tolist(),
               "initial_energy": float(result.initial_energy), "minimized_energy": float(result.energy),
               "min_steps": result.n_steps, "md_temperatures": data[:, 2].tolist(), "md_steps": steps,
               "minimized_positions": result.positions.detach().cpu().numpy()}
    return Section(markdown, [minimization, dynamics], results)
