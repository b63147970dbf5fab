import subprocess
import sys

import diffsci
from diffsci.cli import main


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert diffsci.__version__ in capsys.readouterr().out


def test_help_runs_as_console_script():
    out = subprocess.run([sys.executable, "-m", "diffsci", "--help"], capture_output=True, text=True, check=True)
    assert "usage: diffsci" in out.stdout


def test_every_subcommand_lists_and_ends_with_an_example():
    from diffsci.cli import SUBCOMMANDS

    top = subprocess.run([sys.executable, "-m", "diffsci", "--help"], capture_output=True, text=True, check=True)
    for name, module in SUBCOMMANDS.items():
        assert name in top.stdout
        out = subprocess.run([sys.executable, "-m", "diffsci", name, "--help"], capture_output=True, text=True,
                             check=True).stdout
        assert out.rstrip().endswith(module.EXAMPLE.splitlines()[-1].strip())
        assert f"example: {module.EXAMPLE.splitlines()[0]}" in out


def test_internal_errors_are_one_line_unless_debug(monkeypatch, capsys, tmp_path):
    from diffsci import tour

    def broken(*args, **kwargs):
        raise RuntimeError("something\nwent wrong")

    monkeypatch.setattr(tour, "tour", broken)
    assert main(["tour", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" in err and "something went wrong" in err and "--debug" in err
    try:
        main(["--debug", "tour", "--out", str(tmp_path)])
    except RuntimeError as error:
        assert "went wrong" in str(error)
    else:
        raise AssertionError("--debug should let the error through")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tour, "tour", interrupted)
    assert main(["tour", "--out", str(tmp_path)]) == 130
    assert "interrupted" in capsys.readouterr().err
