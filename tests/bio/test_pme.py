"""PME electrostatics (NonbondedForce.PME) against OpenMM's Reference platform: parameters, energies and
forces in cubic and triclinic water boxes, with switching, a net charge and batching; B-splines and their
derivatives against scipy; the fused pair kernel and the reciprocal-space forces against gradcheck."""

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import scipy.interpolate
import torch

import bio
from bio.constants import COULOMB
from bio.terms import pairwise
from bio.terms.nonbonded import NonbondedPair
from bio.terms.pairwise import PairFunction
from bio.terms.pme import ReciprocalSpace, bspline_weights, pme_parameters
from bio_reference import VILLIN_IN_WATER, assert_matches_openmm, openmm_reference, perturbed

WATER = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")


def _pme_system(topology, cutoff=0.6, **options):
    system = WATER.createSystem(topology, nonbondedMethod=app.PME, nonbondedCutoff=cutoff * unit.nanometer,
                                **options)
    return system, next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))


def test_pme_parameters_are_openmms(water_box):
    topology, positions = water_box
    system, nonbonded = _pme_system(topology)
    context = openmm.Context(system, openmm.VerletIntegrator(1.0), openmm.Platform.getPlatformByName("Reference"))
    alpha, *grid = nonbonded.getPMEParametersInContext(context)
    box = np.asarray(topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
    ours = pme_parameters(0.6, box, nonbonded.getEwaldErrorTolerance())
    assert ours[0] == pytest.approx(alpha, rel=1e-14) and ours[1] == tuple(grid)
    term = bio.System.from_openmm(system, topology, positions).terms["NonbondedForce"]
    assert term.reciprocal.grid == tuple(grid)


def test_pme_water_box_matches_openmm(water_box, device):
    topology, positions = water_box
    system, _ = _pme_system(topology)
    ours = bio.System.from_openmm(system, topology, positions, device=device)
    assert ours.terms["NonbondedForce"].method == "pme"
    assert_matches_openmm(ours)
    # Wrapped coordinates and a larger box passed per call (alpha and grid stay fixed, as in OpenMM).
    box = ours.box_vectors
    wrapped = ours.positions - torch.floor(ours.positions / box.diagonal()) * box.diagonal()
    assert_matches_openmm(ours, wrapped, box * 1.03)


def test_pme_pair_rows_match_openmm(monkeypatch, water_box):
    """Pairs laid out in rows (pieces of at most 256 entries here), periodic images as ghost atoms, with and
    without Lennard-Jones, give OpenMM's energies and forces."""
    monkeypatch.setattr(pairwise, "CHUNK_ELEMENTS", 256)
    topology, positions = water_box
    system, _ = _pme_system(topology)
    ours = bio.System.from_openmm(system, topology, positions)
    assert_matches_openmm(ours)
    term = ours.terms["NonbondedForce"]
    pairs = term.pairs(ours.positions, ours.box_vectors)
    layouts = term._rows._values
    assert term._rows._pairs is pairs and [len(rows.parameters) for rows in layouts] == [3, 1]
    assert all(len(rows.pieces) > 1 and rows.ghost_atoms.numel() > 0 for rows in layouts)


def test_pme_with_switching_net_charge_and_explicit_parameters(water_box):
    """Switched LJ with its dispersion correction, the neutralizing background of a net charge, and alpha and
    grid set on the force instead of derived from the tolerance."""
    topology, positions = water_box
    system, nonbonded = _pme_system(topology, switchDistance=0.5 * unit.nanometer)
    charge, sigma, epsilon = nonbonded.getParticleParameters(0)
    nonbonded.setParticleParameters(0, charge + 0.7 * unit.elementary_charge, sigma, epsilon)
    nonbonded.setPMEParameters(3.1, 21, 24, 23)
    ours = bio.System.from_openmm(system, topology, positions)
    assert ours.terms["NonbondedForce"].reciprocal.grid == (21, 24, 23)
    assert abs(ours.parameters["NonbondedForce"]["charge"].sum().item()) > 0.5
    assert_matches_openmm(ours)


def test_pme_triclinic_box_matches_openmm(dipeptide):
    modeller = app.Modeller(*dipeptide)
    modeller.addSolvent(WATER, padding=0.7 * unit.nanometer, boxShape="dodecahedron")
    system, _ = _pme_system(modeller.topology, cutoff=0.5)
    assert_matches_openmm(bio.System.from_openmm(system, modeller.topology, modeller.positions))


def test_batched_pme_equals_the_loop_with_batched_boxes(water_box):
    topology, positions = water_box
    system, _ = _pme_system(topology)
    ours = bio.System.from_openmm(system, topology, positions)
    batch = perturbed(ours.positions, 3, scale=0.005)
    boxes = ours.box_vectors * torch.tensor([1.0, 1.01, 1.02], dtype=torch.float64)[:, None, None]
    energies = ours.energy(batch, boxes)
    loop = torch.stack([ours.energy(x, b) for x, b in zip(batch, boxes)])
    torch.testing.assert_close(energies, loop, rtol=1e-12, atol=1e-8)
    forces = ours.forces(batch, boxes)
    torch.testing.assert_close(forces[1], ours.forces(batch[1], boxes[1]), rtol=1e-9, atol=1e-8)
    reference, _ = openmm_reference(system, batch[2].numpy(), boxes[2].numpy())
    assert abs(energies[2].item() - sum(reference.values())) <= 1e-6 * abs(sum(reference.values())) + 1e-4


def test_pme_charge_gradient_matches_openmm_finite_differences(water_box):
    topology, positions = water_box
    system, nonbonded = _pme_system(topology)
    ours = bio.System.from_openmm(system, topology, positions)
    charges = ours.parameters["NonbondedForce"]["charge"].requires_grad_(True)
    (gradient,) = torch.autograd.grad(ours.energy(ours.positions), charges)
    charges.requires_grad_(False)
    atom, h = 5, 1e-4
    q, sigma, epsilon = nonbonded.getParticleParameters(atom)
    values = []
    for step in (h, -h):
        nonbonded.setParticleParameters(atom, q + step * unit.elementary_charge, sigma, epsilon)
        values.append(sum(openmm_reference(system, ours.positions.numpy())[0].values()))
    expected = (values[0] - values[1]) / (2 * h)
    assert abs(gradient[atom].item() - expected) <= 1e-5 * abs(expected) + 1e-4


def test_bspline_weights_are_scipys_cardinal_bsplines():
    fraction = torch.linspace(0, 0.999, 37, dtype=torch.float64)
    ours = bspline_weights(fraction)  # weight of grid point k ahead of the atom's cell
    spline = scipy.interpolate.BSpline.basis_element(np.arange(6.0), extrapolate=False)  # order 5 on [0, 5]
    expected = np.stack([spline(fraction.numpy() + 4 - k) for k in range(5)], axis=-1)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12, atol=1e-14)


def test_bspline_derivatives_are_scipys():
    fraction = torch.linspace(0, 0.999, 37, dtype=torch.float64)
    weights, slopes = bspline_weights(fraction, derivatives=True)
    torch.testing.assert_close(weights, bspline_weights(fraction), rtol=0, atol=0)
    spline = scipy.interpolate.BSpline.basis_element(np.arange(6.0), extrapolate=False).derivative()
    expected = np.stack([spline(fraction.numpy() + 4 - k) for k in range(5)], axis=-1)
    np.testing.assert_allclose(slopes.numpy(), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("grid, batch", [((8, 9, 10), ()), ((9, 8, 7), (2,))], ids=["even-single", "odd-batched"])
def test_reciprocal_space_gradients_pass_gradcheck(grid, batch):
    """Reciprocal-space forces and charge derivatives computed in forward (`_ReciprocalEnergy`), and through
    autograd with the box (the virial) and to second order, against finite differences; a triclinic box, an
    even and an odd number of mesh planes along z (the real FFT's Nyquist plane), one and two conformations."""
    generator = torch.Generator().manual_seed(5)
    box = torch.tensor([[1.3, 0, 0], [0.1, 1.4, 0], [-0.2, 0.15, 1.5]], dtype=torch.float64)
    positions = (1.4 * torch.rand(*batch, 6, 3, generator=generator, dtype=torch.float64)).requires_grad_(True)
    charges = torch.randn(6, generator=generator, dtype=torch.float64).requires_grad_(True)
    space = ReciprocalSpace(3.0, grid, COULOMB, "cpu", torch.float64)

    def energy(positions, charges):
        return space.energy(positions, charges, box)

    assert type(energy(positions, charges).grad_fn).__name__ == "_ReciprocalEnergyBackward"
    assert torch.autograd.gradcheck(energy, (positions, charges))
    assert torch.autograd.gradgradcheck(energy, (positions, charges))
    assert torch.autograd.gradcheck(space.energy, (positions, charges, box.requires_grad_(True)))


@pytest.mark.parametrize("pair", [NonbondedPair(), NonbondedPair(0.9, 0.7, reaction_field=(0.4, 1.3)),
                                  NonbondedPair(0.9, alpha=3.2)], ids=["plain", "reaction-field", "ewald"])
def test_nonbonded_pair_gradients_pass_gradcheck(pair):
    """The fused pair energy, with and without Lennard-Jones: first derivatives from forward (positions only) and
    through autograd (parameters too), second derivatives through autograd, against finite differences."""
    generator = torch.Generator().manual_seed(0)
    r = (0.25 + 0.8 * torch.rand(2, 12, generator=generator, dtype=torch.float64)).requires_grad_(True)
    qq = torch.randn(12, generator=generator, dtype=torch.float64).requires_grad_(True)
    sigma = (0.2 + 0.1 * torch.rand(12, generator=generator, dtype=torch.float64)).requires_grad_(True)
    epsilon = torch.rand(12, generator=generator, dtype=torch.float64).requires_grad_(True)

    def function(*inputs):
        return PairFunction.apply(pair, *inputs)

    assert torch.autograd.gradcheck(function, (r, qq, sigma, epsilon))
    assert torch.autograd.gradcheck(function, (r, qq.detach(), sigma.detach(), epsilon.detach()))  # fast path
    assert torch.autograd.gradgradcheck(function, (r, qq, sigma, epsilon))
    # Coulomb only (pairs without Lennard-Jones)
    assert torch.autograd.gradcheck(function, (r, qq.detach()))
    assert torch.autograd.gradgradcheck(function, (r, qq))


@pytest.mark.slow
def test_villin_in_water_pme_matches_openmm():
    """OpenMM's test.pdb: villin in TIP3P water, 8,867 atoms, amber14, PME with a 1 nm cutoff."""
    pdb = app.PDBFile(VILLIN_IN_WATER)
    system, _ = _pme_system(pdb.topology, cutoff=1.0)
    ours = bio.System.from_openmm(system, pdb.topology, pdb.positions)
    assert ours.n_atoms == 8867
    assert_matches_openmm(ours)
