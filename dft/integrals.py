"""Gaussian-basis integrals from PySCF (libcint), converted once to float64 tensors on the molecule's device.

All integrals are in atomic units (Hartree, Bohr) over the spherical AO basis of ``mol.pyscf``.
Two-electron integrals come as the full 4-index tensor, its 4-fold or 8-fold packed forms, or a
density-fitting factor B with (ij|kl) ~= sum_P B[P, i, j] B[P, k, l]; ``scf.get_jk`` accepts each.

When ``mol.coords`` requires grad, every integral returned here is a differentiable function of it, to second
order (forces, and Hessians by double backward), with derivatives from PySCF's derivative integrals
(``dft.integral_grad``); otherwise it is a plain tensor.
"""

import numpy as np
import torch
from pyscf import ao2mo, df, lib

from . import integral_grad
from .errors import DFTError, OptionError
from .molecule import _check_basis

# PySCF's threshold for dropping near-singular auxiliary combinations (df.incore.LINEAR_DEP_THR).
AUX_LINDEP = 1e-7


def _tensor(mol, array):
    return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float64).to(mol.device)


def _one_electron(mol, name, derivative_names, centres=None):
    value = _tensor(mol, mol.pyscf.intor_symmetric(name))
    return integral_grad.attach(mol, value, lambda v: integral_grad.TwoCentreDerivatives(
        mol.pyscf, v, derivative_names, centres))


def overlap(mol):
    """Overlap S_ij = <i|j>, (nao, nao)."""
    return _one_electron(mol, "int1e_ovlp", integral_grad.OVERLAP)


def kinetic(mol):
    """Kinetic energy T_ij = <i|-1/2 nabla^2|j>, (nao, nao), Hartree."""
    return _one_electron(mol, "int1e_kin", integral_grad.KINETIC)


def nuclear_attraction(mol):
    """Electron-nuclear attraction V_ij = <i|-sum_A Z_A/|r - R_A||j>, (nao, nao), Hartree."""
    return _one_electron(mol, "int1e_nuc", integral_grad.RINV, integral_grad.nuclear_centres(mol.pyscf))


def hcore(mol):
    """Core Hamiltonian T + V, (nao, nao), Hartree."""
    return kinetic(mol) + nuclear_attraction(mol)


def dipole(mol):
    """Electronic dipole integrals <i|r|j> about the origin (0, 0, 0), (3, nao, nao), Bohr. The origin stays
    fixed when the nuclei move; derivatives w.r.t. ``mol.coords`` are first order only (see
    ``integral_grad.DipoleDerivatives``)."""
    with mol.pyscf.with_common_orig((0, 0, 0)):
        value = _tensor(mol, mol.pyscf.intor_symmetric("int1e_r", comp=3))
    return integral_grad.attach(mol, value, lambda v: integral_grad.DipoleDerivatives(mol.pyscf, v))


def eri(mol, max_memory=4000, aosym="s1"):
    """Electron repulsion integrals (ij|kl) in chemists' notation, Hartree, in one of PySCF's symmetry forms.

    Args:
        max_memory: largest tensor allowed, MB; above it use :func:`density_fit`.
        aosym: ``"s1"`` the full (nao, nao, nao, nao) tensor; ``"s4"`` the 4-fold packed (npair, npair) over
            pairs i >= j (npair = nao (nao + 1) / 2, row-major lower-triangle order), a quarter of the memory,
            enough for Coulomb; ``"s8"`` the 8-fold packed (npair (npair + 1) / 2,) of PySCF's incore SCF, an
            eighth of the memory, whose J and K ``scf.get_jk`` builds with PySCF's incore contraction on the
            CPU. ``"s1"`` and ``"s4"`` are differentiable w.r.t. ``mol.coords``: Coulomb matrices built from
            ``"s4"`` take their first coordinate derivatives by density-matrix contractions
            (``integral_grad.coulomb``); any other use, and second derivatives, go through full-size (nao,)*4
            tensors. ``"s8"`` has no coordinate derivatives.

    Returns:
        Tensor shaped as ``aosym`` says.
    """
    nao = mol.nao
    npair = nao * (nao + 1) // 2
    sizes = {"s1": nao**4, "s4": npair**2, "s8": npair * (npair + 1) // 2}
    if aosym not in sizes:
        raise OptionError(f"aosym must be 's1', 's4' or 's8', got {aosym!r}.")
    megabytes = sizes[aosym] * 8 / 1e6
    if megabytes > max_memory:
        raise DFTError(f"the ERI tensor of {mol!r} needs {megabytes:.0f} MB (> max_memory={max_memory} MB); "
                       "use density_fit=True, or raise max_memory.")
    if aosym == "s8" and (mol.device.type != "cpu" or torch.is_grad_enabled() and mol.coords.requires_grad):
        raise DFTError(f"8-fold packed ERIs are contracted by PySCF on the CPU, without coordinate derivatives; "
                       f"{mol!r} is on {mol.device} with coords.requires_grad={mol.coords.requires_grad}: use "
                       "aosym='s1' or 's4'.")
    unique = mol.pyscf.intor("int2e", aosym="s8")
    if aosym == "s8":
        return _tensor(mol, unique)
    # libcint computes the 8-fold unique integrals; unpacking is a fast C loop.
    packed = aosym == "s4"
    value = _tensor(mol, lib.unpack_tril(unique) if packed else ao2mo.restore(1, unique, nao))
    return integral_grad.attach(mol, value, lambda v: integral_grad.ERIDerivatives(mol.pyscf, v, packed))


def auxiliary_basis(mol, hybrid=True):
    """The auxiliary basis PySCF's ``mf.density_fit()`` picks: the J-fit partner of ``mol.basis`` for pure
    functionals, its JK-fit partner for hybrids and Hartree-Fock (``df.addons.predefined_auxbasis``), and
    PySCF's default (``df.addons.make_auxbasis``) when the basis has none."""
    if isinstance(mol.basis, str):
        # predefined_auxbasis asks of the functional only whether it is a hybrid.
        auxbasis = df.addons.predefined_auxbasis(mol.pyscf, mol.basis, "HF" if hybrid else "LDA")
        if auxbasis:
            return auxbasis
    return df.addons.make_auxbasis(mol.pyscf)


def density_fit(mol, auxbasis=None):
    """Whitened 3-centre factor B = L^-1 (P|ij) with (P|Q) = L L^T, so that (ij|kl) ~= sum_P B_Pij B_Pkl.

    Args:
        auxbasis: auxiliary basis (name or per-element dict); default ``auxiliary_basis(mol)`` (JK-fit).

    Returns:
        (naux, nao, nao) tensor, Hartree^(1/2). As PySCF, a (P|Q) that is not positive definite falls back to
        its eigen-decomposition with eigenvalues below 1e-7 dropped. The factorization is torch, so the
        coordinate derivatives of (P|ij) and (P|Q) flow through it by autograd.
    """
    if auxbasis is None:
        auxbasis = auxiliary_basis(mol)
    else:
        _check_basis(auxbasis, mol.symbols, "auxiliary basis")
    auxmol = df.addons.make_auxmol(mol.pyscf, auxbasis)
    nao = mol.nao
    j3c = _tensor(mol, df.incore.aux_e2(mol.pyscf, auxmol, "int3c2e", aosym="s1").transpose(2, 0, 1))
    j3c = integral_grad.attach(mol, j3c, lambda v: integral_grad.ThreeCentreDerivatives(mol.pyscf, auxmol, v))
    j2c = _tensor(mol, auxmol.intor("int2c2e", hermi=1))
    j2c = integral_grad.attach(mol, j2c, lambda v: integral_grad.TwoCentreDerivatives(
        auxmol, v, integral_grad.METRIC))
    j3c = j3c.reshape(len(j2c), nao * nao)
    low, info = torch.linalg.cholesky_ex(j2c)
    if int(info) == 0:
        factor = torch.linalg.solve_triangular(low, j3c, upper=False)
    else:
        w, v = torch.linalg.eigh(j2c)
        keep = w > AUX_LINDEP
        factor = (v[:, keep] / w[keep].sqrt()).T @ j3c
    return factor.reshape(-1, nao, nao)
