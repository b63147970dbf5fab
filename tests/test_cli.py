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
