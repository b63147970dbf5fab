"""`diffsci tour --quick`: every stage runs, writes its plots and report, and its numbers agree with the
reference tools computed here (NumPyro, PySCF, OpenMM), not only with themselves."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffsci.tour import STAGES, stage_names, tour


@pytest.fixture(scope="module")
def quick_tour(tmp_path_factory):
    out = tmp_path_factory.mktemp("tour")
    lines = []
    sections = tour(out, quick=True, echo=lines.append)
    return out, sections, "\n".join(lines)


def test_writes_report_and_plots(quick_tour):
    out, sections, terminal = quick_tour
    assert list(sections) == list(STAGES)
    report = (out / "report.md").read_text()
    plots = sorted(out.glob("*.png"))
    assert len(plots) >= 6
    for section in sections.values():
        for plot in section.plots:
            assert (out / plot).stat().st_size > 1000 and f"]({plot})" in report
    for title in ("eight schools", "water with B3LYP", "kappa and mu", "villin", "redocking the 1s3v ligand"):
        assert title in report and title in terminal


def test_bayes_stage_matches_numpyro(quick_tour):
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as ndist

    from diffsci.tour.bayes import SIGMA, Y

    results = quick_tour[1]["bayes"].results

    def model(sigma, y=None):
        mu = numpyro.sample("mu", ndist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", ndist.HalfCauchy(5.0))
        with numpyro.plate("J", sigma.shape[0]):
            theta = numpyro.sample("theta", ndist.Normal(0.0, 1.0))
            numpyro.sample("obs", ndist.Normal(mu + tau * theta, sigma), obs=y)

    with jax.enable_x64(True):
        mcmc = numpyro.infer.MCMC(numpyro.infer.NUTS(model), num_warmup=500, num_samples=2000, progress_bar=False)
        mcmc.run(jax.random.PRNGKey(0), jnp.asarray(SIGMA), y=jnp.asarray(Y))
        reference = {k: np.asarray(v) for k, v in mcmc.get_samples().items()}
    for site in ("mu", "tau"):
        # 5 standard errors of both runs (NumPyro's ESS taken as a quarter of its draws: a safe floor here)
        error = math.hypot(results[f"{site}_mcse"], reference[site].std() / math.sqrt(len(reference[site]) / 4))
        assert abs(results[f"{site}_mean"] - reference[site].mean()) < 5 * error, site
    assert results["r_hat_max"] < 1.05 and results["divergences"] <= 0.01 * results["num_draws"]
    assert abs(results["svi_mu_mean"] - results["mu_mean"]) < 1.5  # a mean-field guide, close to NUTS on mu


def test_dft_stage_matches_pyscf(quick_tour):
    from pyscf import dft as pyscf_dft
    from pyscf import gto
    from pyscf.hessian import thermo

    from diffsci.tour.kohn_sham import WATER

    results = quick_tour[1]["dft"].results
    mol = gto.M(atom=WATER, basis=results["basis"], verbose=0)
    mf = pyscf_dft.RKS(mol, xc="b3lyp")
    mf.conv_tol = 1e-11
    energy = mf.kernel()
    assert results["energy"] == pytest.approx(energy, abs=1e-8)
    np.testing.assert_allclose(-np.asarray(results["forces"]), mf.nuc_grad_method().kernel(), atol=1e-6)
    np.testing.assert_allclose(results["dipole_au"], mf.dip_moment(unit="au", verbose=0), atol=1e-5)
    frequencies = thermo.harmonic_analysis(mol, mf.Hessian().kernel())["freq_wavenumber"]
    np.testing.assert_allclose(results["frequencies"], np.sort(frequencies.real)[-3:], rtol=1e-4)
    assert results["d_dipole_d_kappa"] == pytest.approx(results["finite_difference"], rel=1e-4)


def test_fit_stage_recovers_pbe(quick_tour):
    from pyscf import dft as pyscf_dft
    from pyscf import gto

    from diffsci.tour.functional_fit import MOLECULES

    results = quick_tour[1]["fit"].results
    assert results["kappa"] == pytest.approx(0.804, rel=0.05) and results["mu"] == pytest.approx(0.2195, rel=0.05)
    assert results["losses"][-1] < 0.01 * results["losses"][0]
    mf = pyscf_dft.RKS(gto.M(atom=MOLECULES["H2O"], basis="6-31g", verbose=0), xc="pbe")
    mf.conv_tol = 1e-10
    assert results["reference"]["H2O"] == pytest.approx(mf.kernel(), abs=1e-8)
    assert all(abs(error) < 1.0 for error in results["errors_mha"]["fitted"].values())
    # The shipped nn-pbe beats PBE on unseen molecules (tests/test_tutorials.py::test_fit_xc checks the PBE
    # atomization energies of the same function against PySCF).
    errors = results["nn_pbe"]
    mae = {f: sum(abs(p - r) for p, r in values.values()) / len(values) for f, values in errors.items()}
    assert mae["nn-pbe"] < 0.6 * mae["pbe"]


def test_proteins_stage_matches_openmm(quick_tour):
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    from diffsci.tour.proteins import villin

    results = quick_tour[1]["proteins"].results
    topology, positions = villin()
    system = app.ForceField("amber14-all.xml", "implicit/obc2.xml").createSystem(topology, constraints=app.HBonds)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    for where, energy in ((positions, sum(results["energies"].values())),
                          (results["minimized_positions"], results["minimized_energy"])):
        context.setPositions(where)
        reference = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        assert energy == pytest.approx(reference, abs=1e-6 * abs(reference))
    assert results["minimized_energy"] < results["initial_energy"] - 1000
    temperatures = np.asarray(results["md_temperatures"])
    assert np.isfinite(temperatures).all() and 50 < temperatures.mean() < 500


def test_binding_stage_matches_vina(quick_tour, tmp_path):
    import warnings

    import bio
    from diffsci.tour.binding import DATA

    vina = pytest.importorskip("vina")
    results = quick_tour[1]["binding"].results
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        receptor = bio.Receptor.from_pdb(DATA / "1s3v_protein.pdb", ph=7.4)
    receptor.write_pdbqt(tmp_path / "receptor.pdbqt")
    (ligand,) = bio.Ligand.from_sdf(DATA / "1s3v_ligand.sdf")
    v = vina.Vina(sf_name="vina", cpu=1, seed=1, verbosity=0)
    v.set_receptor(str(tmp_path / "receptor.pdbqt"))
    v.set_ligand_from_string(ligand.autodock().pdbqt(ligand.conformers_angstrom[0]))
    v.compute_vina_maps(center=results["center"], box_size=results["size"], spacing=1.0)
    assert results["crystal_total"] == pytest.approx(v.score()[0], abs=0.01)  # vina's explicit-atom score()
    poses = bio.Ligand.from_sdf(results["poses"])
    assert len(poses) == len(results["rmsd"]) and all(math.isfinite(r) for r in results["rmsd"])
    totals = results["scores"]["total"]
    assert totals == sorted(totals) and torch.isfinite(results["crystal_gradient"]).all()


def test_only_and_bad_options():
    assert stage_names("proteins, bayes") == ["bayes", "proteins"]
    with pytest.raises(ValueError, match="unknown stage 'docking'"):
        stage_names("bayes,docking")
    for argv, message in ((["--only", "nope"], "unknown stage"), (["--device", "gpu7"], "--device"),
                          (["--seed", "x"], "invalid int value")):
        run = subprocess.run([sys.executable, "-m", "diffsci", "tour", *argv], capture_output=True, text=True)
        assert run.returncode != 0 and message in run.stderr and "Traceback" not in run.stderr, run.stderr
    if not torch.cuda.is_available():
        run = subprocess.run([sys.executable, "-m", "diffsci", "tour", "--device", "cuda"], capture_output=True,
                             text=True)
        assert run.returncode != 0 and "no CUDA device" in run.stderr and "Traceback" not in run.stderr
