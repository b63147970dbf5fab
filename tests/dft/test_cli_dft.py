"""`diffsci dft` end to end: the printed total energy equals PySCF's for the same molecule and settings."""

import re

import pyscf.dft
import pyscf.gto

from diffsci.cli import main

WATER = """3
water
O 0.000 0.000 0.117
H 0.000 0.757 -0.470
H 0.000 -0.757 -0.470
"""


def test_dft_single_point_matches_pyscf(tmp_path, capsys):
    path = tmp_path / "water.xyz"
    path.write_text(WATER)
    assert main(["dft", str(path), "--xc", "pbe", "--basis", "sto-3g", "--grid-level", "1"]) == 0
    out = capsys.readouterr().out
    energy = float(re.search(r"total energy\s+(\S+) Ha", out).group(1))
    assert "converged in" in out

    mol = pyscf.gto.M(atom=str(path), basis="sto-3g", verbose=0)
    mf = pyscf.dft.RKS(mol, xc="pbe")
    mf.grids.level = 1
    mf.conv_tol = 1e-9
    assert abs(energy - mf.kernel()) < 1e-6


def test_dft_bad_input_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "bad.xyz"
    path.write_text("3\nwater\nO 0 0 0\nH 0 0.757\n")
    assert main(["dft", str(path)]) == 1
    assert "bad.xyz" in capsys.readouterr().err
    path.write_text(WATER)
    assert main(["dft", str(path), "--basis", "def2-svpp"]) == 1
    assert "def2-svp" in capsys.readouterr().err  # names the close match
