"""Geometry optimization against a reference optimization of PySCF's energy surface run in the test.

geomeTRIC and pyberny (PySCF's optimizers) are not installed, so the reference is scipy's L-BFGS-B driven by
PySCF energies and analytic gradients, converged tightly. Both sides move the grid with the atoms
(``grid_response``) so that energies and gradients agree, and both drop the gradient's rigid translation and
rotation components (the grid does not turn with the molecule); optimized geometries are compared through
their interatomic distances, which do not depend on the molecule's orientation.
"""

import numpy as np
import pytest
import scipy.optimize
from pyscf import dft as pyscf_dft
from pyscf import gto
from pyscf.lib import param

import dft

MOLECULES = {  # name: (atom in Angstrom, functional), off equilibrium
    "H2O": ("O 0 0 0.13; H 0 0.74 -0.47; H 0 -0.79 -0.45", "pbe"),
    "NH3": ("N 0 0 0.1; H 0 0.95 -0.25; H 0.82 -0.47 -0.25; H -0.8 -0.48 -0.27", "lda,vwn"),
}
BASIS = "6-31g"
LEVEL = 1
CONV_TOL = 1e-11
TIGHT = {"convergence_energy": 1e-9, "convergence_grms": 3e-6, "convergence_gmax": 3e-6,
         "convergence_drms": 1e-5, "convergence_dmax": 1e-5}


def rigid_free(coords, gradient):
    """The gradient (natm, 3) without its net force and its torque about the centroid (least squares)."""
    centred = coords - coords.mean(0)
    basis = [np.tile(np.eye(3)[x], (len(coords), 1)).ravel() for x in range(3)]
    basis += [np.cross(np.eye(3)[x], centred).ravel() for x in range(3)]
    q, _ = np.linalg.qr(np.array(basis).T)
    flat = gradient.ravel()
    return flat - q @ (q.T @ flat)


def pyscf_optimum(atom, xc):
    mol = gto.M(atom=atom, basis=BASIS, verbose=0)
    last = {"dm": None}

    def energy_and_gradient(x):
        moved = mol.set_geom_(x.reshape(-1, 3), unit="bohr", inplace=False)
        mf = pyscf_dft.RKS(moved, xc=xc).set(conv_tol=CONV_TOL, small_rho_cutoff=0)
        mf.grids.level = LEVEL
        mf.kernel(dm0=last["dm"])
        assert mf.converged
        last["dm"] = mf.make_rdm1()
        gradients = mf.nuc_grad_method()
        gradients.grid_response = True
        return mf.e_tot, rigid_free(x.reshape(-1, 3), gradients.kernel())

    result = scipy.optimize.minimize(energy_and_gradient, mol.atom_coords().ravel(), jac=True, method="L-BFGS-B",
                                     options={"gtol": 1e-7, "ftol": 1e-15, "maxiter": 200})
    assert np.abs(result.jac).max() < 1e-6, result.message
    return result.x.reshape(-1, 3), result.fun


def distances(coords):
    return np.linalg.norm(coords[:, None] - coords[None], axis=-1)


@pytest.mark.parametrize("name", ["H2O", "NH3"])
def test_optimized_geometry_matches_pyscf(name, device, tmp_path):
    atom, xc = MOLECULES[name]
    reference, e_reference = pyscf_optimum(atom, xc)
    mol = dft.Molecule(atom, BASIS, device=device)
    path = tmp_path / "trajectory.xyz"
    result = dft.optimize_geometry(mol, xc=xc, conv_params=TIGHT, trajectory=path, grid_level=LEVEL,
                                   grid_response=True, conv_tol=CONV_TOL)
    assert result.converged, result.message
    ours = result.mol.coords.cpu().numpy()
    np.testing.assert_allclose(distances(ours) * param.BOHR, distances(reference) * param.BOHR, atol=1e-4)
    assert float(result.energy) == pytest.approx(e_reference, abs=1e-7)

    # The trajectory: one frame per step, the start first and the optimum last, energies in the comments.
    frames = path.read_text().splitlines()
    per_frame = mol.natm + 2
    assert len(frames) == per_frame * len(result.history) == per_frame * (result.n_steps + 1)
    assert frames[1] == f"step 0 E = {result.history[0]['energy']:.10f} Ha"
    last = tmp_path / "last.xyz"
    last.write_text("\n".join(frames[-per_frame:]) + "\n")
    np.testing.assert_allclose(dft.Molecule.from_xyz(last, BASIS).coords.numpy(), ours, atol=1e-9)
    assert result.history[-1]["grad_max"] < TIGHT["convergence_gmax"]
    assert result.history[0]["energy"] > result.history[-1]["energy"]


def test_default_criteria_and_bad_options():
    atom, xc = MOLECULES["H2O"]
    mol = dft.Molecule(atom, "sto-3g")
    result = dft.optimize_geometry(mol, xc=xc, grid_level=LEVEL)
    assert result.converged and result.history[-1]["grad_max"] < dft.geomopt.CONV_PARAMS["convergence_gmax"]
    assert "converged after" in result.message
    not_done = dft.optimize_geometry(mol, xc=xc, grid_level=LEVEL, max_steps=1)
    assert not not_done.converged and "max_steps = 1" in not_done.message
    with pytest.raises(KeyError, match="convergence_gmax"):
        dft.optimize_geometry(mol, conv_params={"gmax": 1e-3})
