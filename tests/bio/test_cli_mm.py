"""`diffsci mm` end to end: minimize a PDB file (checked against OpenMM's LocalEnergyMinimizer and energies),
run Langevin dynamics with a trajectory and a checkpoint, resume it, and report bad input clearly."""

import re

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

from bio_reference import ALANINE_DIPEPTIDE
from diffsci.cli import main

REFERENCE = openmm.Platform.getPlatformByName("Reference")


def _energy(openmm_system, positions):
    context = openmm.Context(openmm_system, openmm.VerletIntegrator(0.001), REFERENCE)
    context.setPositions(positions)
    return context, context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def _printed(output, name):
    return float(re.search(rf"^{name}: (\S+) kJ/mol$", output, re.MULTILINE).group(1))


def test_mm_minimize_writes_a_minimized_pdb(tmp_path, capsys):
    out = tmp_path / "minimized.pdb"
    assert main(["mm", "minimize", ALANINE_DIPEPTIDE, "--tolerance", "1", "--out", str(out)]) == 0
    output = capsys.readouterr().out
    assert "converged: yes" in output
    initial, final = _printed(output, "initial energy"), _printed(output, "final energy")

    pdb = app.PDBFile(ALANINE_DIPEPTIDE)
    openmm_system = app.ForceField("amber14-all.xml", "implicit/obc2.xml").createSystem(pdb.topology)
    context, start = _energy(openmm_system, pdb.positions)
    assert abs(initial - start) < 1e-4
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 0)
    reference = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert abs(final - reference) <= 0.005 * abs(reference)
    written = app.PDBFile(str(out))
    assert written.topology.getNumAtoms() == pdb.topology.getNumAtoms()
    _, at_written = _energy(openmm_system, written.positions)
    assert abs(at_written - final) < 0.05  # the PDB file rounds coordinates to 1e-4 nm


def test_mm_minimize_that_does_not_converge_exits_non_zero(tmp_path, capsys):
    out = tmp_path / "partial.pdb"
    assert main(["mm", "minimize", ALANINE_DIPEPTIDE, "--tolerance", "0.001", "--max-steps", "3",
                 "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "converged: no" in captured.out and out.exists()
    assert captured.err.count("\n") == 1 and "not converged" in captured.err and str(out) in captured.err


def test_mm_md_runs_and_resumes_from_its_checkpoint(tmp_path, capsys):
    trajectory, checkpoint = tmp_path / "run.dcd", tmp_path / "run.pt"
    common = ["mm", "md", ALANINE_DIPEPTIDE, "--forcefield", "amber14-all.xml", "--report-interval", "10",
              "--out", str(trajectory), "--checkpoint", str(checkpoint), "--seed", "1"]
    assert main(common + ["--steps", "20"]) == 0
    first = capsys.readouterr().out.splitlines()
    assert first[0].startswith('#"Step","Time (ps)","Potential Energy (kJ/mole)"') and len(first) == 3
    assert main(common + ["--steps", "40"]) == 0
    second = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in second[1:]] == ["30", "40"]
    with open(trajectory, "rb") as handle:
        header = handle.read(12)
    assert header[4:8] == b"CORD" and int(np.frombuffer(header[8:12], "<i4")[0]) == 4  # frames at 10..40


def test_mm_reports_bad_input(tmp_path, capsys):
    truncated = tmp_path / "truncated.pdb"
    truncated.write_text(open(ALANINE_DIPEPTIDE).read()[:700])
    assert main(["mm", "minimize", str(truncated)]) == 1
    error = capsys.readouterr().err
    assert "diffsci mm minimize: error:" in error and "truncated.pdb" in error
    assert main(["mm", "md", ALANINE_DIPEPTIDE, "--steps", "1", "--out", str(tmp_path / "x.xyz")]) == 1
    assert "unknown trajectory format" in capsys.readouterr().err

