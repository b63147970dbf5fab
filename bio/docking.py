"""Batched gradient docking on AutoDock Vina's score: Monte Carlo + BFGS, all chains advanced together.

    result = bio.dock(receptor, ligand, center=(x, y, z), box_size=(22, 22, 22), exhaustiveness=8, seed=0)
    result.scores["total"]          # (K,) kcal/mol, Vina's reported score, best first
    result.coordinates              # (K, N, 3) Å, all ligand atoms (RDKit order)
    result.write_sdf("poses.sdf")   # scores as SD properties; result.write_pdbqt("poses.pdbqt")

The scheme is Vina's (Trott & Olson 2010): each chain starts from a random pose in the box (position uniform,
orientation uniform, torsions uniform), then repeats: mutate one of position (a step inside a 2 Å sphere),
orientation (a rotation of 2 Å / gyration radius rad) or one torsion (a new uniform angle); optimize locally
with BFGS (Vina's Armijo backtracking line search and first-step Hessian scaling); accept by Metropolis at
1.2 kcal/mol. Here `exhaustiveness * chains_per_unit` chains are one batch: every BFGS iteration is one
batched evaluation of the score and its gradient (torch autograd through the pose -> coordinates map,
bio.pose.TorsionTree), so a wide search costs little more than a narrow one.

The search energy is Vina's: the intermolecular score on grid maps (one map per ligand XS type, trilinear
interpolation, spacing 0.375 Å, Vina's per-atom curl) plus the ligand's internal pair energy, plus an out-of-box
penalty of `PENALTY` kcal/mol per Å an atom lies outside the box (Vina uses the same linear form with a far
steeper slope; a moderate one keeps BFGS steps usable). The local minima the chains accept are pooled,
clustered greedily by heavy-atom RMSD (Vina's 1 Å), refined by BFGS on the exact explicit-atom score
(bio.vina_score's terms, no grid), and ranked as Vina ranks them, by inter + intra from bio.vina_score; the
reported "total" is Vina's affinity, (inter + intra - intra of the top pose) / (1 + 0.05846 N_rot), which for the
top pose is bio.vina_score's total. Starting conformers are RDKit ETKDG embeddings of the ligand's graph (the input coordinates are
never used), so rings keep the ETKDG shape. Deterministic for a seed on a device (random numbers are drawn on
the CPU).
"""

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem import rdDistGeom

from . import autodock, checks
from .errors import ArgumentError, LigandError, StructureError
from .ligand import Ligand
from .pose import Pose, TorsionTree, quaternion_from_rotvec, quaternion_multiply
from .vina import CURL, CUTOFF, VINA_WEIGHTS, _curl, _pair_tables, _vina_terms, vina_score

SPACING = 0.375        # Å, Vina's grid spacing
PENALTY = 10.0         # kcal/mol per Å outside the box, per atom
TEMPERATURE = 1.2      # kcal/mol, Vina's Metropolis temperature
AMPLITUDE = 2.0        # Å, Vina's mutation amplitude
MIN_RMSD = 1.0         # Å, Vina's clustering radius
ENERGY_RANGE = 3.0     # kcal/mol, Vina's default energy range of the reported poses
_BLOCK = 4             # grid points per block edge when the maps are built


@dataclass
class DockingResult:
    """Ranked docked poses of one ligand.

    Attributes: ligand (the bio.Ligand docked), coordinates ((K, N, 3) float64 Å, all atoms, RDKit order, best
    first), scores (dict of (K,) float64 tensors, kcal/mol: "total" (Vina's reported affinity; see the module
    docstring), "inter", "intra",
    and the unweighted term sums "gauss1", "gauss2", "repulsion", "hydrophobic", "hydrogen"), rmsd_lb ((K,)
    heavy-atom RMSD to the top pose, Å, no symmetry, as Vina's rmsd l.b. column), evaluations (score + gradient
    evaluations of one pose, summed over the batch), seconds (wall time).
    """

    ligand: Ligand
    coordinates: torch.Tensor
    scores: dict
    rmsd_lb: torch.Tensor
    evaluations: int = 0
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    def __len__(self):
        return self.coordinates.shape[0]

    def to_mols(self):
        """The poses as RDKit Mols (hydrogens kept, one conformer each, scores as properties)."""
        mols = []
        for k in range(len(self)):
            mol = Chem.Mol(self.ligand.mol)
            mol.RemoveAllConformers()
            conformer = Chem.Conformer(mol.GetNumAtoms())
            for i, xyz in enumerate(self.coordinates[k].tolist()):
                conformer.SetAtomPosition(i, xyz)
            mol.AddConformer(conformer, assignId=True)
            mol.SetProp("_Name", self.ligand.name or "ligand")
            mol.SetIntProp("rank", k + 1)
            for key, value in self.scores.items():
                mol.SetDoubleProp(f"vina_{key}", float(value[k]))
            mol.SetDoubleProp("rmsd_lb", float(self.rmsd_lb[k]))
            mols.append(mol)
        return mols

    def write_sdf(self, path, mode="w"):
        """Write the poses to an SD file (mode 'a' appends), scores (kcal/mol) as properties vina_total, ..."""
        with open(path, mode) as handle:
            writer = Chem.SDWriter(handle)
            for mol in self.to_mols():
                writer.write(mol)
            writer.close()

    def pdbqt(self):
        """The poses as Vina writes them: MODEL records with a 'REMARK VINA RESULT' line each."""
        setup = self.ligand.autodock()
        models = []
        for k in range(len(self)):
            models.append(f"MODEL {k + 1}\nREMARK VINA RESULT: {float(self.scores['total'][k]):9.3f} "
                          f"{float(self.rmsd_lb[k]):9.3f} {0.0:9.3f}\n"
                          + setup.pdbqt(self.coordinates[k]) + "ENDMDL\n")
        return "".join(models)

    def write_pdbqt(self, path):
        with open(path, "w") as handle:
            handle.write(self.pdbqt())


def etkdg_conformer(ligand, seed=0):
    """A fresh RDKit ETKDG (v3) conformer of the ligand's molecule (stereochemistry from its 3D input kept),
    (N, 3) float64 Å in the ligand's atom order. Raises LigandError if embedding fails."""
    mol = Chem.Mol(ligand.mol)
    Chem.AssignStereochemistryFrom3D(mol)
    mol.RemoveAllConformers()
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = seed
    if rdDistGeom.EmbedMolecule(mol, params) != 0:
        raise LigandError(f"ETKDG could not embed a conformer of ligand {ligand.name!r}")
    return torch.tensor(mol.GetConformer().GetPositions(), dtype=torch.float64)


class GridMaps:
    """Vina's intermolecular energy on grid maps: for each ligand XS type, the weighted sum of the five terms
    over receptor heavy atoms within CUTOFF, at grid points SPACING apart spanning the box; evaluated by
    trilinear interpolation, curled per atom as Vina does, plus the out-of-box penalty.

    __call__(coords (B, L, 3) Å of the ligand's heavy atoms) -> (B,) kcal/mol, differentiable.
    """

    def __init__(self, lig_types, receptor, center, size, device, dtype, spacing=SPACING):
        center = np.asarray(center, dtype=float)
        size = np.asarray(size, dtype=float)
        n = np.ceil(size / spacing).astype(int) + 1
        origin = center - (n - 1) * spacing / 2
        self.n, self.spacing = n, spacing
        coords = receptor.positions_angstrom.numpy()
        heavy = np.array([t is not None for t in receptor.xs_types])
        lo, hi = origin - CUTOFF, origin + (n - 1) * spacing + CUTOFF
        keep = np.flatnonzero(heavy & np.all((coords > lo) & (coords < hi), axis=1))
        if keep.size == 0:
            raise StructureError(f"no receptor heavy atom lies within {CUTOFF} Å of the box centred at "
                                 f"{center.tolist()} of size {size.tolist()} Å; place the box on the pocket")
        types = sorted(set(lig_types), key=autodock.XS_TYPES.index)
        self.type_index = torch.tensor([types.index(t) for t in lig_types], device=device)
        maps = _grid_maps(types, coords[keep], [receptor.xs_types[i] for i in keep], origin, n, spacing)
        self.maps = maps.reshape(-1).to(device, dtype)
        self.origin = torch.tensor(origin, device=device, dtype=dtype)
        self.upper = torch.tensor(n - 1, device=device, dtype=dtype)
        self.strides = torch.tensor([n[1] * n[2], n[2], 1], device=device)
        corners = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], device=device)
        self.corner_offsets = (corners * self.strides).sum(-1)           # (8,), i slowest as in `weights`
        self.type_offset = self.type_index * int(np.prod(n))

    def __call__(self, x, rows=None):
        g = (x - self.origin) / self.spacing
        inside = torch.minimum(torch.maximum(g, torch.zeros_like(g)), self.upper)
        miss = (g - inside).abs().sum(-1) * self.spacing                 # Å outside, per atom
        i0 = torch.minimum(inside.detach().floor(), self.upper - 1)
        f = inside - i0                                                   # (B, L, 3) in [0, 1]
        base = (i0.long() * self.strides).sum(-1) + self.type_offset     # (B, L)
        values = self.maps[base[..., None] + self.corner_offsets]         # (B, L, 8)
        w = torch.stack((1 - f, f), -1)                                   # (B, L, 3, 2)
        weights = (w[..., 0, :, None, None] * w[..., 1, None, :, None] * w[..., 2, None, None, :]).flatten(-3)
        e = (values * weights).sum(-1)
        return _curl(e, CURL).sum(-1) + PENALTY * miss.sum(-1)


def _grid_maps(types, coords, rec_types, origin, n, spacing):
    """(T, nx, ny, nz) float64 maps of the weighted Vina terms (kcal/mol before curl) for ligand XS types
    `types`, from receptor heavy atoms coords (M, 3) Å with XS types rec_types, on points origin + spacing * i."""
    from scipy.spatial import cKDTree

    w = VINA_WEIGHTS
    index = {name: k for k, name in enumerate(autodock.XS_TYPES)}
    rec_radius = torch.tensor([autodock.XS_RADIUS[index[t]] for t in rec_types], dtype=torch.float64)
    rec_hydrophobic = torch.tensor([t in autodock.XS_HYDROPHOBIC for t in rec_types], dtype=torch.float64)
    rec_donor = torch.tensor([t in autodock.XS_DONOR for t in rec_types], dtype=torch.float64)
    rec_acceptor = torch.tensor([t in autodock.XS_ACCEPTOR for t in rec_types], dtype=torch.float64)
    radii = sorted({autodock.XS_RADIUS[index[t]] for t in types})
    blocks = [int(math.ceil(k / _BLOCK)) for k in n]
    block_index = np.stack(np.meshgrid(*(np.arange(b) for b in blocks), indexing="ij"), -1).reshape(-1, 3)
    local = np.stack(np.meshgrid(*(np.arange(_BLOCK),) * 3, indexing="ij"), -1).reshape(-1, 3)   # (P, 3)
    block_centers = origin + (block_index * _BLOCK + (_BLOCK - 1) / 2) * spacing
    reach = CUTOFF + math.sqrt(3) * (_BLOCK - 1) / 2 * spacing
    near = cKDTree(coords).query_ball_point(block_centers, reach)
    rec = torch.tensor(coords, dtype=torch.float64)
    out = torch.zeros((len(types),) + tuple(b * _BLOCK for b in blocks), dtype=torch.float64)
    order = np.argsort([len(a) for a in near])
    chunk = 64
    for start in range(0, len(order), chunk):
        which = order[start:start + chunk]
        k = max(1, max(len(near[b]) for b in which))
        atoms = torch.zeros(len(which), k, dtype=torch.long)
        valid = torch.zeros(len(which), k, dtype=torch.bool)
        for row, b in enumerate(which):
            atoms[row, :len(near[b])] = torch.tensor(near[b], dtype=torch.long)
            valid[row, :len(near[b])] = True
        points = torch.tensor(origin + (block_index[which][:, None, :] * _BLOCK + local) * spacing)  # (c, P, 3)
        r = (points[:, :, None, :] - rec[atoms][:, None]).square().sum(-1).sqrt()               # (c, P, k)
        mask = ((r < CUTOFF) & valid[:, None, :]).to(r.dtype)
        base = r - rec_radius[atoms][:, None, :]
        per_radius = {}
        for radius in radii:
            d = base - radius
            steric = (w[0] * torch.exp(-(d / 0.5) ** 2) + w[1] * torch.exp(-((d - 3.0) / 2.0) ** 2)
                      + w[2] * d.clamp(max=0).square()) * mask
            hydro = (1.5 - d).clamp(0.0, 1.0) * mask
            hb = (-d / 0.7).clamp(0.0, 1.0) * mask
            per_radius[radius] = (steric.sum(-1), (hydro * rec_hydrophobic[atoms][:, None]).sum(-1),
                                  (hb * rec_acceptor[atoms][:, None]).sum(-1),
                                  (hb * rec_donor[atoms][:, None]).sum(-1))
        for t, name in enumerate(types):
            steric, hydro, with_acceptor, with_donor = per_radius[autodock.XS_RADIUS[index[name]]]
            e = steric + w[3] * hydro * (name in autodock.XS_HYDROPHOBIC) \
                + w[4] * (with_acceptor * (name in autodock.XS_DONOR) + with_donor * (name in autodock.XS_ACCEPTOR))
            for row, b in enumerate(block_index[which]):
                i, j, l = b * _BLOCK
                out[t, i:i + _BLOCK, j:j + _BLOCK, l:l + _BLOCK] = e[row].reshape(_BLOCK, _BLOCK, _BLOCK)
    return out[:, :n[0], :n[1], :n[2]].contiguous()


class _Intra:
    """The ligand's internal Vina energy (pairs of bio.autodock's intra_pairs, curled per pair), kcal/mol."""

    def __init__(self, setup, heavy_index, device, dtype):
        position = {atom: k for k, atom in enumerate(heavy_index)}
        pairs = setup.intra_pairs
        self.a = torch.tensor([position[i] for i in pairs[:, 0]], dtype=torch.long, device=device)
        self.b = torch.tensor([position[i] for i in pairs[:, 1]], dtype=torch.long, device=device)
        types = [(setup.xs_types[a], setup.xs_types[b]) for a, b in pairs.tolist()]
        self.optimal, self.hydrophobic, self.hbond = (
            table.diagonal() for table in _pair_tables([a for a, _ in types], [b for _, b in types], "vina",
                                                       dtype, device))
        self.weights = VINA_WEIGHTS[:5]

    def __call__(self, x):
        if self.a.numel() == 0:
            return x.new_zeros(x.shape[0])
        r = (x[:, self.a] - x[:, self.b]).square().sum(-1).sqrt()
        terms = _vina_terms(r - self.optimal, self.hydrophobic, self.hbond)
        e = sum(w * t for w, t in zip(self.weights, terms)) * (r < CUTOFF).to(r.dtype)
        return _curl(e, CURL).sum(-1)


class _Explicit:
    """Vina's intermolecular score on explicit receptor atoms for a batch of poses near given coordinates: each
    ligand atom sees the receptor heavy atoms within CUTOFF + 2 Å of where it starts (B, L, K), plus the
    out-of-box penalty. For refining poses that move little."""

    def __init__(self, receptor, lig_types, start, box_lo, box_hi, device, dtype):
        from scipy.spatial import cKDTree

        coords = receptor.positions_angstrom.numpy()
        heavy = np.flatnonzero([t is not None for t in receptor.xs_types])
        tree = cKDTree(coords[heavy])
        near = tree.query_ball_point(start.reshape(-1, 3).numpy(), CUTOFF + 2.0)
        k = max(1, max(len(a) for a in near))
        atoms = np.zeros((len(near), k), dtype=np.int64)
        valid = np.zeros((len(near), k), dtype=bool)
        for row, a in enumerate(near):
            atoms[row, :len(a)] = heavy[a]
            valid[row, :len(a)] = True
        b, l = start.shape[:2]
        atoms = atoms.reshape(b, l, k)
        rec_types = [receptor.xs_types[i] for i in heavy]
        optimal, hydrophobic, hbond = _pair_tables(lig_types, rec_types, "vina", dtype, "cpu")
        position = {atom: j for j, atom in enumerate(heavy)}
        columns = torch.tensor(np.vectorize(position.get)(atoms))
        rows = torch.arange(l)[None, :, None].expand_as(columns)
        self.optimal = optimal[rows, columns].to(device)
        self.hydrophobic = hydrophobic[rows, columns].to(device)
        self.hbond = hbond[rows, columns].to(device)
        self.valid = torch.tensor(valid.reshape(b, l, k), device=device).to(dtype)
        self.rec = receptor.positions_angstrom.to(device, dtype)[torch.tensor(atoms, device=device)]  # (B, L, K, 3)
        self.box_lo, self.box_hi = box_lo.to(device, dtype), box_hi.to(device, dtype)

    def __call__(self, x, rows=None):
        pick = (lambda t: t) if rows is None else (lambda t: t[rows])
        r = (x[:, :, None, :] - pick(self.rec)).square().sum(-1).sqrt()
        terms = _vina_terms(r - pick(self.optimal), pick(self.hydrophobic), pick(self.hbond))
        mask = pick(self.valid) * (r < CUTOFF).to(r.dtype)
        e = (sum(w * t for w, t in zip(VINA_WEIGHTS[:5], terms)) * mask).sum(-1)
        miss = (self.box_lo - x).clamp(min=0).sum(-1) + (x - self.box_hi).clamp(min=0).sum(-1)
        return _curl(e, CURL).sum(-1) + PENALTY * miss.sum(-1)


def _moved(base, z):
    """The pose `base` moved by z (B, 6 + T): translation (Å), rotation vector (rad), torsion changes (rad)."""
    return Pose(base.position + z[:, :3], quaternion_multiply(quaternion_from_rotvec(z[:, 3:6]), base.orientation),
                base.torsions + z[:, 6:])


def _select(pose, index):
    return Pose(*(t[index] for t in pose))


class _Objective:
    """Energy and gradient of poses moved by z from base poses: inter (grid or explicit) + intra, kcal/mol."""

    def __init__(self, tree, heavy_index, inter, intra):
        self.tree, self.heavy_index, self.inter, self.intra = tree, heavy_index, inter, intra
        self.evaluations = 0

    def __call__(self, base, z, rows=None):
        with torch.enable_grad():
            z = z.detach().requires_grad_()
            x = self.tree.coordinates(_moved(base, z), self.heavy_index)
            inter = self.inter(x, rows)
            e = inter + self.intra(x)
            g, = torch.autograd.grad(e.sum(), z)
        self.evaluations += z.shape[0]
        return e.detach(), g


def bfgs(objective, base, max_steps, c0=1e-4, trials=10):
    """Batched BFGS from the poses `base`, as Vina's quasi_newton (Armijo condition with constant c0, step
    halved on failure, at most `trials` halvings, inverse Hessian scaled after the first step), arranged so
    that each of the `max_steps` iterations is one batched evaluation: a chain whose trial step fails the
    Armijo test halves its step for the next iteration instead of re-evaluating at once. Returns (Pose,
    energies (B,) kcal/mol)."""
    b = base.position.shape[0]
    dof = 6 + base.torsions.shape[1]
    dtype, device = base.position.dtype, base.position.device
    eye = torch.eye(dof, dtype=dtype, device=device)
    z = torch.zeros(b, dof, dtype=dtype, device=device)
    e, g = objective(base, z)
    h = eye.expand(b, dof, dof).clone()
    p = -g
    alpha = torch.ones(b, dtype=dtype, device=device)
    first = torch.ones(b, dtype=torch.bool, device=device)
    active = torch.ones(b, dtype=torch.bool, device=device)
    for _ in range(max_steps):
        rows = torch.nonzero(active).flatten()
        if rows.numel() == 0:
            break
        step = alpha[rows, None] * p[rows]
        trial_e, trial_g = objective(_select(base, rows), z[rows] + step, rows)
        ok = trial_e - e[rows] <= c0 * (step * g[rows]).sum(-1)
        failed = rows[~ok]
        alpha[failed] *= 0.5
        active[failed[alpha[failed] < 0.5 ** trials]] = False
        moved, s = rows[ok], step[ok]
        if moved.numel() == 0:
            continue
        y = trial_g[ok] - g[moved]
        z[moved] += s
        e[moved], g[moved] = trial_e[ok], trial_g[ok]
        ys = (y * s).sum(-1)
        scale = (ys / (y * y).sum(-1).clamp(min=1e-12)).clamp(min=1e-4)
        hm = torch.where(first[moved, None, None], eye * scale[:, None, None], h[moved])
        rho = torch.where(ys > 1e-12, 1 / ys.clamp(min=1e-12), torch.zeros_like(ys))[:, None, None]
        left = eye - rho * s[:, :, None] * y[:, None, :]
        hm = torch.where(ys[:, None, None] > 1e-12,
                         left @ hm @ left.transpose(1, 2) + rho * s[:, :, None] * s[:, None, :], hm)
        h[moved], first[moved], alpha[moved] = hm, False, 1.0
        p[moved] = -(hm @ g[moved, :, None])[..., 0]
        active[moved[g[moved].norm(dim=-1) < 1e-5]] = False
    return _moved(base, z), e


def _mutate(pose, gyration, generator):
    """Vina's mutate_conf on every chain: one of position, orientation or a torsion, chosen uniformly."""
    b, t = pose.torsions.shape
    dtype, device = pose.position.dtype, pose.position.device
    options = dict(dtype=dtype, generator=generator)
    which = torch.randint(0, 2 + t, (b,), generator=generator)
    ball = torch.randn(b, 3, **options)
    ball = ball / ball.norm(dim=1, keepdim=True) * torch.rand(b, 1, **options) ** (1 / 3)
    angles = (torch.rand(b, max(t, 1), **options) * 2 - 1) * torch.pi
    which, ball, angles = which.to(device), ball.to(device), angles.to(device)
    position = torch.where((which == 0)[:, None], pose.position + AMPLITUDE * ball, pose.position)
    turn = quaternion_multiply(quaternion_from_rotvec(AMPLITUDE / gyration * ball), pose.orientation)
    orientation = torch.where((which == 1)[:, None], turn, pose.orientation)
    torsions = pose.torsions
    if t:
        pick = (which - 2)[:, None] == torch.arange(t, device=device)
        torsions = torch.where(pick, angles[:, :t], torsions)
    return Pose(position, orientation, torsions)


def _rmsd_matrix(a, b):
    """Heavy-atom RMSD (Å, atoms matched by index) between poses a (P, L, 3) and b (Q, L, 3) -> (P, Q)."""
    return ((a[:, None] - b[None]).square().sum(-1).mean(-1)).sqrt()


def _cluster(x, energies, limit, threshold=MIN_RMSD):
    """Greedy clustering: poses in order of energy, each kept if it lies > threshold Å from every kept one."""
    order = torch.argsort(energies)
    kept = []
    for i in order.tolist():
        if kept and _rmsd_matrix(x[i:i + 1], x[kept]).min() <= threshold:
            continue
        kept.append(i)
        if len(kept) >= limit:
            break
    return torch.tensor(kept, dtype=torch.long)


def dock(receptor, ligand, center, box_size, exhaustiveness=8, num_poses=9, seed=0, device=None,
         dtype=torch.float64, chains_per_unit=32, num_steps=None, local_steps=None, energy_range=ENERGY_RANGE,
         progress=False):
    """Dock `ligand` (a bio.Ligand; only its graph is used) into `receptor` (a bio.Receptor) within the box
    `center` (3,) Å, `box_size` (3,) Å by batched Monte Carlo + BFGS on Vina's score (module docstring).

    exhaustiveness: Vina's; the batch holds exhaustiveness * chains_per_unit chains. num_steps: Monte Carlo
    steps per chain (default 20 + (heavy atoms + 4 torsions) / 3, default_steps). local_steps: BFGS
    iterations per step (default Vina's (25 + movable atoms) / 3). num_poses: at most this many poses returned,
    within energy_range kcal/mol of the best. seed: the random seed (ETKDG conformer and search). device,
    dtype: where the search runs. progress: a tqdm bar over the Monte Carlo steps.

    Returns a DockingResult (poses best first by Vina's reported total score, kcal/mol).
    """
    owner = "bio.dock"
    if not isinstance(ligand, Ligand):
        raise ArgumentError("ligand", ligand, "a bio.Ligand", owner=owner, shown=type(ligand).__name__)
    checks.integer("exhaustiveness", exhaustiveness, low=1, owner=owner)
    checks.integer("num_poses", num_poses, low=1, owner=owner)
    checks.integer("chains_per_unit", chains_per_unit, low=1, owner=owner)
    checks.seed(seed, owner=owner)
    device = checks.device(device, owner=owner)
    checks.dtype(dtype, owner=owner)
    center_t = torch.as_tensor(center, dtype=torch.float64)
    size_t = torch.as_tensor(box_size, dtype=torch.float64)
    if center_t.shape != (3,) or not torch.isfinite(center_t).all():
        raise ArgumentError("center", center, "three finite numbers (Å)", owner=owner)
    if size_t.shape != (3,) or not (size_t > 0).all() or not torch.isfinite(size_t).all():
        raise ArgumentError("box_size", box_size, "three positive lengths (Å)", owner=owner)
    start_time = time.perf_counter()
    setup = ligand.autodock()
    tree = TorsionTree(ligand, etkdg_conformer(ligand, seed), device=device, dtype=dtype)
    heavy_index = torch.nonzero(tree.heavy).flatten()
    lig_types = [setup.xs_types[i] for i in heavy_index.tolist()]
    grid = GridMaps(lig_types, receptor, center_t.numpy(), size_t.numpy(), device, dtype)
    intra = _Intra(setup, heavy_index.tolist(), device, dtype)
    objective = _Objective(tree, heavy_index, grid, intra)
    n_heavy, n_tors = len(heavy_index), tree.num_torsions
    if local_steps is None:
        local_steps = int((25 + len(tree)) / 3)
    if num_steps is None:
        num_steps = default_steps(n_heavy, n_tors)
    checks.integer("num_steps", num_steps, low=0, owner=owner)
    checks.integer("local_steps", local_steps, low=1, owner=owner)
    reference = tree.reference[heavy_index]
    gyration = float((reference - reference.mean(0)).square().sum(-1).mean().sqrt().clamp(min=0.1))

    generator = torch.Generator().manual_seed(seed)
    chains = exhaustiveness * chains_per_unit
    current, energy = bfgs(objective, tree.random_pose(chains, center_t, size_t, generator), local_steps)
    pool = [(current, energy)]
    from tqdm.auto import tqdm

    with tqdm(total=num_steps, desc="dock", disable=not progress, leave=False) as bar:
        for _ in range(num_steps):
            candidate, new = bfgs(objective, _mutate(current, gyration, generator), local_steps)
            u = torch.rand(chains, dtype=dtype, generator=generator).to(device)
            accept = (new < energy) | (u < torch.exp((energy - new) / TEMPERATURE))
            current = Pose(*(torch.where(accept[:, None], c, o) for c, o in zip(candidate, current)))
            energy = torch.where(accept, new, energy)
            pool.append((_select(candidate, accept), new[accept]))
            bar.update()
            bar.set_postfix(best=f"{float(energy.min()):.2f}")

    poses = Pose(*(torch.cat([p[k] for p, _ in pool]) for k in range(3)))
    energies = torch.cat([e for _, e in pool])
    top = torch.argsort(energies)[:max(200, 20 * num_poses)]
    poses, energies = _select(poses, top), energies[top]
    x = tree.coordinates(poses, heavy_index)
    kept = _cluster(x, energies, max(2 * num_poses, 10))
    poses = _select(poses, kept)

    # refinement on explicit receptor atoms (no grid error), then Vina's reported score
    half = size_t / 2
    explicit = _Explicit(receptor, lig_types, x[kept].detach().cpu().double(), center_t - half, center_t + half,
                         device, dtype)
    refine = _Objective(tree, heavy_index, explicit, intra)
    poses, _ = bfgs(refine, poses, 2 * local_steps)
    coords = tree.coordinates(poses).detach()
    score = vina_score(ligand, receptor, center=center_t.tolist(), size=size_t.tolist(), components=True,
                       device=device, dtype=dtype)
    terms = score(coords)
    search = terms["inter"] + terms["intra"]        # Vina ranks by its search energy, inter + intra
    heavy_coords = coords[:, heavy_index]
    final = _cluster(heavy_coords, search, num_poses)
    # Vina's reported affinity: (inter + intra - intra of the top pose) / (1 + w N_rot)
    total = (search - terms["intra"][final[0]]) / (1 + VINA_WEIGHTS[5] * setup.num_tors)
    final = final[total[final] <= total[final[0]] + energy_range]
    coords = coords[final]
    terms["total"] = total
    scores = {k: v[final].detach().to("cpu", torch.float64) for k, v in terms.items()}
    scores = {"total": scores.pop("total"), "inter": scores.pop("inter"), "intra": scores.pop("intra"), **scores}
    rmsd_lb = _rmsd_matrix(heavy_coords[final], heavy_coords[final[:1]])[:, 0]
    evaluations = objective.evaluations + refine.evaluations
    return DockingResult(ligand, coords.to("cpu", torch.float64), scores, rmsd_lb.to("cpu", torch.float64),
                         evaluations, time.perf_counter() - start_time,
                         dict(chains=chains, num_steps=num_steps, local_steps=local_steps))


def default_steps(n_heavy, n_torsions):
    """Monte Carlo steps per chain when num_steps is not given."""
    return 20 + (n_heavy + 4 * n_torsions) // 3
