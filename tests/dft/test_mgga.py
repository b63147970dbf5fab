"""Meta-GGAs (TPSS, SCAN, r2SCAN): dft.xc against libxc point by point, and the SCF, forces and parameter
gradients against PySCF (same basis, grid and functional), computed here at test time.

tau is the kinetic-energy density 1/2 sum_i occ_i |grad phi_i|^2, as in PySCF's ``eval_rho(..., xctype='MGGA')``
(row 5) and libxc. Pointwise densities: rho log-uniform in 1e-6..1e2 bohr^-3, reduced gradient s in 0..4 and
tau = tau_W + alpha tau_unif with alpha log-uniform in 1e-3..10 (the region SCAN switches through, alpha ~ 1,
included), plus tau = tau_W (one-orbital regions), tau < tau_W (libxc caps sigma_ss at 8 rho_s tau_s), tau = 0
and near-zero densities, where libxc's screening must be reproduced.
"""

import math

import numpy as np
import pytest
import torch
from pyscf import dft as pyscf_dft
from pyscf import gto
from pyscf.dft import libxc

import dft
from dft import scf, xc
from dft.grids import Grid
from dft.xc import XCError, get_functional

RTOL, ATOL = 1e-10, 1e-12
COMPONENTS = {
    "tpss_x": (xc.TPSSExchange, "MGGA_X_TPSS,"),
    "tpss_c": (xc.TPSSCorrelation, ",MGGA_C_TPSS"),
    "scan_x": (xc.SCANExchange, "MGGA_X_SCAN,"),
    "scan_c": (xc.SCANCorrelation, ",MGGA_C_SCAN"),
    "r2scan_x": (xc.R2SCANExchange, "MGGA_X_R2SCAN,"),
    "r2scan_c": (xc.R2SCANCorrelation, ",MGGA_C_R2SCAN"),
}
NAMES = ["tpss", "scan", "r2scan", "tpss,tpss", "r2scan,scan", "0.5*scan+0.5*pbe,r2scan"]
S_FACTOR = 2 * (3 * math.pi ** 2) ** (1 / 3)  # |grad rho| = s * S_FACTOR * rho^(4/3)
TAU_UNIF = 0.3 * (3 * math.pi ** 2) ** (2 / 3)  # tau_unif = TAU_UNIF rho^(5/3), unpolarized


def _channel(rho, rng, spin_channel):
    """Gradient (3, N) and tau (N,) for densities rho of a whole (restricted) or one (spin) channel."""
    scale = 2 ** (1 / 3) if spin_channel else 1.0  # s of a channel refers to its doubled density
    direction = rng.normal(size=(3, rho.size))
    direction /= np.linalg.norm(direction, axis=0)
    s = rng.uniform(0, 4, rho.size)
    s[0] = 1e-6
    grad = direction * s * S_FACTOR * rho ** (4 / 3) / scale
    tau_w = np.divide((grad * grad).sum(0), 8 * rho, out=np.zeros_like(rho), where=rho > 0)
    alpha = 10 ** rng.uniform(-3, 1, rho.size)
    alpha[1:4] = [1.0 - 1e-3, 1.0, 1.0 + 1e-3]
    tau = tau_w + alpha * TAU_UNIF * rho ** (5 / 3) * (2 ** (2 / 3) if spin_channel else 1.0)
    # Just above the von Weizsaecker limit (alpha -> 0): TPSS correlation's min(tau_W / tau, 1) has a kink at
    # tau = tau_W, where libxc's and our roundings of tau_W / tau pick different one-sided derivatives.
    tau[4] = tau_w[4] * (1 + 1e-10)
    tau[5] = 0.7 * tau_w[5]  # below it: libxc caps sigma at 8 rho tau (both then take the tau_W / tau side)
    tau[6] = 0.0
    return grad, tau


def _random_points(rng, n=120):
    """Restricted (rho, grad, tau) and unrestricted ((rho_a, grad_a, tau_a), (rho_b, grad_b, tau_b)) points;
    pairs whose smaller spin density is below 1e-3 of the total are left out. libxc forms the spin densities
    as (1 +- zeta) n / 2 (tests/dft/test_xc.py), and TPSS correlation amplifies that rounding through
    (1 -+ zeta)^(-4/3): at rho_b / n = 7.5e-4 its vsigma_bb differs from ours by 2e-9 relative."""
    rho = 10 ** rng.uniform(-6, 2, n)
    rho_a, rho_b = 10 ** rng.uniform(-6, 2, (2, 2 * n))
    keep = np.minimum(rho_a, rho_b) >= 1e-3 * (rho_a + rho_b)
    rho_a, rho_b = rho_a[keep][:n], rho_b[keep][:n]
    return ((rho, *_channel(rho, rng, False)),
            ((rho_a, *_channel(rho_a, rng, True)), (rho_b, *_channel(rho_b, rng, True))))


def _small_points(rng):
    """Near-zero densities (below, near and above the thresholds) and fully polarized ones (rho_b = 0)."""
    rho = np.array([0.0, 1e-20, 1e-16, 3e-15, 1e-14, 3e-14, 1e-13, 1e-12, 3e-12, 1e-10, 1e-8, 3e-11])
    rho_a = np.array([0.0, 0.0, 1e-16, 1e-13, 1e-12, 0.3, 5.0, 1e-10, 0.0, 1e-12, 3e-15, 2e-3])
    rho_b = np.array([0.0, 1e-12, 1e-16, 0.0, 0.0, 0.0, 0.0, 0.0, 0.7, 1e-12, 1e-13, 0.0])
    return (rho, *_channel(rho, rng, False)), ((rho_a, *_channel(rho_a, rng, True)),
                                               (rho_b, *_channel(rho_b, rng, True)))


def _reference(code, points, spin, threshold=0.0):
    """libxc's energy density, vrho, vsigma and vtau in our layout.

    libxc returns the energy per particle of the screened densities, in which a spin density below the
    component's ``threshold`` is raised to it: the energy density is that times the screened total density.
    (PySCF multiplies by the unscreened one; the two differ by threshold / n relative, below 1e-8 for r2SCAN's
    1e-11 at rho = 2e-3, and only where one spin density vanishes.)
    """
    def rows(rho, grad, tau):
        return np.vstack([rho, grad, np.zeros_like(rho), tau])

    if spin == 0:
        inp, n = rows(*points), points[0]
    else:
        inp = (rows(*points[0]), rows(*points[1]))
        n = np.maximum(points[0][0], threshold) + np.maximum(points[1][0], threshold)
    exc, (vrho, vsigma, _, vtau) = libxc.eval_xc(code, inp, spin, deriv=1)[:2]
    if spin == 1:
        vrho, vsigma, vtau = vrho.T, vsigma.T, vtau.T
    return exc * n, vrho, vsigma, vtau


def _inputs(points, spin, device, dtype=torch.float64):
    if spin == 0:
        rho, grad, tau = points
        sigma = (grad * grad).sum(0)
    else:
        (rho_a, grad_a, tau_a), (rho_b, grad_b, tau_b) = points
        rho, tau = np.stack([rho_a, rho_b]), np.stack([tau_a, tau_b])
        sigma = np.stack([(grad_a * grad_a).sum(0), (grad_a * grad_b).sum(0), (grad_b * grad_b).sum(0)])
    return [torch.tensor(x, dtype=dtype, device=device, requires_grad=True) for x in (rho, sigma, tau)]


def _compare(functional, code, points, spin, device, what="random", full_energy=True):
    """e, vrho, vsigma and vtau against libxc; at fully polarized points (a spin density of 0) the energy only.

    There the empty channel's density is raised to the threshold, and 1 - zeta = 2 rho_b / n carries up to ~30%
    rounding in both codes: it enters the derivatives through (1 - zeta)^(2/3)-like terms (vrho ~1e-8 relative
    for SCAN correlation, the minority vtau of SCAN/r2SCAN correlation 16%, TPSS's C(zeta, xi) more). The
    energies agree (unless not ``full_energy``); test_exchange_at_full_polarization_obeys_spin_scaling checks
    exchange derivatives there.
    """
    ref = _reference(code, points, spin, getattr(functional, "dens_threshold", 0.0))
    rho, sigma, tau = _inputs(points, spin, device)
    e = functional(rho, sigma, spin=spin, tau=tau)
    ours = [e, *torch.autograd.grad(e.sum(), (rho, sigma, tau))]
    if spin == 1:
        full = (points[0][0] == 0) != (points[1][0] == 0)
        ours, ref = [v[..., ~full] for v in ours], [v[..., ~full] for v in ref]
        if full_energy:
            e_ref = _reference(code, points, spin, getattr(functional, "dens_threshold", 0.0))[0]
            torch.testing.assert_close(e, torch.as_tensor(e_ref), rtol=RTOL, atol=ATOL, check_device=False)
    for name, value, expected in zip(("e", "vrho", "vsigma", "vtau"), ours, ref):
        assert torch.isfinite(value).all()
        torch.testing.assert_close(value, torch.as_tensor(expected), rtol=RTOL, atol=ATOL, check_device=False,
                                   msg=lambda m, name=name: f"{code} {what} spin={spin} {name}: {m}")


@pytest.mark.parametrize("spin", [0, 1])
@pytest.mark.parametrize("component", list(COMPONENTS))
def test_component_matches_libxc(component, spin, device):
    cls, code = COMPONENTS[component]
    rng = np.random.default_rng(3)
    _compare(cls().to(device), code, _random_points(rng)[spin], spin, device)
    # TPSS correlation at zeta = 1: its C(zeta, xi) holds (1 - zeta^2) (1 - zeta)^(-4/3), rounding noise there
    # in libxc and here (5% of the energy at rho_a = 5, rho_b = 0).
    _compare(cls().to(device), code, _small_points(rng)[spin], spin, device, what="small",
             full_energy=component != "tpss_c")


@pytest.mark.parametrize("component", ["tpss_x", "scan_x", "r2scan_x"])
def test_exchange_at_full_polarization_obeys_spin_scaling(component, device):
    """E_x[rho_a, 0] = E_x[2 rho_a] / 2 with libxc's restricted E_x, energies and potentials."""
    cls, code = COMPONENTS[component]
    rho_a = np.array([2.0, 100.0, 30.0, 1e-3, 5.0, 0.3, 0.02])
    grad_a, tau_a = _channel(rho_a, np.random.default_rng(2), True)
    tau_a[6] = 1e-3  # not tau = 0: the two paths floor tau differently (1e-20 per spin, or the total)
    zero = np.zeros_like(rho_a)
    ref = _reference(code, (2 * rho_a, 2 * grad_a, 2 * tau_a), 0)
    rho, sigma, tau = _inputs(((rho_a, grad_a, tau_a), (zero, np.zeros_like(grad_a), zero)), 1, device)
    e = cls().to(device)(rho, sigma, spin=1, tau=tau)
    vrho, vsigma, vtau = torch.autograd.grad(e.sum(), (rho, sigma, tau))
    close = {"rtol": RTOL, "atol": ATOL, "check_device": False}
    torch.testing.assert_close(e, torch.as_tensor(ref[0] / 2), **close)
    torch.testing.assert_close(vrho[0], torch.as_tensor(ref[1]), **close)
    torch.testing.assert_close(vsigma[0], torch.as_tensor(2 * ref[2]), **close)
    torch.testing.assert_close(vtau[0], torch.as_tensor(ref[3]), **close)


@pytest.mark.parametrize("spin", [0, 1])
@pytest.mark.parametrize("name", NAMES)
def test_named_functional_matches_pyscf(name, spin, device):
    functional = get_functional(name).to(device)
    assert functional.family == libxc.xc_type(name).lower() == "mgga"
    assert functional.hyb == libxc.hybrid_coeff(name) == 0
    _compare(functional, name, _random_points(np.random.default_rng(5), n=40)[spin], spin, device)


def test_names_and_bad_inputs():
    assert [type(c) for c in get_functional("TPSS").components] == [xc.TPSSExchange, xc.TPSSCorrelation]
    assert [type(c) for c in get_functional("scan,scan").components] == [xc.SCANExchange, xc.SCANCorrelation]
    assert [type(c) for c in get_functional("r2scan").components] == [xc.R2SCANExchange, xc.R2SCANCorrelation]
    assert get_functional("pbe,tpss").family == "mgga" and get_functional("pbe").family == "gga"
    rho = torch.rand(4, dtype=torch.float64)
    with pytest.raises(XCError, match="meta-GGA: pass tau"):
        get_functional("scan")(rho, rho)
    with pytest.raises(XCError, match="tau must be a tensor shaped like rho"):
        get_functional("scan")(rho, rho, tau=rho[:3])
    # LDA/GGA components take and ignore tau; a GGA functional called with tau gives the same energy
    pbe = get_functional("pbe")
    torch.testing.assert_close(pbe(rho, rho, tau=rho), pbe(rho, rho))


# ---------------------------------------------------------------------------------------------------------------
# SCF, forces and parameter gradients against PySCF (same basis, grid and functional; PySCF's density-based grid
# pruning off, as dft/grids.py keeps every point). At grid level 1 TPSS/UKS OH does not converge in either
# program (both drift by ~4e-11 Ha a cycle), so the open shell is NH2 (test_forces.py's).

MOLECULES = {  # name: (atom in Angstrom, spin)
    "H2O": ("O 0 0 0.13; H 0 0.74 -0.47; H 0 -0.79 -0.45", 0),
    "NH2": ("N 0 0 0.1; H 0 0.95 -0.3; H 0 -0.98 -0.32", 1),
}
BASIS, LEVEL, CONV_TOL = "6-31g", 1, 1e-11
ENERGY_TOL = 1e-8  # Ha: PySCF converges to conv_tol = 1e-11; the functionals agree pointwise to ~1e-14
FORCE_TOL = 1e-6  # Ha/Bohr, as tests/dft/test_forces.py


def _pyscf(name, functional, gradient=False):
    atom, spin = MOLECULES[name]
    mol = gto.M(atom=atom, basis=BASIS, spin=spin, verbose=0)
    mf = (pyscf_dft.UKS if spin else pyscf_dft.RKS)(mol, xc=functional).set(conv_tol=CONV_TOL, small_rho_cutoff=0)
    mf.grids.level = LEVEL
    mf.kernel()
    assert mf.converged
    return mf.e_tot, (mf.nuc_grad_method().kernel() if gradient else None)


def _ours(name, functional, coords_grad=False):
    atom, spin = MOLECULES[name]
    mol = dft.Molecule(atom, BASIS, spin=spin)
    if coords_grad:
        mol.coords.requires_grad_()
    mf = (dft.UKS if spin else dft.RKS)(mol, xc=functional, grid_level=LEVEL, conv_tol=CONV_TOL)
    return mol, mf, mf.kernel(strict=True)


@pytest.mark.parametrize("functional", ["tpss", "scan", "r2scan"])
@pytest.mark.parametrize("name", ["H2O", "NH2"], ids=["RKS", "UKS"])
def test_scf_energy_matches_pyscf(name, functional):
    _, _, energy = _ours(name, functional)
    e_ref, _ = _pyscf(name, functional)
    assert abs(energy.item() - e_ref) < ENERGY_TOL


@pytest.mark.parametrize("functional", ["tpss", "scan", "r2scan"])
@pytest.mark.parametrize("name", ["H2O", "NH2"], ids=["RKS", "UKS"])
def test_forces_match_pyscf(name, functional):
    """Autograd of the SCF energy w.r.t. mol.coords against PySCF's analytic meta-GGA gradients (grid fixed)."""
    mol, _, energy = _ours(name, functional, coords_grad=True)
    energy.backward()
    e_ref, grad_ref = _pyscf(name, functional, gradient=True)
    assert abs(energy.item() - e_ref) < ENERGY_TOL
    np.testing.assert_allclose(mol.coords.grad.numpy(), grad_ref, atol=FORCE_TOL, rtol=0)


def _water_grid():
    mol = dft.Molecule(MOLECULES["H2O"][0], BASIS)
    grid = Grid(mol, level=0, deriv=1)
    ref_grid = pyscf_dft.gen_grid.Grids(mol.pyscf)
    ref_grid.level = 0
    ref_grid.build()
    return mol, grid, ref_grid


@pytest.mark.parametrize("spin", [0, 1])
@pytest.mark.parametrize("functional", ["tpss", "scan", "r2scan"])
def test_vxc_and_kernel_match_pyscf(functional, spin):
    """V_xc (by autograd, through tau) and its derivative (the XC kernel in (rho, sigma, tau), as dft.response
    applies it) against PySCF's nr_rks/nr_uks and nr_rks_fxc/nr_uks_fxc on the same grid."""
    from pyscf.scf import hf as pyscf_hf

    mol, grid, ref_grid = _water_grid()
    ni = pyscf_dft.numint.NumInt()
    dm0 = pyscf_hf.init_guess_by_minao(mol.pyscf)
    dm1 = np.random.default_rng(0).normal(size=dm0.shape) * 0.1
    dm1 = dm1 + dm1.T
    if spin:
        dm0, dm1 = np.stack([dm0 * 0.6, dm0 * 0.4]), np.stack([dm1, 0.5 * dm1 @ dm1])
        _, exc_ref, vxc_ref = ni.nr_uks(mol.pyscf, ref_grid, functional, dm0)
        fxc_ref = ni.nr_uks_fxc(mol.pyscf, ref_grid, functional, dm0, dm1, hermi=1)
    else:
        _, exc_ref, vxc_ref = ni.nr_rks(mol.pyscf, ref_grid, functional, dm0)
        fxc_ref = ni.nr_rks_fxc(mol.pyscf, ref_grid, functional, dm0, dm1, hermi=1)
    dm = torch.as_tensor(dm0).requires_grad_()
    exc, vxc = scf.get_vxc(get_functional(functional), grid, dm)
    assert float(exc) == pytest.approx(exc_ref, abs=1e-10)
    np.testing.assert_allclose(vxc.detach().numpy(), vxc_ref, atol=1e-10)
    (response,) = torch.autograd.grad(vxc, dm, torch.as_tensor(dm1))
    np.testing.assert_allclose(((response + response.mT) / 2).numpy(), fxc_ref, atol=1e-9)


def test_kernel_fast_path_matches_double_autograd():
    """The cached kernel of _XCPotential (first backward) equals double backward through the functional."""
    from pyscf.scf import hf as pyscf_hf

    mol = dft.Molecule("H 0 0 0; H 0 0 0.74", BASIS)
    grid = Grid(mol, level=0, deriv=1)
    functional = get_functional("r2scan")
    d0 = torch.as_tensor(pyscf_hf.init_guess_by_minao(mol.pyscf))
    d1 = torch.as_tensor(np.random.default_rng(1).normal(size=d0.shape))
    dm = d0.clone().requires_grad_()
    (fast,) = torch.autograd.grad(scf.get_vxc(functional, grid, dm)[1], dm, d1)
    _, vxc = scf._vxc(functional, list(grid.blocks()), dm, differentiable=True)
    (slow,) = torch.autograd.grad(scf._symmetrized(vxc), dm, d1)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-11)


def test_gradient_wrt_trainable_constant_matches_finite_differences():
    """dE/dk1 of SCAN exchange at the converged SCF (variational energy) against central differences of SCFs."""
    atom = MOLECULES["H2O"][0]

    def energy(k1, requires_grad=False):
        exchange = xc.SCANExchange(k1=k1)
        if requires_grad:
            exchange.make_trainable("k1")
        functional = dft.xc.XCFunctional([exchange, xc.SCANCorrelation()], [1.0, 1.0], name="scan")
        mf = dft.RKS(dft.Molecule(atom, BASIS), xc=functional, grid_level=0, conv_tol=1e-12, conv_tol_grad=1e-8)
        return mf.kernel(strict=True), exchange

    e, exchange = energy(0.065, requires_grad=True)
    (d_k1,) = torch.autograd.grad(e, exchange.k1)
    h = 1e-4
    fd = (energy(0.065 + h)[0].item() - energy(0.065 - h)[0].item()) / (2 * h)
    assert d_k1.item() == pytest.approx(fd, rel=1e-6, abs=1e-8)
