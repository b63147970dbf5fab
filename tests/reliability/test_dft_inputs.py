"""Bad input to ``dft`` is refused at the API with a one-line error naming what is wrong and where (argument,
atom, file:line), and ``diffsci dft`` turns it into an exit code and a message without a traceback.

Tables of hand-written cases for molecules, XYZ files, Kohn-Sham options and the property functions, and
property-based checks: random bytes and random XYZ-like text either make a molecule or raise ``dft.DFTError``
(never another exception), and random SCF controls are refused exactly when they are out of their documented
range."""

import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyscf import gto

import dft
from dft import scf
from dft.molecule import MAX_COORDINATE, MIN_DISTANCE

NAN, INF = float("nan"), float("inf")
H2 = "H 0 0 0; H 0 0 0.74"
# Modest and self-contained: no example database written into the working tree; fresh random examples each run.
FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _text_line(message):
    return "\n" not in message and len(message) < 400


# Molecule(atom, basis, **kwargs): (atom, kwargs, exception, what the message must contain)
MOLECULES = [
    (H2, dict(charge=0.5), dft.MoleculeError, "charge must be an integer, got 0.5"),  # was charge 0 silently
    (H2, dict(charge=NAN), dft.MoleculeError, "charge"),
    (H2, dict(charge="1"), dft.MoleculeError, "charge"),
    (H2, dict(spin=1.5), dft.MoleculeError, "spin must be an integer"),
    (H2, dict(spin=1), dft.MoleculeError, "spin=1"),
    (H2, dict(charge=3), dft.MoleculeError, "charge 3"),
    ("H 0 0 0; H 0 0 1e20", {}, dft.MoleculeError, "atom 2 (H)"),  # used to "converge" to +7.69 Ha
    ("H 0 0 0; H 0 0 -6e4", {}, dft.MoleculeError, "atom 2 (H)"),
    ("H 0 0 0; H 0 0 nan", {}, dft.MoleculeError, "atom 2 (H)"),
    ("H 0 0 0; H inf 0 0", {}, dft.MoleculeError, "not finite"),
    ("H 0 0 0; H 0 0 0.001", {}, dft.MoleculeError, "atoms 1 (H) and 2 (H)"),
    ("H 0 0 0; H 0 0 0", {}, dft.MoleculeError, "on top of each other"),
    ("H 0 0 0; Xx 0 0 0.74", {}, dft.MoleculeError, "atom 2: unknown element 'Xx'"),
    ("H 0 0 0; 0 0 0 0.74", {}, dft.MoleculeError, "atomic number 0"),
    ("H 0 0 0; H 0 0", {}, dft.MoleculeError, "atom 2"),
    ("H 0 0 0; H 0 0 a", {}, dft.MoleculeError, "coordinates must be numbers"),
    ([("H", (0, 0))], {}, dft.MoleculeError, "expected 3 coordinates"),
    (None, {}, dft.MoleculeError, "atom must be"),
    ("", {}, dft.MoleculeError, "no atoms"),
    (H2, dict(unit="furlong"), dft.MoleculeError, "unit 'furlong'"),
    (H2, dict(device="foo"), dft.OptionError, "device 'foo'"),
    (H2, dict(device="meta"), dft.OptionError, "device 'meta'"),
    (H2, dict(device="cuda:99"), dft.OptionError, "device 'cuda:99'"),
    (H2, dict(basis="sto-3gg"), dft.BasisError, "sto-3gg"),
    (H2, dict(basis={"O": "sto-3g"}), dft.BasisError, "element H"),
]


@pytest.mark.parametrize("atom, kwargs, error, text", MOLECULES)
def test_molecule_refuses_bad_input(atom, kwargs, error, text):
    kwargs = {"basis": "sto-3g", **kwargs}
    with pytest.raises(error) as raised:
        dft.Molecule(atom, **kwargs)
    assert text in str(raised.value) and _text_line(str(raised.value))
    assert isinstance(raised.value, (dft.DFTError, ValueError))


def test_molecule_limits_are_inclusive_and_documented():
    edge = MAX_COORDINATE * 0.999
    mol = dft.Molecule(f"H 0 0 {edge}; H 0 0 {edge - 1.4}", "sto-3g", unit="bohr")
    assert float(mol.coords.abs().max()) <= MAX_COORDINATE
    dft.Molecule(f"H 0 0 0; H 0 0 {MIN_DISTANCE * 1.01}", "sto-3g", unit="bohr")
    assert dft.Molecule(H2, "sto-3g", charge=-2.0).charge == -2  # an integral float is an integer
    assert dft.Molecule("O 0 0 0; H 0 0 0.97", "sto-3g", spin=-1).nelec == (4, 5)  # PySCF's negative spin


@pytest.mark.parametrize("coords, text", [
    ([[0.0, 0.0, 0.0], [0.0, 0.0, NAN]], "not finite"),
    ([[0.0, 0.0, 0.0], [0.0, 0.0, 1e20]], "atom 2 (H)"),
    ([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], "on top of each other"),
    ([[0.0, 0.0, 0.0]], "expected (2, 3)"),
])
def test_with_coords_refuses_bad_positions(coords, text):
    mol = dft.Molecule(H2, "sto-3g")
    with pytest.raises(dft.MoleculeError) as raised:
        mol.with_coords(torch.tensor(coords, dtype=torch.float64))
    assert text in str(raised.value)


# XYZ file contents: (bytes, what the message must contain; {} is the file's name)
XYZ = [
    (b"", "{}:1: empty XYZ file"),
    (b"\n\n", "{}:1: empty XYZ file"),
    (b"3\nh2\nH 0 0 0\nH 0 0 0.74\n", "{}: line 1 announces 3 atoms but only 2"),  # truncated
    (b"2\nh2\nH 0 0 0\n", "{}: line 1 announces 2 atoms but only 1"),
    (b"1\nh2\nH 0 0 0\nH 0 0 0.74\n", "{}:4: more atom lines than the 1 announced"),  # wrong count
    (b"two\nh2\nH 0 0 0\nH 0 0 0.74\n", "{}:1: expected the number of atoms"),
    (b"0\nnothing\n", "{}:1: the number of atoms must be positive"),
    (b"-2\nh2\nH 0 0 0\nH 0 0 0.74\n", "{}:1: the number of atoms must be positive"),
    (b"2\nh2\nH 0 0 0\n\nH 0 0 0.74\n", "{}:4: blank line inside the atom block"),
    (b"2\nh2\nH 0 0 0\nH 0 zero 0.74\n", "{}:4: coordinates must be numbers"),  # non-numeric
    (b"2\nh2\nH 0 0 0\nH 0 0.74\n", "{}:4: expected 'symbol x y z'"),
    (b"2\nh2\nH 0 0 0\nQq 0 0 0.74\n", "{}:4: unknown element 'Qq'"),
    (b"2\nh2\nH 0 0 0\n\xc2\xb2 0 0 0.74\n", "{}:4: unknown element"),  # a superscript digit is no atomic number
    (b"2\nh2\nH 0 0 0\nH 0 0 nan\n", "{}:4: coordinates of H are not finite"),
    (b"2\nh2\nH 0 0 0\nH 0 0 1e400\n", "{}:4: coordinates of H are not finite"),
    (b"2\r\nh2\r\nH 0 0 0\r\nH 0 0 -inf\r\n", "{}:4: coordinates of H are not finite"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "{}:1: not a text file"),  # binary junk
    (b"2\nh2\nH 0 0 0\n\xff\xfe 0 0 0.74\n", "{}:4: not a text file"),
    (b"2\nh2\nH 0 0 0\nH 0 0 0.74\x00\n", "{}:4: not a text file"),
    (b"2\nh2\nH 0 0 0\nH 0 0 1e20\n", "{}: atom 2 (H)"),
    (b"2\nh2\nH 0 0 0\nH 0 0 0.01\n", "{}: atoms 1 (H) and 2 (H)"),
    (b"1\nh\nH 0 0 0\n", "{}: 1 electrons cannot have spin=0"),
]


@pytest.mark.parametrize("content, text", XYZ)
def test_xyz_reader_names_file_and_line(tmp_path, content, text):
    path = tmp_path / "bad.xyz"
    path.write_bytes(content)
    with pytest.raises(dft.MoleculeError) as raised:
        dft.Molecule.from_xyz(path, basis="sto-3g")
    assert text.format(path) in str(raised.value) and _text_line(str(raised.value))


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_xyz_reader_takes_every_line_ending(tmp_path, ending):
    path = tmp_path / "h2.xyz"
    path.write_bytes(ending.join([b"2", b"h2", b"H 0 0 0", b"H 0 0 0.74 extra columns", b""]))
    assert dft.Molecule.from_xyz(path, basis="sto-3g").symbols == ["H", "H"]


def test_missing_xyz_file_is_an_os_error(tmp_path):
    with pytest.raises(OSError, match="missing.xyz"):
        dft.Molecule.from_xyz(tmp_path / "missing.xyz", basis="sto-3g")


@pytest.fixture(scope="module")
def h2():
    return dft.Molecule(H2, "sto-3g")


# RKS/UKS(mol, **kwargs): (kwargs, exception, what the message must name)
OPTIONS = [
    (dict(max_cycle=-1), dft.OptionError, "max_cycle"),  # used to return the guess energy
    (dict(max_cycle=0), dft.OptionError, "max_cycle"),
    (dict(max_cycle=2.5), dft.OptionError, "max_cycle"),
    (dict(max_cycle="50"), dft.OptionError, "max_cycle"),
    (dict(conv_tol=0.0), dft.OptionError, "conv_tol"),
    (dict(conv_tol=-1e-9), dft.OptionError, "conv_tol"),
    (dict(conv_tol=NAN), dft.OptionError, "conv_tol"),
    (dict(conv_tol=INF), dft.OptionError, "conv_tol"),
    (dict(conv_tol_grad=-1.0), dft.OptionError, "conv_tol_grad"),
    (dict(grid_level=-1), dft.OptionError, "grid_level"),
    (dict(grid_level=10), dft.OptionError, "grid_level"),
    (dict(grid_level=2.5), dft.OptionError, "grid_level"),
    (dict(diis_space=-1), dft.OptionError, "diis_space"),
    (dict(level_shift=-0.1), dft.OptionError, "level_shift"),
    (dict(level_shift=NAN), dft.OptionError, "level_shift"),
    (dict(damp=1.0), dft.OptionError, "damp"),
    (dict(damp=-0.5), dft.OptionError, "damp"),
    (dict(max_memory=0), dft.OptionError, "max_memory"),
    (dict(density_fit="yes"), dft.OptionError, "density_fit"),
    (dict(grid_response=2), dft.OptionError, "grid_response"),
    (dict(verbose=None), dft.OptionError, "verbose"),
    (dict(field=(0.0, 0.001)), dft.OptionError, "field"),
    (dict(field=(0.0, 0.0, NAN)), dft.OptionError, "field"),
    (dict(field="x"), dft.OptionError, "field"),
    (dict(xc="pbee"), dft.DFTError, "pbee"),
    (dict(density_fit=True, auxbasis="weigend-nope"), dft.BasisError, "auxiliary basis set 'weigend-nope'"),
]


@pytest.mark.parametrize("method", [dft.RKS, dft.UKS])
@pytest.mark.parametrize("kwargs, error, name", OPTIONS)
def test_kohn_sham_refuses_bad_options(h2, method, kwargs, error, name):
    with pytest.raises(error) as raised:
        method(h2, **kwargs)
    assert name in str(raised.value) and _text_line(str(raised.value))
    assert isinstance(raised.value, ValueError)


def test_kohn_sham_wants_a_dft_molecule():
    with pytest.raises(dft.OptionError, match="dft.Molecule.from_pyscf"):
        dft.RKS(gto.M(atom=H2, basis="sto-3g", verbose=0))


def test_kernel_refuses_bad_dm0_and_controls_changed_after_construction(h2):
    mf = dft.RKS(h2, grid_level=0)
    with pytest.raises(dft.OptionError, match=r"dm0 must be a finite \(2, 2\)"):
        mf.kernel(dm0=torch.zeros(3, 3))
    with pytest.raises(dft.OptionError, match="NaN"):
        mf.kernel(dm0=torch.full((2, 2), NAN))
    with pytest.raises(dft.OptionError, match=r"dm0 must be a finite \(2, 2, 2\)"):
        dft.UKS(h2, grid_level=0).kernel(dm0=torch.eye(2))
    mf.max_cycle = -1  # PySCF style, after construction
    with pytest.raises(dft.OptionError, match="run_scf: max_cycle must be an integer >= 1, got -1"):
        mf.kernel()


def test_properties_and_geometry_optimization_refuse_bad_arguments(h2, tmp_path):
    mf = dft.RKS(h2, grid_level=0)
    with pytest.raises(dft.OptionError, match="density_matrix: tol"):
        dft.response.density_matrix(mf, tol=-1e-8)
    with pytest.raises(dft.OptionError, match="hess must be a"):
        dft.harmonic_analysis(h2, torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(dft.OptionError, match="NaN"):
        dft.harmonic_analysis(h2, torch.full((2, 3, 2, 3), NAN, dtype=torch.float64))
    cases = [
        (dict(max_steps=0), "max_steps"),
        (dict(max_steps=2.5), "max_steps"),
        (dict(conv_params={"convergence_energy": -1e-6}), "convergence_energy"),
        (dict(conv_params={"convergence_gmax": NAN}), "convergence_gmax"),
        (dict(method="bfgs"), "method"),
        (dict(trajectory=tmp_path / "no" / "such" / "folder.xyz"), "trajectory"),
    ]
    for kwargs, name in cases:
        with pytest.raises(dft.OptionError) as raised:
            dft.optimize_geometry(h2, **kwargs)
        assert name in str(raised.value)
    with pytest.raises(dft.OptionError, match="max_cycle"):
        dft.optimize_geometry(h2, max_cycle=0)  # an SCF option, refused at the first SCF


# Property-based checks.

NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 60), st.booleans(),
                    st.sampled_from([None, "1"]))
CONTROLS = {  # name: (integer, accepts(value)) -- the documented ranges, written out independently
    "conv_tol": (False, lambda v: v > 0),
    "conv_tol_grad": (False, lambda v: v > 0),
    "max_cycle": (True, lambda v: v >= 1),
    "diis_space": (True, lambda v: v >= 0),
    "level_shift": (False, lambda v: v >= 0),
    "damp": (False, lambda v: 0 <= v < 1),
}


def _in_range(name, value):
    integer, accepts = CONTROLS[name]
    if name == "conv_tol_grad" and value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return (not integer or float(value).is_integer()) and accepts(value)


@FUZZ
@given(values=st.fixed_dictionaries({name: NUMBERS for name in CONTROLS}))
def test_scf_controls_are_refused_exactly_out_of_range(values):
    bad = [name for name in CONTROLS if not _in_range(name, values[name])]
    try:
        scf.check_controls("RKS", **values)
    except dft.OptionError as error:
        assert error.argument == bad[0] and str(error).startswith(f"RKS: {bad[0]} must be ")
        return
    assert not bad


def _write(directory, content):
    path = directory / "fuzz.xyz"
    path.write_bytes(content)
    return path


def _read_or_refuse(path):
    """Molecule.from_xyz either parses (a sane molecule) or raises a DFTError naming the file."""
    try:
        mol = dft.Molecule.from_xyz(path, basis="sto-3g")
    except dft.BasisError:
        return
    except dft.DFTError as error:
        assert str(path) in str(error) and _text_line(str(error))
        return
    assert mol.natm >= 1 and bool(torch.isfinite(mol.coords).all())
    assert float(mol.coords.abs().max()) <= MAX_COORDINATE


@FUZZ
@given(content=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_random_bytes_parse_or_raise_a_dft_error(tmp_path, content):
    _read_or_refuse(_write(tmp_path, content))


# XYZ-like text: mostly well-formed lines (so that the geometry, electron-count and basis checks are reached),
# with bad symbols, numbers, counts and line endings mixed in.
SYMBOLS = st.one_of(st.sampled_from(["H", "He", "li", "O1", "C", "8"]),
                    st.sampled_from(["0", "119", "Xx", "X", "", "²", "١", "H\x00", "nan"]))
NUMBER_TEXT = st.one_of(st.floats(-3, 3).map(repr), st.floats(-3, 3).map(repr),
                        st.floats(allow_nan=True, allow_infinity=True).map(repr),
                        st.sampled_from(["nan", "-inf", "1e400", "1e20", "abc", "1_0", "0x1", "", "١"]))
COORDINATES = st.one_of(st.lists(NUMBER_TEXT, min_size=3, max_size=3), st.lists(NUMBER_TEXT, max_size=5))
ATOM_LINES = st.lists(st.builds(lambda s, xs: " ".join([s, *xs]), SYMBOLS, COORDINATES), min_size=1, max_size=6)
COMMENTS = st.one_of(st.text("abc xyz=0.1", max_size=20), st.text(max_size=20))


@FUZZ
@given(count=st.one_of(st.none(), st.none(), st.integers(-2, 8).map(str), st.text(max_size=4)), comment=COMMENTS,
       lines=ATOM_LINES, ending=st.sampled_from(["\n", "\r\n", "\r"]))
def test_random_xyz_text_parses_or_raises_a_dft_error(tmp_path, count, comment, lines, ending):
    header = str(len(lines)) if count is None else count
    _read_or_refuse(_write(tmp_path, ending.join([header, comment, *lines, ""]).encode()))


# `diffsci dft` with bad options or files: exit code != 0, a message naming the option or file, no traceback.
WATER = "3\nwater\nO 0 0 0.117\nH 0 0.757 -0.470\nH 0 -0.757 -0.470\n"
CLI = [
    (["--max-cycle", "-1"], "--max-cycle"),
    (["--conv-tol", "nan"], "--conv-tol"),
    (["--grid-level", "12"], "--grid-level"),
    (["--device", "foo"], "--device"),
    (["--charge", "0.5"], "--charge"),  # argparse: not an integer
    (["--max-cycle", "ten"], "--max-cycle"),
    ("binary", "bad.xyz:1"),
    ("truncated", "bad.xyz"),
    ("missing", "missing.xyz"),
]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """Every case of ``CLI`` run, two at a time (each process spends seconds importing torch and PySCF): case ->
    the finished process."""
    folder = tmp_path_factory.mktemp("cli")
    water, binary, truncated = folder / "water.xyz", folder / "bad.xyz", folder / "truncated" / "bad.xyz"
    truncated.parent.mkdir()
    water.write_text(WATER)
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    truncated.write_text(WATER[:-20])
    files = {"binary": binary, "truncated": truncated, "missing": folder / "missing.xyz"}

    def run(options):
        path, args = (files[options], []) if isinstance(options, str) else (water, options)
        return subprocess.run([sys.executable, "-m", "diffsci", "dft", str(path), "--basis", "sto-3g", *args],
                              capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=2) as pool:  # two at a time: the test machines have two cores
        done = pool.map(run, [options for options, _ in CLI])
        return {str(options): process for (options, _), process in zip(CLI, done)}


@pytest.mark.parametrize("options, text", CLI)
def test_cli_bad_input_is_one_line_without_traceback(cli_runs, options, text):
    done = cli_runs[str(options)]
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert text in done.stderr.strip().splitlines()[-1]
