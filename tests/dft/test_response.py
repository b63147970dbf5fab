"""Derivatives through the SCF: the variational energy and the implicit response of the density.

Gradients w.r.t. the parameters of user functionals (a PBE with trainable kappa and mu, a small MLP x LDA)
are checked against central finite differences of SCFs re-run at theta +- h; the properties at those
points are evaluated by PySCF from our converged density matrices (``dip_moment``, ``numint.eval_rho``).
N2 (degenerate pi and pi* levels) and triplet O2 (UKS) are the degenerate cases.
"""

import numpy as np
import pytest
import torch
from pyscf.dft import numint
from pyscf.scf import hf as pyscf_hf

import dft
from dft import response
from dft.xc import VWN5, PBECorrelation, PBEExchange, Slater, XCFunctional

MOLECULES = {  # name: (atom in Angstrom, spin, class)
    "H2O": ("O 0 0 0.117; H 0 0.757 -0.470; H 0 -0.757 -0.470", 0, dft.RKS),
    "N2": ("N 0 0 0; N 0 0 1.098", 0, dft.RKS),
    "O2": ("O 0 0 0; O 0 0 1.208", 2, dft.UKS),
}
# The finite-difference side converges far below the default thresholds: its errors are divided by h.
TIGHT = {"grid_level": 1, "conv_tol": 1e-12, "conv_tol_grad": 1e-9}


def tunable_pbe():
    """PBE whose exchange kappa and mu are trainable parameters (buffers turned into nn.Parameters)."""
    exchange = PBEExchange().make_trainable("kappa", "mu")
    assert {name for name, _ in exchange.named_parameters()} == {"kappa", "mu"}
    return XCFunctional([exchange, PBECorrelation()], [1.0, 1.0], name="tunable pbe")


def tunable_hybrid():
    """PBE0 with a trainable exact-exchange fraction."""
    hyb = torch.nn.Parameter(torch.tensor(0.25, dtype=torch.float64))
    return XCFunctional([PBEExchange(), PBECorrelation()], [0.75, 1.0], hyb=hyb, name="tunable pbe0")


FUNCTIONALS = {"pbe": tunable_pbe, "hybrid": tunable_hybrid}


class NeuralLDA(torch.nn.Module):
    """A user functional: Slater exchange scaled by 1 + MLP(rho^(1/3)), plus VWN5 correlation."""

    family = "lda"

    def __init__(self):
        super().__init__()
        self.exchange, self.correlation = Slater(), VWN5()
        self.net = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()

    def forward(self, rho, sigma=None, spin=0):
        total = rho if spin == 0 else rho.sum(0)
        factor = 1 + 0.1 * torch.tanh(self.net((total + 1e-12).pow(1 / 3).unsqueeze(-1)).squeeze(-1))
        return self.exchange(rho, spin=spin) * factor + self.correlation(rho, spin=spin)


def make_mf(name, xc, device, **options):
    atom, spin, method = MOLECULES[name]
    return method(dft.Molecule(atom, "6-31g", spin=spin, device=device), xc=xc, **{**TIGHT, **options})


def directional_fd(mf, parameters, direction, outputs, h=1e-3):
    """Five-point central difference along ``direction`` of ``outputs(mf)`` (a numpy vector) after SCFs with
    the parameters moved to theta + t h direction, t in (-2, -1, 1, 2); the parameters are restored."""
    start = [p.detach().clone() for p in parameters]
    dm0 = mf.make_rdm1()
    values = {}
    for t in (-2, -1, 1, 2):
        with torch.no_grad():
            for p, p0, v in zip(parameters, start, direction):
                p.copy_(p0 + t * h * v)
            mf.kernel(dm0=dm0, strict=True)
            values[t] = outputs(mf)
    with torch.no_grad():
        for p, p0 in zip(parameters, start):
            p.copy_(p0)
    return (8 * (values[1] - values[-1]) - (values[2] - values[-2])) / (12 * h)


def energy_of(mf):
    return np.array([float(mf.e_tot)])


def assert_close(gradient, reference, rtol=1e-6):
    gradient, reference = np.atleast_1d(gradient), np.atleast_1d(reference)
    assert np.linalg.norm(gradient - reference) <= rtol * np.linalg.norm(reference), (gradient, reference)


def test_energy_is_a_plain_value_when_nothing_requires_grad(device):
    mf = make_mf("H2O", "pbe", device)
    energy = mf.kernel()
    assert not energy.requires_grad and energy.grad_fn is None
    with torch.no_grad():
        assert float(mf.kernel(response=True)) == pytest.approx(float(energy), abs=1e-10)


@pytest.mark.parametrize("name, functional", [("H2O", "pbe"), ("N2", "pbe"), ("O2", "pbe"), ("H2O", "hybrid")])
def test_energy_gradient_wrt_xc_parameters_matches_finite_differences(name, functional, device):
    xc = FUNCTIONALS[functional]().to(device)
    parameters = list(xc.parameters())
    mf = make_mf(name, xc, device)
    energy = mf.kernel(strict=True)
    assert energy.requires_grad
    variational = torch.stack(torch.autograd.grad(energy, parameters))
    implicit = torch.stack(torch.autograd.grad(mf.kernel(response=True), parameters))
    direction = [torch.tensor(1.0), torch.tensor(0.1)][:len(parameters)]
    fd = directional_fd(mf, parameters, direction, energy_of)
    along = torch.stack(direction).to(variational)
    assert_close(float(variational @ along), fd)
    torch.testing.assert_close(implicit, variational, rtol=1e-8, atol=0)


def dipole_gap_and_density(mf):
    """PySCF's dipole and density on our grid, and the HOMO-LUMO gap, from our solution converged further by
    the fixed-point solver (DIIS stalls near |g| ~ 1e-10, and these outputs are first order in its error)."""
    solution = response.solve(mf, tol=1e-13)
    dm = solution.dm.cpu().numpy()
    total = dm if dm.ndim == 2 else dm[0] + dm[1]
    mu = pyscf_hf.dip_moment(mf.mol.pyscf, total, unit="AU", verbose=0)
    occupied = solution.mo_occ > 0
    gap = float(solution.mo_energy[~occupied].min() - solution.mo_energy[occupied].max())
    ao = numint.eval_ao(mf.mol.pyscf, mf.grid.coords.cpu().numpy())
    return np.concatenate([mu, [gap], numint.eval_rho(mf.mol.pyscf, ao, total)])


@pytest.mark.parametrize("name, functional", [("H2O", "neural"), ("H2O", "hybrid"), ("N2", "pbe"), ("O2", "pbe")])
def test_density_dipole_and_gap_gradients_wrt_xc_parameters_match_finite_differences(name, functional, device):
    xc = (NeuralLDA() if functional == "neural" else FUNCTIONALS[functional]()).to(device)
    parameters = list(xc.parameters())
    mf = make_mf(name, xc, device)
    mf.kernel(strict=True)
    generator = torch.Generator().manual_seed(1)
    direction = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(device) for p in parameters]
    fd = directional_fd(mf, parameters, direction, dipole_gap_and_density)

    mu = dft.dipole(mf)
    rho = dft.density(mf)
    total = rho if rho.ndim == 1 else rho.sum(0)
    weights = torch.rand(total.shape, generator=generator, dtype=total.dtype).to(device)

    def along(output):
        grads = torch.autograd.grad(output, parameters, retain_graph=True)
        return float(sum((g * v.to(g)).sum() for g, v in zip(grads, direction)))

    # Projections of the density on random weights: the test sees the whole grid's response.
    assert_close(along((weights * total).sum()), weights.cpu().numpy() @ fd[4:])
    assert_close(along(dft.homo_lumo_gap(mf)), fd[3])
    if name == "H2O":  # the others have no dipole by symmetry
        assert_close(along(mu[2]), fd[2])


def test_second_derivative_wrt_an_xc_parameter_matches_finite_differences(device):
    """Double backward through the response: d2E/dkappa2 against differences of first derivatives."""
    xc = tunable_pbe().to(device)
    kappa = xc.components[0].kappa
    mf = make_mf("H2O", xc, device)
    mf.kernel(strict=True)
    (first,) = torch.autograd.grad(mf.kernel(response=True), kappa, create_graph=True)
    (second,) = torch.autograd.grad(first, kappa)

    def gradient(mf):
        with torch.enable_grad():
            return np.array([float(torch.autograd.grad(mf.kernel(dm0=mf.make_rdm1()), kappa)[0])])

    assert_close(float(second), directional_fd(mf, [kappa], [torch.tensor(1.0)], gradient))


def test_response_is_the_converged_solution_and_refuses_what_it_cannot_differentiate(device):
    mf = make_mf("H2O", "pbe", device)
    with pytest.raises(dft.DFTError, match=r"run mf.kernel\(\)"):
        response.solve(mf)
    mf.kernel(strict=True)
    solution = response.solve(mf)
    torch.testing.assert_close(solution.dm, mf.make_rdm1(), atol=1e-7, rtol=0)
    torch.testing.assert_close(solution.mo_energy, mf.mo_energy, atol=1e-8, rtol=0)
    torch.testing.assert_close(solution.mo_coeff[:, :5], mf.mo_coeff[:, :5], atol=1e-6, rtol=0)

    levels = torch.tensor([-1.0, -0.3, -0.3, 0.2], dtype=torch.float64)
    with pytest.raises(dft.DFTError, match=r"HOMO-LUMO gap 0 Ha is below"):
        response.check_gap(levels, torch.tensor([2.0, 2.0, 0.0, 0.0], dtype=torch.float64))
    with pytest.raises(dft.DFTError, match=r"\(beta spin\)"):
        response.check_gap(levels.expand(2, 4), torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]))
    response.check_gap(levels, torch.tensor([2.0, 2.0, 2.0, 0.0], dtype=torch.float64))  # gap 0.5 Ha: fine
