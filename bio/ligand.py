"""Small-molecule ligands via RDKit: a molecule with explicit hydrogens and 3D conformers.

    ligand = bio.Ligand.from_smiles("CC(=O)Oc1ccccc1C(=O)O", num_conformers=4, seed=0)   # ETKDG conformers
    ligands = bio.Ligand.from_sdf("actives.sdf")                                          # one per record
    ligand.conformers      # (C, N, 3) nm, torch float64
    ligand.positions       # (N, 3) nm, the first conformer

Coordinates are in nm like the rest of `bio`; `ligand.conformers_angstrom` gives them in Å for the MMFF94
energy (`bio.mmff_energy`), which works in Å and kcal/mol as RDKit does.
"""

import contextlib
import io
import os
import warnings

import numpy as np
import torch
from rdkit import Chem, rdBase
from rdkit.Chem import rdDistGeom

from .errors import ArgumentError, LigandError


@contextlib.contextmanager
def _rdkit_log(messages):
    """Collect what RDKit logs (e.g. a SMILES parse error's reason) into the list `messages`: through
    rdBase.CaptureErrorLog where this RDKit has it, else by sending RDKit's log to Python's stderr for the
    duration (and back to C++'s streams, RDKit's default, after)."""
    if hasattr(rdBase, "CaptureErrorLog"):
        capture = rdBase.CaptureErrorLog()
        try:
            with capture:
                yield
        finally:
            text = capture.messages
    else:
        buffer = io.StringIO()
        rdBase.LogToPythonStderr()
        try:
            with contextlib.redirect_stderr(buffer):
                yield
        finally:
            rdBase.LogToCppStreams()
            text = buffer.getvalue()
    messages.extend(line.split("] ", 1)[-1].strip() for line in text.splitlines() if line.strip())


class Ligand:
    """An RDKit molecule with explicit hydrogens and at least one 3D conformer.

    Attributes: mol (the RDKit Mol), name (str), symbols (list of N element symbols), formal_charges
    (N,) long tensor, conformers ((C, N, 3) float64 tensor, nm), positions ((N, 3), the first conformer, nm).
    """

    def __init__(self, mol, name=None):
        if mol.GetNumConformers() == 0:
            raise LigandError("the molecule has no conformer (3D coordinates); use Ligand.from_smiles to embed one")
        if any(atom.GetNumImplicitHs() for atom in mol.GetAtoms()):
            raise LigandError("the molecule has implicit hydrogens; add them with Chem.AddHs(mol, addCoords=True)")
        self.mol = mol
        self.name = name if name is not None else (mol.GetProp("_Name") if mol.HasProp("_Name") else "")
        self.symbols = [atom.GetSymbol() for atom in mol.GetAtoms()]
        self.formal_charges = torch.tensor([atom.GetFormalCharge() for atom in mol.GetAtoms()], dtype=torch.long)
        angstrom = torch.tensor(np.array([c.GetPositions() for c in mol.GetConformers()]), dtype=torch.float64)
        if not torch.isfinite(angstrom).all():
            raise LigandError(f"ligand {self.name!r} has non-finite coordinates")
        self.conformers = angstrom / 10.0

    @property
    def positions(self):
        """(N, 3) nm, the first conformer."""
        return self.conformers[0]

    @property
    def conformers_angstrom(self):
        """(C, N, 3) Å, the unit of `bio.mmff_energy`."""
        return self.conformers * 10.0

    def __len__(self):
        return len(self.symbols)

    def autodock(self):
        """The ligand prepared for AutoDock Vina by Meeko (computed once, then cached): AutoDock and XS atom
        types, rigid fragments and rotatable bonds (torsion tree), Vina's torsion count (terminal rotors count
        0.5), the internal pairs Vina scores, and PDBQT writing (`.pdbqt(coords_angstrom)`); see
        bio.autodock.LigandSetup. Raises LigandError if Meeko fails or an atom has a type Vina cannot read."""
        if getattr(self, "_autodock", None) is None:
            from .autodock import prepare_ligand
            self._autodock = prepare_ligand(self.mol, self.name)
        return self._autodock

    def to_pdbqt(self, conformer=0):
        """PDBQT text of one conformer (Å), with Meeko's torsion tree: what the vina package reads."""
        return self.autodock().pdbqt(self.conformers_angstrom[conformer])

    def __repr__(self):
        return f"Ligand({self.name!r}, atoms={len(self)}, conformers={self.conformers.shape[0]})"

    @classmethod
    def from_rdkit(cls, mol, name=None):
        """A ligand from an RDKit Mol with 3D conformers; missing hydrogens are added with coordinates."""
        return cls(Chem.AddHs(mol, addCoords=True), name)

    @classmethod
    def from_smiles(cls, smiles, num_conformers=1, seed=0, name=None):
        """Parse `smiles`, add hydrogens and embed `num_conformers` conformers with ETKDG (v3, random seed
        `seed`); specified stereochemistry is kept. Raises LigandError with RDKit's reason if the SMILES does
        not parse or no conformer can be embedded."""
        if not isinstance(num_conformers, int) or num_conformers < 1:
            raise ArgumentError("num_conformers", num_conformers, "a positive integer", owner="bio.Ligand.from_smiles")
        messages = []
        with _rdkit_log(messages):
            mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            reason = "; ".join(messages) or "RDKit gave no reason"
            raise LigandError(f"cannot parse SMILES {smiles!r}: {reason}")
        mol = Chem.AddHs(mol)
        params = rdDistGeom.ETKDGv3()
        params.randomSeed = seed
        if len(rdDistGeom.EmbedMultipleConfs(mol, num_conformers, params)) == 0:
            raise LigandError(f"ETKDG could not embed a conformer of {smiles!r}")
        return cls(mol, smiles if name is None else name)

    @classmethod
    def from_sdf(cls, path):
        """All records of an SD file, hydrogens kept as given (missing ones added with coordinates).

        Like RDKit's SDMolSupplier, a record that fails to parse is skipped, not fatal: the others are
        returned and one warning names the file and the bad record numbers (1-based). Raises LigandError if
        the file is missing or no record loads.
        """
        if not os.path.isfile(path):
            raise LigandError(f"no such SD file: {path}")
        ligands, bad = [], []
        messages = []
        with _rdkit_log(messages):
            for number, mol in enumerate(Chem.SDMolSupplier(str(path), removeHs=False), start=1):
                if mol is None or mol.GetNumConformers() == 0:
                    bad.append(number)
                else:
                    ligands.append(cls.from_rdkit(mol))
        if bad:
            reason = f" ({'; '.join(messages)})" if messages else ""
            text = f"{path}: record(s) {', '.join(map(str, bad))} could not be parsed and were skipped{reason}"
            if not ligands:
                raise LigandError(text.replace("were skipped", "no record loaded"))
            warnings.warn(text, stacklevel=2)
        if not ligands:
            raise LigandError(f"{path}: no records")
        return ligands

    @classmethod
    def from_mol2(cls, path):
        """A Tripos MOL2 file's (first) molecule, hydrogens kept as given."""
        if not os.path.isfile(path):
            raise LigandError(f"no such MOL2 file: {path}")
        messages = []
        with _rdkit_log(messages):
            mol = Chem.MolFromMol2File(str(path), removeHs=False)
        if mol is None:
            raise LigandError(f"cannot parse MOL2 file {path}: {'; '.join(messages) or 'RDKit gave no reason'}")
        return cls.from_rdkit(mol)
