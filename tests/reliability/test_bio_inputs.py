"""bio refuses bad input at the API with bio's own errors, naming what was wrong and where: structure files
(truncated, binary, NaN coordinates, unknown residues, mmCIF), force-field XML (malformed, missing, or holding
Python code that OpenMM would run), and arguments out of range. Table-driven, plus property-based fuzzing of a
small valid PDB file (every mutation loads or raises bio.BioError: never another exception, never a hang)."""

import io
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bio
from bio.forcefield import load_forcefield

ALANINE_DIPEPTIDE = Path(__file__).resolve().parents[1] / "bio" / "data" / "alanine_dipeptide.pdb"
TEXT = ALANINE_DIPEPTIDE.read_text()
LINES = TEXT.splitlines(keepends=True)
OPENMM_DATA = Path(app.__file__).parent / "data"
FAST_FORCEFIELD = "amber14/protein.ff14SB.xml"  # the protein part of amber14-all.xml: quick to load
FUZZ = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _write(tmp_path, name, text):
    path = tmp_path / name
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def _replace_atom_line(serial, function):
    return "".join(function(line) if line.startswith("ATOM") and int(line[6:11]) == serial else line
                   for line in LINES)


def _one_line(error):
    text = str(error)
    assert "\n" not in text, text
    return text


# ---- structure files -------------------------------------------------------------------------------------------

STRUCTURES = [
    # (name, file name, content, expected error, substrings of the message)
    ("empty", "empty.pdb", "", bio.StructureError, ["empty.pdb", "no atoms"]),
    ("only END", "end.pdb", "END\n", bio.StructureError, ["no atoms"]),
    ("binary junk", "junk.pdb", bytes(range(256)) * 8, bio.StructureError, ["junk.pdb", "binary"]),
    ("cut mid-record", "cut.pdb", TEXT[:700], bio.StructureError, ["cut.pdb, line 10", "truncated ATOM record"]),
    ("cut after a line", "short.pdb", "".join(LINES[:12]), bio.ParameterizationError,
     ["short.pdb", "ALA 2", "closest template"]),
    ("NaN coordinate", "nan.pdb", _replace_atom_line(11, lambda line: line[:30] + "     nan" + line[38:]),
     bio.StructureError, ["nan.pdb, line 14", "non-finite coordinates for atom CB of residue ALA 2"]),
    ("inf coordinate", "inf.pdb", _replace_atom_line(2, lambda line: line[:46] + "    -inf" + line[54:]),
     bio.StructureError, ["line 5", "non-finite", "z = '-inf'"]),
    ("letters in a coordinate", "letters.pdb", _replace_atom_line(1, lambda line: line[:30] + "  -1.8x3" + line[38:]),
     bio.StructureError, ["letters.pdb, line 4", "atom HH31 of residue ACE 1", "x coordinate '-1.8x3'",
                          "not a number"]),
    ("unknown residue", "residue.pdb", TEXT.replace("ALA A   2", "XYZ A   2"), bio.ParameterizationError,
     ["residue.pdb", "residue XYZ 2", "closest template is ALA"]),
    ("unknown atom and element", "element.pdb",
     _replace_atom_line(12, lambda line: line[:12] + " QQ1" + line[16:76] + "Qq" + line[78:]),
     bio.ParameterizationError, ["element.pdb", "ALA 2"]),
    ("CRYST1 with NaN", "cryst.pdb", "CRYST1      nan   20.000   20.000  90.00  90.00  90.00 P 1           1\n" + TEXT,
     bio.StructureError, ["cryst.pdb, line 1", "CRYST1", "a = 'nan'"]),
    ("CRYST1 negative length", "box.pdb",
     "CRYST1  -20.000   20.000   20.000  90.00  90.00  90.00 P 1           1\n" + TEXT, bio.StructureError,
     ["box.pdb, line 1", "CRYST1", "> 0"]),
    ("misaligned residue name", "misaligned.pdb", _replace_atom_line(9, lambda line: line[:17] + " ALA" + line[21:]),
     bio.StructureError, ["misaligned.pdb, line 12", "OpenMM could not read it as PDB", "Misaligned residue name"]),
    ("unknown extension", "protein.xyz", TEXT, bio.StructureError, ["protein.xyz", "unknown structure format"]),
    ("empty mmCIF", "empty.cif", "", bio.StructureError, ["empty.cif", "no data_ block"]),
    ("binary mmCIF", "junk.cif", bytes(range(256)) * 8, bio.StructureError, ["junk.cif", "binary"]),
    ("mmCIF without atoms", "noatoms.cif", "data_x\n_cell.length_a 10\n", bio.StructureError,
     ["noatoms.cif", "PDBx/mmCIF"]),
    ("mmCIF cut short", "cut.cif", "data_x\nloop_\n_atom_site.id\n_atom_site.Cartn_x\n1\n", bio.StructureError,
     ["cut.cif", "PDBx/mmCIF"]),
]


@pytest.mark.parametrize("name, file_name, content, error, substrings", STRUCTURES, ids=[s[0] for s in STRUCTURES])
def test_bad_structure_files_raise_a_clear_error(tmp_path, name, file_name, content, error, substrings):
    path = _write(tmp_path, file_name, content)
    with pytest.raises(error) as raised:
        bio.System.from_pdb(path, forcefield=FAST_FORCEFIELD)
    message = _one_line(raised.value)
    for substring in substrings:
        assert substring in message, message


def test_missing_files_and_directories_are_structure_errors(tmp_path):
    for path in (tmp_path / "absent.pdb", tmp_path / "absent.cif"):
        with pytest.raises(bio.StructureError, match="absent.*no such file"):
            bio.read_structure(path)
    (tmp_path / "folder.pdb").mkdir()
    with pytest.raises(bio.StructureError, match="folder.pdb: no such file"):
        bio.read_structure(tmp_path / "folder.pdb")
    with pytest.raises(bio.ArgumentError, match="path must be a file name"):
        bio.read_structure(42)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads unreadable files")
def test_unreadable_file_is_a_structure_error(tmp_path):
    path = _write(tmp_path, "locked.pdb", TEXT)
    path.chmod(0)
    with pytest.raises(bio.StructureError, match="locked.pdb: cannot read the file"):
        bio.read_structure(path)


def test_non_utf8_remark_and_mmcif_load_like_the_pdb(tmp_path):
    latin = _write(tmp_path, "latin.pdb", TEXT.encode().replace(b"ALANINE DIPEPTIDE", b"ALANIN\xc9 DIPEPTIDE"))
    reference = bio.System.from_pdb(ALANINE_DIPEPTIDE)
    assert torch.allclose(bio.System.from_pdb(latin).positions, reference.positions)
    pdb = app.PDBFile(str(ALANINE_DIPEPTIDE))
    cif = tmp_path / "dipeptide.cif"
    with open(cif, "w") as out:
        app.PDBxFile.writeFile(pdb.topology, pdb.positions, out)
    system = bio.System.from_pdb(cif)
    assert torch.allclose(system.energy(system.positions), reference.energy(reference.positions), atol=1e-6)


# ---- force-field XML: no code from input files -----------------------------------------------------------------

def _script(marker):
    return f'<ForceField>\n <Script>\nopen({str(marker)!r}, "w").write("ran")\n </Script>\n</ForceField>\n'


def test_bundled_force_fields_with_scripts_are_trusted():
    """OpenMM's own implicit-solvent files (bio's default obc2.xml among them) hold <Script>: they ship with
    OpenMM and load without trust_scripts."""
    assert "<Script>" in (OPENMM_DATA / "implicit" / "obc2.xml").read_text()
    load_forcefield(("amber14-all.xml", "implicit/obc2.xml"))
    load_forcefield(str(OPENMM_DATA / "implicit" / "gbn2.xml"))  # by absolute path, too
    load_forcefield("charmm36.xml")  # its water models' <InitializationScript>s


FORCEFIELDS = [
    # (name, {file: content}, files passed, expected error, substrings)
    ("Script", {"evil.xml": "SCRIPT"}, ["evil.xml"], bio.UnsafeInputError,
     ["evil.xml, line 2", "<Script>", "arbitrary Python", "trust_scripts=True", "--trust-forcefield-scripts"]),
    ("InitializationScript", {"init.xml": '<ForceField>\n<InitializationScript>open(MARKER, "w")'
                                          '</InitializationScript>\n</ForceField>\n'},
     ["init.xml"], bio.UnsafeInputError, ["init.xml, line 2", "<InitializationScript>", "arbitrary Python"]),
    ("eval'd attribute", {"eval.xml": '<ForceField>\n <NonbondedForce coulomb14scale="0.8" lj14scale="0.5" '
                                      'useDispersionCorrection="open(MARKER, \'w\')"/>\n</ForceField>\n'},
     ["eval.xml"], bio.UnsafeInputError, ["eval.xml, line 2", "useDispersionCorrection", "eval()"]),
    ("Script through Include", {"outer.xml": '<ForceField>\n <Include file="sub/inner.xml"/>\n</ForceField>\n',
                                "sub/inner.xml": "SCRIPT"},
     ["outer.xml"], bio.UnsafeInputError, ["inner.xml, line 2", "included by", "outer.xml, line 2", "<Script>"]),
    ("Script after a bundled file", {"evil.xml": "SCRIPT"}, ["amber14-all.xml", "implicit/obc2.xml", "evil.xml"],
     bio.UnsafeInputError, ["evil.xml", "<Script>"]),
    ("bundled name shadowed", {"implicit/obc2.xml": "SCRIPT"}, ["amber14-all.xml", "implicit/obc2.xml"],
     bio.UnsafeInputError, ["implicit/obc2.xml", "instead of OpenMM's own", "<Script>"]),
    ("malformed", {"bad.xml": "<ForceField>\n <Residues>\n  <Residue name='X'>\n </Residues>\n</ForceField>\n"},
     ["bad.xml"], bio.ParameterizationError, ["bad.xml, line 4", "not a well-formed", "mismatched tag"]),
    ("empty", {"empty.xml": ""}, ["empty.xml"], bio.ParameterizationError, ["empty.xml, line 1", "not a well-formed"]),
    ("binary", {"junk.xml": bytes(range(256))}, ["junk.xml"], bio.ParameterizationError,
     ["junk.xml", "not a well-formed"]),
    ("missing", {}, ["absent.xml"], bio.ParameterizationError, ["'absent.xml'", "not found"]),
    ("missing include", {"outer.xml": '<ForceField>\n <Include file="gone.xml"/>\n</ForceField>\n'}, ["outer.xml"],
     bio.ParameterizationError, ["'gone.xml'", "included by outer.xml, line 2", "not found"]),
    ("include without file", {"outer.xml": "<ForceField>\n <Include/>\n</ForceField>\n"}, ["outer.xml"],
     bio.ParameterizationError, ["outer.xml, line 2", "without a file attribute"]),
    ("include loop", {"loop.xml": '<ForceField>\n <Include file="./loop.xml"/>\n</ForceField>\n'}, ["loop.xml"],
     bio.ParameterizationError, ["includes itself"]),
    ("not a force field", {"wrong.xml": '<ForceField>\n <AtomTypes><Type name="x"/></AtomTypes>\n</ForceField>\n'},
     ["wrong.xml"], bio.ParameterizationError, ["could not load force field", "wrong.xml"]),
]


@pytest.mark.parametrize("name, files, names, error, substrings", FORCEFIELDS, ids=[f[0] for f in FORCEFIELDS])
def test_bad_forcefield_files_are_refused_before_openmm_reads_them(tmp_path, monkeypatch, name, files, names,
                                                                    error, substrings):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "code-ran"
    for file_name, content in files.items():
        (tmp_path / file_name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = _script(marker) if content == "SCRIPT" else content.replace("MARKER", repr(str(marker)))
        _write(tmp_path, file_name, content)
    with pytest.raises(error) as raised:
        bio.System.from_pdb(ALANINE_DIPEPTIDE, forcefield=("amber14-all.xml", *names))
    message = _one_line(raised.value)
    for substring in substrings:
        assert substring in message, message
    assert not marker.exists(), "code from the force-field file ran"


def test_trust_scripts_runs_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "code-ran"
    _write(tmp_path, "trusted.xml", _script(marker))
    with pytest.raises(bio.UnsafeInputError):
        bio.System.from_pdb(ALANINE_DIPEPTIDE, forcefield=("amber14-all.xml", "trusted.xml"))
    assert not marker.exists()
    bio.System.from_pdb(ALANINE_DIPEPTIDE, forcefield=("amber14-all.xml", "trusted.xml"), trust_scripts=True)
    assert marker.read_text() == "ran"  # OpenMM ran the <Script> when it built the system


def test_plain_literal_dispersion_flag_is_allowed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "flag.xml", '<ForceField>\n <NonbondedForce coulomb14scale="0.8" lj14scale="0.5" '
                                 'useDispersionCorrection="False"/>\n</ForceField>\n')
    load_forcefield(("flag.xml",))


# ---- arguments ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dipeptide():
    return bio.System.from_pdb(ALANINE_DIPEPTIDE, forcefield="amber14-all.xml")


@pytest.fixture(scope="module")
def boxed_pdb(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("box"), "boxed.pdb",
                  "CRYST1   20.000   20.000   20.000  90.00  90.00  90.00 P 1           1\n" + TEXT)


def _periodic_openmm_system():
    pdb = app.PDBFile(str(ALANINE_DIPEPTIDE))
    pdb.topology.setPeriodicBoxVectors(np.eye(3) * 2.0 * unit.nanometer)
    system = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.PME,
                                                            nonbondedCutoff=0.9 * unit.nanometer)
    system.setDefaultPeriodicBoxVectors(*(np.eye(3) * 1.5))  # shrunk afterwards: 0.9 nm > half of 1.5 nm
    return system


def _simulation(system):
    return bio.Simulation(system, bio.VerletIntegrator(0.001), seed=1)


CALLS = [
    # (name, call(system, boxed pdb), substrings of the message); every one raises bio.ArgumentError
    ("cutoff -1", lambda s, b: bio.System.from_pdb(ALANINE_DIPEPTIDE, cutoff=-1),
     ["cutoff", ">= 1e-06 and <= 1e+06 nm", "-1"]),
    ("cutoff 0", lambda s, b: bio.System.from_pdb(ALANINE_DIPEPTIDE, cutoff=0), ["cutoff", "got 0"]),
    ("cutoff nan", lambda s, b: bio.System.from_pdb(ALANINE_DIPEPTIDE, cutoff=math.nan), ["cutoff", "nan"]),
    ("cutoff inf", lambda s, b: bio.System.from_pdb(ALANINE_DIPEPTIDE, cutoff=math.inf), ["cutoff", "finite"]),
    ("cutoff text", lambda s, b: bio.System.from_pdb(ALANINE_DIPEPTIDE, cutoff="1"), ["cutoff", "'1'"]),
    ("cutoff beyond half the box", lambda s, b: bio.System.from_pdb(b, nonbonded_method="pme", cutoff=1.2,
                                                                     forcefield="amber14-all.xml"),
     ["cutoff", "half the periodic box", "1 nm", "1.2"]),
    ("openmm system cutoff beyond half the box", lambda s, b: bio.System.from_openmm(_periodic_openmm_system()),
     ["NonbondedForce cutoff", "half the periodic box", "0.75 nm"]),
    ("pme without a box", lambda s, b: bio.System.from_pdb(ALANINE_DIPEPTIDE, nonbonded_method="pme"),
     ["nonbonded_method", "without a periodic box", "'pme'"]),
    ("unknown nonbonded method", lambda s, b: bio.System.from_pdb(ALANINE_DIPEPTIDE, nonbonded_method="ewald"),
     ["nonbonded_method", "'nocutoff'", "'ewald'"]),
    ("nonbonded method None", lambda s, b: bio.System.from_pdb(ALANINE_DIPEPTIDE, nonbonded_method=None),
     ["nonbonded_method", "None"]),
    ("unknown constraints", lambda s, b: bio.System.from_pdb(ALANINE_DIPEPTIDE, constraints="bonds"),
     ["constraints", "'hbonds'", "'bonds'"]),
    ("ewald tolerance 0", lambda s, b: bio.System.from_pdb(b, nonbonded_method="pme", ewald_error_tolerance=0),
     ["ewald_error_tolerance", "< 1"]),
    ("ewald tolerance 1", lambda s, b: bio.System.from_pdb(b, nonbonded_method="pme", ewald_error_tolerance=1),
     ["ewald_error_tolerance"]),
    ("unknown device", lambda s, b: bio.System.from_pdb(ALANINE_DIPEPTIDE, device="gpu"), ["device", "'gpu'"]),
    ("absent GPU", lambda s, b: bio.System.from_pdb(ALANINE_DIPEPTIDE, device="cuda:99"), ["device", "'cuda:99'"]),
    ("integer dtype", lambda s, b: bio.System.from_pdb(ALANINE_DIPEPTIDE, dtype=torch.int64), ["dtype", "float64"]),
    ("trust_scripts not a bool", lambda s, b: bio.System.from_pdb(ALANINE_DIPEPTIDE, trust_scripts="yes"),
     ["trust_scripts", "True or False"]),
    ("no force field", lambda s, b: bio.System.from_pdb(ALANINE_DIPEPTIDE, forcefield=()), ["forcefield"]),
    ("force field not a name", lambda s, b: bio.System.from_pdb(ALANINE_DIPEPTIDE, forcefield=3), ["forcefield"]),
    ("unknown implicit solvent", lambda s, b: bio.System.from_amber("x.prmtop", implicit_solvent="PDBFile"),
     ["implicit_solvent", "'OBC2'", "'PDBFile'"]),
    ("not an openmm system", lambda s, b: bio.System.from_openmm("system.xml"), ["openmm_system"]),
    ("langevin temperature 0", lambda s, b: bio.LangevinMiddleIntegrator(0, 1, 0.002),
     ["LangevinMiddleIntegrator", "temperature", "> 0 K"]),
    ("langevin temperature nan", lambda s, b: bio.LangevinMiddleIntegrator(math.nan, 1, 0.002),
     ["temperature", "nan"]),
    ("langevin friction negative", lambda s, b: bio.LangevinMiddleIntegrator(300, -1, 0.002),
     ["friction", ">= 0 1/ps"]),
    ("langevin friction nan", lambda s, b: bio.LangevinMiddleIntegrator(300, math.nan, 0.002), ["friction", "nan"]),
    ("langevin step 0", lambda s, b: bio.LangevinMiddleIntegrator(300, 1, 0), ["step_size", "> 0 ps"]),
    ("verlet step inf", lambda s, b: bio.VerletIntegrator(math.inf), ["VerletIntegrator", "step_size", "inf"]),
    ("constraint tolerance 1", lambda s, b: bio.VerletIntegrator(0.001, constraint_tolerance=1),
     ["constraint_tolerance", "< 1"]),
    ("step -5", lambda s, b: _simulation(s).step(-5), ["Simulation.step", "steps", ">= 0", "-5"]),
    ("step 2.5", lambda s, b: _simulation(s).step(2.5), ["steps", "an integer", "2.5"]),
    ("step True", lambda s, b: _simulation(s).step(True), ["steps", "True"]),
    ("seed -1", lambda s, b: bio.Simulation(s, bio.VerletIntegrator(0.001), seed=-1), ["seed", "-1"]),
    ("seed 1.5", lambda s, b: bio.Simulation(s, bio.VerletIntegrator(0.001), seed=1.5), ["seed", "1.5"]),
    ("openmm integrator", lambda s, b: bio.Simulation(s, openmm.LangevinMiddleIntegrator(300, 1, 0.002)),
     ["integrator", "bio.LangevinMiddleIntegrator", "openmm"]),
    ("openmm system in a simulation", lambda s, b: bio.Simulation(s.openmm_system, bio.VerletIntegrator(0.001)),
     ["system", "bio.System"]),
    ("negative temperature", lambda s, b: _simulation(s).set_velocities_to_temperature(-1),
     ["set_velocities_to_temperature", "temperature", ">= 0 K"]),
    ("minimize tolerance 0", lambda s, b: bio.minimize(s, tolerance=0), ["minimize", "tolerance", "> 0"]),
    ("minimize tolerance nan", lambda s, b: bio.minimize(s, tolerance=math.nan), ["tolerance", "nan"]),
    ("minimize max_steps -1", lambda s, b: bio.minimize(s, max_steps=-1), ["max_steps", ">= 0", "-1"]),
    ("minimize max_steps 2.5", lambda s, b: bio.minimize(s, max_steps=2.5), ["max_steps", "2.5"]),
    ("minimize NaN positions", lambda s, b: bio.minimize(s, positions=torch.full((s.n_atoms, 3), math.nan)),
     ["positions", "NaN"]),
    ("minimize_energy tolerance", lambda s, b: _simulation(s).minimize_energy(tolerance=-1), ["tolerance", "-1"]),
    ("restraint k", lambda s, b: bio.positional_restraints([0], s.positions, -1.0), ["k", ">= 0"]),
    ("restraint atoms", lambda s, b: bio.positional_restraints([0, 99], s.positions, 1.0), ["atoms", "0..21"]),
    ("report interval 0", lambda s, b: bio.StateDataReporter(io.StringIO(), 0), ["report_interval", ">= 1"]),
    ("report interval 2.5", lambda s, b: bio.CheckpointReporter("x.pt", 2.5), ["report_interval", "2.5"]),
    ("replica -1", lambda s, b: bio.PDBReporter(io.StringIO(), 1, replica=-1), ["replica", ">= 0"]),
    ("reporter file", lambda s, b: bio.DCDReporter(3, 1), ["file", "a path or an open file"]),
]


@pytest.mark.parametrize("name, call, substrings", CALLS, ids=[c[0] for c in CALLS])
def test_arguments_out_of_range_raise_an_argument_error(dipeptide, boxed_pdb, name, call, substrings):
    with pytest.raises(bio.ArgumentError) as raised:
        call(dipeptide, boxed_pdb)
    assert isinstance(raised.value, ValueError)  # bio.ArgumentError is a ValueError too
    message = _one_line(raised.value)
    for substring in substrings:
        assert substring in message, message


def test_zero_steps_do_nothing(dipeptide):
    simulation = _simulation(dipeptide)
    simulation.step(0)
    simulation.step(np.int64(1))  # numpy integers are integers
    assert simulation.current_step == 1


@pytest.mark.parametrize("cutoff", [1e-6, 0.3, 1e6])
def test_extreme_valid_cutoffs_match_openmm(cutoff):
    """Any finite cutoff > 0 is accepted, and gives OpenMM's energy (no pairs within a tiny cutoff, all pairs
    within a huge one)."""
    system = bio.System.from_pdb(ALANINE_DIPEPTIDE, nonbonded_method="cutoff", cutoff=cutoff)
    context = openmm.Context(system.openmm_system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(system.positions.numpy())
    reference = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert float(system.energy(system.positions)) == pytest.approx(reference, rel=1e-9, abs=1e-6)


# ---- property-based fuzzing --------------------------------------------------------------------------------------

def _load_or_bio_error(text, name="fuzz.pdb"):
    """Load `text` as a structure file with a force field: returns the System, or None when bio refused it with
    one of its errors (any other exception fails the test)."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / name
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
        try:
            system = bio.System.from_pdb(path, forcefield=FAST_FORCEFIELD)
        except bio.BioError as error:
            _one_line(error)
            return None
    assert torch.isfinite(system.positions).all()
    return system


@FUZZ
@given(st.integers(0, len(TEXT)))
def test_truncated_pdb_loads_or_raises_a_bio_error(cut):
    _load_or_bio_error(TEXT[:cut])


_ATOM_LINES = [k for k, line in enumerate(LINES) if line.startswith("ATOM")]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(_ATOM_LINES), st.integers(0, 79),
                          st.sampled_from(list("0123456789.-+eE xXnaifNI*#\t\0é"))), min_size=1, max_size=6))
def test_damaged_atom_records_load_or_raise_a_bio_error(edits):
    """Characters replaced anywhere in ATOM records (coordinates, names, serial and residue numbers, element)."""
    lines = list(LINES)
    for k, column, character in edits:
        line = lines[k].rstrip("\n").ljust(80)
        lines[k] = (line[:column] + character + line[column + 1:]).rstrip() + "\n"
    system = _load_or_bio_error("".join(lines))
    if system is not None:
        assert system.n_atoms == 22 and torch.isfinite(system.energy(system.positions))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(LINES)), st.binary(max_size=40)), min_size=1, max_size=4),
       st.sampled_from(["fuzz.pdb", "fuzz.cif"]))
def test_inserted_garbage_loads_or_raises_a_bio_error(insertions, name):
    data = [line.encode() for line in LINES]
    for at, garbage in insertions:
        data.insert(at, garbage)
    _load_or_bio_error(b"".join(data), name)


_WATER_XML = (OPENMM_DATA / "amber14" / "tip3p.xml").read_text()


@FUZZ
@given(st.integers(0, len(_WATER_XML)), st.text(max_size=30))
def test_damaged_forcefield_xml_loads_or_raises_a_bio_error(cut, tail):
    """A force-field file (not OpenMM's own copy) cut anywhere and followed by random text."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "water.xml"
        path.write_text(_WATER_XML[:cut] + tail)
        try:
            load_forcefield(str(path))
        except bio.BioError as error:
            _one_line(error)


@FUZZ
@given(st.sampled_from(["nocutoff", "cutoff_nonperiodic", "cutoff_periodic"]),
       st.one_of(st.floats(), st.floats(1e-6, 1e6), st.sampled_from([1e-6, 1e6, 1.0, 1.0 + 1e-9])))
def test_any_cutoff_is_refused_or_gives_openmm_energy(boxed_pdb, method, cutoff):
    """Every float: out of range (or, periodic, beyond half the 2 nm box) it raises ArgumentError; otherwise the
    energy is OpenMM's. (Before these checks tiny and huge cutoffs crashed inside the energy terms.)"""
    periodic = method == "cutoff_periodic"
    valid = math.isfinite(cutoff) and 1e-6 <= cutoff <= 1e6 and not (periodic and cutoff > 1.0)
    path = boxed_pdb if periodic else ALANINE_DIPEPTIDE
    if not valid:
        with pytest.raises(bio.ArgumentError, match="cutoff"):
            bio.System.from_pdb(path, forcefield="amber14-all.xml", nonbonded_method=method, cutoff=cutoff)
        return
    system = bio.System.from_pdb(path, forcefield="amber14-all.xml", nonbonded_method=method, cutoff=cutoff)
    context = openmm.Context(system.openmm_system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(system.positions.numpy())
    reference = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert float(system.energy(system.positions)) == pytest.approx(reference, rel=1e-7, abs=1e-6)
