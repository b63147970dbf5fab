"""Derivatives of DFT results, diffsci vs PySCF, side by side in one run.

1. Energy + forces: diffsci ``kernel()`` + ``backward()`` against PySCF's SCF + ``nuc_grad_method().kernel()``.
2. XC-parameter gradients (PySCF has none): for a PBE with trainable exchange kappa and mu, the cost of one SCF,
   of SCF + backward of the energy (variational form), and of SCF + backward of the dipole (a non-variational
   output, through the implicit response), as multiples of one SCF.
3. Nuclear Hessian: ``dft.hessian`` against PySCF's SCF + ``mf.Hessian().kernel()``.

Same molecule, basis, functional, grid level and conv_tol on both sides; PySCF keeps its defaults otherwise
(its density-based grid pruning included). Both tools are imported and warmed up on a small molecule first, so
one-time costs (imports, lazy initialization) are outside the clock. Results are checked against each other.

    .venv/bin/python benchmarks/dft_grad.py [--quick] [--threads N]
"""

import argparse
import time

import numpy as np
import pyscf
import torch
from pyscf import dft as pyscf_dft
from pyscf import gto

import dft
from dft.xc import PBECorrelation, PBEExchange, XCFunctional

WATER = "O 0 0 0.117; H 0 0.757 -0.470; H 0 -0.757 -0.470"
BENZENE = ("C 0 1.396 0; C 1.209 0.698 0; C 1.209 -0.698 0; C 0 -1.396 0; C -1.209 -0.698 0; C -1.209 0.698 0; "
           "H 0 2.479 0; H 2.147 1.240 0; H 2.147 -1.240 0; H 0 -2.479 0; H -2.147 -1.240 0; H -2.147 1.240 0")
FORCE_CASES = [  # (label, atom, basis, xc, in --quick)
    ("water B3LYP/def2-SVP", WATER, "def2-svp", "b3lyp", True),
    ("benzene PBE/def2-SVP", BENZENE, "def2-svp", "pbe", False),
]
CONV_TOL = 1e-9
GRID_LEVEL = 3


def clock(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def pyscf_mf(atom, basis, xc):
    mf = pyscf_dft.RKS(gto.M(atom=atom, basis=basis, verbose=0), xc=xc).set(conv_tol=CONV_TOL)
    mf.grids.level = GRID_LEVEL
    return mf


def forces(atom, basis, xc):
    def pyscf_run():
        mf = pyscf_mf(atom, basis, xc)
        mf.kernel()
        return mf.e_tot, mf.nuc_grad_method().kernel()

    def diffsci_run():
        mol = dft.Molecule(atom, basis)
        mol.coords.requires_grad_()
        energy = dft.RKS(mol, xc=xc, grid_level=GRID_LEVEL, conv_tol=CONV_TOL).kernel()
        energy.backward()
        return float(energy.detach()), mol.coords.grad.numpy()

    (e_ref, g_ref), t_ref = clock(pyscf_run)
    (e, g), t = clock(diffsci_run)
    return t_ref, t, f"|dE| {abs(e - e_ref):.1e} Ha, max|dF| {np.abs(g - g_ref).max():.1e} Ha/Bohr"


def tunable_pbe():
    exchange = PBEExchange().make_trainable("kappa", "mu")
    return XCFunctional([exchange, PBECorrelation()], [1.0, 1.0], name="tunable pbe")


def xc_parameter_gradients(atom, basis):
    xc = tunable_pbe()

    def scf(grad):
        mf = dft.RKS(dft.Molecule(atom, basis), xc=xc, grid_level=GRID_LEVEL, conv_tol=CONV_TOL)
        with torch.set_grad_enabled(grad):
            energy = mf.kernel()
        return mf, energy

    _, t_scf = clock(lambda: scf(False))
    _, t_energy = clock(lambda: torch.autograd.grad(scf(True)[1], list(xc.parameters())))
    _, t_dipole = clock(lambda: torch.autograd.grad(dft.dipole(scf(True)[0])[2], list(xc.parameters())))
    return t_scf, t_energy, t_dipole


def hessians(atom, basis, xc):
    def pyscf_run():
        mf = pyscf_mf(atom, basis, xc)
        mf.kernel()
        return mf.Hessian().kernel()

    def diffsci_run():
        mf = dft.RKS(dft.Molecule(atom, basis), xc=xc, grid_level=GRID_LEVEL, conv_tol=CONV_TOL)
        mf.kernel()
        return dft.hessian(mf).numpy()

    h_ref, t_ref = clock(pyscf_run)
    h, t = clock(diffsci_run)
    # PySCF prunes its grid by density (small_rho_cutoff); diffsci keeps every point: expect ~1e-6 differences.
    return t_ref, t, f"max|dH| {np.abs(h - h_ref.transpose(0, 2, 1, 3)).max():.1e} Ha/Bohr^2"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="water only")
    parser.add_argument("--threads", type=int, default=0, help="threads for both tools (default: their own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        pyscf.lib.num_threads(args.threads)
    forces("H 0 0 0; H 0 0 0.74", "sto-3g", "b3lyp")  # warm-up: imports and lazy initialization, both tools
    hessians("H 0 0 0; H 0 0 0.74", "sto-3g", "pbe")
    xc_parameter_gradients("H 0 0 0; H 0 0 0.74", "sto-3g")

    print(f"torch threads {torch.get_num_threads()}, PySCF threads {pyscf.lib.num_threads()}, grid level "
          f"{GRID_LEVEL}, conv_tol {CONV_TOL:g}\n")
    print(f"{'energy + forces':<28}{'PySCF s':>9}{'diffsci s':>11}{'ratio':>8}   check")
    for label, atom, basis, xc, quick in FORCE_CASES:
        if quick or not args.quick:
            t_ref, t, check = forces(atom, basis, xc)
            print(f"{label:<28}{t_ref:9.2f}{t:11.2f}{t / t_ref:8.2f}   {check}")

    t_scf, t_energy, t_dipole = xc_parameter_gradients(WATER, "def2-svp")
    print(f"\nXC-parameter gradient, water PBE(kappa, mu)/def2-SVP: one SCF {t_scf:.2f} s")
    print(f"  SCF + d(energy)/d(theta): {t_energy:.2f} s = {t_energy / t_scf:.2f} x one SCF")
    print(f"  SCF + d(dipole_z)/d(theta) through the response: {t_dipole:.2f} s = {t_dipole / t_scf:.2f} x one SCF")

    print(f"\n{'Hessian (SCF included)':<28}{'PySCF s':>9}{'diffsci s':>11}{'ratio':>8}   check")
    for label, basis, xc in [("water PBE/def2-SVP", "def2-svp", "pbe")] + (
            [] if args.quick else [("water B3LYP/def2-SVP", "def2-svp", "b3lyp")]):
        t_ref, t, check = hessians(WATER, basis, xc)
        print(f"{label:<28}{t_ref:9.2f}{t:11.2f}{t / t_ref:8.2f}   {check}")


if __name__ == "__main__":
    main()
