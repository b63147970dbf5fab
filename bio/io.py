"""Reading structures (PDB, PDBx/mmCIF) through OpenMM's `app`, with clear errors for bad files."""

from pathlib import Path

import numpy as np
import openmm.app as app
import openmm.unit as unit

from .errors import StructureError

_READERS = {".pdb": app.PDBFile, ".ent": app.PDBFile, ".cif": app.PDBxFile, ".mmcif": app.PDBxFile,
            ".pdbx": app.PDBxFile}


def read_structure(path):
    """Topology and positions from a PDB or PDBx/mmCIF file.

    Returns (openmm.app.Topology, positions as a float64 numpy array (N, 3) in nm). Raises StructureError for
    a missing, unreadable or truncated file, no atoms, or non-finite coordinates.
    """
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise StructureError(f"{path}: unknown structure format {path.suffix!r}; use .pdb or .cif (PDBx/mmCIF).")
    if not path.is_file():
        raise StructureError(f"{path}: no such file.")
    if reader is app.PDBFile:
        _check_pdb_records(path)
    try:
        structure = reader(str(path))
    except Exception as error:  # OpenMM raises bare ValueError/IndexError/KeyError on malformed files
        raise StructureError(f"{path}: OpenMM could not read it ({type(error).__name__}: {error}). "
                             "Check that the file is complete and well formed.") from error
    topology = structure.topology
    if topology.getNumAtoms() == 0:
        raise StructureError(f"{path}: no atoms found; is the file empty or truncated?")
    positions = np.asarray(structure.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=np.float64)
    finite = np.isfinite(positions).all(axis=1)
    if not finite.all():
        atom = list(topology.atoms())[int(np.argmin(finite))]
        raise StructureError(f"{path}: non-finite coordinates for atom {atom.name} of residue {atom.residue.name} "
                             f"{atom.residue.id} (chain {atom.residue.chain.id}); fix the coordinates.")
    return topology, positions


def _check_pdb_records(path):
    """Catch empty files and cut-off ATOM/HETATM records, which OpenMM would otherwise misread or drop."""
    atoms = 0
    with open(path, errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if line.startswith(("ATOM  ", "HETATM")):
                atoms += 1
                if len(line.rstrip("\r\n")) < 54:
                    raise StructureError(
                        f"{path}, line {number}: truncated {line[:6].strip()} record (coordinates need columns "
                        f"31-54, the line has {len(line.rstrip())} characters); the file looks cut off or damaged.")
    if atoms == 0:
        raise StructureError(f"{path}: no atoms found (no ATOM/HETATM records); is the file empty or truncated?")
