"""Reference data for fitting functionals: the G2 molecules with experimental atomization energies, their
atoms in their ground spin states, ionization energies, and cached coupled-cluster reference densities.

Geometries and thermochemistry come from ASE's copies of the G2 sets (``ase.data.g2_1``: the 55 molecules
of G2-1; ``ase.data.g2_2``: the 93 further molecules of G2/97, H2 among them). The *equilibrium* atomization
energy (what a Born-Oppenheimer electronic-structure calculation computes) is derived from experimental
enthalpies of formation, as Curtiss et al. (J. Chem. Phys. 106, 1063 (1997)) do::

    D_e = sum_atoms [dH_f(0 K, atom) - H_corr(element)] - [dH_f(298 K, mol) - H_corr(mol)] + ZPE(mol)

with dH_f(0 K, atom) the atoms' enthalpies of formation at 0 K, H_corr = H(298 K) - H(0 K) (the elements in
their standard states, and the molecule), and ZPE the molecule's zero-point energy, all in kcal/mol as ASE
stores them. For N2: 2 (112.53 - 1.04) - (0 - 2.07) + 3.42 = 228.5 kcal/mol, the value the PBE paper lists.

Spins: ``magmoms`` of the G2 entries (unpaired electrons), so O2, NO, CH, ... are triplets/doublets, and the
atoms are in their ground states (C, O, Si, S triplet; N, P quartet; H, Li, B, F, Na, Al, Cl doublet).
"""

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import OptionError
from ..molecule import Molecule

KCAL_PER_HARTREE = 627.5094740631  # CODATA 2018 Hartree in kcal/mol
EV_PER_HARTREE = 27.211386245988
# Elements of the first row (and H): "first-row molecules" are made of these only.
FIRST_ROW = frozenset("H Li Be B C N O F".split())
# The 8 training molecules of Kasim & Vinko (PRL 127, 126403, 2021).
PRL_TRAINING = ("H2", "LiH", "N2", "O2", "NO", "CO", "F2", "HF")


@functools.lru_cache(maxsize=None)
def _tables():
    """(molecules, atoms): name -> ASE entry, from G2-1 then G2-2 (atoms present in both agree)."""
    from ase.data import g2_1, g2_2

    molecules, atoms = {}, {}
    for table in (g2_1, g2_2):
        for name in table.molecule_names:
            molecules[name] = table.data[name]
        for name in table.atom_names:
            atoms.setdefault(name, table.data[name])
    return molecules, atoms


def g2_names(subset="g2-1"):
    """Molecule names of ``subset``: "g2-1" (55), "g2-2" (93) or "g2" (both), in ASE's order."""
    from ase.data import g2_1, g2_2

    tables = {"g2-1": (g2_1,), "g2-2": (g2_2,), "g2": (g2_1, g2_2)}
    if subset not in tables:
        raise OptionError(f"subset must be one of {sorted(tables)}, got {subset!r}.")
    return [name for table in tables[subset] for name in table.molecule_names]


def _entry(name):
    molecules, atoms = _tables()
    if name in molecules:
        return molecules[name]
    if name in atoms:
        return atoms[name]
    import difflib

    close = difflib.get_close_matches(name, list(molecules) + list(atoms), n=3)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    raise OptionError(f"{name!r} is not a G2 molecule or atom{hint}; names are ASE's (ase.data.g2_1, g2_2), "
                      f"see dft.learning.datasets.g2_names().")


def symbols(name):
    """Element symbols of a G2 molecule or atom, e.g. ``symbols("H2O") == ["H", "H", "O"]`` in ASE's order."""
    from ase.symbols import string2symbols

    return string2symbols(_entry(name)["symbols"])


def spin(name):
    """2S = N_alpha - N_beta of the ground state of a G2 molecule or atom (its unpaired electrons)."""
    magmoms = _entry(name)["magmoms"]
    return 0 if magmoms is None else int(round(sum(magmoms)))


def is_first_row(name):
    """Whether the molecule is made of H and first-row elements only (Li..F)."""
    return set(symbols(name)) <= FIRST_ROW


# Cations whose ground state the rule of :func:`cation_spin` misses: OH+ is a triplet (3 Sigma-).
CATION_SPIN = {"OH": 2}


def cation_spin(name):
    """2S of the cation of a G2 molecule or atom: an atom's is that of the neutral atom with one electron fewer
    (O+ is a quartet like N); a molecule's is ``CATION_SPIN[name]``, else one less than the neutral's (one more
    for a closed shell)."""
    _, atoms = _tables()
    if name in atoms:
        from pyscf.data.elements import charge as atomic_number, ELEMENTS

        previous = ELEMENTS[atomic_number(name) - 1]
        return 0 if previous not in atoms else spin(previous)
    if name in CATION_SPIN:
        return CATION_SPIN[name]
    return spin(name) - 1 if spin(name) > 0 else 1


def molecule(name, basis, device=None, charge=0):
    """The :class:`dft.Molecule` of a G2 molecule or atom at its G2 geometry (MP2/6-31G* optimized, Angstrom),
    in its ground spin state: neutral (``charge=0``) or its cation (``charge=1``, spin by :func:`cation_spin`;
    the neutral's geometry, as for vertical ionization)."""
    if charge not in (0, 1):
        raise OptionError(f"charge must be 0 (the neutral) or 1 (its cation), got {charge!r}.")
    entry = _entry(name)
    atom = "; ".join(f"{s} {x:.8f} {y:.8f} {z:.8f}" for s, (x, y, z) in zip(symbols(name), entry["positions"]))
    return Molecule(atom, basis=basis, charge=charge, spin=cation_spin(name) if charge else spin(name),
                    device=device)


def atomization_energy(name):
    """Experimental equilibrium atomization energy D_e of a G2 molecule, kcal/mol (formula: module docstring)."""
    _, atoms = _tables()
    entry = _entry(name)
    if name in atoms:
        raise OptionError(f"{name!r} is an atom: it has no atomization energy.")
    value = -entry["enthalpy"] + entry["thermal correction"] + entry["ZPE"]
    for symbol in symbols(name):
        value += atoms[symbol]["enthalpy"] - atoms[symbol]["thermal correction"]
    return value


def ionization_energy(name):
    """Experimental (adiabatic) ionization energy of a G2 molecule or atom, eV (ASE's G2 tables)."""
    value = _entry(name).get("ionization energy")
    if value is None:
        raise OptionError(f"the G2 tables have no ionization energy for {name!r}.")
    return value


@dataclass(frozen=True)
class AtomizationEnergy:
    """One atomization-energy datum: molecule ``name``, its ``atoms`` (symbol -> count) and the experimental
    ``reference`` D_e [kcal/mol]."""

    name: str
    atoms: dict
    reference: float


def atomization_set(names):
    """:class:`AtomizationEnergy` entries of G2 molecules ``names`` (a list of names)."""
    if isinstance(names, str):
        raise OptionError(f"names must be a list of G2 molecule names, got the string {names!r}.")
    entries = []
    for name in names:
        counts = {}
        for symbol in symbols(name):
            counts[symbol] = counts.get(symbol, 0) + 1
        entries.append(AtomizationEnergy(name, counts, atomization_energy(name)))
    return entries


def cache_dir():
    """Where reference densities are cached: ``$DIFFSCI_CACHE`` or ``~/.cache/diffsci``, subfolder densities."""
    root = os.environ.get("DIFFSCI_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "diffsci")
    return Path(root) / "densities"


def reference_density(name, basis, method="ccsd", directory=None):
    """The coupled-cluster one-particle density matrix of a G2 molecule or atom in the AO basis of
    ``molecule(name, basis)``: (nao, nao) total for closed shells, (2, nao, nao) per spin otherwise.

    Computed once with PySCF (RHF/UHF, then CCSD's unrelaxed 1-RDM, frozen core none), then cached as a
    ``.npz`` in ``directory`` (default :func:`cache_dir`) with its provenance (method, basis, PySCF version,
    a hash of the geometry); a cached file whose provenance differs is recomputed.
    """
    import pyscf
    from pyscf import cc, scf

    if method != "ccsd":
        raise OptionError(f"method must be 'ccsd' (the only reference density computed), got {method!r}.")
    mol = molecule(name, basis)
    provenance = {"name": name, "method": method, "basis": basis, "pyscf": pyscf.__version__,
                  "geometry": hashlib.sha256(np.asarray(mol.pyscf.atom_coords()).tobytes()).hexdigest()[:16],
                  "spin": mol.spin}
    directory = Path(directory) if directory is not None else cache_dir()
    path = directory / f"{name}-{method}-{basis.replace('*', 's').replace('/', '_')}.npz"
    if path.exists():
        with np.load(path) as stored:
            if json.loads(str(stored["provenance"])) == provenance:
                return stored["dm"].copy()
    mf = (scf.RHF if mol.spin == 0 else scf.UHF)(mol.pyscf)
    mf.verbose = 0
    mf.conv_tol = 1e-10
    mf.kernel()
    solver = cc.CCSD(mf)
    solver.verbose = 0
    solver.kernel()
    dm_mo = solver.make_rdm1()
    if mol.spin == 0:
        dm = mf.mo_coeff @ dm_mo @ mf.mo_coeff.T
    else:
        dm = np.stack([c @ d @ c.T for c, d in zip(mf.mo_coeff, dm_mo)])
    directory.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp.npz")
    np.savez(temporary, dm=dm, provenance=json.dumps(provenance))
    os.replace(temporary, path)
    return dm


@dataclass(frozen=True)
class Dataset:
    """What a functional is fitted to, in one basis: G2 names for each kind of datum.

    Fields:
        basis: basis set of every calculation (e.g. "6-31g*").
        atomization: molecules whose experimental atomization energies (:func:`atomization_energy`) are fitted;
            their atoms join the calculations.
        ionization: molecules or atoms whose experimental ionization energies are fitted (vertical, the cation
            at the neutral's geometry, spin by :func:`cation_spin`).
        densities: molecules or atoms whose CCSD densities (:func:`reference_density`) are fitted.
        total_energies: tuple of (name, reference total energy [Hartree]) pairs, e.g. from a higher-level method.
    """

    basis: str
    atomization: tuple = ()
    ionization: tuple = ()
    densities: tuple = ()
    total_energies: tuple = ()

    def __post_init__(self):
        for field in ("atomization", "ionization", "densities"):
            names = getattr(self, field)
            if isinstance(names, str):
                raise OptionError(f"Dataset.{field} must be a list of G2 names, got the string {names!r}.")
            for name in names:
                _entry(name)  # unknown names fail here, with a suggestion
            object.__setattr__(self, field, tuple(names))
        pairs = tuple((str(name), float(value)) for name, value in dict(self.total_energies).items())
        for name, _ in pairs:
            _entry(name)
        object.__setattr__(self, "total_energies", pairs)
        if not (self.atomization or self.ionization or self.densities or self.total_energies):
            raise OptionError("Dataset has no data: give atomization, ionization, densities or total_energies.")
        for name in self.atomization:
            if name in _tables()[1]:
                raise OptionError(f"Dataset.atomization lists the atom {name!r}: atoms have no atomization energy.")

    def systems(self):
        """Every (name, charge) whose SCF the data need, in a fixed order."""
        needed = []
        for name in self.atomization:
            needed += [(name, 0)] + [(symbol, 0) for symbol in sorted(set(symbols(name)))]
        for name in self.ionization:
            needed += [(name, 0), (name, 1)]
        needed += [(name, 0) for name in self.densities]
        needed += [(name, 0) for name, _ in self.total_energies]
        return list(dict.fromkeys(needed))
