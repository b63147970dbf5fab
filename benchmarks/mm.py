"""Molecular-mechanics energy + forces: bio vs OpenMM (CPU and Reference platforms), side by side in one run.

Cases (OpenMM's bundled app/data/test.pdb, villin headpiece in TIP3P water):
  obc2     villin protein only, amber14 + implicit/obc2.xml, no cutoff (582 atoms)
  pme      villin in water, amber14 + TIP3P, PME with a 1 nm cutoff (8,867 atoms)
  batch    32 conformations of the obc2 case (0.01 nm Gaussian perturbations): bio in one batched call vs
           OpenMM evaluating them one at a time

Prints ms per energy+forces evaluation (the best of the repeats) and ratios (bio / OpenMM; for the batch,
throughput bio / OpenMM CPU). Evaluations are timed in the steady state of a simulation: the neighbour list is
built by a warm-up call and stays valid (as a Verlet list does between rebuilds); a rebuild is timed and
reported separately, with the first evaluation after it (which also lays out the pairs of NonbondedForce in
rows).

    python benchmarks/mm.py [--quick] [--device cpu|cuda] [--dtype float64|float32] [--threads N]
"""

import argparse
import platform
import time

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import torch

import bio

BATCH = 32


def villin(water):
    pdb = app.PDBFile(str(app.__file__).replace("__init__.py", "data/test.pdb"))
    if water:
        forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
        system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.PME, nonbondedCutoff=1.0 * unit.nanometer)
        return system, pdb.topology, pdb.positions
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.deleteWater()
    modeller.delete([residue for residue in modeller.topology.residues() if len(residue) == 1])  # Cl- ions
    system = app.ForceField("amber14-all.xml", "implicit/obc2.xml").createSystem(modeller.topology)
    return system, modeller.topology, modeller.positions


def seconds(function, repeats):
    """The best wall time of `repeats` calls after a warm-up call (which builds neighbour lists and caches)."""
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def rebuild_seconds(system, positions, evaluate):
    """Wall times to build the neighbour lists of every term from scratch, as a rebuild in MD does, and of the
    first evaluation after it."""
    lists = [term.pairs for term in system.terms.values() if hasattr(term, "pairs")]
    for pairs in lists:
        pairs.pairs = None
    start = time.perf_counter()
    for pairs in lists:
        pairs(positions, system.box_vectors)
    if positions.is_cuda:
        torch.cuda.synchronize()
    built = time.perf_counter()
    evaluate()
    return built - start, time.perf_counter() - built


def openmm_evaluator(system, positions, platform_name, threads):
    properties = {"Threads": str(threads)} if platform_name == "CPU" else {}
    context = openmm.Context(system, openmm.VerletIntegrator(1.0), openmm.Platform.getPlatformByName(platform_name),
                             properties)

    def evaluate(x=positions):
        context.setPositions(x)
        context.getState(getEnergy=True, getForces=True)

    return evaluate


def bio_evaluator(system, positions):
    def evaluate(x=positions):
        x = x.detach().requires_grad_(True)
        energy = system.energy(x)
        (gradient,) = torch.autograd.grad(energy.sum(), x)
        if gradient.is_cuda:
            torch.cuda.synchronize()
        return energy, -gradient

    return evaluate


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats; Reference platform timed once")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="threads for torch and OpenMM's CPU platform")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 10
    dtype = getattr(torch, args.dtype)
    print(f"machine: {platform.processor() or platform.machine()}, {args.threads} threads; torch {torch.__version__}, "
          f"OpenMM {openmm.__version__}; bio on {args.device} {args.dtype}")
    print(f"{'case':8s} {'atoms':>6s} {'bio ms':>9s} {'OpenMM CPU ms':>14s} {'Reference ms':>13s} "
          f"{'bio/CPU':>8s} {'bio/Ref':>8s}")
    for case in ("obc2", "pme"):
        system, topology, positions = villin(water=case == "pme")
        ours = bio.System.from_openmm(system, topology, positions, device=args.device, dtype=dtype)
        x = ours.positions
        evaluate = bio_evaluator(ours, x)
        ms_bio = 1e3 * seconds(evaluate, repeats)
        ms_cpu = 1e3 * seconds(openmm_evaluator(system, positions, "CPU", args.threads), repeats)
        ms_ref = 1e3 * seconds(openmm_evaluator(system, positions, "Reference", 1), 1 if args.quick else 3)
        ms_build, ms_first = (1e3 * t for t in rebuild_seconds(ours, x, evaluate))
        print(f"{case:8s} {ours.n_atoms:6d} {ms_bio:9.1f} {ms_cpu:14.1f} {ms_ref:13.1f} {ms_bio / ms_cpu:8.2f} "
              f"{ms_bio / ms_ref:8.3f}   (bio neighbour-list rebuild {ms_build:.0f} ms and first evaluation after "
              f"it {ms_first:.0f} ms, not included)")
    system, topology, positions = villin(water=False)
    ours = bio.System.from_openmm(system, topology, positions, device=args.device, dtype=dtype)
    generator = torch.Generator().manual_seed(0)
    batch = ours.positions.cpu() + 0.01 * torch.randn(BATCH, ours.n_atoms, 3, generator=generator,
                                                      dtype=torch.float64).to(dtype)
    batch_numpy = batch.double().numpy()
    batch = batch.to(args.device)
    ms_bio = 1e3 * seconds(bio_evaluator(ours, batch), max(1, repeats // 3))
    evaluate = openmm_evaluator(system, positions, "CPU", args.threads)
    ms_cpu = 1e3 * seconds(lambda: [evaluate(x) for x in batch_numpy], max(1, repeats // 3))
    print(f"batch    B={BATCH}: bio {ms_bio / BATCH:.2f} ms/conformation ({ms_bio:.0f} ms per batched call), "
          f"OpenMM CPU {ms_cpu / BATCH:.2f} ms/conformation one at a time; throughput bio/OpenMM CPU "
          f"{ms_cpu / ms_bio:.2f}x")
    energies = bio_evaluator(ours, batch)()[0].detach().cpu().double().numpy()
    assert np.all(np.isfinite(energies))


if __name__ == "__main__":
    main()
