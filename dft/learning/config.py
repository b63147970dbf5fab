"""The TOML file of a functional fit (``diffsci fit-xc CONFIG.toml``, ``tutorials/fit_xc.py``).

    [functional]            # a NeuralXC (see dft.xc.NeuralXC)
    base = "pbe"
    inputs = ["rho", "zeta", "s"]
    hidden = [16, 16]
    seed = 0

    [data]                  # the training Dataset (dft.learning.Dataset): G2 names
    basis = "6-31g*"
    atomization = ["H2", "LiH", "N2", "O2", "NO", "CO", "F2", "HF"]
    ionization = []
    densities = []

    [validation]            # optional: atomization energies that select the best epoch
    atomization = ["CH4", "H2O"]

    [loss]                  # optional: term weights (dft.learning.Loss)
    atomization = 1.0

    [training]
    epochs = 60
    lr = 0.005
    grid_level = 3

    [output]
    functional = "functional.pt"   # relative paths are relative to the output folder

Unknown sections or keys are errors (a typo never silently does nothing).
"""

import tomllib

from .datasets import Dataset
from .losses import TERMS, Loss

SECTIONS = {
    "functional": {"base", "inputs", "hidden", "seed"},
    "data": {"basis", "atomization", "ionization", "densities"},
    "validation": {"atomization"},
    "loss": set(TERMS),
    "training": {"epochs", "lr", "grid_level", "conv_tol", "max_cycle"},
    "output": {"functional"},
}


class ConfigError(ValueError):
    """A fit-xc configuration file cannot be used (the message names the file, section and key)."""


def load(path):
    """Read and check a fit-xc TOML file; returns a dict with ``functional`` (NeuralXC arguments), ``dataset``,
    ``validation`` (Dataset or None), ``loss`` (Loss), ``training`` (train() keyword arguments) and
    ``output`` (file names)."""
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    for section, values in raw.items():
        if section not in SECTIONS:
            raise ConfigError(f"{path}: unknown section [{section}]; sections are {sorted(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: {section} must be a [section] of keys")
        for key in values:
            if key not in SECTIONS[section]:
                raise ConfigError(f"{path}: unknown key {key!r} in [{section}]; keys are {sorted(SECTIONS[section])}")
    if "data" not in raw or "basis" not in raw["data"]:
        raise ConfigError(f"{path}: [data] must give the basis and the training molecules")
    where = "?"
    try:
        where = "[data]"
        dataset = Dataset(**raw["data"])
        where = "[validation]"
        validation = Dataset(dataset.basis, **raw["validation"]) if "validation" in raw else None
        where = "[loss]"
        loss = Loss(**raw.get("loss", {}))
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{path}: {where}: {error}") from None
    return {"functional": raw.get("functional", {}), "dataset": dataset, "validation": validation, "loss": loss,
            "training": raw.get("training", {}), "output": {"functional": "functional.pt", **raw.get("output", {})}}
