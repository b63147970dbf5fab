"""AutoDock atom types, Vina's X-Score (XS) typing, ligand torsion trees (by Meeko) and PDBQT files.

    setup = bio.autodock.prepare_ligand(ligand)     # or ligand.autodock(): AD types, rigid fragments, rotors
    text = setup.pdbqt(coords)                      # PDBQT of a pose, coords (N, 3) Å in RDKit atom order
    records = bio.read_pdbqt("receptor.pdbqt")      # one PDBQTAtom per ATOM/HETATM record

Ligands are prepared by Meeko (`MoleculePreparation`): its SMARTS atom typer (AD4 types: C/A, N/NA, OA,
SA, HD, ...), its rotatable bonds (single, acyclic, not amide C-N, not to a terminal heavy atom) and its
torsion tree, which it writes as PDBQT ROOT/BRANCH records. Macrocycles are kept rigid (no G/CG closure
dummies). Vina's XS types follow from AD types and bonds exactly as Vina's model::assign_types does: carbon
bonded to a heteroatom (anything but C, A, H, HD) is polar, N/O bonded to an HD hydrogen (or a metal) is a
donor, NA/OA are acceptors (SA is not), hydrogens get no XS type and never enter the score.
"""

from dataclasses import dataclass

import numpy as np

from .errors import LigandError, StructureError

# AutoDock types Vina reads (atom_constants.h atom_kind_data; G/CG/W closure and water types left out).
AD_TYPES = ("C", "A", "N", "O", "P", "S", "H", "F", "I", "NA", "OA", "SA", "HD", "Mg", "Mn", "Zn", "Ca", "Fe",
            "Cl", "Br", "Si", "At")
METAL_AD_TYPES = ("Mg", "Mn", "Zn", "Ca", "Fe")
# Metals Vina also accepts under their element name (atom_constants.h non_ad_metal_names).
NON_AD_METALS = ("Cu", "Fe", "Na", "K", "Hg", "Co", "U", "Cd", "Ni")
NOT_HETEROATOM = ("C", "A", "H", "HD")

# XS types, their X-Score radii (Å, Vina) and Vinardo radii (Å), in Vina's order (atom_constants.h).
XS_TYPES = ("C_H", "C_P", "N_P", "N_D", "N_A", "N_DA", "O_P", "O_D", "O_A", "O_DA", "S_P", "P_P", "F_H", "Cl_H",
            "Br_H", "I_H", "Si", "At", "Met_D")
XS_RADIUS = (1.9, 1.9, 1.8, 1.8, 1.8, 1.8, 1.7, 1.7, 1.7, 1.7, 2.0, 2.1, 1.5, 1.8, 2.0, 2.2, 2.2, 2.3, 1.2)
XS_VINARDO_RADIUS = (2.0, 2.0, 1.7, 1.7, 1.7, 1.7, 1.6, 1.6, 1.6, 1.6, 2.0, 2.1, 1.5, 1.8, 2.0, 2.2, 2.2, 2.3, 1.2)
XS_HYDROPHOBIC = ("C_H", "F_H", "Cl_H", "Br_H", "I_H")
XS_DONOR = ("N_D", "N_DA", "O_D", "O_DA", "Met_D")
XS_ACCEPTOR = ("N_A", "N_DA", "O_A", "O_DA")
_XS_BY_ELEMENT = {"S": "S_P", "P": "P_P", "F": "F_H", "Cl": "Cl_H", "Br": "Br_H", "I": "I_H", "Si": "Si",
                  "At": "At"}


def ad_element(ad_type):
    """The element (or 'Met' for a metal) Vina assigns to an AutoDock type (atom_constants.h ad_type_to_el_type)."""
    if ad_type in ("C", "A"):
        return "C"
    if ad_type in ("H", "HD"):
        return "H"
    if ad_type in ("NA", "OA", "SA"):
        return ad_type[0]
    if ad_type in METAL_AD_TYPES or ad_type in NON_AD_METALS:
        return "Met"
    return ad_type


def check_ad_types(ad_types, names, what):
    """Raise (LigandError for what='ligand', else StructureError) naming the first atom whose AutoDock type
    Vina cannot read; `names` describes each atom (e.g. 'atom 5 (B)')."""
    for ad_type, name in zip(ad_types, names):
        if ad_type not in AD_TYPES and ad_type not in NON_AD_METALS:
            error = LigandError if what == "ligand" else StructureError
            raise error(f"{what} {name} has AutoDock type {ad_type!r}, which Vina cannot type (Vina knows "
                        f"{', '.join(AD_TYPES + NON_AD_METALS)}); remove or replace that atom")


def xs_types(ad_types, bonds):
    """Vina's XS type names of atoms with AutoDock types `ad_types` (length N) and `bonds` (pairs of atom
    indices), as model::assign_types gives them; None for hydrogens (they have no XS type)."""
    neighbors = [[] for _ in ad_types]
    for i, j in bonds:
        neighbors[i].append(j)
        neighbors[j].append(i)
    types = []
    for i, ad_type in enumerate(ad_types):
        element = ad_element(ad_type)
        acceptor = ad_type in ("OA", "NA")
        donor = element == "Met" or any(ad_types[j] == "HD" for j in neighbors[i])
        if element == "H":
            types.append(None)
        elif element == "C":
            polar = any(ad_types[j] not in NOT_HETEROATOM for j in neighbors[i])
            types.append("C_P" if polar else "C_H")
        elif element in ("N", "O"):
            types.append(element + ("_DA" if acceptor and donor else "_A" if acceptor else "_D" if donor else "_P"))
        elif element == "Met":
            types.append("Met_D")
        else:
            types.append(_XS_BY_ELEMENT[element])
    return types


# Covalent radii (Å) Vina perceives bonds with (atom_constants.h atom_kind_data; 1.75 for other metals).
COVALENT_RADIUS = {"C": 0.77, "A": 0.77, "N": 0.75, "NA": 0.75, "O": 0.73, "OA": 0.73, "P": 1.06, "S": 1.02,
                   "SA": 1.02, "H": 0.37, "HD": 0.37, "F": 0.71, "I": 1.33, "Cl": 0.99, "Br": 1.14, "Si": 1.11,
                   "At": 1.44, "Mg": 1.30, "Mn": 1.39, "Zn": 1.31, "Ca": 1.74, "Fe": 1.25}


def distance_bonds(coords, ad_types):
    """Bonds as Vina perceives them in a rigid receptor: atoms closer than 1.1 times the sum of their covalent
    radii. coords (M, 3) Å (numpy); returns a list of (i, j)."""
    from scipy.spatial import cKDTree

    coords = np.asarray(coords, dtype=float)
    radius = np.array([COVALENT_RADIUS.get(t, 1.75) for t in ad_types])
    bonds = []
    for i, j in sorted(cKDTree(coords).query_pairs(1.1 * 2 * radius.max())):
        if np.sum((coords[i] - coords[j]) ** 2) < (1.1 * (radius[i] + radius[j])) ** 2:
            bonds.append((i, j))
    return bonds


@dataclass
class LigandSetup:
    """A ligand prepared for AutoDock Vina (atom indices are RDKit's, hydrogens included).

    Attributes: ad_types (N AutoDock types; nonpolar hydrogens 'H'), xs_types (N XS type names, None for
    hydrogens), bonds (list of (i, j)), fragment ((N,) int array: the rigid fragment of each atom; -1 for
    hydrogens Meeko merged), root (the root fragment), branches (list of (parent_atom, child_atom,
    parent_fragment, child_fragment): the rotatable bonds, parent side towards the root), num_tors (Vina's
    torsion count: 0.5 per side of each rotatable bond whose far atom has >1 heavy neighbour, so a terminal
    rotor such as C-OH counts 0.5), intra_pairs ((P, 2) int array: the ligand's internal pairs as Vina's
    model::initialize_pairs selects them), template (Meeko's PDBQT text), order (RDKit index of each PDBQT
    atom line).
    """

    ad_types: list
    xs_types: list
    bonds: list
    fragment: np.ndarray
    root: int
    branches: list
    num_tors: float
    intra_pairs: np.ndarray
    template: str
    order: list

    def pdbqt(self, coords):
        """The PDBQT text of the ligand at `coords` ((N, 3) Å, RDKit atom order; numpy or torch)."""
        coords = np.asarray(coords.detach().cpu() if hasattr(coords, "detach") else coords, dtype=float)
        lines, k = [], 0
        for line in self.template.splitlines():
            if line.startswith(("ATOM", "HETATM")):
                x, y, z = coords[self.order[k]]
                line = f"{line[:30]}{x:8.3f}{y:8.3f}{z:8.3f}{line[54:]}"
                k += 1
            lines.append(line)
        return "\n".join(lines) + "\n"


def _within_bonds(neighbors, start, depth):
    seen, frontier = {start}, [start]
    for _ in range(depth):
        frontier = [j for i in frontier for j in neighbors[i] if j not in seen]
        seen.update(frontier)
    return seen


def prepare_ligand(mol, name=""):
    """Meeko's AutoDock preparation of an RDKit molecule (explicit hydrogens, one conformer used) as a
    LigandSetup. Raises LigandError with Meeko's reason if Meeko fails, or naming the atom if an atom gets an
    AutoDock type Vina cannot read (e.g. boron)."""
    try:
        from meeko import MoleculePreparation, PDBQTWriterLegacy
    except ImportError as error:  # pragma: no cover - meeko is a dependency
        raise LigandError(f"AutoDock preparation needs Meeko (pip install meeko): {error}") from error
    label = f"ligand {name!r}" if name else "ligand"
    try:
        setups = MoleculePreparation(rigid_macrocycles=True).prepare(mol)
    except Exception as error:
        raise LigandError(f"Meeko could not prepare {label}: {type(error).__name__}: {error}") from error
    if len(setups) != 1:
        raise LigandError(f"Meeko split {label} into {len(setups)} molecules; pass one molecule")
    setup = setups[0]
    n = mol.GetNumAtoms()
    ad_types = [setup.atoms[i].atom_type for i in range(n)]
    symbols = [atom.GetSymbol() for atom in mol.GetAtoms()]
    check_ad_types(ad_types, [f"{label} atom {i} ({s})" for i, s in enumerate(symbols)], "ligand")
    bonds = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()]
    xs = xs_types(ad_types, bonds)

    model = setup.flexibility_model
    fragment = np.full(n, -1, dtype=np.int64)
    for atom, body in model["rigid_index_by_atom"].items():
        if atom < n:
            fragment[atom] = body
    root = model["root"]
    branches, stack, visited = [], [root], {root}
    while stack:
        body = stack.pop()
        for child in model["rigid_body_graph"][body]:
            if child not in visited:
                visited.add(child)
                stack.append(child)
                parent_atom, child_atom = model["rigid_body_connectivity"][body, child]
                branches.append((parent_atom, child_atom, body, child))

    neighbors = [[] for _ in range(n)]
    for i, j in bonds:
        neighbors[i].append(j)
        neighbors[j].append(i)
    heavy = [xs[i] is not None for i in range(n)]
    heavy_degree = [sum(heavy[j] for j in neighbors[i]) for i in range(n)]
    num_tors = 0.0
    for a, b, _, _ in branches:  # conf_independent.cpp: 0.5 per side, only towards a non-terminal heavy atom
        if heavy[a] and heavy[b]:
            num_tors += 0.5 * (heavy_degree[b] > 1) + 0.5 * (heavy_degree[a] > 1)

    # Vina's mobility (parse_pdbqt.cpp): the first atom of a BRANCH lies on the rotation axis and is stored
    # with the parent's rigid node; distances are fixed within a node and between both axis atoms and the
    # child node. A pair interacts if its distance is not fixed and it is more than three bonds apart.
    node = fragment.copy()
    for _, child_atom, parent, _ in branches:
        node[child_atom] = parent
    members = {}
    for i in range(n):
        members.setdefault(int(node[i]), []).append(i)
    fixed = {(axis, c) for a, b, _, child in branches for axis in (a, b) for c in members.get(child, [])}
    pairs = []
    for i in range(n):
        if not heavy[i]:
            continue
        close = _within_bonds(neighbors, i, 3)
        for j in range(i + 1, n):
            if heavy[j] and node[i] != node[j] and j not in close \
                    and (i, j) not in fixed and (j, i) not in fixed:
                pairs.append((i, j))

    text, ok, message = PDBQTWriterLegacy.write_string(setup)
    if not ok:
        raise LigandError(f"Meeko could not write {label} as PDBQT: {message}")
    positions = mol.GetConformer().GetPositions()
    order = []
    for line in text.splitlines():
        if line.startswith(("ATOM", "HETATM")):
            xyz = np.array([float(line[30:38]), float(line[38:46]), float(line[46:54])])
            order.append(int(np.argmin(((positions - xyz) ** 2).sum(axis=1))))
    return LigandSetup(ad_types, xs, bonds, fragment, root, branches, num_tors,
                       np.array(pairs, dtype=np.int64).reshape(-1, 2), text, order)


@dataclass
class PDBQTAtom:
    """One ATOM/HETATM record of a PDBQT file: serial, name, residue (name), chain, resid (residue number,
    str with insertion code), coord ((3,) Å), charge (e), ad_type, line (1-based line number)."""

    serial: int
    name: str
    residue: str
    chain: str
    resid: str
    coord: np.ndarray
    charge: float
    ad_type: str
    line: int


def read_pdbqt(source):
    """The ATOM/HETATM records of a PDBQT file (path) or text (a str with newlines), as PDBQTAtom list.
    Raises StructureError naming the line of a malformed record or an AutoDock type Vina cannot read."""
    if "\n" in source:
        text, where = source, "PDBQT text"
    else:
        try:
            with open(source) as handle:
                text = handle.read()
        except OSError as error:
            raise StructureError(f"cannot read PDBQT file {source}: {error}") from error
        where = str(source)
    atoms = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.startswith(("ATOM", "HETATM")):
            continue
        try:
            coord = np.array([float(line[30:38]), float(line[38:46]), float(line[46:54])])
            charge = float(line[70:76])
            ad_type = line[77:79].strip()
            serial = int(line[6:11])
        except ValueError as error:
            raise StructureError(f"{where}, line {number}: malformed PDBQT atom record ({error}): {line!r}") \
                from error
        if not np.isfinite(coord).all():
            raise StructureError(f"{where}, line {number}: non-finite coordinates: {line!r}")
        atoms.append(PDBQTAtom(serial, line[12:16].strip(), line[17:20].strip(), line[21:22],
                               line[22:27].strip(), coord, charge, ad_type, number))
    if not atoms:
        raise StructureError(f"{where}: no ATOM/HETATM records")
    check_ad_types([a.ad_type for a in atoms],
                   [f"atom {a.name} ({a.residue} {a.chain}{a.resid}, line {a.line})" for a in atoms], f"{where}:")
    return atoms


def format_pdbqt_atom(serial, name, residue, chain, resid, coord, charge, ad_type, record="ATOM"):
    """One PDBQT atom line (AutoDock's fixed columns: PDB columns 1-54, then occupancy, B, charge, type)."""
    name = f" {name:<3s}" if len(name) < 4 else name[:4]
    x, y, z = coord
    return (f"{record:<6s}{serial % 100000:5d} {name}{' '}{residue:>3s} {chain[:1] or ' '}{resid:>4s}    "
            f"{x:8.3f}{y:8.3f}{z:8.3f}{1.0:6.2f}{0.0:6.2f}    {charge:+6.3f} {ad_type:<2s}")
