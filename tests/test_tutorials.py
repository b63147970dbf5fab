"""Every tutorial runs end to end in its reduced mode (``main(quick=True)``, what ``--quick`` selects) and reaches
its stated result, judged against the reference tools at test time: closed-form posteriors, ArviZ, PySCF and
OpenMM's Reference platform. Statistical checks allow for Monte Carlo error."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
PNG = b"\x89PNG\r\n\x1a\n"


def load(name):
    spec = importlib.util.spec_from_file_location(name, TUTORIALS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_png(path):
    assert Path(path).read_bytes()[:8] == PNG, path


def test_every_tutorial_has_a_test():
    tested = {"mm_energy_in_a_bayesian_model", "bayesian_regression", "vi_autoguides", "dft_energies_forces",
              "protein_minimize_md", "fit_xc",
              "docking"}
    assert {path.stem for path in TUTORIALS.glob("*.py")} == tested


def test_mm_energy_in_a_bayesian_model(tmp_path):
    result = load("mm_energy_in_a_bayesian_model").main(out=tmp_path, quick=True)
    assert result["low"] < result["true_scale"] < result["high"]
    assert result["median"] == pytest.approx(result["true_scale"], abs=0.05)
    assert_png(result["files"]["elbo"])


# -- bayesian_regression --------------------------------------------------------------------------------------


def conjugate_posterior(tutorial, x, y):
    """The exact Normal-inverse-gamma posterior of (intercept, beta) and sigma^2: means and sds."""
    design = np.column_stack([np.ones(len(y)), x])
    precision = design.T @ design + np.eye(design.shape[1]) / tutorial.PRIOR_SCALE**2
    covariance = np.linalg.inv(precision)
    mean = covariance @ design.T @ y
    a = tutorial.A0 + len(y) / 2
    b = tutorial.B0 + 0.5 * (y @ y - mean @ precision @ mean)
    coef_sd = np.sqrt(np.diag(covariance) * b / (a - 1))  # the marginal is a Student t with 2a dof
    sigma2_mean = b / (a - 1)
    return {"coef": (mean, coef_sd), "sigma2": (sigma2_mean, sigma2_mean / math.sqrt(a - 2))}


def test_bayesian_regression(tmp_path):
    import arviz as az
    from scipy import stats

    tutorial = load("bayesian_regression")
    result = tutorial.main(out=tmp_path, quick=True)
    x, y = result["x"].numpy(), result["y"].numpy()
    by_chain = {name: value.numpy() for name, value in result["samples"].items()}
    draws = {"coef": np.concatenate([by_chain["intercept"][..., None], by_chain["beta"]], -1),
             "sigma2": by_chain["sigma2"]}
    idata = az.convert_to_inference_data(draws)

    # NUTS against the closed form: means within 4 MCSE (ArviZ's), sds within 4 standard errors of a sample sd,
    # sd / sqrt(2 ESS) (normal draws; ArviZ's own mcse of the sd fails under numpy >= 2.4 when numba is present).
    assert float(az.rhat(idata).to_array().max()) < 1.02
    assert result["divergences"] <= 0.01 * result["num_draws"]
    exact = conjugate_posterior(tutorial, x, y)
    mcse_mean, ess_sd = az.mcse(idata, method="mean"), az.ess(idata, method="sd")
    for name, (mean, sd) in exact.items():
        flat = draws[name].reshape(-1, *draws[name].shape[2:])
        assert np.all(np.abs(flat.mean(0) - mean) < 4 * mcse_mean[name].values), (name, flat.mean(0), mean)
        margin = 4 * sd / np.sqrt(2 * ess_sd[name].values)
        assert np.all(np.abs(flat.std(0, ddof=1) - sd) < margin), (name, flat.std(0, ddof=1), sd)

    # The prior predictive draws follow the prior: sigma^2 ~ InverseGamma(A0, B0), and y_0 given sigma^2 is
    # normal with variance sigma^2 (1 + PRIOR_SCALE^2 (1 + |x_0|^2)).
    prior = {name: value.numpy() for name, value in result["prior_predictive"].items()}
    assert stats.kstest(prior["sigma2"], stats.invgamma(tutorial.A0, scale=tutorial.B0).cdf).pvalue > 1e-3
    scale = np.sqrt(prior["sigma2"] * (1 + tutorial.PRIOR_SCALE**2 * (1 + x[0] @ x[0])))
    assert stats.kstest(prior["y"][:, 0] / scale, "norm").pvalue > 1e-3

    # Posterior predictive: 90% intervals hold about 90% of the observations (binomial sd 1.7% for 300 rows).
    assert result["posterior_predictive"].shape == (result["num_draws"], len(y))
    assert 0.84 < result["coverage"] < 0.96

    # The pointwise log-likelihood handed to ArviZ is the normal log-density at every draw, and LOO used it.
    flat = {name: value.reshape(-1, *value.shape[2:]) for name, value in by_chain.items()}
    mean = flat["intercept"][:, None] + flat["beta"] @ x.T
    log_likelihood = stats.norm.logpdf(y, mean, np.sqrt(flat["sigma2"])[:, None]).reshape(*by_chain["sigma2"].shape, -1)
    np.testing.assert_allclose(result["idata"].log_likelihood["y"].values, log_likelihood, rtol=1e-9)
    reference_loo = az.loo(az.from_dict(posterior=by_chain, log_likelihood={"y": log_likelihood}))
    assert result["loo"].elpd_loo == pytest.approx(reference_loo.elpd_loo, rel=1e-9)
    assert float(result["loo"].pareto_k.max()) < 0.7
    for path in result["files"].values():
        assert_png(path)


# -- vi_autoguides --------------------------------------------------------------------------------------------


def test_vi_autoguides(tmp_path):
    from scipy import stats

    tutorial = load("vi_autoguides")
    result = tutorial.main(out=tmp_path, quick=True)
    group, y, num_groups = result["group"].numpy(), result["y"].numpy(), result["num_groups"]

    # The exact Gaussian posterior of (mu, theta) from its dense precision matrix, and the evidence log p(y).
    dim = num_groups + 1
    design = np.zeros((len(y), dim))
    design[np.arange(len(y)), 1 + group] = 1
    pooling = np.zeros((num_groups, dim))
    pooling[:, 0] = -1
    pooling[np.arange(num_groups), 1 + np.arange(num_groups)] = 1
    precision = pooling.T @ pooling / tutorial.TAU**2 + design.T @ design / tutorial.SIGMA**2
    precision[0, 0] += 1 / tutorial.MU_SCALE**2
    covariance = np.linalg.inv(precision)
    mean = covariance @ design.T @ y / tutorial.SIGMA**2
    sd = np.sqrt(np.diag(covariance))
    mean_field_sd = 1 / np.sqrt(np.diag(precision))  # the optimal mean-field normal's sds on a Gaussian target
    same_group = design[:, 1:] @ design[:, 1:].T  # marginally y ~ Normal(0, s_mu^2 + tau^2 [same group] + sigma^2 I)
    marginal = tutorial.MU_SCALE**2 + tutorial.TAU**2 * same_group + tutorial.SIGMA**2 * np.eye(len(y))
    evidence = stats.multivariate_normal(np.zeros(len(y)), marginal).logpdf(y)

    for name, values in result["draws"].items():
        latent = np.column_stack([values["mu"].numpy(), values["theta"].numpy()])
        assert values["y"].shape == (latent.shape[0], len(y))
        # Every guide finds the posterior means (Monte Carlo error of 4000 draws: 0.016 sd).
        assert np.all(np.abs(latent.mean(0) - mean) < 0.3 * sd), name
        spread = latent.std(0, ddof=1)
        assert np.all((0.85 * sd[1:] < spread[1:]) & (spread[1:] < 1.2 * sd[1:])), name
        if name == "AutoNormal":  # mean field: mu's sd is 1/sqrt(precision), well below the exact sd
            assert spread[0] == pytest.approx(mean_field_sd[0], rel=0.1)
            assert mean_field_sd[0] < 0.8 * sd[0]
        else:
            assert spread[0] == pytest.approx(sd[0], rel=0.2), name
        # The ELBO is at most the evidence (the loss at least -log p(y)), up to the noise of its estimates.
        assert float(result["losses"][name][-100:].mean()) > -evidence - 0.5, name
    for name in ("AutoNormal", "AutoLowRankMVN", "hand-written"):  # converged to within about 1 nat of it
        assert float(result["losses"][name][-100:].mean()) < -evidence + 1.5, name
    assert 0.85 < result["coverage"] < 0.97
    for path in result["files"].values():
        assert_png(path)


# -- dft_energies_forces --------------------------------------------------------------------------------------


def pyscf_calculation(atom, result, unit="angstrom"):
    from pyscf import dft as pyscf_dft
    from pyscf import gto

    mol = gto.M(atom=atom, basis=result["basis"], unit=unit, verbose=0)
    mf = pyscf_dft.RKS(mol, xc=result["xc"]).set(conv_tol=1e-11, small_rho_cutoff=0)
    mf.grids.level = result["grid_level"]
    mf.kernel()
    assert mf.converged
    return mf


def test_dft_energies_forces(tmp_path):
    import ase.io
    from pyscf.hessian import thermo
    from pyscf.lib import param

    result = load("dft_energies_forces").main(out=tmp_path, quick=True)
    reference = pyscf_calculation(result["atom"], result)
    assert float(result["energy"]) == pytest.approx(reference.e_tot, abs=1e-7)
    np.testing.assert_allclose(-result["forces"].numpy(), reference.nuc_grad_method().kernel(), atol=1e-5)

    # At the optimized geometry PySCF finds no force left (geomeTRIC's max-gradient threshold, 4.5e-4 Ha/Bohr,
    # plus the part of the fixed grid's small translational force that the optimizer projects out).
    optimization = result["optimization"]
    assert optimization.converged
    optimized = optimization.mol
    coords = optimized.coords.numpy()
    atom = [(symbol, xyz) for symbol, xyz in zip(optimized.symbols, coords)]
    reference = pyscf_calculation(atom, result, unit="bohr")
    assert np.linalg.norm(reference.nuc_grad_method().kernel(), axis=1).max() < 1e-3
    assert float(optimization.energy) == pytest.approx(reference.e_tot, abs=1e-7)
    assert float(optimization.energy) < float(result["energy"])

    frequencies = thermo.harmonic_analysis(reference.mol, reference.Hessian().kernel())["freq_wavenumber"]
    np.testing.assert_allclose(result["frequencies"].numpy(), frequencies.real, atol=1.0)
    dipole = reference.dip_moment(unit="au", verbose=0)
    np.testing.assert_allclose(result["dipole"].numpy(), dipole, atol=1e-5)
    np.testing.assert_allclose(result["dipole_from_field"].numpy(), dipole, atol=1e-5)

    frames = ase.io.read(result["files"]["trajectory"], index=":")  # ASE reads the XYZ trajectory
    assert len(frames) == len(optimization.history)
    np.testing.assert_allclose(frames[-1].get_positions(), coords * param.BOHR, atol=1e-8)
    assert_png(result["files"]["plot"])


# -- protein_minimize_md --------------------------------------------------------------------------------------


def openmm_reference(pdb_path, forcefield):
    """OpenMM's own System for the written structure (Reference platform, each force in its own group):
    (topology, input positions in nm, system, a function positions -> per-force-class energies in kJ/mol)."""
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    pdb = app.PDBFile(str(pdb_path))
    system = app.ForceField(*forcefield).createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                                      constraints=app.HBonds)
    names = {}
    for group, force in enumerate(system.getForces()):
        force.setForceGroup(group)
        names[group] = type(force).__name__
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))

    def energies(positions):
        context.setPositions(np.asarray(positions, dtype=np.float64))
        out = {}
        for group, name in names.items():
            energy = context.getState(getEnergy=True, groups={group}).getPotentialEnergy()
            out[name] = out.get(name, 0.0) + energy.value_in_unit(unit.kilojoule_per_mole)
        out.pop("CMMotionRemover")
        return out

    return pdb.topology, np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)), system, energies


def test_protein_minimize_md(tmp_path):
    import mdtraj
    import openmm.app as app
    import openmm.unit as unit

    tutorial = load("protein_minimize_md")
    result = tutorial.main(out=tmp_path, quick=True)
    files, bio_system = result["files"], result["system"]
    topology, input_positions, system, energies = openmm_reference(files["villin.pdb"], tutorial.FORCEFIELD)
    assert topology.getNumAtoms() == bio_system.n_atoms == 582
    assert not any(residue.name == "HOH" for residue in topology.residues())

    def assert_matches(positions):
        positions = torch.as_tensor(positions, dtype=torch.float64)
        ours = {name: float(value) for name, value in bio_system.energy_components(positions).items()}
        reference = energies(positions.numpy())
        assert set(ours) == set(reference)
        for name, value in reference.items():
            assert abs(ours[name] - value) <= max(1e-4, 1e-6 * abs(value)), (name, ours[name], value)
        return sum(reference.values())

    def assert_constrained(positions):
        positions = np.asarray(positions)
        for k in range(system.getNumConstraints()):
            i, j, distance = system.getConstraintParameters(k)
            distance = distance.value_in_unit(unit.nanometer)
            length = np.linalg.norm(positions[i] - positions[j])
            assert abs(length - distance) <= 1e-4 * distance, (i, j, length, distance)

    # Energies next to OpenMM's: the input structure as OpenMM reads it, the minimized one, the last MD frame.
    start = assert_matches(input_positions)
    minimization = result["minimization"]
    assert minimization.converged
    assert assert_matches(minimization.positions) < start - 1000  # kJ/mol: the clashes of the crystal relax
    assert_constrained(minimization.positions)
    final = result["final_positions"]
    final_energy = assert_matches(final)
    assert_constrained(final)

    # Maxwell-Boltzmann velocities: the instantaneous temperature is 300 K within 4 sd (sd = T sqrt(2 / dof)).
    assert abs(result["initial_temperature"] - 300.0) < 4 * 300.0 * math.sqrt(2 / result["degrees_of_freedom"])
    # The run resumed from the checkpoint in a fresh Simulation is the uninterrupted run, bit for bit.
    assert torch.equal(final, result["uninterrupted_positions"])

    # The reporters' files, read by other tools: every report_interval steps of both halves of the run.
    steps = list(range(result["report_interval"], result["num_steps"] + 1, result["report_interval"]))
    trajectory = mdtraj.load_dcd(str(files["trajectory.dcd"]), top=str(files["villin.pdb"]))
    assert trajectory.n_frames == len(steps)
    np.testing.assert_allclose(trajectory.xyz[-1], final.numpy(), atol=1e-4)  # float32 Angstrom in the file
    rows = np.array([[float(v) for v in line.split(",")] for line in files["md.csv"].read_text().splitlines()
                     if not line.startswith("#")])
    assert rows[:, 0].tolist() == steps
    assert rows[-1, 2] == pytest.approx(final_energy, rel=1e-6)
    np.testing.assert_allclose(rows[:, 4], rows[:, 2] + rows[:, 3], rtol=1e-12)
    assert files["checkpoint.pt"].stat().st_size > 0
    assert app.PDBFile(str(files["minimized.pdb"])).topology.getNumAtoms() == 582
    assert_png(files["md.png"])


def test_fit_xc(tmp_path):
    from pyscf import dft as pyscf_dft

    from dft.learning import datasets

    result = load("fit_xc").main(out=tmp_path, quick=True)
    losses = [h["loss"] for h in result["history"] if "loss" in h]
    assert losses[-1] < losses[0]  # training lowers the loss
    test = result["errors"]["test"]
    mae = result["mae"]["test"]
    assert mae["nn-pbe (shipped)"] < 0.6 * mae["PBE"]  # the shipped functional on molecules it never saw
    # Our PBE atomization energy of one test molecule is PySCF's.
    name = "HCOOH"
    energies = {}
    for system in {name, *datasets.symbols(name)}:
        mol = datasets.molecule(system, "6-31g*").pyscf
        mf = (pyscf_dft.RKS if mol.spin == 0 else pyscf_dft.UKS)(mol, xc="pbe")
        mf.small_rho_cutoff, mf.conv_tol = 0, 1e-10
        energies[system] = mf.kernel()
    value = (sum(energies[s] for s in datasets.symbols(name)) - energies[name]) * datasets.KCAL_PER_HARTREE
    assert test["PBE"][name][0] == pytest.approx(value, abs=0.01)  # kcal/mol
    for key in ("training", "errors"):
        assert_png(result["files"][key])
    assert "nn-pbe" in result["files"]["report"].read_text()


def test_docking(tmp_path):
    vina = pytest.importorskip("vina")

    import bio
    from diffsci.tour.binding import DATA

    result = load("docking").main(out=tmp_path, quick=True)
    (crystal,) = bio.Ligand.from_sdf(DATA / "1s3v_ligand.sdf")
    v = vina.Vina(sf_name="vina", cpu=1, seed=1, verbosity=0)
    v.set_receptor(str(result["files"]["receptor"]))  # the tutorial's own PDBQT, read by vina
    v.set_ligand_from_string(crystal.autodock().pdbqt(crystal.conformers_angstrom[0]))
    v.compute_vina_maps(center=result["center"], box_size=result["size"], spacing=1.0)
    assert result["terms"]["total"] == pytest.approx(v.score()[0], abs=0.01)  # kcal/mol, vina's explicit score()
    totals = result["scores"]["total"]
    assert totals == sorted(totals) and len(bio.Ligand.from_sdf(result["files"]["poses"])) == len(totals)
    assert torch.isfinite(result["d_weights"]).all() and torch.isfinite(result["forces"]).all()
