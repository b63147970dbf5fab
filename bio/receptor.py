"""Docking receptors: a protein with hydrogens at a pH, AutoDock atom types and a pocket.

    receptor = bio.Receptor.from_pdb("protein.pdb", ph=7.4)         # PDBFixer: missing atoms + hydrogens
    pocket = receptor.pocket(ligand=ligand, margin=8.0)             # atoms within 8 Å of the ligand's atoms
    pocket = receptor.pocket(center=(x, y, z), size=(20, 20, 20))   # or within a box (Å)
    receptor.write_pdbqt("receptor.pdbqt")                          # for the vina package / AutoDock
    receptor = bio.Receptor.from_pdbqt("receptor.pdbqt")            # a receptor prepared elsewhere

Preparation (`from_pdb`): PDBFixer replaces nonstandard residues by their standard parents (MSE -> MET),
removes heterogens (ligands, cofactors, ions; water unless keep_water), adds missing heavy atoms of residues
that are present, and adds hydrogens at `ph` (OpenMM's Modeller: His tautomers by hydrogen-bond network,
pKa-based protonation of Asp/Glu/Lys/Arg/Cys/His). PDBFixer can also build residues that are missing
altogether from a gap in the SEQRES-declared sequence (missing_residues='build'; the loop is placed without
refinement), but it cannot detect a gap that SEQRES does not declare, and it cannot repair distorted geometry.

AutoDock types come from the bonded topology that PDBFixer/OpenMM build from residue templates (not from
distances, so a distorted residue does not break typing — Meeko's receptor route fails with a valence error on
such residues, e.g. Asp B170 of PDB 1ia1), with the rules of Meeko's AD4 SMARTS typer (meeko/data/params/
ad4_types.json): H bonded to N/O/S is HD (others H, not written); aromatic ring carbons of Phe/Tyr/Trp/His are
A, other carbons C; N with two bonds (and no hydrogen, i.e. an unprotonated His ring N) is NA, other N
(amide, ammonium, guanidinium, protonated ring) N; O is OA; S with two bonds is SA, else S; metals keep their
symbol. Vina's XS types (donors, polar carbons) use bonds perceived from distances, as Vina
perceives them in the PDBQT it reads. Coordinates are kept in nm like the rest of `bio` (`positions`);
`positions_angstrom` gives Å for the Vina score.
"""

import os
import warnings

import numpy as np
import torch

from . import autodock
from .errors import ArgumentError, StructureError

_AROMATIC_CARBONS = {
    "PHE": ("CG", "CD1", "CD2", "CE1", "CE2", "CZ"), "TYR": ("CG", "CD1", "CD2", "CE1", "CE2", "CZ"),
    "TRP": ("CG", "CD1", "CD2", "CE2", "CE3", "CZ2", "CZ3", "CH2"), "HIS": ("CG", "CD2", "CE1"),
}
_METALS = {"Mg": "Mg", "Mn": "Mn", "Zn": "Zn", "Ca": "Ca", "Fe": "Fe"}


def _ad_type(atom, neighbors):
    """AutoDock type of an OpenMM atom from its element, bonded neighbours and residue (module docstring)."""
    element = atom.element.symbol if atom.element is not None else ""
    bonded = [n.element.symbol for n in neighbors]
    if element == "H":
        return "HD" if bonded and bonded[0] in ("N", "O", "S") else "H"
    if element == "C":
        return "A" if atom.name in _AROMATIC_CARBONS.get(atom.residue.name, ()) else "C"
    if element == "N":
        return "NA" if len(bonded) == 2 else "N"
    if element == "O":
        return "OA"
    if element == "S":
        return "SA" if len(bonded) == 2 else "S"
    return _METALS.get(element, element)


class Receptor:
    """A rigid docking receptor: atoms with AutoDock types, bonds and coordinates.

    Attributes: positions ((M, 3) float64 tensor, nm), ad_types (M AutoDock types), xs_types (M Vina XS type
    names; None for hydrogens), elements, names, residues (M strings 'GLU A 45'), bonds (list of (i, j)),
    topology (the OpenMM Topology when built by from_pdb, else None). Nonpolar hydrogens ('H') are kept in
    the topology but are not written to PDBQT (Vina ignores them).
    """

    def __init__(self, positions, ad_types, bonds, elements, names, residues, topology=None):
        positions = torch.as_tensor(positions, dtype=torch.float64)
        if positions.ndim != 2 or positions.shape[1] != 3 or positions.shape[0] != len(ad_types):
            raise StructureError(f"receptor positions must be (M, 3) with M = {len(ad_types)} atoms, "
                                 f"got {tuple(positions.shape)}")
        if not torch.isfinite(positions).all():
            raise StructureError("receptor has non-finite coordinates")
        self.positions, self.ad_types, self.bonds = positions, list(ad_types), list(bonds)
        self.elements, self.names, self.residues, self.topology = list(elements), list(names), list(residues), topology
        autodock.check_ad_types(self.ad_types, [f"atom {n} ({r})" for n, r in zip(names, residues)], "receptor")
        # XS types from bonds perceived by distance, as Vina perceives them in the PDBQT it reads (a hydrogen
        # placed more than 1.1 x the covalent bond length from its N/O does not make it a donor in Vina).
        self.xs_types = autodock.xs_types(self.ad_types, autodock.distance_bonds(positions.numpy() * 10.0,
                                                                                  self.ad_types))

    @property
    def positions_angstrom(self):
        """(M, 3) Å, the unit of the Vina score."""
        return self.positions * 10.0

    def __len__(self):
        return len(self.ad_types)

    def __repr__(self):
        heavy = sum(t is not None for t in self.xs_types)
        return f"Receptor(atoms={len(self)}, heavy={heavy})"

    @classmethod
    def from_pdb(cls, path, ph=7.4, keep_water=False, missing_residues="error"):
        """Prepare a protein PDB (or PDBx/mmCIF) file with PDBFixer: hydrogens at `ph`, missing atoms added,
        heterogens removed (see the module docstring for what PDBFixer can and cannot fix).

        missing_residues: 'error' (default) raises StructureError naming each gap PDBFixer finds inside a
        chain (from SEQRES); 'build' lets PDBFixer model them; 'ignore' leaves the gaps open. Missing residues
        at chain ends are never built. Raises StructureError for an unreadable file or a residue PDBFixer has
        no template for.
        """
        from pdbfixer import PDBFixer

        if missing_residues not in ("error", "build", "ignore"):
            raise ArgumentError("missing_residues", missing_residues, "'error', 'build' or 'ignore'",
                                owner="bio.Receptor.from_pdb")
        if not os.path.isfile(path):
            raise StructureError(f"no such PDB file: {path}")
        try:
            fixer = PDBFixer(filename=str(path))
        except Exception as error:
            raise StructureError(f"cannot read {path}: {autodock_error(error)}") from error
        chains = list(fixer.topology.chains())
        fixer.findMissingResidues()
        gaps = {}
        for (chain_index, position), names in fixer.missingResidues.items():
            residues = list(chains[chain_index].residues())
            if 0 < position < len(residues):  # internal gap; chain ends are never built
                gaps[chain_index, position] = names
        if gaps and missing_residues == "error":
            text = "; ".join(
                f"chain {chains[c].id}: {len(names)} residue(s) {names[0] if len(names) == 1 else names[0] + '...' + names[-1]} missing between "
                f"{_label(list(chains[c].residues())[p - 1])} and {_label(list(chains[c].residues())[p])}"
                for (c, p), names in gaps.items())
            raise StructureError(
                f"{path}: residues declared in SEQRES are missing inside a chain ({text}). PDBFixer adds missing "
                "atoms and hydrogens of residues that are present, and can build whole missing residues "
                "(missing_residues='build'; the loop is placed without refinement) or leave the gap open "
                "(missing_residues='ignore'); it cannot repair distorted geometry.")
        fixer.missingResidues = gaps if missing_residues == "build" else {}
        fixer.findNonstandardResidues()
        fixer.replaceNonstandardResidues()
        removed = sorted({r.name for r in fixer.topology.residues()
                          if r.name not in _STANDARD and not (keep_water and r.name == "HOH")})
        fixer.removeHeterogens(keepWater=keep_water)
        if removed:
            warnings.warn(f"{path}: removed heterogens {', '.join(removed)} (the receptor holds standard "
                          "residues only; a cofactor that lines the pocket changes the score)", stacklevel=2)
        try:
            fixer.findMissingAtoms()
            fixer.addMissingAtoms()
            fixer.addMissingHydrogens(ph)
        except Exception as error:
            raise StructureError(f"{path}: PDBFixer could not add missing atoms/hydrogens: "
                                 f"{autodock_error(error)}") from error
        return cls.from_topology(fixer.topology, fixer.positions)

    @classmethod
    def from_topology(cls, topology, positions):
        """A receptor from an OpenMM Topology (with hydrogens and bonds) and positions (OpenMM Quantity or
        (M, 3) nm)."""
        if hasattr(positions, "value_in_unit"):
            import openmm.unit as unit
            positions = positions.value_in_unit(unit.nanometer)
        atoms = list(topology.atoms())
        neighbors = {atom.index: [] for atom in atoms}
        bonds = []
        for a, b in topology.bonds():
            neighbors[a.index].append(b)
            neighbors[b.index].append(a)
            bonds.append((a.index, b.index))
        for atom in atoms:
            if atom.element is None:
                raise StructureError(f"receptor atom {atom.name} ({_label(atom.residue)}) has no element")
        ad_types = [_ad_type(atom, neighbors[atom.index]) for atom in atoms]
        return cls(np.asarray(positions, dtype=float), ad_types, bonds, [a.element.symbol for a in atoms],
                   [a.name for a in atoms], [_label(a.residue) for a in atoms], topology)

    @classmethod
    def from_pdbqt(cls, path):
        """A receptor from a rigid-receptor PDBQT file (bonds perceived from distances, as Vina does)."""
        records = autodock.read_pdbqt(path)
        coords = np.array([r.coord for r in records])
        ad_types = [r.ad_type for r in records]
        return cls(coords / 10.0, ad_types, autodock.distance_bonds(coords, ad_types),
                   [autodock.ad_element(t) for t in ad_types], [r.name for r in records],
                   [f"{r.residue} {r.chain} {r.resid}" for r in records])

    def pdbqt(self):
        """The receptor as rigid-receptor PDBQT text (nonpolar hydrogens left out, as Vina expects; charges
        written as 0, Vina does not use them)."""
        lines = []
        coords = self.positions_angstrom.numpy()
        serial = 0
        for i, ad_type in enumerate(self.ad_types):
            if ad_type == "H":
                continue
            serial += 1
            residue, chain, resid = (self.residues[i].split() + ["", "", ""])[:3]
            lines.append(autodock.format_pdbqt_atom(serial, self.names[i], residue, chain, resid, coords[i], 0.0,
                                                    ad_type))
        return "\n".join(lines) + "\n"

    def write_pdbqt(self, path):
        """Write `pdbqt()` to `path`."""
        with open(path, "w") as handle:
            handle.write(self.pdbqt())

    def with_ligand(self, ligand, residue=None):
        """A new receptor with a bound molecule (a cofactor such as NADPH, a bio.Ligand in the receptor's frame)
        added as rigid receptor atoms, AutoDock-typed by Meeko as a ligand is (`ligand.autodock()`).
        `residue` labels its atoms (default 'LIG X <name>')."""
        ad_types = ligand.autodock().ad_types
        n = len(self)
        label = residue or f"{ligand.name[:3] or 'LIG'} X 1"
        return Receptor(torch.cat([self.positions, ligand.positions]), self.ad_types + ad_types,
                        self.bonds + [(n + i, n + j) for i, j in ligand.autodock().bonds],
                        self.elements + ligand.symbols,
                        self.names + [f"{s}{i + 1}" for i, s in enumerate(ligand.symbols)],
                        self.residues + [label] * len(ligand))

    def pocket(self, center=None, size=None, ligand=None, margin=8.0):
        """The receptor restricted to the atoms within `margin` Å of a box (center (3,) and size (3,) in Å) or
        of a reference ligand's atoms (a bio.Ligand or (N, 3) Å coordinates). Whole-receptor bonds between
        kept atoms are kept, and typing is not redone (it was done on the whole protein). Raises
        StructureError if no receptor atom is selected."""
        coords = self.positions_angstrom
        if ligand is not None:
            reference = ligand.conformers_angstrom[0] if hasattr(ligand, "conformers_angstrom") else \
                torch.as_tensor(ligand, dtype=torch.float64)
            distance = torch.cdist(coords, reference.to(coords)).min(dim=1).values
            keep = distance <= margin
            where = f"within {margin} Å of the ligand's atoms"
        elif center is not None and size is not None:
            center = torch.as_tensor(center, dtype=torch.float64)
            half = torch.as_tensor(size, dtype=torch.float64) / 2
            if center.shape != (3,) or half.shape != (3,) or not (half > 0).all():
                raise ArgumentError("size", size, "three positive lengths in Å (with a center of 3 numbers)",
                                    owner="bio.Receptor.pocket")
            outside = ((coords - center).abs() - half).clamp(min=0)
            keep = outside.norm(dim=1) <= margin
            where = f"within {margin} Å of the box centred at {center.tolist()} of size {(2 * half).tolist()} Å"
        else:
            raise ArgumentError("center/size or ligand", None, "given", owner="bio.Receptor.pocket",
                                shown="neither")
        index = torch.nonzero(keep).flatten().tolist()
        if not any(self.xs_types[i] is not None for i in index):
            raise StructureError(f"no receptor heavy atom lies {where}; is the box or ligand placed on the "
                                 "receptor (same coordinate frame, Å)?")
        new = {old: k for k, old in enumerate(index)}
        pocket = Receptor.__new__(Receptor)
        pocket.positions = self.positions[index]
        pocket.ad_types = [self.ad_types[i] for i in index]
        pocket.xs_types = [self.xs_types[i] for i in index]
        pocket.elements = [self.elements[i] for i in index]
        pocket.names = [self.names[i] for i in index]
        pocket.residues = [self.residues[i] for i in index]
        pocket.bonds = [(new[a], new[b]) for a, b in self.bonds if a in new and b in new]
        pocket.topology = None
        return pocket


def _label(residue):
    return f"{residue.name} {residue.chain.id} {residue.id}"


def autodock_error(error):
    return " ".join(f"{type(error).__name__}: {error}".split())


_STANDARD = {"ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE", "LEU", "LYS", "MET", "PHE",
             "PRO", "SER", "THR", "TRP", "TYR", "VAL", "ACE", "NME"}
