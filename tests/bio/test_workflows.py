"""bio workflows against OpenMM, computed in the test: minimization (LocalEnergyMinimizer), Verlet and
LangevinMiddle trajectories (Reference platform), SETTLE/SHAKE constraints, NVE energy conservation, the
Langevin temperature, reporters (OpenMM's StateDataReporter output, PDB and DCD files read back) and
checkpoint/resume."""

import io
import struct

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch

import bio

REFERENCE = openmm.Platform.getPlatformByName("Reference")


@pytest.fixture(scope="module")
def amber14():
    return app.ForceField("amber14-all.xml")


@pytest.fixture(scope="module")
def dipeptide_systems(dipeptide, amber14):
    """Alanine dipeptide in vacuum (amber14): openmm.System without and with constraints on bonds to H."""
    topology, _ = dipeptide
    return {name: amber14.createSystem(topology, constraints=constraints)
            for name, constraints in (("none", None), ("hbonds", app.HBonds))}


@pytest.fixture(scope="module")
def water_cluster():
    """32 rigid TIP3P waters in vacuum (no cutoff): (openmm.System, topology, positions)."""
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(forcefield, boxSize=openmm.Vec3(1.0, 1.0, 1.0) * unit.nanometer)
    topology = modeller.topology
    topology.setPeriodicBoxVectors(None)
    return forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff), topology, modeller.positions


def _system(openmm_system, dipeptide, device=None):
    topology, positions = dipeptide
    return bio.System.from_openmm(openmm_system, topology, positions, device=device)


def _openmm_run(openmm_system, integrator, positions, velocities, steps):
    context = openmm.Context(openmm_system, integrator, REFERENCE)
    context.setPositions(np.asarray(positions))
    context.setVelocities(np.asarray(velocities))
    integrator.step(steps)
    return context.getState(getPositions=True, getVelocities=True, getEnergy=True)


def _thermal_start(system, seed=0, temperature=300.0):
    """(positions, velocities) as numpy arrays: the system's positions and Maxwell-Boltzmann velocities."""
    simulation = bio.Simulation(system, bio.VerletIntegrator(0.001), seed=seed)
    simulation.set_velocities_to_temperature(temperature)
    return simulation.positions.cpu().numpy(), simulation.velocities.cpu().numpy()


# ---- minimization ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("constraints", [None, app.HBonds], ids=["free", "hbonds"])
def test_minimize_reaches_openmm_local_energy_minimizer(dipeptide, constraints):
    topology, positions = dipeptide
    openmm_system = app.ForceField("amber14-all.xml", "implicit/obc2.xml").createSystem(topology,
                                                                                       constraints=constraints)
    system = bio.System.from_openmm(openmm_system, topology, positions)
    result = bio.minimize(system, tolerance=1.0)
    context = openmm.Context(openmm_system, openmm.VerletIntegrator(0.001), REFERENCE)
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 0)
    reference = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert result.converged and result.rms_gradient <= 1.0
    assert result.energy.item() < result.initial_energy.item() - 30.0
    assert abs(result.energy.item() - reference) <= 0.005 * abs(reference)
    # the reported energy is the OpenMM energy of the returned positions, with constraints met to tolerance
    context.setPositions(result.positions.numpy())
    at_ours = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert abs(at_ours - result.energy.item()) < 1e-6 * abs(at_ours)
    assert bio.Constraints.from_system(system).max_error(result.positions) <= 1e-5


def test_minimize_with_positional_restraints_matches_openmm(dipeptide, dipeptide_systems):
    topology, positions = dipeptide
    heavy = [atom.index for atom in topology.atoms() if atom.element.symbol != "H"]
    k = 1e5
    system = _system(dipeptide_systems["none"], dipeptide)
    restraints = bio.positional_restraints(heavy, system.positions, k)
    result = bio.minimize(system, restraints=restraints, tolerance=1.0)

    restrained = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(dipeptide_systems["none"]))
    force = openmm.CustomExternalForce("0.5*k*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
    force.addGlobalParameter("k", k)
    for name in ("x0", "y0", "z0"):
        force.addPerParticleParameter(name)
    start = system.positions.numpy()
    for atom in heavy:
        force.addParticle(atom, start[atom].tolist())
    restrained.addForce(force)
    context = openmm.Context(restrained, openmm.VerletIntegrator(0.001), REFERENCE)
    context.setPositions(start)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 0)
    reference = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    ours = result.energy.item() + restraints(result.positions).item()
    assert abs(ours - reference) <= 0.005 * abs(reference)
    moved = (result.positions - system.positions).norm(dim=-1)[heavy].max()
    free = (bio.minimize(system, tolerance=1.0).positions - system.positions).norm(dim=-1)[heavy].max()
    assert moved < free / 3


def test_minimize_reports_unconverged_and_rejects_bad_input(dipeptide, dipeptide_systems):
    system = _system(dipeptide_systems["none"], dipeptide)
    result = bio.minimize(system, tolerance=1e-3, max_steps=3)
    assert not result.converged and result.n_steps == 3 and "not converged" in result.message
    with pytest.raises(ValueError, match="shape"):
        bio.minimize(system, torch.zeros(5, 3, dtype=torch.float64))
    bad = system.positions.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        bio.minimize(system, bad)
    with pytest.raises(ValueError, match="one structure"):
        bio.minimize(system, system.positions.expand(2, -1, -1))


# ---- constraints -----------------------------------------------------------------------------------------


def test_settle_equals_shake_and_conserves_momentum(water_cluster, device):
    openmm_system, topology, positions = water_cluster
    system = bio.System.from_openmm(openmm_system, topology, positions, device=device)
    constraints = bio.Constraints.from_system(system)
    assert constraints.waters.shape == (32, 3) and constraints.n_constraints == 96
    old = constraints.apply(system.positions, system.positions, 1e-12)
    generator = torch.Generator(device=device).manual_seed(0)
    new = old + 0.003 * torch.randn(old.shape, generator=generator, dtype=old.dtype, device=device)
    settled = constraints.apply(old, new)
    assert constraints.max_error(settled) < 1e-12
    shake = bio.Constraints.from_system(system, settle=False)
    assert shake.waters.shape[0] == 0
    torch.testing.assert_close(settled, shake.apply(old, new, 1e-13), rtol=0, atol=1e-11)
    masses = system.masses[:, None]
    torch.testing.assert_close((masses * settled).sum(0), (masses * new).sum(0), rtol=0, atol=1e-11)
    velocities = torch.randn(old.shape, generator=generator, dtype=old.dtype, device=device)
    projected = constraints.apply_to_velocities(settled, velocities)
    torch.testing.assert_close(projected, shake.apply_to_velocities(settled, velocities, 1e-13), rtol=0, atol=1e-10)
    i, j = constraints.pairs.T
    assert ((settled[i] - settled[j]) * (projected[i] - projected[j])).sum(-1).abs().max() < 1e-12


def test_rigid_water_trajectory_matches_openmm(water_cluster):
    openmm_system, topology, positions = water_cluster
    system = bio.System.from_openmm(openmm_system, topology, positions)
    x0, v0 = _thermal_start(system)
    simulation = bio.Simulation(system, bio.VerletIntegrator(0.002), x0, v0)
    simulation.step(20)
    state = _openmm_run(openmm_system, openmm.VerletIntegrator(0.002), x0, v0, 20)
    assert np.abs(simulation.positions.numpy() - state.getPositions(asNumpy=True)._value).max() < 1e-6
    assert simulation.constraints.max_error(simulation.positions) < 1e-10


@pytest.mark.parametrize("constraints", [app.HBonds, app.AllBonds, app.HAngles], ids=["hbonds", "allbonds", "hangles"])
def test_constraints_hold_during_langevin_dynamics(dipeptide, amber14, constraints):
    topology, positions = dipeptide
    openmm_system = amber14.createSystem(topology, constraints=constraints)
    system = bio.System.from_openmm(openmm_system, topology, positions)
    simulation = bio.Simulation(system, bio.LangevinMiddleIntegrator(300, 1.0, 0.002), seed=5)
    assert simulation.constraints.n_constraints == openmm_system.getNumConstraints() > 0
    simulation.set_velocities_to_temperature(300)
    i, j = simulation.constraints.pairs.T
    bonds = simulation.positions[i] - simulation.positions[j]
    rates = (bonds * (simulation.velocities[i] - simulation.velocities[j])).sum(-1) / bonds.pow(2).sum(-1)
    assert rates.abs().max() <= 1e-5  # 1/ps: no velocity along a constrained bond
    simulation.step(20)
    assert simulation.constraints.max_error(simulation.positions) <= 1e-5


# ---- integrators against OpenMM --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["verlet", "langevin_middle"])
def test_trajectory_without_constraints_matches_openmm(dipeptide, dipeptide_systems, kind, device):
    openmm_system = dipeptide_systems["none"]
    system = _system(openmm_system, dipeptide, device)
    x0, v0 = _thermal_start(system)
    # friction 0 makes LangevinMiddle deterministic, so its splitting can be compared step by step
    ours, theirs = ((bio.VerletIntegrator(0.001), openmm.VerletIntegrator(0.001)) if kind == "verlet" else
                    (bio.LangevinMiddleIntegrator(300, 0.0, 0.002), openmm.LangevinMiddleIntegrator(300, 0.0, 0.002)))
    simulation = bio.Simulation(system, ours, x0, v0)
    simulation.step(20)
    state = _openmm_run(openmm_system, theirs, x0, v0, 20)
    assert np.abs(simulation.positions.cpu().numpy() - state.getPositions(asNumpy=True)._value).max() < 1e-9
    assert np.abs(simulation.velocities.cpu().numpy() - state.getVelocities(asNumpy=True)._value).max() < 1e-8
    kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    potential = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert abs(simulation.kinetic_energy().item() - kinetic) < 1e-8
    assert abs(simulation.potential_energy.item() - potential) < 1e-8
    assert simulation.current_step == 20 and simulation.time == pytest.approx(20 * ours.step_size)


@pytest.mark.parametrize("kind", ["verlet", "langevin_middle"])
def test_trajectory_with_hbond_constraints_close_to_openmm(dipeptide, dipeptide_systems, kind):
    openmm_system = dipeptide_systems["hbonds"]
    system = _system(openmm_system, dipeptide)
    x0, v0 = _thermal_start(system)
    ours, theirs = ((bio.VerletIntegrator(0.001), openmm.VerletIntegrator(0.001)) if kind == "verlet" else
                    (bio.LangevinMiddleIntegrator(300, 0.0, 0.002), openmm.LangevinMiddleIntegrator(300, 0.0, 0.002)))
    simulation = bio.Simulation(system, ours, x0, v0)
    simulation.step(20)
    state = _openmm_run(openmm_system, theirs, x0, v0, 20)
    # OpenMM uses CCMA, we use SHAKE: both stop within the 1e-5 relative tolerance, so the paths differ slightly
    assert np.abs(simulation.positions.numpy() - state.getPositions(asNumpy=True)._value).max() < 2e-6
    total = (state.getKineticEnergy() + state.getPotentialEnergy()).value_in_unit(unit.kilojoule_per_mole)
    assert abs((simulation.kinetic_energy() + simulation.potential_energy).item() - total) < 2e-3
    assert simulation.constraints.max_error(simulation.positions) <= 1e-5


def test_batched_replicas_equal_single_runs(dipeptide, dipeptide_systems):
    system = _system(dipeptide_systems["hbonds"], dipeptide)
    starts = [_thermal_start(system, seed) for seed in (1, 2)]
    batch = bio.Simulation(system, bio.VerletIntegrator(0.001), np.stack([x for x, _ in starts]),
                           np.stack([v for _, v in starts]))
    batch.step(10)
    for replica, (x, v) in enumerate(starts):
        single = bio.Simulation(system, bio.VerletIntegrator(0.001), x, v)
        single.step(10)
        # SHAKE iterates until the worst replica converges, so replicas agree to the tolerance, not bitwise
        torch.testing.assert_close(batch.positions[replica], single.positions, rtol=0, atol=1e-7)
        torch.testing.assert_close(batch.temperature()[replica], single.temperature(), rtol=1e-4, atol=0)


# ---- statistical checks ----------------------------------------------------------------------------------


def test_nve_energy_drift_with_constraints(water_cluster):
    """Drift of the total energy at 1 fs with SETTLE, per degree of freedom, from the slope of a linear fit over
    1.5 ps in each of 4 replicas equilibrated by Langevin dynamics; the standard error across replicas shows
    the measurement resolves the 0.1 kJ/mol/ns criterion."""
    openmm_system, topology, positions = water_cluster
    system = bio.System.from_openmm(openmm_system, topology, positions)
    replicas = system.positions.expand(4, -1, -1)
    equilibration = bio.Simulation(system, bio.LangevinMiddleIntegrator(300, 5.0, 0.002), replicas, seed=3)
    equilibration.set_velocities_to_temperature(300)
    equilibration.step(200)
    nve = bio.Simulation(system, bio.VerletIntegrator(0.001), equilibration.positions, equilibration.velocities)
    energies = []
    for _ in range(150):
        nve.step(10)
        energies.append(nve.potential_energy + nve.kinetic_energy())
    times = 0.01 * np.arange(1, 151)  # ps
    slopes = np.polyfit(times, torch.stack(energies).numpy(), 1)[0]  # kJ/mol/ps per replica
    drift = slopes * 1000.0 / nve.degrees_of_freedom  # kJ/mol/ns per degree of freedom
    assert nve.degrees_of_freedom == 3 * 96 - 96 - 3
    standard_error = drift.std(ddof=1) / np.sqrt(len(drift))
    assert standard_error < 0.05
    assert abs(drift.mean()) < 0.1


def test_langevin_reproduces_target_temperature(dipeptide, dipeptide_systems):
    system = _system(dipeptide_systems["hbonds"], dipeptide)
    simulation = bio.Simulation(system, bio.LangevinMiddleIntegrator(300.0, 10.0, 0.002),
                                system.positions.expand(16, -1, -1), seed=7)
    simulation.set_velocities_to_temperature(300.0)
    simulation.step(100)
    temperatures = []
    for _ in range(50):
        simulation.step(10)
        temperatures.append(simulation.temperature())
    per_replica = torch.stack(temperatures).mean(0)  # replicas are independent
    standard_error = per_replica.std() / 16**0.5
    assert standard_error < 6.0
    assert abs(per_replica.mean().item() - 300.0) < 4 * standard_error.item()
    assert simulation.constraints.max_error(simulation.positions) <= 1e-5


# ---- reporters -------------------------------------------------------------------------------------------


def test_state_data_reporter_matches_openmm(dipeptide, dipeptide_systems):
    topology, _ = dipeptide
    openmm_system = dipeptide_systems["hbonds"]
    system = _system(openmm_system, dipeptide)
    x0, v0 = _thermal_start(system)
    columns = dict(step=True, time=True, potential_energy=True, kinetic_energy=True, total_energy=True,
                   temperature=True)
    ours = io.StringIO()
    simulation = bio.Simulation(system, bio.VerletIntegrator(0.001), x0, v0)
    simulation.reporters.append(bio.StateDataReporter(ours, 5, **columns))
    simulation.step(10)
    theirs = io.StringIO()
    reference = app.Simulation(topology, openmm_system, openmm.VerletIntegrator(0.001), REFERENCE)
    reference.context.setPositions(x0)
    reference.context.setVelocities(v0)
    reference.reporters.append(app.StateDataReporter(theirs, 5, step=True, time=True, potentialEnergy=True,
                                                     kineticEnergy=True, totalEnergy=True, temperature=True))
    reference.step(10)
    our_lines, their_lines = ours.getvalue().splitlines(), theirs.getvalue().splitlines()
    assert our_lines[0] == their_lines[0] and len(our_lines) == len(their_lines) == 3
    for mine, reference_line in zip(our_lines[1:], their_lines[1:]):
        np.testing.assert_allclose([float(v) for v in mine.split(",")], [float(v) for v in reference_line.split(",")],
                                   rtol=0, atol=2e-3)


class _Recorder:
    """A reporter that keeps the positions it is shown."""

    def __init__(self, report_interval):
        self.report_interval, self.frames = report_interval, []

    def report(self, simulation):
        self.frames.append(simulation.positions.clone())


def _read_dcd(path):
    """Frames (F, N, 3) in Angstrom and the header's frame count, read from the Fortran records of a DCD file."""
    with open(path, "rb") as handle:
        data = handle.read()
    records, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("<i", data, offset)
        records.append(data[offset + 4:offset + 4 + length])
        assert struct.unpack_from("<i", data, offset + 4 + length)[0] == length
        offset += length + 8
    header, n_atoms = records[0], struct.unpack("<i", records[2])[0]
    assert header[:4] == b"CORD"
    axes = [np.frombuffer(r, dtype="<f4") for r in records[3:] if len(r) == 4 * n_atoms]
    frames = np.stack([np.stack(axes[k:k + 3], -1) for k in range(0, len(axes), 3)])
    return frames, struct.unpack_from("<i", header, 4)[0]


def test_pdb_and_dcd_trajectories_read_back(tmp_path, dipeptide, dipeptide_systems):
    system = _system(dipeptide_systems["hbonds"], dipeptide)
    simulation = bio.Simulation(system, bio.LangevinMiddleIntegrator(300, 1.0, 0.002), seed=1)
    simulation.set_velocities_to_temperature(300)
    recorder = _Recorder(5)
    pdb, dcd = bio.PDBReporter(tmp_path / "trajectory.pdb", 5), bio.DCDReporter(tmp_path / "trajectory.dcd", 5)
    simulation.reporters.extend([recorder, pdb, dcd])
    simulation.step(20)
    pdb.close()
    dcd.close()
    expected = torch.stack(recorder.frames).numpy()
    assert expected.shape == (4, system.n_atoms, 3)
    read = app.PDBFile(str(tmp_path / "trajectory.pdb"))
    assert read.getNumFrames() == 4 and read.topology.getNumAtoms() == system.n_atoms
    for frame in range(4):
        positions = read.getPositions(asNumpy=True, frame=frame).value_in_unit(unit.nanometer)
        assert np.abs(positions - expected[frame]).max() < 6e-5  # PDB keeps 3 decimals in Angstrom
    frames, count = _read_dcd(tmp_path / "trajectory.dcd")
    assert count == 4
    np.testing.assert_allclose(frames / 10.0, expected, rtol=0, atol=1e-6)  # float32 Angstrom


def test_reporters_need_a_replica_for_batches(tmp_path, dipeptide, dipeptide_systems):
    system = _system(dipeptide_systems["none"], dipeptide)
    simulation = bio.Simulation(system, bio.VerletIntegrator(0.001), system.positions.expand(2, -1, -1))
    out = io.StringIO()
    simulation.reporters.append(bio.StateDataReporter(out, 1, step=True, potential_energy=True))
    simulation.reporters.append(bio.PDBReporter(tmp_path / "replica1.pdb", 1, replica=1))
    simulation.step(1)
    lines = out.getvalue().splitlines()
    assert lines[0] == '#"Replica","Step","Potential Energy (kJ/mole)"' and len(lines) == 3
    assert [float(line.split(",")[2]) for line in lines[1:]] == pytest.approx(simulation.potential_energy.tolist())
    simulation.reporters[1].close()
    simulation.reporters[1:] = [bio.PDBReporter(tmp_path / "all.pdb", 1)]
    with pytest.raises(ValueError, match="replica"):
        simulation.step(1)


def test_state_data_reporter_appends_without_a_second_header(tmp_path, dipeptide, dipeptide_systems):
    """OpenMM's append=True: the file is opened for appending and the header is not written again."""
    system = _system(dipeptide_systems["none"], dipeptide)
    path = tmp_path / "state.csv"
    simulation = bio.Simulation(system, bio.VerletIntegrator(0.001), system.positions)
    for append in (False, True):
        with bio.StateDataReporter(path, 1, step=True, potential_energy=True, append=append) as reporter:
            simulation.reporters[:] = [reporter]
            simulation.step(2)
    lines = path.read_text().splitlines()
    assert lines[0] == '#"Step","Potential Energy (kJ/mole)"' and len(lines) == 5
    assert [int(line.split(",")[0]) for line in lines[1:]] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="append"):
        bio.StateDataReporter(path, 1, append="yes")


# ---- checkpoints and errors ------------------------------------------------------------------------------


def test_checkpoint_resume_is_bit_for_bit(tmp_path, dipeptide, dipeptide_systems, device):
    # CUDA's scatter-adds of forces are reproducible only in deterministic mode (warn_only: cuBLAS would
    # otherwise demand CUBLAS_WORKSPACE_CONFIG); the CPU is deterministic as it is
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic or device.type == "cuda", warn_only=True)
    try:
        system = _system(dipeptide_systems["hbonds"], dipeptide, device)

        def fresh(seed):
            return bio.Simulation(system, bio.LangevinMiddleIntegrator(300, 1.0, 0.002), seed=seed)

        uninterrupted = fresh(11)
        uninterrupted.set_velocities_to_temperature(300)
        uninterrupted.step(20)
        first = fresh(11)
        first.set_velocities_to_temperature(300)
        first.step(10)
        first.save_checkpoint(tmp_path / "run.pt")
        resumed = fresh(99)
        resumed.load_checkpoint(tmp_path / "run.pt")
        assert resumed.current_step == 10
        resumed.step(10)
        assert torch.equal(resumed.positions, uninterrupted.positions)
        assert torch.equal(resumed.velocities, uninterrupted.velocities)
        assert resumed.current_step == 20 and resumed.time == uninterrupted.time
    finally:
        torch.use_deterministic_algorithms(deterministic)


def test_bad_input_raises_clear_errors(tmp_path, dipeptide, dipeptide_systems):
    system = _system(dipeptide_systems["hbonds"], dipeptide)
    with pytest.raises(ValueError, match="shape"):
        bio.Simulation(system, bio.VerletIntegrator(0.001), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="temperature"):
        bio.LangevinMiddleIntegrator(-1.0, 1.0, 0.002)
    simulation = bio.Simulation(system, bio.VerletIntegrator(0.001))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(bio.BioError, match="checkpoint"):
        simulation.load_checkpoint(tmp_path / "junk.pt")
    exploding = bio.Simulation(system, bio.VerletIntegrator(0.05), seed=0)
    exploding.set_velocities_to_temperature(3000)
    with pytest.raises(bio.ConstraintError, match="step size"):
        exploding.step(200)
