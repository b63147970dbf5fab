"""Atom pair lists for nonbonded sums: all pairs (no cutoff) or the pairs within a cutoff.

A pair list is an index tensor of shape (2, P) with i < j. Lists are built without gradient (which pairs
interact is piecewise constant in the positions); energies are then differentiable functions of the
positions gathered through them. The cutoff search is blocked over rows of atoms, so its memory is
O(block * N) rather than O(N^2), and the list it returns is linear in N. Without a cutoff the list holds all
N(N-1)/2 pairs (built once): meant for systems of up to a few thousand atoms.
"""

from dataclasses import dataclass

import torch

from .geometry import minimum_image

# Number of pair distances held at once while searching for neighbours (per batch element).
_BLOCK_ELEMENTS = 1 << 20


def pair_keys(pairs, n_atoms):
    """Unique integer key i * N + j of each pair (i < j) in a (2, P) index tensor."""
    i, j = torch.minimum(pairs[0], pairs[1]), torch.maximum(pairs[0], pairs[1])
    return i * n_atoms + j


@dataclass
class PairList:
    """The interacting pairs of N atoms: all of them or those within `cutoff` (nm), minus `excluded`.

    excluded: sorted keys (see `pair_keys`) of pairs never to list, shape (K,).
    periodic: use the minimum image (needs a box when called).
    """

    n_atoms: int
    excluded: torch.Tensor
    cutoff: float | None = None
    periodic: bool = False

    def __post_init__(self):
        self._all = None

    def __call__(self, positions, box=None):
        """Pairs (2, P) for positions (..., N, 3) nm: the union over a batch of those within the cutoff."""
        if self.cutoff is None:
            if self._all is None or self._all.device != positions.device:
                self._all = self._without_excluded(
                    torch.triu_indices(self.n_atoms, self.n_atoms, 1, device=positions.device))
            return self._all
        return self._within_cutoff(positions, box)

    def _without_excluded(self, pairs):
        if self.excluded.numel() == 0:
            return pairs
        keep = ~torch.isin(pair_keys(pairs, self.n_atoms), self.excluded.to(pairs.device))
        return pairs[:, keep]

    @torch.no_grad()
    def _within_cutoff(self, positions, box):
        n = self.n_atoms
        flat = positions.detach().reshape(-1, n, 3)
        if self.periodic:
            box = box.detach().expand(*positions.shape[:-2], 3, 3).reshape(-1, 1, 1, 3, 3)
        rows = max(1, _BLOCK_ELEMENTS // (n * flat.shape[0]))
        everyone = torch.arange(n, device=positions.device)
        found = []
        for start in range(0, n, rows):
            block = everyone[start:start + rows]
            i = block[:, None].expand(-1, n)
            j = everyone[None, :].expand(len(block), -1)
            d = flat[:, None, :, :] - flat[:, block, None, :]  # (B, rows, N, 3)
            if self.periodic:
                d = minimum_image(d, box)
            close = ((d * d).sum(-1) <= self.cutoff**2).any(0) & (j > i)
            found.append(torch.stack([i[close], j[close]]))
        return self._without_excluded(torch.cat(found, dim=1))
