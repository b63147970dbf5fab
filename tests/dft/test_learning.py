"""dft.learning and dft.xc.NeuralXC: fitting functionals.

Checked against PySCF (the base functional's energies, CCSD densities) and against exact relations (the
constraints NeuralXC keeps by construction, finite differences of the loss); training mechanics (a step lowers
the loss, resume equals an uninterrupted run, failed SCFs are retried, skipped and reported) on tiny sets.
"""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from pyscf import cc
from pyscf import dft as pyscf_dft
from pyscf import scf as pyscf_scf

import dft
from dft import learning, xc
from dft.learning import datasets, losses
from dft.learning.systems import Calculations
from diffsci.cli import main

BASIS = "6-31g"
TINY = learning.Dataset(BASIS, atomization=["H2", "LiH"])


def perturbed(functional, scale=0.3, seed=1):
    """``functional`` with random nonzero last layers, so the corrections are not zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for component in functional.components:
            if hasattr(component, "network"):
                last = component.network[-1]
                last.weight.copy_(scale * torch.randn(last.weight.shape, generator=generator, dtype=torch.float64))
                last.bias.fill_(0.1)
    return functional


def test_fresh_neural_functional_reproduces_its_base():
    # NH2, not an atom: open-shell atoms have flat orbital-rotation modes whose converged state moves by 1e-7 Ha
    # with the summation order of a multi-threaded run.
    for name, spin in (("N2", 0), ("NH2", 1)):
        mol = datasets.molecule(name, BASIS)
        method = dft.RKS if spin == 0 else dft.UKS
        with torch.no_grad():
            ours = float(method(mol, xc=xc.NeuralXC("pbe"), conv_tol=1e-10).kernel())
            base = float(method(mol, xc="pbe", conv_tol=1e-10).kernel())
        assert abs(ours - base) < 1e-8
        reference = (pyscf_dft.RKS if spin == 0 else pyscf_dft.UKS)(mol.pyscf, xc="pbe")
        reference.small_rho_cutoff = 0  # dft keeps every grid point (see dft/grids.py)
        reference.conv_tol = 1e-10
        assert abs(ours - reference.kernel()) < 1e-6  # PySCF's own SCF precision, as tests/dft/test_scf.py


def _random_inputs(n=64, seed=0):
    """Unrestricted (rho, sigma, tau) with tau above the von Weizsaecker bound sigma_ss / (8 rho_s)."""
    generator = torch.Generator().manual_seed(seed)
    rho = 10 ** (torch.rand(2, n, generator=generator, dtype=torch.float64) * 5 - 3)
    grad = torch.randn(2, 3, n, generator=generator, dtype=torch.float64) * rho.unsqueeze(1)
    sigma = torch.stack([(grad[0] * grad[0]).sum(0), (grad[0] * grad[1]).sum(0), (grad[1] * grad[1]).sum(0)])
    tau = torch.stack([sigma[0], sigma[2]]) / (8 * rho) + rho ** (5 / 3) * torch.rand(2, n, generator=generator,
                                                                                     dtype=torch.float64)
    return rho, sigma, tau


@pytest.mark.parametrize("inputs", [("rho", "zeta", "s"), ("rho", "zeta", "s", "alpha")])
def test_neural_functional_keeps_its_constraints_for_any_weights(inputs):
    functional = perturbed(xc.NeuralXC("pbe", inputs=inputs, hidden=(8, 8)))
    base = xc.get_functional("pbe")
    exchange, correlation = functional.components[2], functional.components[3]
    rho, sigma, tau = _random_inputs()
    meta = "alpha" in inputs
    assert functional.family == ("mgga" if meta else "gga")
    call = (lambda f, r, s, spin, t: f(r, s, spin=spin, tau=t)) if meta else (lambda f, r, s, spin, t: f(r, s, spin=spin))
    # Uniform gas (sigma = 0, tau = the uniform gas's): the base functional exactly.
    zero = torch.zeros_like(sigma)
    uniform_tau = 0.3 * (6 * math.pi ** 2) ** (2 / 3) * rho ** (5 / 3)
    assert torch.equal(call(functional, rho, zero, 1, uniform_tau), base(rho, zero, spin=1))
    assert float(call(exchange, rho, sigma, 1, tau).detach().abs().max()) > 1e-6  # a real correction elsewhere
    # Exact spin scaling of exchange: E_x[rho_a, rho_b] = (E_x[2 rho_a] + E_x[2 rho_b]) / 2.
    doubled_a = call(exchange, 2 * rho[0], 4 * sigma[0], 0, 2 * tau[0])
    doubled_b = call(exchange, 2 * rho[1], 4 * sigma[2], 0, 2 * tau[1])
    assert torch.allclose(call(exchange, rho, sigma, 1, tau), (doubled_a + doubled_b) / 2, rtol=1e-12, atol=0)
    # Uniform coordinate scaling: rho -> l^3 rho(l r) scales e_x by l^4 at the scaled point (tau by l^5).
    scale = 1.7
    scaled = call(exchange, scale ** 3 * rho, scale ** 8 * sigma, 1, scale ** 5 * tau)
    assert torch.allclose(scaled, scale ** 4 * call(exchange, rho, sigma, 1, tau), rtol=1e-10, atol=0)
    # Spin flip symmetry of correlation, and restricted = unrestricted with equal spins.
    flipped = call(correlation, rho.flip(0), sigma.flip(0), 1, tau.flip(0))
    assert torch.allclose(flipped, call(correlation, rho, sigma, 1, tau), rtol=1e-12, atol=0)
    equal = call(functional, torch.stack([rho[0], rho[0]]), torch.stack([sigma[0]] * 3), 1, torch.stack([tau[0]] * 2))
    restricted = call(functional, 2 * rho[0], 4 * sigma[0], 0, 2 * tau[0])
    assert torch.allclose(restricted, equal, rtol=1e-12, atol=1e-300)


def test_neural_meta_gga_runs_self_consistently_and_starts_at_its_base():
    mol = datasets.molecule("NH2", BASIS)
    with torch.no_grad():
        fresh = float(dft.UKS(mol, xc=xc.NeuralXC("r2scan", inputs=("rho", "zeta", "s", "alpha")), conv_tol=1e-9).kernel())
    reference = pyscf_dft.UKS(mol.pyscf, xc="r2scan")
    reference.small_rho_cutoff, reference.conv_tol = 0, 1e-9
    assert abs(fresh - reference.kernel()) < 1e-6
    functional = perturbed(xc.NeuralXC("pbe", inputs=("rho", "zeta", "s", "alpha"), hidden=(4,)), scale=0.05)
    energy = dft.UKS(mol, xc=functional, conv_tol=1e-9).kernel()
    energy.backward()
    assert functional.components[2].network[-1].weight.grad.abs().sum() > 0


def test_neural_functional_rejects_bad_architecture():
    with pytest.raises(xc.XCError, match="s among them"):
        xc.NeuralXC("pbe", inputs=("rho", "zeta"))
    with pytest.raises(xc.XCError, match="distinct names"):
        xc.NeuralXC("pbe", inputs=("rho", "density", "s"))
    with pytest.raises(xc.XCError, match="hidden"):
        xc.NeuralXC("pbe", hidden=())
    with pytest.raises(xc.XCError, match="unknown functional"):
        xc.NeuralXC("pbee")


def test_experimental_atomization_energies_match_published_values():
    # D_e in kcal/mol as tabulated by Ernzerhof & Scuseria (J. Chem. Phys. 110, 5029 (1999)) from the same
    # experimental compilations; the spread between compilations (ZPE and thermal data) is about 1 kcal/mol.
    published = {"H2": 109.5, "LiH": 57.8, "CH4": 419.3, "NH3": 297.4, "H2O": 232.2, "HF": 140.8, "C2H2": 405.4,
                 "C2H4": 563.5, "HCN": 311.9, "CO": 259.3, "N2": 228.5, "NO": 152.9, "O2": 120.5, "F2": 38.5}
    for name, value in published.items():
        assert abs(datasets.atomization_energy(name) - value) < 1.0, name
    assert datasets.spin("O2") == 2 and datasets.spin("N") == 3 and datasets.cation_spin("O") == 3
    with pytest.raises(dft.OptionError, match="did you mean"):
        datasets.atomization_energy("N2O5x")
    with pytest.raises(dft.OptionError, match="atom"):
        learning.Dataset(BASIS, atomization=["N"])


def test_reference_density_is_pyscf_ccsd_and_cached(tmp_path):
    dm = datasets.reference_density("H2", BASIS, directory=tmp_path)
    mf = pyscf_scf.RHF(datasets.molecule("H2", BASIS).pyscf).run(conv_tol=1e-10)
    solver = cc.CCSD(mf).run()
    expected = mf.mo_coeff @ solver.make_rdm1() @ mf.mo_coeff.T
    assert np.abs(dm - expected).max() < 1e-6
    (path,) = tmp_path.iterdir()
    payload = dict(np.load(path))
    assert json.loads(str(payload["provenance"]))["method"] == "ccsd"
    np.savez(path, dm=np.zeros_like(dm), provenance=payload["provenance"])  # a cached file is used as is
    assert np.abs(datasets.reference_density("H2", BASIS, directory=tmp_path)).max() == 0
    provenance = json.loads(str(payload["provenance"]))
    provenance["pyscf"] = "0.0"  # provenance of another PySCF: recomputed
    np.savez(path, dm=np.zeros_like(dm), provenance=json.dumps(provenance))
    assert np.abs(datasets.reference_density("H2", BASIS, directory=tmp_path) - expected).max() < 1e-6


def _loss(functional, loss, dataset, conv_tol=1e-11):
    calculations = Calculations(functional, dataset.basis, conv_tol=conv_tol)
    return losses.evaluate(loss, dataset, calculations)


@pytest.mark.parametrize("terms", [{"atomization": 1.0, "ionization": 0.0, "total_energy": 0.0, "density": 0.0},
                                   {"atomization": 0.0, "ionization": 0.0, "total_energy": 0.0, "density": 100.0,
                                    "scf_stability": 10.0}])
def test_loss_gradient_matches_finite_differences(terms, tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFSCI_CACHE", str(tmp_path))
    functional = perturbed(xc.NeuralXC("pbe", hidden=(4,)), scale=0.3)
    dataset = learning.Dataset(BASIS, atomization=["H2"], densities=["H2"])
    loss = learning.Loss(**terms)
    evaluation = _loss(functional, loss, dataset, conv_tol=1e-12)
    evaluation.total.backward()
    for parameter in (functional.components[2].network[-1].weight, functional.components[3].network[-1].weight):
        index = (0, 0)
        analytic = float(parameter.grad[index])
        h = 1e-4
        values = []
        for step in (h, -h):
            with torch.no_grad():
                parameter[index] += step
                values.append(float(_loss(functional, loss, dataset, conv_tol=1e-12).total))
                parameter[index] -= step
        numeric = (values[0] - values[1]) / (2 * h)
        # The loss values carry the SCF's and the response solve's convergence (density matrix to ~1e-8), which
        # bounds the finite difference's accuracy near 1e-5 in absolute terms.
        assert abs(analytic - numeric) <= 1e-3 * abs(numeric) + 1e-5, (analytic, numeric)


def test_ionization_and_total_energy_terms_use_pyscf_energies():
    energies = {}
    for charge, spin in ((0, 1), (1, 0)):
        mol = datasets.molecule("Li", BASIS, charge=charge).pyscf
        mf = (pyscf_dft.RKS if spin == 0 else pyscf_dft.UKS)(mol, xc="pbe")
        mf.small_rho_cutoff, mf.conv_tol = 0, 1e-10
        energies[charge] = mf.kernel()
    dataset = learning.Dataset(BASIS, ionization=["Li"], total_energies={"Li": energies[0]})
    evaluation = _loss(xc.NeuralXC("pbe"), learning.Loss(), dataset, conv_tol=1e-10)
    predicted, experiment = evaluation.predictions["ionization"]["Li"]
    assert predicted == pytest.approx((energies[1] - energies[0]) * datasets.KCAL_PER_HARTREE, abs=1e-3)
    assert experiment == pytest.approx(5.39 / datasets.EV_PER_HARTREE * datasets.KCAL_PER_HARTREE)
    assert evaluation.terms["total_energy"] < 1e-6  # (kcal/mol)^2: our PBE energy is PySCF's


def test_one_training_step_lowers_the_loss():
    functional = xc.NeuralXC("pbe", hidden=(4,))
    loss = learning.Loss()
    before = float(_loss(functional, loss, TINY, conv_tol=1e-9).total.detach())
    result = learning.train(functional, TINY, loss, epochs=1, lr=1e-2, progress=False, conv_tol=1e-9)
    after = float(_loss(functional, loss, TINY, conv_tol=1e-9).total.detach())
    assert result.history[1]["loss"] == pytest.approx(before, rel=1e-9)
    assert after < before


def test_resumed_training_equals_an_uninterrupted_one(tmp_path):
    def run(epochs, directory):
        functional = xc.NeuralXC("pbe", hidden=(4,))
        result = learning.train(functional, TINY, epochs=epochs, lr=1e-2, progress=False, conv_tol=1e-9,
                                checkpoint_dir=directory)
        return functional, result

    straight, straight_result = run(3, tmp_path / "straight")
    run(1, tmp_path / "killed")  # what a run killed after its first epoch leaves behind
    resumed, resumed_result = run(3, tmp_path / "killed")
    # Equal to round-off: PySCF's multi-threaded J/K builds sum in a varying order, so two identical runs already
    # differ in the last bits; a resumed run continues from the saved state and warm starts exactly.
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)
    losses = [[h.get("loss") for h in result.history] for result in (straight_result, resumed_result)]
    assert losses[0][0] is None and losses[0][1:] == pytest.approx(losses[1][1:], rel=1e-9)
    with pytest.raises(Exception, match="another run"):
        learning.train(xc.NeuralXC("pbe", hidden=(5,)), TINY, epochs=3, progress=False,
                       checkpoint_dir=tmp_path / "killed")


def test_a_failing_scf_is_retried_then_skipped_and_reported(monkeypatch):
    original = dft.ks._KohnSham.kernel
    calls = []

    def kernel(self, *args, **kwargs):  # LiH never converges; everything else runs for real
        energy = original(self, *args, **kwargs)
        if self.mol.nelectron == 4 and self.mol.natm == 2:
            if isinstance(self.functional, xc.NeuralXC):  # not the base functional's guess
                calls.append((self.damp, self.level_shift))
            self.converged = False
        return energy

    monkeypatch.setattr(dft.ks._KohnSham, "kernel", kernel)
    functional = xc.NeuralXC("pbe", hidden=(4,))
    result = learning.train(functional, TINY, epochs=1, lr=1e-2, progress=False, conv_tol=1e-9)
    assert calls[:3] == [(0.0, 0.0), (0.5, 0.3), (0.5, 0.3)]  # warm start; damping + shift; base-functional guess
    assert result.history[1]["skipped"] == ["LiH"]
    assert result.history[1]["terms"]["atomization"] > 0  # H2 still trained
    assert [row["name"] for row in result.report] == ["H2"]
    monkeypatch.setattr(learning.Calculations, "energy", lambda *a, **k: (_ for _ in ()).throw(
        learning.SCFFailed(("H2", 0), [1.0, 1.0, 1.0])))
    with pytest.raises(ValueError, match="nothing to evaluate: SCF of H2 did not converge"):
        learning.train(xc.NeuralXC("pbe", hidden=(4,)), TINY, epochs=1, progress=False)


def test_save_and_load_round_trip_exactly(tmp_path):
    neural = perturbed(xc.NeuralXC("pbe", inputs=("rho", "s"), hidden=(6, 5), seed=3))
    neural.basis = BASIS
    xc.save(neural, tmp_path / "neural.pt", metadata={"note": "test"})
    loaded = xc.get_functional(str(tmp_path / "neural.pt"))
    assert loaded.basis == BASIS and loaded.metadata == {"note": "test"}
    assert loaded.config == neural.config
    rho, sigma, _ = _random_inputs()
    assert torch.equal(loaded(rho, sigma, spin=1), neural(rho, sigma, spin=1))
    assert all(p.requires_grad for p in loaded.parameters())

    b3lyp = xc.get_functional("b3lyp").make_trainable("hyb", "weights")
    b3lyp.components[1].make_trainable("beta")
    with torch.no_grad():
        b3lyp.hyb.add_(0.01)
        b3lyp.components[1].beta.mul_(1.01)
    xc.save(b3lyp, tmp_path / "b3lyp.pt")
    again = xc.load(tmp_path / "b3lyp.pt")
    assert float(again.hyb.detach()) == float(b3lyp.hyb.detach()) and sorted(n for n, _ in again.named_parameters()) == [
        "components.1.beta", "hyb", "weights"]
    assert torch.equal(again(rho, sigma, spin=1), b3lyp(rho, sigma, spin=1))
    (tmp_path / "broken.pt").write_bytes(b"not a functional")
    with pytest.raises(xc.XCError, match="functional file"):
        xc.load(tmp_path / "broken.pt")
    with pytest.raises(xc.XCError, match="cannot save"):
        xc.save(xc.get_functional(lambda rho, sigma, spin=0: rho), tmp_path / "f.pt")


def test_mixing_fractions_are_trainable():
    functional = xc.get_functional("pbe0").make_trainable("hyb")
    mol = datasets.molecule("HF", BASIS)
    energy = dft.RKS(mol, xc=functional, conv_tol=1e-10).kernel()
    (grad,) = torch.autograd.grad(energy, functional.hyb)
    values = []
    for hyb in (0.25 + 1e-4, 0.25 - 1e-4):
        values.append(float(dft.RKS(mol, xc=f"{hyb}*hf+0.75*pbe,pbe", conv_tol=1e-10).kernel()))
    assert abs(float(grad) - (values[0] - values[1]) / 2e-4) < 1e-5


def test_constraint_penalty_is_zero_for_pbe_and_positive_when_broken():
    assert float(losses.constraint_penalty(xc.NeuralXC("pbe"))) == 0.0
    broken = xc.get_functional("pbe")
    broken.components[0].kappa.fill_(5.0)  # F_x(s -> inf) = 1 + kappa = 6, above Lieb-Oxford's 1.804
    assert float(losses.constraint_penalty(broken)) > 1e-3
    assert float(losses.constraint_penalty(xc.NeuralXC("r2scan", inputs=("rho", "zeta", "s", "alpha")))) < 1e-12


def test_shipped_nn_pbe_loads_by_name():
    functional = xc.get_functional("nn-pbe")
    assert isinstance(functional, xc.NeuralXC)
    assert functional.basis == "6-31g*"
    assert set(functional.metadata["training"]) >= set(datasets.PRL_TRAINING)


def test_fit_xc_command_trains_saves_and_the_result_runs_in_diffsci_dft(tmp_path, capsys):
    config = tmp_path / "fit.toml"
    config.write_text('[functional]\nhidden = [4]\n[data]\nbasis = "6-31g"\natomization = ["H2"]\n'
                      '[validation]\natomization = ["LiH"]\n[training]\nepochs = 1\nlr = 0.01\n')
    out = tmp_path / "out"
    command = [sys.executable, "-m", "diffsci", "fit-xc", str(config), "--out", str(out), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "validation MAE over 1 molecules" in done.stdout
    assert (out / "training.png").stat().st_size > 0 and "LiH" in (out / "report.md").read_text()
    xyz = tmp_path / "h2.xyz"
    xyz.write_text("2\nH2\nH 0 0 0\nH 0 0 0.74\n")
    done = subprocess.run([sys.executable, "-m", "diffsci", "dft", str(xyz), "--xc", str(out / "functional.pt"),
                           "--basis", "6-31g*"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "trained in the 6-31g basis" in done.stderr
    for arguments, message in ((["--epochs", "-1"], "--epochs"), (["--device", "gpu7"], "--device"),
                               ([], "unknown key 'epoch' in [training]")):
        config.write_text('[data]\nbasis = "6-31g"\natomization = ["H2"]\n[training]\n'
                          + ("epoch = 1\n" if not arguments else "epochs = 1\n"))
        assert main(command[3:] + arguments) == 1  # in process: the same entry point, without a new interpreter
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
