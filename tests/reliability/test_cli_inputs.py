"""`diffsci mm` with bad options and files: exit code != 0, a one-line message that names the option or file,
never a traceback, and no code run from a force-field file unless --trust-forcefield-scripts. Every case runs
in-process (fast); a sample also runs as a real `python -m diffsci` process."""

import subprocess
import sys
from pathlib import Path

import pytest

from diffsci.cli import main

ALANINE_DIPEPTIDE = str(Path(__file__).resolve().parents[1] / "bio" / "data" / "alanine_dipeptide.pdb")
TEXT = Path(ALANINE_DIPEPTIDE).read_text()
EVIL = '<ForceField>\n <Script>\nopen("code-ran", "w").write("ran")\n </Script>\n</ForceField>\n'
FILES = {"truncated.pdb": TEXT[:700], "evil.xml": EVIL, "broken.xml": "<ForceField>\n <Residues>\n</ForceField>\n",
         "junk.pdb": bytes(range(256)) * 4}
MINIMIZE = ["mm", "minimize", ALANINE_DIPEPTIDE, "--max-steps", "1"]
MD = ["mm", "md", ALANINE_DIPEPTIDE, "--steps", "2", "--report-interval", "1"]

CASES = [
    # (name, arguments, exit code, substrings of the error message)
    ("cutoff -1", MINIMIZE + ["--cutoff", "-1"], 1, ["--cutoff", ">= 1e-06 and <= 1e+06 nm", "-1"]),
    ("cutoff 0", MINIMIZE + ["--nonbonded-method", "cutoff", "--cutoff", "0"], 1, ["--cutoff", "got 0"]),
    ("cutoff nan", MINIMIZE + ["--cutoff", "nan"], 1, ["--cutoff", "nan"]),
    ("cutoff inf", MINIMIZE + ["--cutoff", "inf"], 1, ["--cutoff", "finite"]),
    ("cutoff not a number", MINIMIZE + ["--cutoff", "abc"], 2, ["--cutoff", "invalid float value"]),
    ("unknown nonbonded method", MINIMIZE + ["--nonbonded-method", "ewald"], 2, ["--nonbonded-method", "ewald"]),
    ("pme without a box", MINIMIZE + ["--nonbonded-method", "pme"], 1, ["--nonbonded-method", "periodic box"]),
    ("unknown constraints", MINIMIZE + ["--constraints", "bonds"], 2, ["--constraints"]),
    ("tolerance 0", MINIMIZE + ["--tolerance", "0"], 1, ["--tolerance", "> 0 kJ/mol/nm"]),
    ("max steps -1", MINIMIZE + ["--max-steps", "-1"], 1, ["--max-steps", ">= 0"]),
    ("unknown device", MINIMIZE + ["--device", "gpu"], 1, ["--device", "'gpu'"]),
    ("absent GPU", MINIMIZE + ["--device", "cuda:7"], 1, ["--device", "'cuda:7'"]),
    ("out in a missing directory", MINIMIZE + ["--out", "absent/minimized.pdb"], 1, ["--out", "does not exist"]),
    ("steps -5", MD + ["--steps", "-5"], 1, ["--steps", ">= 0", "-5"]),
    ("steps 1.5", MD + ["--steps", "1.5"], 2, ["--steps", "invalid int value"]),
    ("temperature 0", MD + ["--temperature", "0"], 1, ["--temperature", "> 0 K"]),
    ("temperature nan", MD + ["--temperature", "nan"], 1, ["--temperature", "nan"]),
    ("friction -1", MD + ["--friction", "-1"], 1, ["--friction", ">= 0"]),
    ("step size 0", MD + ["--step-size", "0"], 1, ["--step-size", "> 0 ps"]),
    ("report interval 0", MD + ["--report-interval", "0"], 1, ["--report-interval", ">= 1"]),
    ("seed -1", MD + ["--seed", "-1"], 1, ["--seed", "-1"]),
    ("trajectory format", MD + ["--out", "run.xyz"], 1, ["--out", "run.xyz", "unknown trajectory format"]),
    ("checkpoint in a missing directory", MD + ["--checkpoint", "absent/run.pt"], 1,
     ["--checkpoint", "does not exist"]),
    ("missing structure", ["mm", "minimize", "absent.pdb"], 1, ["absent.pdb", "no such file"]),
    ("truncated structure", ["mm", "minimize", "truncated.pdb"], 1, ["truncated.pdb, line 10", "truncated ATOM"]),
    ("binary structure", ["mm", "minimize", "junk.pdb"], 1, ["junk.pdb", "binary"]),
    ("missing force field", MINIMIZE + ["--forcefield", "absent.xml"], 1, ["absent.xml", "not found"]),
    ("malformed force field", MINIMIZE + ["--forcefield", "amber14-all.xml", "broken.xml"], 1,
     ["broken.xml, line 3", "not a well-formed"]),
    ("force field with a Script", MINIMIZE + ["--forcefield", "amber14-all.xml", "evil.xml"], 1,
     ["evil.xml, line 2", "<Script>", "arbitrary Python", "--trust-forcefield-scripts"]),
]
IN_A_PROCESS = {"cutoff -1", "cutoff not a number", "steps -5", "temperature 0", "absent GPU", "truncated structure",
                "force field with a Script", "report interval 0"}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    for name, content in FILES.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _check(code, stderr, expected_code, substrings, workdir):
    assert code == expected_code, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    line = [line for line in stderr.splitlines() if "error:" in line]
    assert len(line) == 1, stderr  # one line says what is wrong
    for substring in substrings:
        assert substring in line[0], line[0]
    assert not (workdir / "code-ran").exists(), "code from a force-field file ran"


@pytest.mark.parametrize("name, arguments, expected_code, substrings", CASES, ids=[c[0] for c in CASES])
def test_bad_options_and_files_fail_with_one_line(workdir, capsys, name, arguments, expected_code, substrings):
    try:
        code = main(arguments)
    except SystemExit as exit:  # argparse's own errors (type and choices) exit with 2
        code = exit.code
    _check(code, capsys.readouterr().err, expected_code, substrings, workdir)


@pytest.mark.parametrize("name, arguments, expected_code, substrings", [c for c in CASES if c[0] in IN_A_PROCESS],
                         ids=[c[0] for c in CASES if c[0] in IN_A_PROCESS])
def test_bad_options_fail_in_a_real_process(workdir, name, arguments, expected_code, substrings):
    result = subprocess.run([sys.executable, "-m", "diffsci", *arguments], capture_output=True, text=True,
                            cwd=workdir, timeout=300)
    _check(result.returncode, result.stderr, expected_code, substrings, workdir)


def test_trusted_force_field_script_runs(workdir, capsys):
    # MINIMIZE stops after one step: it runs, and exits 1 only because one step does not converge
    assert main(MINIMIZE + ["--forcefield", "amber14-all.xml", "evil.xml", "--trust-forcefield-scripts"]) == 1
    assert "not converged" in capsys.readouterr().err
    assert (workdir / "code-ran").read_text() == "ran"


def test_zero_steps_is_a_valid_run(workdir, capsys):
    assert main(MD + ["--steps", "0", "--seed", "1"]) == 0
    assert "Traceback" not in capsys.readouterr().err
