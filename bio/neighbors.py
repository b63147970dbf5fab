"""Neighbour lists: which atom pairs interact, as integer index tensors, rebuilt only when atoms have moved.

A list holds the pairs (2, P), i < j, closer than `cutoff + skin` at its last build (a Verlet list). It is
rebuilt when some atom has moved more than skin/2 since then (no pair can have come within the cutoff
otherwise), when the box changes, or when the batch shape or device changes. Building uses a cell list: atoms
are binned into cells at least (cutoff + skin)/2 wide, and each cell is compared with the cells within two cells of
it, each pair of cells once (a half shell of 63 offsets), all cells at a time as dense blocks of their atoms'
coordinates, so time and memory are linear in the number of atoms. Lists are built without gradient (which pairs
interact is piecewise constant in the positions); energies gathered through them stay differentiable, and
must still drop pairs beyond the cutoff (the list also holds pairs within the skin).

Without a cutoff the list is all N(N-1)/2 pairs minus the excluded ones, built once.
"""

import torch

from .terms.geometry import minimum_image
from .terms.pairwise import PairCache, PairDistance

DEFAULT_SKIN = 0.1  # nm
_CHUNK_ELEMENTS = 1 << 21  # candidate pairs examined at once while building
_REACH = 2  # cells are (cutoff + skin) / _REACH wide, and _REACH cells each way are searched
_MAX_CELLS = 2**20  # cells along an axis at most (wider cells are as correct), so that cell keys fit in int64


def pair_keys(pairs, n_atoms):
    """Unique integer key i * N + j of each pair (i < j) in a (2, P) index tensor."""
    i, j = torch.minimum(pairs[0], pairs[1]), torch.maximum(pairs[0], pairs[1])
    return i * n_atoms + j


class NeighborList:
    """The interacting pairs of `n_atoms` atoms.

    cutoff: nm, or None for all pairs. skin: nm added to the cutoff when building, so the list stays valid
    until an atom moves skin/2. excluded: keys (see `pair_keys`) of pairs never listed, shape (K,).
    periodic: minimum-image distances (the box must be passed when called; cutoff + skin at most half the
    box's smallest width).
    """

    def __init__(self, n_atoms, cutoff=None, skin=DEFAULT_SKIN, excluded=None, periodic=False):
        self.n_atoms, self.cutoff, self.skin, self.periodic = n_atoms, cutoff, skin, periodic
        self.excluded = excluded if excluded is not None else torch.zeros(0, dtype=torch.long)
        self.pairs = None
        self.images = None  # (P, 3) box-vector counts from each pair's atom i to the image of j (periodic)
        self.builds = 0  # how many times the list was (re)built
        self._reference = self._box = None
        self._skin = skin  # the skin of the current list (smaller in boxes too small for the full one)
        self._shifts = PairCache()  # image vectors of the pairs for the last box

    def __call__(self, positions, box=None):
        """Pairs (2, P) long for positions (..., N, 3) nm (a batch gives the union of its lists)."""
        if self.periodic and box is None:
            raise ValueError("this neighbour list is periodic: pass the box vectors (3, 3) nm.")
        if self._needs_rebuild(positions, box):
            self._build(positions, box)
        return self.pairs

    def distances(self, positions, box=None):
        """(pairs (2, P), distances (..., P) nm from atom i to the nearest image of atom j), differentiable
        with respect to positions and box (see `terms.pairwise.PairDistance`)."""
        pairs, shift = self.images_of(positions, box)
        return pairs, PairDistance.apply(positions, pairs[0], pairs[1], shift)

    def images_of(self, positions, box=None):
        """(pairs (2, P), image vectors shift (..., P, 3) nm from atom i to the nearest image of atom j, or None
        without periodicity); the distances are |x_j - x_i + shift|.

        For one conformation the periodic images are those found when the list was built (fixed until the next
        rebuild, which any move beyond skin/2 triggers), so no per-call minimum-image reduction is needed; within
        the cutoff they are OpenMM's minimum images. A batch takes each conformation's minimum images.
        """
        pairs = self(positions, box)
        i, j = pairs
        shift = None
        if self.periodic and self.images is not None and positions.dim() == 2:
            shift = self._shifts(pairs, (box,), lambda: _image_vectors(self.images, box))
        elif self.periodic:
            with torch.no_grad():
                d = positions.index_select(-2, j) - positions.index_select(-2, i)
                images = torch.round((minimum_image(d, box.unsqueeze(-3)) - d) @ torch.linalg.inv(box))
            shift = _image_vectors(images, box)
        return pairs, shift

    def _needs_rebuild(self, positions, box):
        if self.pairs is None or self.pairs.device != positions.device:
            return True
        if self.cutoff is None:
            return False
        positions = positions.detach()
        if positions.shape != self._reference.shape:
            return True
        if self.periodic and (box.shape != self._box.shape or not torch.equal(box.detach(), self._box)):
            return True
        moved = torch.linalg.vector_norm(positions - self._reference, dim=-1).max()
        return bool(moved > 0.5 * self._skin)

    @torch.no_grad()
    def _build(self, positions, box):
        device = positions.device
        excluded = self.excluded.to(device)
        images = None
        if self.cutoff is None:
            pairs = torch.triu_indices(self.n_atoms, self.n_atoms, 1, device=device)
        else:
            flat = positions.detach().reshape(-1, self.n_atoms, 3)
            boxes = box.detach().expand(*positions.shape[:-2], 3, 3).reshape(-1, 3, 3) if self.periodic else None
            self._skin = self.skin
            if self.periodic:
                # The minimum image is exact only up to half the box width: shrink the skin in small boxes.
                half_width = 0.5 * float(_widths(boxes).min())
                if self.cutoff > half_width + 1e-12:
                    raise ValueError(f"the cutoff ({self.cutoff:g} nm) exceeds half the periodic box width "
                                     f"({half_width:g} nm); use a smaller cutoff or a larger box.")
                self._skin = max(0.0, min(self.skin, half_width - self.cutoff))
            found = [self._search(flat[b], None if boxes is None else boxes[b]) for b in range(len(flat))]
            if len(found) == 1:
                pairs, images = found[0]
            else:
                keys = torch.unique(torch.cat([pair_keys(p, self.n_atoms) for p, _ in found]))
                pairs, images = torch.stack([keys // self.n_atoms, keys % self.n_atoms]), None
            self._reference = positions.detach().clone()
            self._box = box.detach().clone() if self.periodic else None
        if excluded.numel():
            keep = ~_excluded(pairs, excluded, self.n_atoms)
            pairs, images = pairs[:, keep], None if images is None else images[keep]
        self.pairs = pairs
        self.images = images if self.periodic and positions.dim() == 2 else None
        if self.periodic and positions.dim() == 2 and images is None:
            x, box = positions.detach(), box.detach()
            d = x[pairs[1]] - x[pairs[0]]
            self.images = torch.round((minimum_image(d, box) - d) @ torch.linalg.inv(box))
        self.builds += 1

    def _search(self, x, box):
        """Pairs (2, P), i < j, within cutoff + skin for one conformation x (N, 3), via a cell list, and with a
        periodic box their images (P, 3) (see `images`; None when all pairs are searched)."""
        reach = self.cutoff + self._skin
        n = x.shape[0]
        if self.periodic:
            fractional = x @ torch.linalg.inv(box)
            whole = torch.floor(fractional)  # box vectors from each atom's copy in the box to the atom
            fractional = fractional - whole
            cells = torch.floor(_widths(box) / (reach / _REACH)).clamp(1, _MAX_CELLS).long()
        else:
            low = x.min(0).values
            extent = x.max(0).values - low
            cells = torch.floor(extent / (reach / _REACH)).clamp(1, _MAX_CELLS).long()
            fractional = ((x - low) / extent.clamp(min=1e-12)).clamp(max=1 - 1e-12)
        cells_list = [int(c) for c in cells]
        if self.periodic and min(cells_list) < 2 * _REACH + 1:
            # Too few cells along an axis: the searched cells would repeat. Search all pairs (small boxes).
            return self._search_all(x, box), None
        coordinate = torch.minimum(torch.floor(fractional * cells).long(), cells - 1)  # (N, 3)
        cell = (coordinate[:, 0] * cells[1] + coordinate[:, 1]) * cells[2] + coordinate[:, 2]
        # Only the cells holding atoms are stored (a few atoms far apart would otherwise need billions of cells).
        occupied, cell = torch.unique(cell, return_inverse=True)  # sorted keys of the occupied cells
        n_cells = occupied.numel()
        order = torch.argsort(cell)
        counts = torch.bincount(cell, minlength=n_cells)
        start = torch.cumsum(counts, 0) - counts
        width = int(counts.max())
        table = torch.full((n_cells + 1, width), -1, dtype=torch.long, device=x.device)  # row n_cells: empty
        sorted_cells = cell[order]
        table[sorted_cells, torch.arange(n, device=x.device) - start[sorted_cells]] = order
        if self.periodic:
            x = fractional @ box  # wrapped into the box, so that each searched cell has one periodic shift
        # Coordinates of each cell's atoms (single precision is enough to choose pairs: see the margin in
        # _reach2). Empty slots lie far away, on opposite sides in the searching and the searched cell, so that
        # they are never within reach of anything, each other included.
        # ("Far" is beyond any cutoff: 1e4 nm would be within reach of a cutoff of 1e6 nm. Coordinates beyond
        # 1e4 nm, where single precision cannot resolve a cutoff, are compared in the positions' precision.)
        far = 4.0 * (float(x.abs().max()) + reach + (float(box.abs().sum()) if self.periodic else 0.0)) + 1e4
        precision = torch.float32 if far < 1e5 else x.dtype
        filled = table >= 0
        searched = torch.full((3, n_cells + 1, width), far, dtype=precision, device=x.device)
        searched[:, filled] = x.to(precision)[table[filled]].T
        searching = torch.where(filled, searched, -far)  # (3, cells + 1, width): one component at a time
        grid = torch.stack([occupied // (cells[1] * cells[2]), occupied // cells[2] % cells[1], occupied % cells[2]],
                           dim=-1)  # (n_cells, 3) coordinates of each occupied cell
        rows = max(1, _CHUNK_ELEMENTS // (width * width))  # cells searched at once
        found, images = [], []
        for offset in _half_shell(x.device):
            neighbour = grid + offset
            if self.periodic:
                wraps = torch.div(neighbour, cells, rounding_mode="floor")
                shift = wraps.to(precision) @ box.to(precision)
                neighbour = neighbour - wraps * cells
                valid = torch.ones(n_cells, dtype=torch.bool, device=x.device)
            else:
                wraps = None
                shift = torch.zeros(n_cells, 3, dtype=precision, device=x.device)
                valid = ((neighbour >= 0) & (neighbour < cells)).all(-1)
            key = (neighbour[:, 0] * cells[1] + neighbour[:, 1]) * cells[2] + neighbour[:, 2]
            index = torch.searchsorted(occupied, key).clamp(max=n_cells - 1)
            index = torch.where(valid & (occupied.index_select(0, index) == key), index, n_cells)
            for first in range(0, n_cells, rows):
                block = slice(first, min(first + rows, n_cells))
                squared = 0
                for k in range(3):
                    d = (searched[k, index[block]] + shift[block, k, None])[:, None, :] - searching[k, block, :, None]
                    squared = squared + d * d
                close = squared <= self._reach2()  # (cells, width, width): slots of a cell and its neighbour
                if not bool(offset.any()):
                    close &= table[block, :, None] < table[block, None, :]  # each pair within a cell once
                at, a, b = close.nonzero(as_tuple=True)
                i, j = table[first + at, a], table[index[first + at], b]
                found.append(torch.stack([torch.minimum(i, j), torch.maximum(i, j)]))
                if wraps is not None:  # from atom i to the image of atom j, in box vectors; reversed if swapped
                    image = (wraps[first + at] + whole[i] - whole[j]) * torch.where(i < j, 1, -1)[:, None]
                    images.append(image.to(x.dtype))
        return torch.cat(found, dim=1), torch.cat(images) if images else None

    def _search_all(self, x, box):
        n = x.shape[0]
        rows = max(1, _CHUNK_ELEMENTS // n)
        atoms = torch.arange(n, device=x.device)
        found = []
        for first in range(0, n, rows):
            i = atoms[first:first + rows, None]
            found.append(self._close(x, i, atoms[None, :].expand(len(i), n), box))
        return torch.cat(found, dim=1)

    def _close(self, x, i, j, box):
        """Pairs (2, P) among candidates i (C, 1) and j (C, K) with j > i and within reach."""
        x, box = x.float(), None if box is None else box.float()
        d = x[j] - x[i]
        if self.periodic:
            d = minimum_image(d, box)
        close = (j > i) & ((d * d).sum(-1) <= self._reach2())
        rows, columns = close.nonzero(as_tuple=True)
        return torch.stack([i.expand_as(j)[rows, columns], j[rows, columns]])

    def _reach2(self):
        # Squared search radius, with a margin so single-precision rounding never drops a pair within reach.
        return (self.cutoff + self._skin + 1e-4) ** 2


def _half_shell(device):
    """The cell offsets (63, 3) searched from each cell: (0, 0, 0) and one of each pair +-o of the others within
    _REACH cells, so that every pair of cells is searched once."""
    span = torch.arange(-_REACH, _REACH + 1, device=device)
    offsets = torch.stack(torch.meshgrid(span, span, span, indexing="ij"), dim=-1).reshape(-1, 3)
    return offsets[len(offsets) // 2:]  # lexicographic order: the centre, then the positive half


def _image_vectors(images, box):
    """images @ box, (..., P, 3) nm, stored column-major: pair kernels read one Cartesian component at a time."""
    return (box.mT @ images.mT).mT


def _excluded(pairs, excluded, n_atoms):
    """Which pairs (2, P), i < j, have their key in `excluded` (K,) (bool, (P,)). Exclusions join atoms close in
    the topology, and so in index, mostly: only pairs whose index gap j - i some exclusion has are looked up, by
    binary search in the sorted exclusions (O(P' log K), much faster than torch.isin, which sorts all keys)."""
    excluded = torch.sort(excluded).values
    gap = pairs[1] - pairs[0]
    candidates = (gap <= int((excluded % n_atoms - excluded // n_atoms).max())).nonzero().squeeze(1)
    keys = pairs[0, candidates] * n_atoms + pairs[1, candidates]
    at = torch.searchsorted(excluded, keys).clamp(max=excluded.numel() - 1)
    found = torch.zeros(pairs.shape[1], dtype=torch.bool, device=pairs.device)
    found[candidates] = excluded.index_select(0, at) == keys
    return found


def _widths(box):
    """Widths (..., 3) of periodic boxes (..., 3, 3) between opposite faces: volume / face area."""
    volume = torch.linalg.det(box).abs()
    areas = [torch.linalg.vector_norm(torch.linalg.cross(box[..., (k + 1) % 3, :], box[..., (k + 2) % 3, :]),
                                      dim=-1) for k in range(3)]
    return torch.stack([volume / area for area in areas], dim=-1)


__all__ = ["NeighborList", "pair_keys", "DEFAULT_SKIN"]
