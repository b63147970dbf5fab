"""Distances, angles and dihedrals of atom tuples, with OpenMM's periodic minimum image.

Positions have shape (..., N, 3) in nm (leading dimensions are a batch); index tensors pick atoms along the
N dimension, so every result keeps the batch dimensions in front. Box vectors are the rows of a (3, 3) or
(..., 3, 3) tensor in OpenMM's reduced form (a along x, b in the xy plane).
"""

import torch


def displacement(positions, i, j, box=None):
    """Vectors from atoms `i` to atoms `j`, shape (..., P, 3) in nm; minimum image when `box` is given."""
    d = positions.index_select(-2, j) - positions.index_select(-2, i)  # index_select: much faster than [..., j, :]
    if box is None:
        return d
    return minimum_image(d, box.unsqueeze(-3))  # (..., 1, 3, 3): broadcast over the P pairs


def minimum_image(d, box):
    """Shortest periodic images of vectors d (..., 3); box (..., 3, 3) broadcastable to d's leading shape.

    OpenMM's reduction: subtract whole box vectors c, then b, then a, each chosen by rounding the matching
    Cartesian component; exact for boxes in reduced form with the cutoff at most half the box.
    """
    for k in (2, 1, 0):
        shift = torch.floor(d[..., k] / box[..., k, k] + 0.5)
        d = d - shift.unsqueeze(-1) * box[..., k, :]
    return d


def distance(positions, i, j, box=None):
    """Distances |r_j - r_i|, shape (..., P) in nm."""
    return torch.linalg.vector_norm(displacement(positions, i, j, box), dim=-1)


def angle(positions, i, j, k, box=None):
    """Angles i-j-k at atom j, shape (..., P) in radians in [0, pi].

    atan2(|u x v|, u.v) keeps full precision (and finite gradients) near 0 and pi, where acos does not.
    """
    u = displacement(positions, j, i, box)
    v = displacement(positions, j, k, box)
    sin = torch.linalg.vector_norm(torch.linalg.cross(u, v, dim=-1), dim=-1)
    cos = (u * v).sum(-1)
    return torch.atan2(sin, cos)


def dihedral(positions, i, j, k, l, box=None):
    """Dihedral angles i-j-k-l, shape (..., P) in radians in (-pi, pi], with OpenMM's (IUPAC) sign."""
    b1 = displacement(positions, i, j, box)
    b2 = displacement(positions, j, k, box)
    b3 = displacement(positions, k, l, box)
    n1 = torch.linalg.cross(b1, b2, dim=-1)
    n2 = torch.linalg.cross(b2, b3, dim=-1)
    y = torch.linalg.vector_norm(b2, dim=-1) * (b1 * n2).sum(-1)
    x = (n1 * n2).sum(-1)
    return torch.atan2(y, x)
