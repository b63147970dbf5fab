"""`diffsci dock`: a single ligand, a library killed mid-run and rerun (finished ligands kept, the final table equal
to an uninterrupted run's), and bad input as one line with exit code 1."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rdkit import Chem

from diffsci.tour.binding import DATA

RECEPTOR = str(DATA / "1s3v_protein.pdb")
LIGAND = str(DATA / "1s3v_ligand.sdf")
# Small drug-like fragments: few torsions, so each docks in about a second at exhaustiveness 1. The test docks the
# first 6 (the 20-ligand run, killed and rerun the same way, is recorded in issue 20's notes).
LIBRARY = ["c1ccccc1O phenol", "c1ccccc1N aniline", "c1ccncc1 pyridine", "Cc1ccccc1 toluene", "OC(=O)c1ccccc1 benzoic",
           "c1ccc2ccccc2c1 naphthalene", "NC(=O)c1ccccc1 benzamide", "c1cc[nH]c1 pyrrole", "c1ccoc1 furan",
           "Oc1ccc(O)cc1 hydroquinone", "CC(=O)Nc1ccccc1 acetanilide", "c1ccc(cc1)F fluorobenzene",
           "Clc1ccccc1 chlorobenzene", "OCc1ccccc1 benzylalcohol", "c1ccc2[nH]ccc2c1 indole", "CCO ethanol",
           "CC(C)O isopropanol", "OC1CCCCC1 cyclohexanol", "c1cnc[nH]1 imidazole", "Nc1ncccn1 aminopyrimidine"]


def center():
    (mol,) = [m for m in Chem.SDMolSupplier(LIGAND, removeHs=False)]
    positions = mol.GetConformer().GetPositions()
    return [f"{v:.3f}" for v in positions.mean(0)]


def dock(*arguments, ligand=None):
    """The command line; ``arguments`` come last, so they override the small defaults here."""
    return [sys.executable, "-m", "diffsci", "dock", RECEPTOR, *([ligand] if ligand else []), "--center", *center(),
            "--size", "18", "18", "18", "--exhaustiveness", "1", "--seed", "1", *arguments]


def test_single_ligand_writes_ranked_poses(tmp_path):
    out = tmp_path / "poses.sdf"
    done = subprocess.run(dock("--out", str(out), "--num_modes", "3", "--pdbqt", str(tmp_path / "p.pdbqt"), ligand=LIGAND),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    poses = [m for m in Chem.SDMolSupplier(str(out), removeHs=False)]
    scores = [m.GetDoubleProp("vina_total") for m in poses]
    assert 1 <= len(poses) <= 3 and scores == sorted(scores)
    assert "mode" in done.stdout and f"{scores[0]:.3f}"[:5] in done.stdout
    assert (tmp_path / "p.pdbqt").read_text().count("MODEL") == len(poses)


def test_library_killed_and_rerun_equals_an_uninterrupted_run(tmp_path):
    library = tmp_path / "library.smi"
    ligands = LIBRARY[:6]
    library.write_text("\n".join(ligands) + "\n")

    def command(folder):
        folder.mkdir()
        return dock("--ligands", str(library), "--out", str(folder / "hits.sdf"), "--num_modes", "1")

    straight = subprocess.run(command(tmp_path / "straight"), capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    killed = subprocess.Popen(command(tmp_path / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "killed" / "hits.sdf.parts"
    deadline = time.time() + 300
    while time.time() < deadline and killed.poll() is None and len(list(parts.glob("*"))) < 2:
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    finished = {path.name: path.stat().st_mtime_ns for path in parts.glob("*")}
    assert 0 < len(finished) < 2 * len(ligands)  # stopped part-way
    rerun = subprocess.run(dock("--ligands", str(library), "--out", str(tmp_path / "killed" / "hits.sdf"),
                                "--num_modes", "1"), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    for name, mtime in finished.items():  # finished ligands were not redone
        assert (parts / name).stat().st_mtime_ns == mtime
    tables = [list(csv.reader(open(folder / "hits.csv"))) for folder in (tmp_path / "straight", tmp_path / "killed")]
    assert tables[0] == tables[1] and len(tables[0]) == len(ligands) + 1


@pytest.mark.parametrize("ligand, arguments, message", [
    ("missing.sdf", ["--out", "x.sdf"], "missing.sdf"),
    (LIGAND, ["--out", "x.sdf", "--exhaustiveness", "0"], "--exhaustiveness"),
    (None, ["--ligands", "nope.smi", "--out", "x.sdf"], "nope.smi"),
])
def test_bad_input_is_one_line(ligand, arguments, message, tmp_path):
    done = subprocess.run(dock(*arguments, ligand=ligand), capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
