"""Ligand poses as rigid-body placement plus torsions over Meeko's torsion tree, batched and differentiable.

    tree = bio.TorsionTree(ligand)                     # the ligand's first conformer fixes bond lengths/angles/rings
    pose = tree.pose(coords)                           # coords (B, N, 3) Å -> Pose(position, orientation, torsions)
    coords = tree.coordinates(pose)                    # (B, N, 3) Å, differentiable in all pose tensors

A pose is three tensors (Pose): position (B, 3) Å — where the root fragment's heavy-atom centroid goes;
orientation (B, 4) unit quaternion (w, x, y, z) — the rotation of the root fragment from the reference conformer;
torsions (B, T) rad — the dihedral angle of each rotatable bond (Meeko's branches, in their order), measured on
four atoms (a neighbour of the parent atom, parent atom, child atom, a neighbour of the child atom). Torsions are
absolute dihedrals, so `pose(coordinates(p))` gives back p (orientation up to sign, torsions modulo 2 pi) and
`coordinates(pose(x))` gives back x for any x with the reference conformer's internal geometry.

The builder composes one rigid transform per fragment root-first (a rotation about each rotatable bond's axis in
the reference frame, then the root's rotation about its centroid and the translation) and applies them to the
reference coordinates: a few (B, 3, 3) operations per rotatable bond, whatever the number of atoms.
"""

from typing import NamedTuple

import numpy as np
import torch

from .errors import LigandError


class Pose(NamedTuple):
    """position (B, 3) Å, orientation (B, 4) unit quaternion (w, x, y, z), torsions (B, T) rad."""

    position: torch.Tensor
    orientation: torch.Tensor
    torsions: torch.Tensor


def quaternion_multiply(a, b):
    """Hamilton product of quaternions (..., 4) (w, x, y, z): the rotation b, then a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack((aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw), -1)


def quaternion_from_rotvec(v):
    """Unit quaternions (..., 4) of rotation vectors v (..., 3) (axis times angle, rad); smooth at v = 0."""
    angle2 = v.square().sum(-1, keepdim=True)
    small = angle2 < 1e-12
    angle = angle2.clamp(min=1e-24).sqrt()
    # sin(a/2)/a -> 1/2 - a^2/48 near 0 (keeps the gradient finite at the origin)
    factor = torch.where(small, 0.5 - angle2 / 48, torch.sin(angle / 2) / angle)
    w = torch.where(small, 1 - angle2 / 8, torch.cos(angle / 2))
    return torch.cat((w, factor * v), -1)


def rotation_matrix(q):
    """Rotation matrices (..., 3, 3) of quaternions (..., 4) (normalized here)."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack((1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)), -1).reshape(
        q.shape[:-1] + (3, 3))


def quaternion_from_matrix(m):
    """Unit quaternions (..., 4) with w >= 0 of rotation matrices (..., 3, 3) (Shepperd's method, batched)."""
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    candidates = torch.stack((
        torch.stack((1 + m00 + m11 + m22, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                     m[..., 1, 0] - m[..., 0, 1]), -1),
        torch.stack((m[..., 2, 1] - m[..., 1, 2], 1 + m00 - m11 - m22, m[..., 0, 1] + m[..., 1, 0],
                     m[..., 0, 2] + m[..., 2, 0]), -1),
        torch.stack((m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m00 + m11 - m22,
                     m[..., 1, 2] + m[..., 2, 1]), -1),
        torch.stack((m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                     1 - m00 - m11 + m22), -1)), -2)                                    # (..., 4, 4)
    best = torch.stack((1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22),
                       -1).argmax(-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def dihedral(a, b, c, d):
    """Dihedral angles (rad, in (-pi, pi]) of points a-b-c-d, each (..., 3)."""
    b0, b1, b2 = a - b, c - b, d - c
    b1 = b1 / b1.norm(dim=-1, keepdim=True)
    v = b0 - (b0 * b1).sum(-1, keepdim=True) * b1
    w = b2 - (b2 * b1).sum(-1, keepdim=True) * b1
    return torch.atan2((torch.linalg.cross(b1, v) * w).sum(-1), (v * w).sum(-1))


class TorsionTree:
    """The rigid fragments and rotatable bonds of a ligand (Meeko's torsion tree, `Ligand.autodock()`) on a
    reference conformer, as a batched pose <-> coordinates map.

    Attributes: reference ((N, 3) Å, the conformer, root heavy-atom centroid at the origin), num_torsions (T),
    dihedral_atoms ((T, 4) long), root_atoms (the
    atoms of the root fragment), heavy ((N,) bool), device, dtype.
    """

    def __init__(self, ligand, conformer=None, device=None, dtype=torch.float64):
        setup = ligand.autodock()
        coords = ligand.conformers_angstrom[0] if conformer is None else torch.as_tensor(conformer)
        coords = coords.detach().to("cpu", torch.float64)
        n = len(setup.ad_types)
        neighbors = [[] for _ in range(n)]
        for i, j in setup.bonds:
            neighbors[i].append(j)
            neighbors[j].append(i)
        fragment = setup.fragment.copy()
        for i in np.flatnonzero(fragment < 0):      # hydrogens Meeko merged: their heavy neighbour's fragment
            fragment[i] = setup.fragment[neighbors[i][0]]
        quads = []
        for a, b, _, _ in setup.branches:
            before = [j for j in neighbors[a] if j != b]
            after = [j for j in neighbors[b] if j != a]
            if not before or not after:
                raise LigandError(f"ligand {ligand.name!r}: rotatable bond {a}-{b} has a terminal atom")
            heavy_first = lambda atoms: sorted(atoms, key=lambda j: (setup.xs_types[j] is None, j))[0]
            quads.append((heavy_first(before), a, b, heavy_first(after)))
        self.heavy = torch.tensor([t is not None for t in setup.xs_types], device=device)
        self.root_atoms = torch.tensor(np.flatnonzero(fragment == setup.root), device=device)
        root_heavy = [i for i in self.root_atoms.tolist() if setup.xs_types[i] is not None]
        origin = coords[root_heavy].mean(0)
        self.num_torsions = len(setup.branches)
        self.device, self.dtype = torch.device(device or "cpu"), dtype
        self.reference = (coords - origin).to(self.device, dtype)
        self.dihedral_atoms = torch.tensor(quads, dtype=torch.long, device=device).reshape(-1, 4)
        x = self.reference
        self._reference_dihedrals = dihedral(*(x[self.dihedral_atoms[:, k]] for k in range(4)))   # (T,)
        self._axis_point = x[self.dihedral_atoms[:, 1]]                                               # (T, 3)
        axis = x[self.dihedral_atoms[:, 2]] - self._axis_point
        self._axis = axis / axis.norm(dim=-1, keepdim=True)
        u = self._axis
        zero = torch.zeros_like(u[:, 0])
        self._cross = torch.stack((zero, -u[:, 2], u[:, 1], u[:, 2], zero, -u[:, 0], -u[:, 1], u[:, 0], zero),
                                  -1).reshape(-1, 3, 3)                                     # (T, 3, 3)
        self._cross2 = self._cross @ self._cross
        self._eye = torch.eye(3, device=self.device, dtype=dtype)
        slot_of_fragment = {setup.root: 0}
        for k, (_, _, _, child) in enumerate(setup.branches):
            slot_of_fragment[child] = k + 1
        self._parent_slot = [slot_of_fragment[parent] for _, _, parent, _ in setup.branches]
        self._slot = torch.tensor([slot_of_fragment[f] for f in fragment], device=device)
        self._root_heavy_mask = torch.zeros(n, dtype=torch.bool, device=device)
        self._root_heavy_mask[root_heavy] = True

    def __len__(self):
        return self.reference.shape[0]

    def _transforms(self, torsions):
        """Rigid transforms of every fragment slot (root, then each branch's child fragment) in the reference
        frame: rotations (B, S, 3, 3) and translations (B, S, 3), composed root-first along the tree."""
        b = torsions.shape[0]
        delta = torsions - self._reference_dihedrals
        cos, sin = torch.cos(delta)[:, :, None, None], torch.sin(delta)[:, :, None, None]   # (B, T, 1, 1)
        turns = self._eye + sin * self._cross + (1 - cos) * self._cross2                        # (B, T, 3, 3)
        shifts = self._axis_point - (turns @ self._axis_point[:, :, None])[..., 0]              # (B, T, 3)
        rotations = [self._eye.expand(b, 3, 3)]
        translations = [torsions.new_zeros(b, 3)]
        for k, parent in enumerate(self._parent_slot):
            r, t = rotations[parent], translations[parent]
            rotations.append(r @ turns[:, k])
            translations.append((r @ shifts[:, k, :, None])[..., 0] + t)
        return torch.stack(rotations, 1), torch.stack(translations, 1)

    def local(self, torsions, atoms=None):
        """Coordinates (B, N, 3) Å in the reference frame (root fixed) with torsions (B, T) rad; only the
        atoms with index `atoms` ((A,) long, default all) if given."""
        return self.coordinates(Pose(torsions.new_zeros(torsions.shape[0], 3),
                                     torsions.new_tensor([1.0, 0, 0, 0]).expand(torsions.shape[0], 4), torsions),
                                atoms)

    def coordinates(self, pose, atoms=None):
        """Atom coordinates (B, N, 3) Å of a Pose (or (position, orientation, torsions)) with batch B; only the
        atoms with index `atoms` ((A,) long -> (B, A, 3)) if given."""
        position, orientation, torsions = pose
        rotations, translations = self._transforms(torsions)
        g = rotation_matrix(orientation)[:, None]                                     # (B, 1, 3, 3)
        rotations = g @ rotations
        translations = (g @ translations[..., None])[..., 0] + position[:, None, :]
        slot = self._slot if atoms is None else self._slot[atoms]
        reference = self.reference if atoms is None else self.reference[atoms]
        return (rotations[:, slot] @ reference[:, :, None])[..., 0] + translations[:, slot]

    def pose(self, coords):
        """The Pose (batch B) of coordinates (B, N, 3) Å that keep the reference conformer's bond lengths,
        angles and ring shapes: torsions from the dihedrals, orientation by superposing the root fragment."""
        coords = coords.to(self.device, self.dtype)
        torsions = dihedral(*(coords[:, self.dihedral_atoms[:, k]] for k in range(4)))
        local = self.local(torsions)[:, self.root_atoms]
        target = coords[:, self.root_atoms]
        position = coords[:, self._root_heavy_mask].mean(1)
        a = local - local.mean(1, keepdim=True)
        b = target - target.mean(1, keepdim=True)
        u, _, vh = torch.linalg.svd(a.transpose(1, 2) @ b)           # Kabsch: rotation taking a onto b
        sign = torch.sign(torch.linalg.det(u @ vh))
        d = torch.ones_like(u[:, 0])
        d[:, 2] = sign
        rotation = (u * d[:, None, :] @ vh).transpose(1, 2)
        return Pose(position, quaternion_from_matrix(rotation), torsions)

    def random_pose(self, count, center, size, generator):
        """`count` random poses: position uniform in the box (center, size: (3,) Å), orientation uniform,
        torsions uniform in (-pi, pi]; drawn from the torch.Generator `generator` (on CPU, for determinism
        across devices)."""
        options = dict(dtype=self.dtype, generator=generator)
        center = torch.as_tensor(center, dtype=self.dtype)
        size = torch.as_tensor(size, dtype=self.dtype)
        position = center + (torch.rand(count, 3, **options) - 0.5) * size
        q = torch.randn(count, 4, **options)
        q = q / q.norm(dim=1, keepdim=True)
        torsions = (torch.rand(count, self.num_torsions, **options) * 2 - 1) * torch.pi
        return Pose(*(t.to(self.device) for t in (position, q, torsions)))
