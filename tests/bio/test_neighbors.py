"""Neighbour lists against brute force over all pairs and periodic images; rebuild rules."""

import itertools

import pytest
import torch

from bio.neighbors import NeighborList, pair_keys


def _brute_force(positions, cutoff, box=None):
    """Keys of the pairs i < j whose shortest distance over the 125 nearest periodic images is <= cutoff."""
    n = positions.shape[0]
    i, j = torch.triu_indices(n, n, 1, device=positions.device)
    d = positions[j] - positions[i]
    if box is not None:
        shifts = torch.tensor(list(itertools.product(range(-2, 3), repeat=3)), dtype=positions.dtype,
                              device=positions.device) @ box
        r = torch.linalg.vector_norm(d[:, None, :] + shifts, dim=-1).min(1).values
    else:
        r = torch.linalg.vector_norm(d, dim=-1)
    close = r <= cutoff
    return set(pair_keys(torch.stack([i[close], j[close]]), n).tolist())


def _within_cutoff(neighbors, positions, box, cutoff):
    """Keys of the listed pairs that are within the cutoff (lists also hold pairs in the skin)."""
    i, j = neighbors(positions, box)
    d = positions[j] - positions[i]
    if box is not None:
        from bio.terms.geometry import minimum_image
        d = minimum_image(d, box)
    close = torch.linalg.vector_norm(d, dim=-1) <= cutoff
    return set(pair_keys(torch.stack([i[close], j[close]]), positions.shape[0]).tolist())


def _gas(count, size, seed=0, device="cpu"):
    generator = torch.Generator().manual_seed(seed)
    return (size * torch.rand(count, 3, generator=generator, dtype=torch.float64)).to(device)


def test_non_periodic_pairs_equal_brute_force(device):
    positions = _gas(600, 3.0, device=device) - 1.0  # negative coordinates too
    neighbors = NeighborList(600, cutoff=0.5, skin=0.1)
    assert _within_cutoff(neighbors, positions, None, 0.5) == _brute_force(positions, 0.5)
    # The list itself holds the pairs within cutoff + skin (and a 1e-4 nm rounding margin).
    listed = set(pair_keys(neighbors(positions), 600).tolist())
    assert _brute_force(positions, 0.6) <= listed <= _brute_force(positions, 0.6 + 1e-4)


@pytest.mark.parametrize("shape", ["cube", "triclinic"])
def test_periodic_pairs_equal_brute_force(shape, device):
    box = torch.tensor([[3.0, 0, 0], [0, 3.2, 0], [0, 0, 2.9]], dtype=torch.float64)
    if shape == "triclinic":  # OpenMM's reduced form: |b_x|, |c_x| <= a_x / 2, |c_y| <= b_y / 2
        box = torch.tensor([[3.0, 0, 0], [1.0, 3.0, 0], [-1.2, 1.4, 2.8]], dtype=torch.float64)
    box = box.to(device)
    positions = _gas(700, 4.0, seed=1, device=device) - 0.5  # some atoms outside the box
    neighbors = NeighborList(700, cutoff=0.8, skin=0.1, periodic=True)
    assert _within_cutoff(neighbors, positions, box, 0.8) == _brute_force(positions, 0.8, box)


def test_small_periodic_box_shrinks_the_skin_and_searches_all_pairs():
    box = torch.eye(3, dtype=torch.float64) * 1.3
    positions = _gas(150, 1.3, seed=2)
    neighbors = NeighborList(150, cutoff=0.6, skin=0.2, periodic=True)
    assert _within_cutoff(neighbors, positions, box, 0.6) == _brute_force(positions, 0.6, box)
    with pytest.raises(ValueError, match="exceeds half the periodic box width"):
        NeighborList(150, cutoff=0.7, periodic=True)(positions, box)


def test_rebuilds_only_when_an_atom_moves_more_than_half_the_skin():
    positions = _gas(400, 3.0, seed=3)
    neighbors = NeighborList(400, cutoff=0.5, skin=0.2)
    first = neighbors(positions)
    assert neighbors.builds == 1
    moved = positions.clone()
    moved[7] += torch.tensor([0.09, 0.0, 0.0], dtype=torch.float64)  # < skin / 2
    assert neighbors(moved) is first and neighbors.builds == 1
    moved[7] += torch.tensor([0.02, 0.0, 0.0], dtype=torch.float64)  # now 0.11 > skin / 2 from the build
    neighbors(moved)
    assert neighbors.builds == 2
    assert _within_cutoff(neighbors, moved, None, 0.5) == _brute_force(moved, 0.5)


def test_small_moves_keep_every_pair_within_the_cutoff():
    """Many moves below skin/2 without a rebuild never lose a pair that came within the cutoff."""
    positions = _gas(300, 2.5, seed=4)
    neighbors = NeighborList(300, cutoff=0.5, skin=0.2)
    neighbors(positions)
    generator = torch.Generator().manual_seed(5)
    for _ in range(5):
        step = torch.randn(300, 3, generator=generator, dtype=torch.float64)
        moved = positions + 0.099 * step / torch.linalg.vector_norm(step, dim=-1, keepdim=True)
        assert _within_cutoff(neighbors, moved, None, 0.5) == _brute_force(moved, 0.5)
    assert neighbors.builds == 1


def test_box_change_rebuilds_and_batches_give_the_union():
    box = torch.eye(3, dtype=torch.float64) * 3.0
    positions = _gas(300, 3.0, seed=6)
    neighbors = NeighborList(300, cutoff=0.6, periodic=True)
    neighbors(positions, box)
    neighbors(positions, box * 1.01)
    assert neighbors.builds == 2
    batch = torch.stack([positions, _gas(300, 3.0, seed=7)])
    listed = _within_cutoff(neighbors, batch[1], box, 0.6)
    assert listed == _brute_force(batch[1], 0.6, box)
    union = set(pair_keys(neighbors(batch, box), 300).tolist())
    assert _brute_force(batch[0], 0.6, box) | _brute_force(batch[1], 0.6, box) <= union


def test_excluded_pairs_are_never_listed_and_no_cutoff_lists_all_pairs():
    positions = _gas(50, 1.0, seed=8)
    excluded = pair_keys(torch.tensor([[0, 3, 10], [1, 2, 49]]), 50)
    everything = NeighborList(50, excluded=excluded)(positions)
    assert everything.shape == (2, 50 * 49 // 2 - 3)
    keys = set(pair_keys(everything, 50).tolist())
    assert not keys & set(excluded.tolist())
    cut = NeighborList(50, cutoff=0.4, excluded=excluded)(positions)
    assert not set(pair_keys(cut, 50).tolist()) & set(excluded.tolist())
    assert _brute_force(positions, 0.4) - set(excluded.tolist()) <= set(pair_keys(cut, 50).tolist())


def test_periodic_list_needs_a_box():
    with pytest.raises(ValueError, match="pass the box"):
        NeighborList(10, cutoff=0.5, periodic=True)(torch.zeros(10, 3, dtype=torch.float64))


@pytest.mark.parametrize("shape", ["cube", "triclinic"])
def test_distances_are_minimum_image_distances_for_one_conformation_and_a_batch(shape):
    box = torch.tensor([[3.0, 0, 0], [0, 3.2, 0], [0, 0, 2.9]], dtype=torch.float64)
    if shape == "triclinic":
        box = torch.tensor([[3.0, 0, 0], [1.0, 3.0, 0], [-1.2, 1.4, 2.8]], dtype=torch.float64)
    positions = _gas(300, 4.0, seed=9) - 0.5
    neighbors = NeighborList(300, cutoff=0.8, skin=0.1, periodic=True)
    from bio.terms.geometry import distance
    (i, j), r = neighbors.distances(positions, box)  # images found at the build
    torch.testing.assert_close(r, distance(positions, i, j, box), rtol=1e-12, atol=1e-12)
    moved = positions + 0.02  # 0.035 nm, within skin/2: the same list and images
    (i, j), r = neighbors.distances(moved, box)
    assert neighbors.builds == 1
    close = r <= 0.8
    torch.testing.assert_close(r[close], distance(moved, i, j, box)[close], rtol=1e-12, atol=1e-12)
    batch = torch.stack([positions, moved])
    (i, j), r = neighbors.distances(batch, box)
    torch.testing.assert_close(r, distance(batch, i, j, box), rtol=1e-12, atol=1e-12)
