"""OpenMM's Amber GB models as CustomGBForces (implicit/hct.xml, obc1.xml, gbn.xml, gbn2.xml; obc2.xml is in
test_system.py) against OpenMM's Reference platform, with salt, cutoffs and parameter gradients."""

import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch

import bio
from bio_reference import assert_matches_openmm, openmm_reference


def _custom_gb(system):
    return next(f for f in system.getForces() if isinstance(f, openmm.CustomGBForce))


@pytest.mark.parametrize("model", ["hct", "obc1", "gbn", "gbn2"])
def test_amber_gb_models_on_alanine_dipeptide(dipeptide, model, device):
    topology, positions = dipeptide
    system = app.ForceField("amber14-all.xml", f"implicit/{model}.xml").createSystem(topology)
    ours = bio.System.from_openmm(system, topology, positions, device=device)
    assert ours.terms["CustomGBForce"].model == {"hct": "HCT", "obc1": "OBC1", "gbn": "GBn", "gbn2": "GBn2"}[model]
    assert_matches_openmm(ours)


def test_villin_amber14_gbn2_matches_openmm(villin, device):
    topology, positions = villin
    system = app.ForceField("amber14-all.xml", "implicit/gbn2.xml").createSystem(topology)
    ours = bio.System.from_openmm(system, topology, positions, device=device)
    assert ours.n_atoms == 582 and ours.terms["CustomGBForce"].model == "GBn2"
    assert_matches_openmm(ours)


def test_gbn2_with_cutoff_salt_and_no_surface_term(dipeptide):
    topology, positions = dipeptide
    system = app.ForceField("amber14-all.xml", "implicit/gbn2.xml").createSystem(
        topology, nonbondedMethod=app.CutoffNonPeriodic, nonbondedCutoff=0.6 * unit.nanometer,
        implicitSolventKappa=0.8 / unit.nanometer, sasaMethod=None, soluteDielectric=2.0)
    ours = bio.System.from_openmm(system, topology, positions)
    term = ours.terms["CustomGBForce"]
    assert term.cutoff == pytest.approx(0.6) and term.settings["kappa"] == 0.8 and term.settings["ace"] is None
    assert_matches_openmm(ours)


def test_gbn2_parameter_gradients_match_openmm_finite_differences(dipeptide):
    """d E / d (radius, scale, alpha) of one atom by autograd vs central differences of OpenMM's energy."""
    topology, positions = dipeptide
    system = app.ForceField("amber14-all.xml", "implicit/gbn2.xml").createSystem(topology)
    ours = bio.System.from_openmm(system, topology, positions)
    gb = _custom_gb(system)
    atom = 8
    charge, offset_radius, scaled, alpha, beta, gamma, index = gb.getParticleParameters(atom)
    changes = {  # OpenMM stores or = radius - offset and sr = scale * or
        "radius": (lambda d: [charge, offset_radius + d, scaled * (offset_radius + d) / offset_radius, alpha, beta,
                              gamma, index], 1e-5),
        "scale": (lambda d: [charge, offset_radius, scaled + d * offset_radius, alpha, beta, gamma, index], 1e-4),
        "alpha": (lambda d: [charge, offset_radius, scaled, alpha + d, beta, gamma, index], 1e-4),
    }
    for name, (change, h) in changes.items():
        parameter = ours.parameters["CustomGBForce"][name].requires_grad_(True)
        (gradient,) = torch.autograd.grad(ours.energy(ours.positions), parameter)
        parameter.requires_grad_(False)
        values = []
        for step in (h, -h):
            gb.setParticleParameters(atom, change(step))
            values.append(openmm_reference(system, ours.positions.numpy())[0]["CustomGBForce"])
        gb.setParticleParameters(atom, change(0.0))
        expected = (values[0] - values[1]) / (2 * h)
        assert abs(gradient[atom].item() - expected) <= 1e-5 * abs(expected) + 1e-5, (name, expected)


def test_gbn2_force_built_with_openmms_generator_class(dipeptide):
    """A GBSAGBn2Force built directly (as AmberPrmtopFile.createSystem does), with non-default dielectrics."""
    from openmm.app.internal.customgbforces import GBSAGBn2Force
    topology, positions = dipeptide
    system = app.ForceField("amber14-all.xml").createSystem(topology)
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    gb = GBSAGBn2Force(solventDielectric=80.0, soluteDielectric=1.5, SA="ACE")
    for atom, parameters in enumerate(GBSAGBn2Force.getStandardParameters(topology)):
        gb.addParticle([nonbonded.getParticleParameters(atom)[0]] + list(parameters))
    gb.finalize()
    system.addForce(gb)
    ours = bio.System.from_openmm(system, topology, positions)
    assert ours.terms["CustomGBForce"].settings["solvent_dielectric"] == 80.0
    assert_matches_openmm(ours)
