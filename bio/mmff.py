"""MMFF94 / MMFF94s intramolecular energy of a ligand in torch, with RDKit's parameters and functional forms.

    energy = bio.mmff_energy(ligand)                 # or variant="MMFF94s"
    e = energy(coords)                               # coords (N, 3) or (B, N, 3) in Å -> () or (B,) kcal/mol
    terms = bio.mmff_energy(ligand, components=True)(coords)   # {"bond": ..., "angle": ..., ...}
    energy = bio.mmff_energy(ligand, device="cuda")  # parameters on the GPU; coords must be there too

UNITS: Å and kcal/mol, unlike the rest of `bio` (nm, kJ/mol). MMFF94 is defined in these units, RDKit's
force field reports them, and docking scores (Vina) use them too, so energies compare with RDKit and with
docking scores without conversion. `Ligand.conformers_angstrom` gives coordinates in Å.

Terms (Halgren, J. Comput. Chem. 17, 490 (1996); as in RDKit's ForceField/MMFF), angles in degrees:
  bond        143.9325/2 kb dr^2 (1 + cs dr + 7/12 cs^2 dr^2), cs = -2 Å^-1
  angle       0.043844/2 ka dtheta^2 (1 + cb dtheta), cb = -0.006981317 deg^-1;
              143.9325 ka (1 + cos theta) at linear centres (MMFF types 4, 42, 53, 61)
  stretchbend 2.51210 (kba_ijk dr_ij + kba_kji dr_kj) dtheta (not at linear centres)
  oop         0.043844/2 koop chi^2, chi the Wilson angle of l out of the plane i-j-k (three per trivalent j)
  torsion     1/2 (V1 (1 + cos phi) + V2 (1 - cos 2phi) + V3 (1 + cos 3phi))
  vdw         eps (1.07 R*/(R + 0.07 R*))^7 (1.12 R*^7/(R^7 + 0.12 R*^7) - 2), Halgren's combination rules
  ele         332.0716 qi qj / (D (R + 0.05)) (or / (D (R + 0.05)^2) with distance_dielectric), x 0.75 for 1-4
Nonbonded pairs are those 3 or more bonds apart within one fragment (RDKit's default ignores
inter-fragment pairs); no cutoff.
"""

import math

import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem import rdForceFieldHelpers

from . import checks
from .errors import ArgumentError, ParameterizationError
from .ligand import Ligand

BOND_CONSTANT = 143.9325           # mdyne/Å -> kcal/mol/Å^2
DEG2RAD = math.pi / 180.0
ANGLE_CONSTANT = BOND_CONSTANT * DEG2RAD ** 2
STRETCH_BEND_CONSTANT = BOND_CONSTANT * DEG2RAD
COULOMB = 332.0716                 # kcal Å / (mol e^2)
LINEAR_TYPES = (4, 42, 53, 61)     # MMFF atom types with linear bending (MMFFPROP.PAR "linh")
TERMS = ("bond", "angle", "stretchbend", "oop", "torsion", "vdw", "ele")


def _tensor(values, dtype, device, width=None):
    tensor = torch.tensor(values, dtype=dtype, device=device)
    return tensor.reshape(-1, width) if width else tensor


def mmff_parameters(ligand, variant="MMFF94", dielectric_constant=1.0, distance_dielectric=False, device=None,
                    dtype=torch.float64):
    """MMFF parameters of `ligand` (a bio.Ligand, or an RDKit Mol with explicit hydrogens and a conformer)
    from RDKit, as tensors.

    Returns a dict term -> dict of tensors: index tensors (M, k) long and `dtype` parameters (M,), in MMFF's
    units (Å, degrees, mdyne/Å, kcal/mol, e); "ele" holds qq = q_i q_j (x 0.75 for 1-4 pairs) / D per pair.
    All tensors are on `device` ('cpu' (None) or an available 'cuda[:k]'); dtype is torch.float64 (default)
    or torch.float32. Raises ParameterizationError if MMFF lacks a parameter.
    """
    device = checks.device(device, owner="bio.mmff_energy")
    checks.dtype(dtype, owner="bio.mmff_energy")
    if variant not in ("MMFF94", "MMFF94s"):
        raise ArgumentError("variant", variant, "'MMFF94' or 'MMFF94s'", owner="bio.mmff_energy")
    mol = ligand.mol if isinstance(ligand, Ligand) else Ligand(ligand).mol  # Ligand() checks hydrogens
    props = rdForceFieldHelpers.MMFFGetMoleculeProperties(mol, mmffVariant=variant)
    if props is None or not rdForceFieldHelpers.MMFFHasAllMoleculeParams(mol):
        raise ParameterizationError(f"MMFF has no parameters for {Chem.MolToSmiles(Chem.RemoveHs(mol))}")
    n = mol.GetNumAtoms()
    linear = [props.GetMMFFAtomType(i) in LINEAR_TYPES for i in range(n)]
    neighbors = [[a.GetIdx() for a in mol.GetAtomWithIdx(i).GetNeighbors()] for i in range(n)]

    bonds, bond_values, r0 = [], [], {}
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        _, kb, length = props.GetMMFFBondStretchParams(mol, i, j)
        bonds.append((i, j))
        bond_values.append((kb, length))
        r0[i, j] = r0[j, i] = length

    angles, angle_values, stretch_bends, stretch_bend_values = [], [], [], []
    for j in range(n):
        for a, i in enumerate(neighbors[j]):
            for k in neighbors[j][a + 1:]:
                _, ka, theta0 = props.GetMMFFAngleBendParams(mol, i, j, k)
                angles.append((i, j, k))
                angle_values.append((ka, theta0, float(linear[j])))
                stretch_bend = None if linear[j] else props.GetMMFFStretchBendParams(mol, i, j, k)
                if stretch_bend is not None:  # none at linear centres, nor (as in RDKit) where MMFF has none
                    _, kba_ijk, kba_kji = stretch_bend
                    stretch_bends.append((i, j, k))
                    stretch_bend_values.append((kba_ijk, kba_kji, r0[i, j], r0[k, j], theta0))

    oops, oop_values = [], []
    for j in range(n):
        if len(neighbors[j]) != 3:
            continue
        a, b, c = neighbors[j]
        koop = props.GetMMFFOopBendParams(mol, a, j, b, c)
        if koop is None:
            continue
        for i, k, l in ((a, b, c), (a, c, b), (b, c, a)):
            oops.append((i, j, k, l))
            oop_values.append(koop)

    torsions, torsion_values = [], []
    for bond in mol.GetBonds():
        j, k = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        for i in neighbors[j]:
            for l in neighbors[k]:
                if i == k or l == j or i == l:
                    continue
                params = props.GetMMFFTorsionParams(mol, i, j, k, l)  # (type, V1, V2, V3)
                if params is None:  # torsions through a linear atom have none, as in RDKit
                    continue
                torsions.append((i, j, k, l))
                torsion_values.append(params[1:])

    distance = Chem.GetDistanceMatrix(mol)
    fragment = [0] * n
    for number, atoms in enumerate(Chem.GetMolFrags(mol)):
        for atom in atoms:
            fragment[atom] = number
    charges = [props.GetMMFFPartialCharge(i) for i in range(n)]
    pairs, vdw_values, ele_values = [], [], []
    for i in range(n):
        for j in range(i + 1, n):
            if distance[i, j] < 3 or fragment[i] != fragment[j]:
                continue
            _, _, r_star, epsilon = props.GetMMFFVdWParams(i, j)
            pairs.append((i, j))
            vdw_values.append((r_star, epsilon))
            ele_values.append(charges[i] * charges[j] * (0.75 if distance[i, j] == 3 else 1.0) / dielectric_constant)

    bond_v, angle_v = _tensor(bond_values, dtype, device, 2), _tensor(angle_values, dtype, device, 3)
    sb_v, tor_v = _tensor(stretch_bend_values, dtype, device, 5), _tensor(torsion_values, dtype, device, 3)
    vdw_v = _tensor(vdw_values, dtype, device, 2)
    long = torch.long
    return {
        "bond": {"atoms": _tensor(bonds, long, device, 2), "kb": bond_v[:, 0], "r0": bond_v[:, 1]},
        "angle": {"atoms": _tensor(angles, long, device, 3), "ka": angle_v[:, 0], "theta0": angle_v[:, 1],
                  "linear": angle_v[:, 2].bool()},
        "stretchbend": {"atoms": _tensor(stretch_bends, long, device, 3), "kba_ijk": sb_v[:, 0],
                        "kba_kji": sb_v[:, 1], "r0_ij": sb_v[:, 2], "r0_kj": sb_v[:, 3], "theta0": sb_v[:, 4]},
        "oop": {"atoms": _tensor(oops, long, device, 4), "koop": _tensor(oop_values, dtype, device)},
        "torsion": {"atoms": _tensor(torsions, long, device, 4), "v1": tor_v[:, 0], "v2": tor_v[:, 1],
                    "v3": tor_v[:, 2]},
        "vdw": {"atoms": _tensor(pairs, long, device, 2), "r_star": vdw_v[:, 0], "epsilon": vdw_v[:, 1]},
        "ele": {"atoms": _tensor(pairs, long, device, 2), "qq": _tensor(ele_values, dtype, device),
                "distance_dielectric": distance_dielectric},
    }


def _norm(x):
    """|x| over the last axis, with a finite gradient at 0."""
    return (x * x).sum(-1).clamp_min(1e-30).sqrt()


def _angle_degrees(coords, i, j, k):
    a, b = coords[..., i, :] - coords[..., j, :], coords[..., k, :] - coords[..., j, :]
    return torch.atan2(_norm(torch.cross(a, b, dim=-1)), (a * b).sum(-1)) / DEG2RAD


def mmff_components(coords, parameters):
    """MMFF energy terms of coords (..., N, 3) Å under `parameters` (from mmff_parameters): dict term ->
    (...,) kcal/mol, terms as in TERMS."""
    p = parameters["bond"]
    i, j = p["atoms"].unbind(-1)
    dr = _norm(coords[..., i, :] - coords[..., j, :]) - p["r0"]
    cs = -2.0
    bond = 0.5 * BOND_CONSTANT * p["kb"] * dr ** 2 * (1 + cs * dr + 7.0 / 12.0 * cs ** 2 * dr ** 2)

    p = parameters["angle"]
    i, j, k = p["atoms"].unbind(-1)
    theta = _angle_degrees(coords, i, j, k)
    dtheta = theta - p["theta0"]
    bent = 0.5 * ANGLE_CONSTANT * p["ka"] * dtheta ** 2 * (1 - 0.006981317 * dtheta)
    straight = BOND_CONSTANT * p["ka"] * (1 + torch.cos(theta * DEG2RAD))
    angle = torch.where(p["linear"], straight, bent)

    p = parameters["stretchbend"]
    i, j, k = p["atoms"].unbind(-1)
    dr_ij = _norm(coords[..., i, :] - coords[..., j, :]) - p["r0_ij"]
    dr_kj = _norm(coords[..., k, :] - coords[..., j, :]) - p["r0_kj"]
    dtheta = _angle_degrees(coords, i, j, k) - p["theta0"]
    stretch_bend = STRETCH_BEND_CONSTANT * (p["kba_ijk"] * dr_ij + p["kba_kji"] * dr_kj) * dtheta

    p = parameters["oop"]
    i, j, k, l = p["atoms"].unbind(-1)
    r_ji, r_jk, r_jl = (coords[..., m, :] - coords[..., j, :] for m in (i, k, l))
    normal = torch.cross(r_ji, r_jk, dim=-1)
    sin_chi = ((normal * r_jl).sum(-1) / (_norm(normal) * _norm(r_jl))).clamp(-1.0, 1.0)
    chi = torch.asin(sin_chi) / DEG2RAD
    oop = 0.5 * ANGLE_CONSTANT * p["koop"] * chi ** 2

    p = parameters["torsion"]
    i, j, k, l = p["atoms"].unbind(-1)
    t1 = torch.cross(coords[..., i, :] - coords[..., j, :], coords[..., k, :] - coords[..., j, :], dim=-1)
    t2 = torch.cross(coords[..., j, :] - coords[..., k, :], coords[..., l, :] - coords[..., k, :], dim=-1)
    cos_phi = ((t1 * t2).sum(-1) / (_norm(t1) * _norm(t2))).clamp(-1.0, 1.0)
    cos_2phi = 2 * cos_phi ** 2 - 1
    cos_3phi = cos_phi * (2 * cos_2phi - 1)
    torsion = 0.5 * (p["v1"] * (1 + cos_phi) + p["v2"] * (1 - cos_2phi) + p["v3"] * (1 + cos_3phi))

    p = parameters["vdw"]
    i, j = p["atoms"].unbind(-1)
    r = _norm(coords[..., i, :] - coords[..., j, :])
    r_star = p["r_star"]
    repulsion = (1.07 * r_star / (r + 0.07 * r_star)) ** 7
    vdw = p["epsilon"] * repulsion * (1.12 * r_star ** 7 / (r ** 7 + 0.12 * r_star ** 7) - 2)

    p = parameters["ele"]
    buffered = r + 0.05
    ele = COULOMB * p["qq"] / (buffered ** 2 if p["distance_dielectric"] else buffered)

    terms = (bond, angle, stretch_bend, oop, torsion, vdw, ele)
    return {name: term.sum(-1) for name, term in zip(TERMS, terms)}


def mmff_energy(ligand, variant="MMFF94", components=False, dielectric_constant=1.0, distance_dielectric=False,
                device=None, dtype=torch.float64):
    """The MMFF94 (or variant="MMFF94s") intramolecular energy function of `ligand` (bio.Ligand or RDKit Mol).

    Returns energy(coords, parameters=<precomputed>): coords (N, 3) or (B, N, 3) in Å -> () or (B,) kcal/mol,
    or with components=True a dict term -> energy. Differentiable in coords and in the parameter tensors
    (pass a modified copy of `energy.parameters`). Defaults match RDKit's MMFFGetMoleculeForceField.

    The parameters are built once on `device` ('cpu' (None) or an available 'cuda[:k]') in `dtype`
    (torch.float64 or float32), as bio.System does; coords must be on that same device (a tensor elsewhere
    raises ArgumentError, it is not moved), and arrays or lists are converted to a tensor there in `dtype`.
    Energies follow torch's type promotion (float32 coords with float64 parameters give float64).
    """
    parameters = mmff_parameters(ligand, variant, dielectric_constant, distance_dielectric, device, dtype)
    n_atoms = ligand.mol.GetNumAtoms() if isinstance(ligand, Ligand) else ligand.GetNumAtoms()

    def energy(coords, parameters=parameters):
        coords = _check_coords(coords, parameters, n_atoms)
        terms = mmff_components(coords, parameters)
        return terms if components else sum(terms.values())

    energy.parameters = parameters
    return energy


def _check_coords(coords, parameters, n_atoms):
    """coords as a tensor (..., n_atoms, 3) on the device of `parameters`, else ArgumentError."""
    reference = parameters["bond"]["kb"]
    if not isinstance(coords, torch.Tensor):
        coords = torch.as_tensor(np.asarray(coords), dtype=reference.dtype, device=reference.device)
    if coords.device != reference.device:
        raise ArgumentError("coords", coords, f"a tensor on {reference.device}, the device of the MMFF parameters",
                            owner="bio.mmff_energy", shown=f"a tensor on {coords.device}",
                            note="build the energy with bio.mmff_energy(..., device=...) or move coords with .to()")
    if coords.dim() not in (2, 3) or tuple(coords.shape[-2:]) != (n_atoms, 3):
        raise ArgumentError("coords", coords, f"of shape (N, 3) or (B, N, 3) with N = {n_atoms} atoms (Å)",
                            owner="bio.mmff_energy", shown=f"shape {tuple(coords.shape)}")
    return coords
