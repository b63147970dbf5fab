"""Reading structures (PDB, PDBx/mmCIF) through OpenMM's `app`, with clear errors for bad files.

Reading a structure never runs code from the file (OpenMM's PDB and PDBx readers only parse text). Errors name
the file and, where OpenMM's reader stopped or a record is bad, the line.
"""

import math
import os
from pathlib import Path

import numpy as np
import openmm.app as app
import openmm.unit as unit

from .errors import ArgumentError, StructureError, one_line

_READERS = {".pdb": app.PDBFile, ".ent": app.PDBFile, ".cif": app.PDBxFile, ".mmcif": app.PDBxFile,
            ".pdbx": app.PDBxFile}


def read_structure(path):
    """Topology and positions from a PDB or PDBx/mmCIF file.

    Returns (openmm.app.Topology, positions as a float64 numpy array (N, 3) in nm). Raises StructureError for
    a missing, unreadable, binary or truncated file, a malformed record (naming its line), no atoms, or
    non-finite coordinates.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentError("path", path, "a file name (str or path)", "read_structure")
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise StructureError(f"{path}: unknown structure format {path.suffix!r}; use .pdb or .cif (PDBx/mmCIF).")
    if not path.is_file():
        raise StructureError(f"{path}: no such file.")
    try:
        if reader is app.PDBFile:
            _check_pdb_records(path)
        else:
            _check_pdbx_text(path)
        with _Lines(path) as lines:
            try:
                structure = reader(lines)
            except StructureError:
                raise
            except Exception as error:  # OpenMM raises bare ValueError/IndexError/KeyError on malformed files
                where = f", line {lines.number}" if not lines.finished else ""
                raise StructureError(f"{path}{where}: OpenMM could not read it as {_FORMATS[reader]} "
                                     f"({one_line(error)}). Check that the file is complete and well formed.") \
                    from error
    except OSError as error:
        raise StructureError(f"{path}: cannot read the file ({error.strerror or error}).") from error
    topology = structure.topology
    if topology.getNumAtoms() == 0:
        raise StructureError(f"{path}: no atoms found; is the file empty or truncated?")
    positions = np.asarray(structure.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=np.float64)
    finite = np.isfinite(positions).all(axis=1)
    if not finite.all():
        atom = list(topology.atoms())[int(np.argmin(finite))]
        raise StructureError(f"{path}: non-finite coordinates for atom {atom.name} of residue {atom.residue.name} "
                             f"{atom.residue.id} (chain {atom.residue.chain.id}); fix the coordinates.")
    box = topology.getPeriodicBoxVectors()
    if box is not None and not np.isfinite(np.asarray(box.value_in_unit(unit.nanometer), dtype=np.float64)).all():
        raise StructureError(f"{path}: the periodic box (CRYST1 record or mmCIF cell) is not finite; fix it.")
    return topology, positions


_FORMATS = {app.PDBFile: "PDB", app.PDBxFile: "PDBx/mmCIF"}


class _Lines:
    """The file's lines for OpenMM's readers (which only iterate over them), counted, so that an error can name
    the line the reader stopped at. Bytes that are not UTF-8 (e.g. Latin-1 in a REMARK) read as U+FFFD."""

    def __init__(self, path):
        self.name = str(path)
        self.number, self.finished = 0, False
        self._file = open(path, encoding="utf-8", errors="replace")

    def __iter__(self):
        return self

    def __next__(self):
        try:
            line = next(self._file)
        except StopIteration:
            self.finished = True
            raise
        self.number += 1
        return line

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


def _check_pdb_records(path):
    """Catch empty or binary files, cut-off ATOM/HETATM records and coordinates or CRYST1 fields that are not
    finite numbers, naming the line (OpenMM would otherwise misread, drop or fail on them without saying where)."""
    atoms, binary = 0, False
    with open(path, encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            binary = binary or "\0" in line
            record = line[:6]
            where = f"{path}, line {number}"
            if record in ("ATOM  ", "HETATM"):
                atoms += 1
                if len(line.rstrip("\r\n")) < 54:
                    raise StructureError(
                        f"{where}: truncated {record.strip()} record (coordinates need columns 31-54, the line has "
                        f"{len(line.rstrip())} characters); the file looks cut off or damaged.")
                atom = (f"atom {line[12:16].strip()} of residue {line[17:20].strip()} {line[22:26].strip()} "
                        f"(chain {line[21]})")
                for axis, start in (("x", 30), ("y", 38), ("z", 46)):
                    text, columns = line[start:start + 8], f"columns {start + 1}-{start + 8}"
                    value = _float(text)
                    if value is None:
                        raise StructureError(f"{where}: {record.strip()} record of {atom}: the {axis} coordinate "
                                             f"{text.strip()!r} ({columns}) is not a number; the record is damaged "
                                             "or misaligned.")
                    if not math.isfinite(value):
                        raise StructureError(f"{where}: non-finite coordinates for {atom}: {axis} = {text.strip()!r} "
                                             f"({columns}); fix the coordinates.")
            elif record == "CRYST1":
                fields = [(name, line[start:end], f"columns {start + 1}-{end}") for name, start, end in (
                    ("a", 6, 15), ("b", 15, 24), ("c", 24, 33), ("alpha", 33, 40), ("beta", 40, 47), ("gamma", 47, 54))]
                values = [_float(text) for _, text, _ in fields]
                for (name, text, columns), value in zip(fields, values):
                    if value is None or not math.isfinite(value):
                        raise StructureError(f"{where}: CRYST1 record: {name} = {text.strip()!r} ({columns}) is not a "
                                             "finite number; fix the box or remove the record.")
                lengths, angles = values[:3], values[3:]
                if 0 not in lengths and not (min(lengths) > 0 and all(0 < angle < 180 for angle in angles)):
                    raise StructureError(f"{where}: CRYST1 record: box lengths {lengths} Å must be > 0 and angles "
                                         f"{angles} degrees between 0 and 180; fix the box or remove the record.")
    if atoms == 0:
        what = "it looks like a binary file, not a PDB text file" if binary else "is the file empty or truncated?"
        raise StructureError(f"{path}: no atoms found (no ATOM/HETATM records); {what}")


def _float(text):
    try:
        return float(text)
    except ValueError:
        return None


def _check_pdbx_text(path):
    """Catch empty and binary files, and text without a data_ block, before OpenMM's PDBx reader fails on them
    with an IndexError."""
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if "\0" in line:
                raise StructureError(f"{path}: it looks like a binary file, not a PDBx/mmCIF text file.")
            if line.startswith("data_"):
                return
    raise StructureError(f"{path}: no data_ block found; is the file empty, truncated or not PDBx/mmCIF?")
