"""Molecules: atoms, nuclear coordinates (a torch tensor, Bohr), basis set, charge and spin.

A :class:`Molecule` validates its input, then builds the PySCF ``Mole`` once; PySCF supplies basis sets,
integrals and grids from it. The nuclear coordinates live in ``Molecule.coords`` (Bohr, float64), the
tensor that derivatives with respect to nuclear positions are taken against.

Geometries accepted: finite coordinates within ``MAX_COORDINATE`` (1e5 Bohr, 5.3e4 Angstrom) of the origin,
no two nuclei closer than ``MIN_DISTANCE`` (0.1 Bohr); integer charge and spin with the parity of the electron
count. Further out float64 can no longer resolve the basis functions and grid around a nucleus: H2 translated
to 1e8 Bohr moves its energy by 3e-10 Ha, and at 1e20 Angstrom an SCF "converges" to a meaningless energy.
"""

import difflib
import math
import re
import warnings
from pathlib import Path

import torch
from pyscf import gto
from pyscf.data import elements
from pyscf.lib import param
from pyscf.lib.exceptions import BasisNotFoundError

from inference.optim import check_number

from .errors import BasisError, MoleculeError, OptionError

# Closer than this (Bohr) two nuclei are "on top of each other": no chemical geometry has them.
MIN_DISTANCE = 0.1
# Farther than this (Bohr) from the origin along any axis a nucleus is refused (see the module docstring).
MAX_COORDINATE = 1e5

_UNITS = {"angstrom": 1.0 / param.BOHR, "a": 1.0 / param.BOHR, "ang": 1.0 / param.BOHR,
          "bohr": 1.0, "b": 1.0, "au": 1.0}
_SYMBOL = re.compile(r"^([A-Za-z]{1,2})\d*$")  # PySCF allows numbered labels such as "H1"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # the line ends of text editors (Unix, Windows, old Mac)


def element_symbol(label, where):
    """The standard symbol (``"He"``) for an atom label (``"he"``, ``"He1"``, ``2``); ``where`` goes in errors."""
    if isinstance(label, int) or (isinstance(label, str) and label.isdecimal()):
        z = int(label)
        if 1 <= z < len(elements.ELEMENTS):
            return elements.ELEMENTS[z]
        raise MoleculeError(f"{where}: atomic number {z} is not an element (1..{len(elements.ELEMENTS) - 1}).")
    match = _SYMBOL.match(str(label).strip())
    if match:
        symbol = match.group(1).capitalize()
        if symbol in elements.ELEMENTS[1:]:
            return symbol
    close = difflib.get_close_matches(str(label).capitalize(), elements.ELEMENTS[1:], n=3)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise MoleculeError(f"{where}: unknown element {label!r}.{hint}")


def torch_device(device):
    """``device`` (None, a string such as ``"cuda:1"`` or a ``torch.device``) as a ``torch.device`` that dft can
    use: the CPU or a CUDA device that exists. None stays None. Raises :class:`OptionError` otherwise."""
    if device is None:
        return None
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        resolved = None
    if resolved is None:
        problem = "is not a torch device"
    elif resolved.type not in ("cpu", "cuda"):
        problem = "is not supported (dft runs on the CPU or CUDA)"
    elif resolved.type == "cuda" and not torch.cuda.is_available():
        problem = "is not available (torch.cuda.is_available() is False)"
    elif resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        problem = f"does not exist (there are {torch.cuda.device_count()} CUDA devices)"
    else:
        return resolved
    raise OptionError(f"device {str(device)!r} {problem}; use 'cpu' or an available CUDA device ('cuda', 'cuda:1', "
                      "...).", argument="device")


def _parse_atom_string(atom):
    """``"O 0 0 0; H 0 1 0"`` (entries separated by ';' or newlines) -> [(label, [x, y, z])]."""
    entries = [e.strip() for e in re.split(r"[;\n]", atom) if e.strip()]
    parsed = []
    for i, entry in enumerate(entries, start=1):
        fields = entry.replace(",", " ").split()
        if len(fields) != 4:
            raise MoleculeError(
                f"atom {i} ({entry!r}): expected 'symbol x y z' (Z-matrix input is not supported); "
                "separate atoms with ';' or newlines.")
        try:
            xyz = [float(v) for v in fields[1:]]
        except ValueError:
            raise MoleculeError(f"atom {i} ({entry!r}): coordinates must be numbers.") from None
        parsed.append((fields[0], xyz))
    return parsed


def _check_basis(basis, symbols, kind="basis"):
    """Raise :class:`BasisError` unless every element has functions in ``basis`` (a name or a dict); ``kind``
    names it in messages ("basis", "auxiliary basis")."""
    per_element = basis if isinstance(basis, dict) else {s: basis for s in set(symbols)}
    for symbol in sorted(set(symbols)):
        name = per_element.get(symbol, per_element.get("default"))
        if name is None:
            raise BasisError(f"{kind} dict {sorted(per_element)} has no entry for element {symbol}; "
                             "add one (or a 'default' entry).")
        if not isinstance(name, str):
            continue  # explicit shells: PySCF validates them when the Mole is built
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                shells = gto.basis.load(name, symbol)
        except BasisNotFoundError:
            shells = None
        if shells:
            continue
        key = gto.basis._format_basis_name(name)
        if key in gto.basis.ALIAS:
            raise BasisError(f"{kind} {name!r} has no functions for element {symbol}; choose a basis that covers "
                             f"{symbol} (e.g. 'def2-svp') or give a per-element dict.")
        close = difflib.get_close_matches(key, list(gto.basis.ALIAS), n=5, cutoff=0.6)
        hint = f" Close matches: {', '.join(close)}." if close else " See pyscf.gto.basis.ALIAS for the names."
        raise BasisError(f"unknown {kind} set {name!r} (element {symbol}).{hint}")


class Molecule:
    """A molecule for Kohn-Sham calculations.

    Args:
        atom: PySCF-style string ``"O 0 0 0; H 0 0.76 0.59; H 0 -0.76 0.59"`` (';' or newlines between atoms)
            or a list of ``(symbol, (x, y, z))``.
        basis: basis set name known to PySCF (``"def2-svp"``) or a per-element dict.
        charge: net charge (elementary charges).
        spin: 2S = N_alpha - N_beta (PySCF convention; an integer of the parity of the electron count, negative
            for more beta than alpha electrons).
        unit: unit of the input coordinates, ``"angstrom"`` (default) or ``"bohr"``.
        device: torch device of ``coords`` and of every tensor derived from this molecule.

    Attributes:
        symbols: element symbols, length natm.
        coords: (natm, 3) float64 tensor of nuclear positions, Bohr. Set ``coords.requires_grad_()`` to
            differentiate integrals (and energies built from them) with respect to it; to move the atoms, make
            a new molecule with :meth:`with_coords` rather than editing ``coords`` in place.
        nuclear_charges: (natm,) float64 tensor, elementary charges.
        pyscf: the PySCF ``Mole`` (built once; basis, integrals and grids come from it).

    Raises:
        MoleculeError: unknown element, non-finite coordinates or beyond ``MAX_COORDINATE``, atoms closer than
            ``MIN_DISTANCE``, a non-integer charge or spin, or charge/spin inconsistent with the electrons.
        BasisError: unknown basis name (with close matches) or a basis without the element.
        OptionError: a device that is not CPU or an available CUDA device.
    """

    def __init__(self, atom, basis, charge=0, spin=0, unit="angstrom", device=None):
        device = torch_device(device)
        if isinstance(atom, str):
            atom = _parse_atom_string(atom)
        if not hasattr(atom, "__len__"):
            raise MoleculeError(f"atom must be a string 'O 0 0 0; H 0 0 0.96' or a list of (symbol, (x, y, z)), "
                                f"got {type(atom).__name__}.")
        if len(atom) == 0:
            raise MoleculeError("the molecule has no atoms; give e.g. atom='H 0 0 0; H 0 0 0.74'.")
        if str(unit).lower() not in _UNITS:
            raise MoleculeError(f"unknown unit {unit!r}; use 'angstrom' or 'bohr'.")
        scale = _UNITS[str(unit).lower()]
        symbols, coords = [], []
        for i, entry in enumerate(atom, start=1):
            try:
                label, xyz = entry
                xyz = [float(v) for v in xyz]
            except (TypeError, ValueError):
                raise MoleculeError(f"atom {i} ({entry!r}): expected (symbol, (x, y, z)).") from None
            if len(xyz) != 3:
                raise MoleculeError(f"atom {i} ({label}): expected 3 coordinates, got {len(xyz)}.")
            symbol = element_symbol(label, f"atom {i}")
            if not all(math.isfinite(v) for v in xyz):
                raise MoleculeError(f"atom {i} ({symbol}): coordinates {xyz} are not finite; fix the geometry.")
            if max(abs(v) for v in xyz) * scale > MAX_COORDINATE:
                raise MoleculeError(
                    f"atom {i} ({symbol}): coordinates {xyz} ({unit}) lie beyond {MAX_COORDINATE:g} Bohr of the "
                    "origin, where float64 cannot resolve the basis functions; check the unit, or centre the molecule.")
            symbols.append(symbol)
            coords.append([v * scale for v in xyz])

        self.symbols = symbols
        self.coords = torch.tensor(coords, dtype=torch.float64, device=device)
        self.nuclear_charges = torch.tensor([float(elements.charge(s)) for s in symbols],
                                            dtype=torch.float64, device=device)
        self.basis = basis
        self.charge = check_number("Molecule", "charge", charge, integer=True, error=MoleculeError)
        self.spin = check_number("Molecule", "spin", spin, integer=True, error=MoleculeError)
        self._check_geometry()
        self._check_electrons()
        _check_basis(basis, symbols)
        self.pyscf = gto.M(atom=[(s, xyz) for s, xyz in zip(symbols, coords)], unit="bohr", basis=basis,
                           charge=self.charge, spin=self.spin, verbose=0)

    def _check_geometry(self):
        if len(self.symbols) < 2:
            return
        distance = torch.cdist(self.coords.detach(), self.coords.detach())
        distance.fill_diagonal_(float("inf"))
        closest = distance.min()
        if closest < MIN_DISTANCE:
            i, j = divmod(int(distance.argmin()), len(self.symbols))
            raise MoleculeError(
                f"atoms {i + 1} ({self.symbols[i]}) and {j + 1} ({self.symbols[j]}) are {float(closest):.3g} Bohr "
                "apart (on top of each other); check the coordinates and their unit (unit='angstrom' or 'bohr').")

    def _check_electrons(self):
        n = self.nelectron
        if n <= 0:
            raise MoleculeError(f"charge {self.charge} leaves {n} electrons; the charge is too large.")
        if abs(self.spin) > n or (n - self.spin) % 2:
            parity = "odd" if n % 2 else "even"
            raise MoleculeError(
                f"{n} electrons cannot have spin={self.spin} (spin = N_alpha - N_beta): an {parity} electron "
                f"count needs an {parity} spin (e.g. spin={n % 2}), or change the charge.")

    @property
    def natm(self):
        return len(self.symbols)

    @property
    def nelectron(self):
        return int(sum(elements.charge(s) for s in self.symbols)) - self.charge

    @property
    def nelec(self):
        """(N_alpha, N_beta)."""
        n_beta = (self.nelectron - self.spin) // 2
        return self.nelectron - n_beta, n_beta

    @property
    def nao(self):
        return self.pyscf.nao

    @property
    def device(self):
        return self.coords.device

    def energy_nuc(self):
        """Nuclear repulsion energy sum_{i<j} Z_i Z_j / r_ij (Hartree), a torch function of ``coords``."""
        i, j = torch.triu_indices(self.natm, self.natm, offset=1, device=self.device)
        r = (self.coords[i] - self.coords[j]).norm(dim=-1)
        return (self.nuclear_charges[i] * self.nuclear_charges[j] / r).sum()

    def with_coords(self, coords):
        """The same molecule (atoms, basis, charge, spin) at other nuclear positions.

        This is how positions change (geometry optimization, finite differences, derivatives): ``coords`` is
        never edited in place, because the PySCF ``Mole`` that integrals and grids come from holds the
        geometry it was built with. Here it is rebuilt at the new positions (same basis; no re-parsing).

        Args:
            coords: (natm, 3) tensor of positions, Bohr. Kept as is, autograd graph included: integrals of the
                new molecule are differentiable functions of it when it requires grad.

        Raises:
            MoleculeError: wrong shape, non-finite values, beyond ``MAX_COORDINATE``, or atoms on top of each other.
        """
        if not torch.is_tensor(coords):
            coords = torch.as_tensor(coords, dtype=torch.float64, device=self.device)
        if coords.shape != (self.natm, 3):
            raise MoleculeError(f"with_coords: expected ({self.natm}, 3) coordinates (Bohr) for {self!r}, "
                                f"got shape {tuple(coords.shape)}.")
        values = coords.detach().to("cpu", torch.float64).numpy()
        if not math.isfinite(float(values.sum())):
            raise MoleculeError(f"with_coords: coordinates of {self!r} are not finite; fix the geometry.")
        if float(abs(values).max()) > MAX_COORDINATE:
            i = int(abs(values).max(1).argmax())
            raise MoleculeError(f"with_coords: atom {i + 1} ({self.symbols[i]}) at {values[i].tolist()} Bohr lies "
                                f"beyond {MAX_COORDINATE:g} Bohr of the origin; centre the molecule.")
        moved = object.__new__(Molecule)
        moved.__dict__.update(self.__dict__)
        moved.coords = coords
        moved.nuclear_charges = self.nuclear_charges.to(coords.device)
        moved._check_geometry()
        moved.pyscf = self.pyscf.set_geom_(values, unit="bohr", inplace=False)
        return moved

    def to_xyz(self, comment=""):
        """The molecule as one XYZ frame (count line, ``comment`` line, ``symbol x y z`` lines in Angstrom), the
        format :meth:`from_xyz` reads; frames written one after another make a trajectory file."""
        if "\n" in comment:
            raise MoleculeError("to_xyz: the comment must be a single line.")
        angstrom = (self.coords.detach().to("cpu", torch.float64) * param.BOHR).tolist()
        atoms = "".join(f"{s:<2} {x:18.10f} {y:18.10f} {z:18.10f}\n" for s, (x, y, z) in zip(self.symbols, angstrom))
        return f"{self.natm}\n{comment}\n{atoms}"

    def to(self, device):
        """The same molecule with ``coords`` on ``device`` (the PySCF ``Mole`` is shared)."""
        device = torch_device(device)
        moved = object.__new__(Molecule)
        moved.__dict__.update(self.__dict__)
        moved.coords = self.coords.to(device)
        moved.nuclear_charges = self.nuclear_charges.to(device)
        return moved

    def __repr__(self):
        return (f"Molecule({' '.join(self.symbols)}, basis={self.basis!r}, charge={self.charge}, "
                f"spin={self.spin}, nao={self.nao})")

    @classmethod
    def from_xyz(cls, path, basis, charge=0, spin=0, device=None):
        """Read an XYZ file (count line, comment line, ``symbol x y z`` lines in Angstrom; further columns are
        ignored). A file that is not UTF-8 text, is truncated, has blank or extra atom lines, an unknown element
        or coordinates that are not finite numbers raises :class:`MoleculeError` naming the file and line."""
        path = Path(path)
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = len(_LINE_BREAK.split(data[:error.start].decode("utf-8", "replace")))
            raise MoleculeError(f"{path}:{line}: not a text file (byte {data[error.start]:#04x} is not UTF-8); an XYZ "
                                "file is plain text.") from None
        lines = _LINE_BREAK.split(text)
        if "\0" in text:
            line = next(n for n, line in enumerate(lines, start=1) if "\0" in line)
            raise MoleculeError(f"{path}:{line}: not a text file (NUL byte); an XYZ file is plain text.")
        if not lines[0].strip():
            raise MoleculeError(f"{path}:1: empty XYZ file; the first line must be the number of atoms.")
        try:
            count = int(lines[0].split()[0])
        except ValueError:
            raise MoleculeError(f"{path}:1: expected the number of atoms, got {lines[0].strip()!r}.") from None
        if count <= 0:
            raise MoleculeError(f"{path}:1: the number of atoms must be positive, got {count}.")
        body = lines[2:2 + count]
        blank = next((n for n, line in enumerate(body, start=3) if not line.strip()), None)
        if blank is not None and any(line.strip() for line in lines[blank:]):
            raise MoleculeError(f"{path}:{blank}: blank line inside the atom block (line 1 announces {count} atoms); "
                                "remove it.")
        if len(body) < count or blank is not None:
            found = sum(1 for line in body if line.strip())
            raise MoleculeError(f"{path}: line 1 announces {count} atoms but only {found} atom lines follow "
                                "(truncated file?).")
        extra = [n for n, line in enumerate(lines[2 + count:], start=3 + count) if line.strip()]
        if extra:
            raise MoleculeError(f"{path}:{extra[0]}: more atom lines than the {count} announced on line 1.")
        atoms = []
        for n, line in enumerate(body, start=3):
            fields = line.split()
            if len(fields) < 4:
                raise MoleculeError(f"{path}:{n}: expected 'symbol x y z', got {line.strip()!r}.")
            symbol = element_symbol(fields[0], f"{path}:{n}")
            try:
                xyz = [float(v) for v in fields[1:4]]
            except ValueError:
                raise MoleculeError(f"{path}:{n}: coordinates must be numbers, got {line.strip()!r}.") from None
            if not all(math.isfinite(v) for v in xyz):
                raise MoleculeError(f"{path}:{n}: coordinates of {symbol} are not finite ({line.strip()!r}).")
            atoms.append((symbol, xyz))
        try:
            return cls(atoms, basis, charge=charge, spin=spin, unit="angstrom", device=device)
        except MoleculeError as error:  # geometry, charge and spin: atom k is on line k + 2
            raise MoleculeError(f"{path}: {error}") from None

    @classmethod
    def from_pyscf(cls, mol, device=None):
        """From a built PySCF ``Mole`` (spherical basis, all-electron): same atoms, basis, charge and spin."""
        if mol._atm is None or len(mol._atm) == 0:
            raise MoleculeError("the PySCF Mole is not built; call mol.build() first.")
        if mol.cart:
            raise MoleculeError("Cartesian basis functions (mol.cart=True) are not supported; use cart=False.")
        if mol.ecp or mol.pseudo:
            raise MoleculeError("ECPs/pseudopotentials are not supported; use an all-electron basis.")
        atoms = [(mol.atom_pure_symbol(i), mol.atom_coord(i).tolist()) for i in range(mol.natm)]
        return cls(atoms, mol.basis, charge=mol.charge, spin=mol.spin, unit="bohr", device=device)

    @classmethod
    def from_ase(cls, atoms, basis, charge=0, spin=0, device=None):
        """From an ASE ``Atoms`` object (positions in Angstrom)."""
        entries = list(zip(atoms.get_chemical_symbols(), atoms.get_positions().tolist()))
        return cls(entries, basis, charge=charge, spin=spin, unit="angstrom", device=device)
