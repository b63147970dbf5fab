"""Kohn-Sham DFT on a small molecule: energy, forces by autograd (checked against PySCF's analytic gradient),
geometry optimization, harmonic frequencies and the dipole moment.

Water, starting from a distorted geometry, with PBE in the 6-31G basis on PySCF's default grid (level 3); with
--quick, STO-3G on a coarse grid (level 1). PySCF supplies the basis, integrals and grid; the SCF, the
functional and every derivative are torch, so forces are one ``torch.autograd.grad`` of the energy and the
dipole is also -dE/dF, a derivative with respect to an electric field. Atomic units throughout (Hartree, Bohr,
e Bohr); geometries are given in Angstrom.

Run:  .venv/bin/python tutorials/dft_energies_forces.py [--out DIR] [--quick]

--quick uses the smaller basis and grid (the tests run it so). Outputs go to DIR (default
./tutorial_output/dft_energies_forces): optimization.xyz (one frame per optimizer step) and optimization.png.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from pyscf import dft as pyscf_dft  # noqa: E402
from pyscf.data import nist  # noqa: E402
from pyscf.lib import param  # noqa: E402

import dft  # noqa: E402
from dft.geomopt import CONV_PARAMS  # noqa: E402

NAME = Path(__file__).stem
ATOM = "O 0 0 0.13; H 0 0.74 -0.47; H 0 -0.79 -0.45"  # Angstrom, off equilibrium (and not symmetric)
XC = "pbe"
DEBYE = 2.541746  # Debye per atomic unit of dipole moment (e Bohr)


def pyscf_reference(mol, xc, grid_level):
    """PySCF's own calculation with the same settings: energy (Hartree) and analytic gradient (Hartree/Bohr)."""
    mf = pyscf_dft.RKS(mol.pyscf, xc=xc)
    mf.grids.level = grid_level
    mf.small_rho_cutoff = 0  # PySCF prunes low-density grid points by default; dft keeps them all
    mf.conv_tol = 1e-10
    energy = mf.kernel()
    return energy, mf.nuc_grad_method().kernel()


def geometry(mol):
    """O-H bond lengths (Angstrom) and the H-O-H angle (degrees) of water (atoms O, H, H)."""
    o, h1, h2 = mol.coords.detach() * param.BOHR
    r1, r2 = (h1 - o).norm(), (h2 - o).norm()
    angle = torch.rad2deg(torch.arccos(((h1 - o) @ (h2 - o)) / (r1 * r2)))
    return float(r1), float(r2), float(angle)


def plot_optimization(history, path):
    steps = range(len(history))
    energies = [h["energy"] - history[-1]["energy"] for h in history[:-1]]  # the last one is 0
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.semilogy(steps[:-1], energies, "o-")
    left.set_xlabel("step")
    left.set_ylabel("E - E_final (Hartree)")
    right.semilogy(steps, [h["grad_max"] for h in history], "o-", label="max atomic gradient")
    right.axhline(CONV_PARAMS["convergence_gmax"], color="k", ls="--", label="geomeTRIC threshold")
    right.set_xlabel("step")
    right.set_ylabel("Hartree/Bohr")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(out=f"tutorial_output/{NAME}", quick=False):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    basis, grid_level = ("sto-3g", 1) if quick else ("6-31g", 3)
    print(f"water, {XC.upper()}/{basis}, grid level {grid_level}")

    # Energy. Setting requires_grad on the coordinates (Bohr) makes the energy differentiable w.r.t. them.
    mol = dft.Molecule(ATOM, basis=basis)
    mol.coords.requires_grad_()
    mf = dft.RKS(mol, xc=XC, grid_level=grid_level)
    energy = mf.kernel(strict=True)  # strict: raise rather than warn if the SCF does not converge
    print(f"energy {energy.item():.8f} Ha after {mf.cycles} SCF cycles; HOMO-LUMO gap "
          f"{dft.homo_lumo_gap(mf).item() * nist.HARTREE2EV:.2f} eV")
    print("  components (Ha): " + ", ".join(f"{k} {v.item():.6f}" for k, v in mf.energy_components.items()))

    # Forces: one backward pass. kernel() returns the energy in its variational form, so this is the exact
    # derivative without differentiating through the SCF iterations.
    (gradient,) = torch.autograd.grad(energy, mol.coords)
    forces = -gradient
    reference_energy, reference_gradient = pyscf_reference(mol, XC, grid_level)
    difference = float((gradient - torch.as_tensor(reference_gradient)).abs().max())
    print(f"forces (Ha/Bohr) by autograd; largest difference from PySCF's analytic gradient {difference:.1e} "
          f"(energies differ by {abs(energy.item() - reference_energy):.1e} Ha)")
    for symbol, force in zip(mol.symbols, forces.tolist()):
        print(f"  {symbol:2s} " + " ".join(f"{f:+.6f}" for f in force))

    # Geometry optimization: L-BFGS on the energy surface, stopped by geomeTRIC's five criteria (as PySCF's
    # geometric_solver sets them); each step's geometry goes to an XYZ trajectory.
    trajectory = out / "optimization.xyz"
    result = dft.optimize_geometry(mol, xc=XC, grid_level=grid_level, trajectory=trajectory)
    r1, r2, angle = geometry(result.mol)
    print(f"geometry optimization: {result.message.split(' (')[0]}; E = {float(result.energy):.8f} Ha "
          f"({1000 * (float(result.energy) - energy.item()):.3f} mHa); O-H {r1:.4f}, {r2:.4f} A, H-O-H {angle:.2f} deg")

    # Properties at the optimized geometry: harmonic frequencies from the analytic Hessian (autograd through
    # the implicitly differentiated SCF), and the dipole moment from the density ...
    mf = dft.RKS(result.mol, xc=XC, grid_level=grid_level)
    mf.kernel(strict=True)
    frequencies = dft.frequencies(mf)
    print("harmonic frequencies (cm^-1): " + ", ".join(f"{float(f):.1f}" for f in frequencies))
    dipole = dft.dipole(mf)
    # ... and again as -dE/dF, the derivative of the energy with respect to a uniform electric field at F = 0.
    field = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    field_energy = dft.RKS(result.mol, xc=XC, grid_level=grid_level, field=field).kernel(strict=True)
    (dipole_from_field,) = torch.autograd.grad(-field_energy, field)
    print(f"dipole {float(dipole.norm()):.5f} a.u. = {float(dipole.norm()) * DEBYE:.4f} D; -dE/dF gives "
          f"{float(dipole_from_field.norm()):.5f} a.u.")

    files = {"trajectory": trajectory, "plot": out / "optimization.png"}
    plot_optimization(result.history, files["plot"])
    print(f"outputs: {', '.join(str(path) for path in files.values())}")
    return {"atom": ATOM, "basis": basis, "xc": XC, "grid_level": grid_level, "energy": energy.detach(),
            "forces": forces, "optimization": result, "frequencies": frequencies, "dipole": dipole,
            "dipole_from_field": dipole_from_field, "files": files}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=f"tutorial_output/{NAME}", help="folder for the outputs")
    parser.add_argument("--quick", action="store_true", help="a reduced run (as the tests run it)")
    main(**vars(parser.parse_args()))
