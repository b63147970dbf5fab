"""A protein in implicit solvent: energies next to OpenMM's, energy minimization, and Langevin dynamics with
reporters, a checkpoint and a resumed run.

The villin headpiece from OpenMM's bundled test.pdb (its water and ions removed with OpenMM's Modeller, 582
atoms) is parameterized by OpenMM's ForceField (amber14 + OBC2 implicit solvent, bonds to hydrogen
constrained) and turned into torch energy terms by ``bio.System.from_pdb``. ``bio`` mirrors OpenMM's
``app`` layer: ``bio.minimize`` is its LocalEnergyMinimizer, ``bio.Simulation`` with
``bio.LangevinMiddleIntegrator`` its Simulation, and the reporters write OpenMM's CSV and DCD formats. The
dynamics are interrupted half way, resumed from the checkpoint in a fresh Simulation, and compared with the run
that was not interrupted. OpenMM's units: nm, ps, kJ/mol, K.

Run:  .venv/bin/python tutorials/protein_minimize_md.py [--out DIR] [--quick]

--quick runs 40 steps of dynamics instead of 500, without progress bars (the tests run it so). Outputs go
to DIR (default ./tutorial_output/protein_minimize_md): villin.pdb (the solvent-free input), minimized.pdb, md.csv,
trajectory.dcd, checkpoint.pt and md.png.
"""

import argparse
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import openmm.app as app  # noqa: E402
import openmm.unit as unit  # noqa: E402

import bio  # noqa: E402

NAME = Path(__file__).stem
TEST_PDB = os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")  # villin in a water box
FORCEFIELD = ("amber14-all.xml", "implicit/obc2.xml")
TEMPERATURE, FRICTION, STEP_SIZE = 300.0, 1.0, 0.002  # K, 1/ps, ps


def print_components(system, positions, label):
    """A table of bio's energy components beside OpenMM's at ``positions`` (nm)."""
    ours = {name: float(value) for name, value in system.energy_components(positions).items()}
    reference = bio.openmm_energy_components(system.openmm_system, positions)
    print(f"{label + ':':<25}{'bio':>14} {'OpenMM':>14} {'difference':>11}  (kJ/mol)")
    for name in ours:
        print(f"  {name:>22} {ours[name]:14.4f} {reference[name]:14.4f} {ours[name] - reference[name]:11.1e}")
    print(f"  {'total':>22} {sum(ours.values()):14.4f} {sum(reference.values()):14.4f}")


def reporters(csv, dcd, interval, append=False):
    """OpenMM-format reporters: CSV state data (to a path or an open file) and a DCD trajectory."""
    return [bio.StateDataReporter(csv, interval, step=True, time=True, potential_energy=True,
                                  kinetic_energy=True, total_energy=True, temperature=True, append=append),
            bio.DCDReporter(dcd, interval, append=append)]


def close(simulation):
    for reporter in simulation.reporters:
        reporter.close()
    simulation.reporters.clear()


def plot_md(path, csv):
    rows = np.array([[float(v) for v in line.split(",")] for line in csv.read_text().splitlines()
                     if not line.startswith("#")])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    left.plot(rows[:, 1], rows[:, 2])
    left.set_xlabel("time (ps)")
    left.set_ylabel("potential energy (kJ/mol)")
    right.plot(rows[:, 1], rows[:, 5])
    right.axhline(TEMPERATURE, color="k", ls="--")
    right.set_xlabel("time (ps)")
    right.set_ylabel("temperature (K)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(out=f"tutorial_output/{NAME}", quick=False, seed=1):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    num_steps, interval = (40, 10) if quick else (500, 25)

    # Remove the water and the chloride ions with OpenMM's Modeller: the implicit solvent replaces them.
    pdb = app.PDBFile(TEST_PDB)
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.deleteWater()
    modeller.delete([residue for residue in modeller.topology.residues() if len(residue) == 1])
    structure = out / "villin.pdb"
    with open(structure, "w") as handle:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, handle)
    # constraints="hbonds" is recorded in the OpenMM System: energies are unaffected, dynamics (2 fs steps) need it.
    system = bio.System.from_pdb(structure, forcefield=FORCEFIELD, constraints="hbonds")
    print(f"{system.n_atoms} atoms, terms {list(system.terms)}")
    print_components(system, system.positions, "input structure")

    # Minimization: L-BFGS until the RMS of the gradient is at most 10 kJ/mol/nm (OpenMM's default criterion).
    start = time.perf_counter()
    minimized = bio.minimize(system, system.positions, tolerance=10.0)
    print(f"minimization: {minimized.message} ({time.perf_counter() - start:.1f} s); energy "
          f"{float(minimized.initial_energy):.1f} -> {float(minimized.energy):.1f} kJ/mol")
    with open(out / "minimized.pdb", "w") as handle:
        app.PDBFile.writeFile(system.topology, minimized.positions.numpy() * unit.nanometer, handle)
    print_components(system, minimized.positions, "minimized")

    # Dynamics: Maxwell-Boltzmann velocities, then Langevin steps with reporters every `interval` steps and a
    # checkpoint half way.
    half = num_steps // 2
    simulation = bio.Simulation(system, bio.LangevinMiddleIntegrator(TEMPERATURE, FRICTION, STEP_SIZE),
                                minimized.positions, seed=seed)
    simulation.set_velocities_to_temperature(TEMPERATURE)
    initial_temperature = float(simulation.temperature())
    print(f"dynamics: {num_steps} steps of {STEP_SIZE} ps; initial temperature {initial_temperature:.1f} K "
          f"({simulation.degrees_of_freedom} degrees of freedom)")
    simulation.reporters.extend(reporters(out / "md.csv", out / "trajectory.dcd", interval))
    simulation.reporters.append(bio.CheckpointReporter(out / "checkpoint.pt", half))
    start = time.perf_counter()
    simulation.step(half, progress=not quick)
    close(simulation)  # the job "stops" here, after writing the checkpoint at step `half`
    # The uninterrupted run, for comparison: the same simulation carries on (no reporters).
    simulation.step(num_steps - half, progress=not quick)

    # Resume in a fresh Simulation, as a restarted job would: same system and integrator settings, state from
    # the checkpoint (positions, velocities, step, time and the random stream), reporters appending.
    resumed = bio.Simulation(system, bio.LangevinMiddleIntegrator(TEMPERATURE, FRICTION, STEP_SIZE))
    resumed.load_checkpoint(out / "checkpoint.pt")
    print(f"resumed from the checkpoint at step {resumed.current_step} ({resumed.time:.3f} ps)")
    resumed.reporters.extend(reporters(out / "md.csv", out / "trajectory.dcd", interval, append=True))
    resumed.step(num_steps - resumed.current_step, progress=not quick)
    close(resumed)
    seconds = time.perf_counter() - start
    difference = float((resumed.positions - simulation.positions).abs().max())
    print(f"{1.5 * num_steps:.0f} steps in {seconds:.1f} s; resumed vs uninterrupted run: largest position "
          f"difference {difference:.1e} nm; final temperature {float(resumed.temperature()):.1f} K")
    print_components(system, resumed.positions, f"after {num_steps} steps")

    files = {name: out / name for name in ("villin.pdb", "minimized.pdb", "md.csv", "trajectory.dcd",
                                            "checkpoint.pt", "md.png")}
    plot_md(files["md.png"], files["md.csv"])
    print(f"outputs in {out}: {', '.join(files)}")
    return {"system": system, "minimization": minimized, "initial_temperature": initial_temperature,
            "degrees_of_freedom": simulation.degrees_of_freedom, "num_steps": num_steps, "report_interval": interval,
            "final_positions": resumed.positions, "uninterrupted_positions": simulation.positions, "files": files}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=f"tutorial_output/{NAME}", help="folder for the outputs")
    parser.add_argument("--quick", action="store_true", help="a reduced run (as the tests run it)")
    main(**vars(parser.parse_args()))
