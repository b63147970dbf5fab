"""The AutoDock Vina (and Vinardo) score in torch, with explicit atom pairs: exact gradients, batched poses.

    receptor = bio.Receptor.from_pdb("protein.pdb")
    score = bio.vina_score(ligand, receptor, center=(x, y, z), size=(20, 20, 20))
    e = score(coords)                            # coords (N, 3) or (B, N, 3) Å, all ligand atoms -> () or (B,)
    terms = bio.vina_score(ligand, receptor, components=True)(coords)   # dict of () or (B,) tensors
    e = score(coords, receptor_coords=r, weights=w)                     # r (M, 3) Å, w (6,): differentiable

UNITS: Å and kcal/mol, as Vina reports. Terms (Trott & Olson, J. Comput. Chem. 31, 455 (2010); vina 1.2's
potentials.h and scoring_function.h), for heavy-atom pairs closer than 8 Å, with surface distance
d = r - R_i - R_j on X-Score radii of the XS types (bio.autodock):
  gauss1      exp(-(d / 0.5)^2)
  gauss2      exp(-((d - 3) / 2)^2)
  repulsion   d^2 for d < 0
  hydrophobic 1 for d <= 0.5, 0 for d >= 1.5, linear between; both atoms hydrophobic (C_H, F, Cl, Br, I)
  hydrogen    1 for d <= -0.7, 0 for d >= 0, linear between; donor-acceptor pairs
weights (-0.035579, -0.005156, 0.840245, -0.035069, -0.587439). As in Vina, each ligand atom's weighted sum
over receptor atoms e > 0 is "curled" to e * 1000 / (1000 + e) (so is each internal pair's), and
    total = inter / (1 + 0.05846 N_rot)
with N_rot Vina's torsion count (terminal rotors count 0.5; bio.autodock.LigandSetup.num_tors). The
ligand's internal energy ("intra": pairs in different rigid fragments more than three bonds apart) is
reported, but, as in Vina's score(), it does not enter the total. Vinardo (scoring='vinardo'): gauss
exp(-(d / 0.8)^2), repulsion, hydrophobic (1 at d <= 0, 0 at d >= 2.5), hydrogen (1 at d <= -0.6, 0 at d >= 0)
on Vinardo radii, weights (-0.045, 0.8, -0.035, -0.6).

Vina itself tabulates each pair term on a grid in r^2 (1/32 Å^2 steps, piecewise constant); here the terms
are evaluated exactly, so scores agree with vina's explicit-atom score() to about 1e-3 kcal/mol and the
gradient is the exact derivative. Receptor atoms are restricted once, at setup, to those within the cutoff of
the box (center, size) or of the ligand's starting pose (`margin`); poses that leave that region lose
receptor contacts (Vina instead adds an out-of-box penalty).
"""

import torch

from . import autodock, checks
from .errors import ArgumentError, StructureError
from .ligand import Ligand

VINA_WEIGHTS = (-0.035579, -0.005156, 0.840245, -0.035069, -0.587439, 0.05846)
VINARDO_WEIGHTS = (-0.045, 0.8, -0.035, -0.6, 0.05846)
TERMS = {"vina": ("gauss1", "gauss2", "repulsion", "hydrophobic", "hydrogen"),
         "vinardo": ("gauss1", "repulsion", "hydrophobic", "hydrogen")}
CUTOFF = 8.0    # Å
CURL = 1000.0   # kcal/mol, Vina's authentic_v
_PAIR_BUDGET = 4_000_000  # ligand-receptor pairs evaluated at once (memory bound for large batches)


def _vina_terms(d, hydrophobic, hbond):
    return (torch.exp(-(d / 0.5) ** 2),
            torch.exp(-((d - 3.0) / 2.0) ** 2),
            torch.where(d < 0, d * d, torch.zeros_like(d)),
            hydrophobic * (1.5 - d).clamp(0.0, 1.0),
            hbond * (-d / 0.7).clamp(0.0, 1.0))


def _vinardo_terms(d, hydrophobic, hbond):
    return (torch.exp(-(d / 0.8) ** 2),
            torch.where(d < 0, d * d, torch.zeros_like(d)),
            hydrophobic * (1.0 - d / 2.5).clamp(0.0, 1.0),
            hbond * (-d / 0.6).clamp(0.0, 1.0))


def _pair_tables(types_a, types_b, scoring, dtype, device):
    radius = autodock.XS_RADIUS if scoring == "vina" else autodock.XS_VINARDO_RADIUS
    index = {name: k for k, name in enumerate(autodock.XS_TYPES)}
    ra = torch.tensor([radius[index[t]] for t in types_a], dtype=dtype, device=device)
    rb = torch.tensor([radius[index[t]] for t in types_b], dtype=dtype, device=device)

    def flags(types, group):
        return torch.tensor([t in group for t in types], dtype=torch.bool, device=device)

    hydrophobic = flags(types_a, autodock.XS_HYDROPHOBIC)[:, None] & flags(types_b, autodock.XS_HYDROPHOBIC)
    hbond = (flags(types_a, autodock.XS_DONOR)[:, None] & flags(types_b, autodock.XS_ACCEPTOR)) | \
            (flags(types_a, autodock.XS_ACCEPTOR)[:, None] & flags(types_b, autodock.XS_DONOR))
    return ra[:, None] + rb, hydrophobic.to(dtype), hbond.to(dtype)


def _curl(e, v):
    return torch.where(e > 0, e * v / (v + e.clamp(min=0)), e)


def vina_score(ligand, receptor, center=None, size=None, margin=None, scoring="vina", components=False,
               device=None, dtype=torch.float64):
    """Build the Vina (or Vinardo) score of `ligand` (a bio.Ligand) in `receptor` (a bio.Receptor).

    Receptor atoms are restricted to those within CUTOFF (8 Å) of the box `center`/`size` (Å, (3,) each), or,
    without a box, within `margin` Å (default 8 + 4) of the ligand's first conformer. Parameters live on
    `device` ('cpu' or 'cuda[:k]') in `dtype` (float64, or float32).

    Returns score(coords, receptor_coords=None, weights=None):
      coords           (N, 3) or (B, N, 3) Å, all N ligand atoms (hydrogens included, they are ignored),
      receptor_coords  optional (M, 3) Å of all receptor atoms (default: the receptor's), differentiable,
      weights          optional (T + 1,) tensor: the T term weights then the rotatable-bond weight
                       (default VINA_WEIGHTS or VINARDO_WEIGHTS), differentiable,
    -> total score () or (B,) kcal/mol, or with components=True a dict of () or (B,) tensors: the unweighted
    intermolecular sum of each term (keys TERMS[scoring]), "inter" (weighted, curled), "intra" (the ligand's
    internal energy, weighted, curled), "total" (inter / (1 + w_rot N_rot)), all kcal/mol except the
    unweighted terms (dimensionless sums; repulsion in Å^2).
    """
    if scoring not in TERMS:
        raise ArgumentError("scoring", scoring, "'vina' or 'vinardo'", owner="bio.vina_score")
    device = checks.device(device, owner="bio.vina_score")
    checks.dtype(dtype, owner="bio.vina_score")
    if not isinstance(ligand, Ligand):
        raise ArgumentError("ligand", ligand, "a bio.Ligand", owner="bio.vina_score", shown=type(ligand).__name__)
    setup = ligand.autodock()
    lig_index = [i for i, t in enumerate(setup.xs_types) if t is not None]
    lig_types = [setup.xs_types[i] for i in lig_index]

    coords = receptor.positions_angstrom
    heavy = torch.tensor([t is not None for t in receptor.xs_types])
    if center is not None or size is not None:
        if center is None or size is None:
            raise ArgumentError("center/size", (center, size), "both given or both omitted", owner="bio.vina_score")
        center_t = torch.as_tensor(center, dtype=torch.float64)
        half = torch.as_tensor(size, dtype=torch.float64) / 2
        if center_t.shape != (3,) or half.shape != (3,) or not (half > 0).all():
            raise ArgumentError("size", size, "three positive lengths in Å (with a center of 3 numbers)",
                                owner="bio.vina_score")
        near = ((coords - center_t).abs() - half).clamp(min=0).norm(dim=1) < CUTOFF
        where = f"within {CUTOFF} Å of the box centred at {center_t.tolist()} of size {(2 * half).tolist()} Å"
    else:
        margin = CUTOFF + 4.0 if margin is None else margin
        near = torch.cdist(coords, ligand.conformers_angstrom[0, lig_index]).min(dim=1).values < margin
        where = f"within {margin} Å of the ligand"
    rec_index = torch.nonzero(near & heavy).flatten()
    if rec_index.numel() == 0:
        raise StructureError(f"no receptor heavy atom lies {where}; place the box (Å) on the receptor's pocket")
    rec_types = [receptor.xs_types[i] for i in rec_index.tolist()]

    optimal, hydrophobic, hbond = _pair_tables(lig_types, rec_types, scoring, dtype, device)
    pairs = setup.intra_pairs
    intra_a = torch.tensor(pairs[:, 0], device=device)
    intra_b = torch.tensor(pairs[:, 1], device=device)
    pair_types = [(setup.xs_types[a], setup.xs_types[b]) for a, b in pairs.tolist()]
    intra_optimal, intra_hydrophobic, intra_hbond = (
        table.diagonal() for table in _pair_tables([a for a, _ in pair_types], [b for _, b in pair_types],
                                                   scoring, dtype, device))
    lig_index_t = torch.tensor(lig_index, device=device)
    rec_index_t = rec_index.to(device)
    default_receptor = coords.to(device=device, dtype=dtype)
    default_weights = torch.tensor(VINA_WEIGHTS if scoring == "vina" else VINARDO_WEIGHTS, dtype=dtype,
                                   device=device)
    terms_fn = _vina_terms if scoring == "vina" else _vinardo_terms
    names = TERMS[scoring]
    num_tors = setup.num_tors
    n_atoms = len(setup.xs_types)

    def score(coords, receptor_coords=None, weights=None):
        if coords.shape[-2:] != (n_atoms, 3):
            raise ArgumentError("coords", coords, f"(N, 3) or (B, N, 3) with N = {n_atoms} ligand atoms, in Å",
                                owner="bio.vina_score", shown=f"shape {tuple(coords.shape)}")
        single = coords.ndim == 2
        x = coords[None] if single else coords
        rec = (default_receptor if receptor_coords is None else receptor_coords)[rec_index_t]
        w = default_weights if weights is None else weights
        lig = x[:, lig_index_t]                                               # (B, L, 3)
        chunk = max(1, _PAIR_BUDGET // max(1, lig.shape[1] * rec.shape[0]))
        per_term, inter = [], []
        for start in range(0, lig.shape[0], chunk):
            block = lig[start:start + chunk]
            r = (block[:, :, None, :] - rec[None, None]).square().sum(-1).sqrt()   # (b, L, M)
            inside = (r < CUTOFF).to(r.dtype)
            values = [t * inside for t in terms_fn(r - optimal, hydrophobic, hbond)]
            per_atom = sum(w[k] * v.sum(-1) for k, v in enumerate(values))      # (b, L)
            inter.append(_curl(per_atom, CURL).sum(-1))
            per_term.append(torch.stack([v.sum((-1, -2)) for v in values], -1))
        inter = torch.cat(inter)
        per_term = torch.cat(per_term)
        if intra_a.numel():
            r = (x[:, intra_a] - x[:, intra_b]).square().sum(-1).sqrt()           # (B, P)
            inside = (r < CUTOFF).to(r.dtype)
            values = terms_fn(r - intra_optimal, intra_hydrophobic, intra_hbond)
            intra = _curl(sum(w[k] * v * inside for k, v in enumerate(values)), CURL).sum(-1)
        else:
            intra = torch.zeros_like(inter)
        total = inter / (1 + w[len(names)] * num_tors)
        if not components:
            return total[0] if single else total
        out = {name: per_term[:, k] for k, name in enumerate(names)}
        out.update(inter=inter, intra=intra, total=total)
        return {k: v[0] for k, v in out.items()} if single else out

    score.num_tors = num_tors
    score.receptor_index = rec_index
    return score
