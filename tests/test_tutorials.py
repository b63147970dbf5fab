"""Every tutorial runs end to end and reaches its stated result."""

import importlib.util
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"


def load(name):
    spec = importlib.util.spec_from_file_location(name, TUTORIALS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_tutorial_has_a_test():
    tested = {"mm_energy_in_a_bayesian_model"}
    assert {path.stem for path in TUTORIALS.glob("*.py")} == tested


def test_mm_energy_in_a_bayesian_model():
    low, median, high, true_scale = load("mm_energy_in_a_bayesian_model").main()
    assert low < true_scale < high
    assert median == pytest.approx(true_scale, abs=0.05)
