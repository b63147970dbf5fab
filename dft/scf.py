"""The Kohn-Sham SCF as plain torch functions (the functional core; ``ks.RKS``/``ks.UKS`` wrap it).

Conventions (atomic units throughout):

- Density matrices: restricted ``dm`` is the total (nao, nao); unrestricted is (2, nao, nao) = (alpha, beta).
  Functions tell the two apart by ``dm.ndim``.
- ``eri`` is the 4-index tensor (ij|kl), (nao, nao, nao, nao); its 4-fold packed form (npair, npair) over
  pairs i >= j (Coulomb only); its 8-fold packed form (npair (npair + 1) / 2,) (CPU); or a density-fitting
  factor B, (naux, nao, nao) with (ij|kl) ~= sum_P B_Pij B_Pkl (see ``dft.integrals``).
- ``xc`` is a functional ``e = xc(rho, sigma=None, spin=0)`` returning the XC energy per volume on grid points,
  with attributes ``hyb`` (exact-exchange fraction) and ``family`` ("lda", "gga" or "mgga"); E_xc = sum_g w_g e_g.
  A meta-GGA is called ``xc(rho, sigma, spin=..., tau=tau)`` with the kinetic-energy density
  tau = 1/2 sum_i occ_i |grad phi_i|^2 [Hartree bohr^-3] (PySCF's convention).
  V_xc is the autograd derivative of E_xc with respect to the density matrix.

Every energy here is a torch function of the density matrix and the integrals, so it can be differentiated.
The SCF loop itself (:func:`run_scf`) runs without gradients: derivatives of converged results are taken at
the fixed point, not through the iterations (``dft.ks`` for energies, ``dft.response`` for everything else).
"""

import math
from functools import partial
from typing import NamedTuple

import torch
from pyscf.scf import _vhf
from tqdm.auto import tqdm

from inference.optim import check_number

from . import integral_grad
from .errors import DFTError, OptionError

# PySCF drops overlap eigenvalues below this (scf.hf.overlap_zero_eigenvalue_threshold): linear dependencies.
OVERLAP_LINDEP = 1e-6


def make_rdm1(mo_coeff, mo_occ):
    """Density matrix sum_p occ_p C_ip C_jp: (..., nao, nmo), (..., nmo) -> (..., nao, nao)."""
    return (mo_coeff * mo_occ.unsqueeze(-2)) @ mo_coeff.transpose(-1, -2)


def make_rdm1e(mo_energy, mo_coeff, mo_occ):
    """Energy-weighted density matrix W = sum_p occ_p e_p C_ip C_jp, Hartree: (..., nmo), (..., nao, nmo),
    (..., nmo) -> (..., nao, nao). dE/dS = -W at a converged SCF (the Pulay/overlap term of gradients)."""
    return make_rdm1(mo_coeff, mo_occ * mo_energy)


def get_jk(eri, dm, with_j=True, with_k=True):
    """Coulomb J_ij = sum_kl (ij|kl) D_kl and exchange K_ij = sum_kl (ik|jl) D_kl, Hartree.

    Args:
        eri: ERIs in a form of ``integrals.eri`` -- (nao, nao, nao, nao), (npair, npair) 4-fold packed (J only)
            or (npair (npair + 1) / 2,) 8-fold packed (CPU) -- or a (naux, nao, nao) density-fitting factor.
        dm: (..., nao, nao) density matrices.
        with_j, with_k: build J, K (else that one is None).

    Returns:
        ``(vj, vk)``, each shaped like ``dm``.
    """
    if eri.ndim == 1:
        v = iter(_IncoreJK.apply(dm, eri, with_j, with_k))
        return (next(v) if with_j else None), (next(v) if with_k else None)
    if eri.ndim == 2 and with_k:
        raise DFTError("exact exchange needs the full or 8-fold packed ERI tensor (integrals.eri(mol, aosym='s1' "
                       "or 's8')) or density fitting; the 4-fold packed form holds Coulomb only.")
    vj = integral_grad.coulomb(eri, dm, _get_j) if with_j else None
    if not with_k:
        return vj, None
    shape = dm.shape
    nao = shape[-1]
    dms = dm.reshape(-1, nao, nao)
    if eri.ndim == 4:
        # (ik|jl) D_kl = sum_k [(ki|jl) viewed as (k, ij, l)] @ D[k, :]: a batched product, no transposed copy.
        by_k = eri.reshape(nao, nao * nao, nao)
        vk = torch.stack([torch.bmm(by_k, d.unsqueeze(-1)).sum(0) for d in dms])
    else:
        naux = eri.shape[0]
        # K = sum_P B_P D B_P, as one product over the combined (P, k) index.
        stacked = eri.transpose(0, 1).reshape(nao, naux * nao)
        vk = torch.stack([(eri @ d).transpose(0, 1).reshape(nao, naux * nao) @ stacked.T for d in dms])
    return vj, vk.reshape(shape)


class _IncoreJK(torch.autograd.Function):
    """(D, 8-fold packed ERIs) -> J[D] and/or K[D], stacked on a new leading axis, by PySCF's incore
    contraction (``scf._vhf.incore``, CPU): PySCF's own J/K build, without a 4-index tensor.

    J and K are self-adjoint linear maps of D (the 8-fold symmetry of (ij|kl)): sum G * J[D] = sum J[G] * D,
    and the same for K. The backward is therefore this Function applied to the cotangents, itself
    differentiable, to any order in D. The 8-fold ERIs are constants (they carry no coordinate derivatives).
    """

    @staticmethod
    def forward(dm, eri, with_j, with_k):
        nao = dm.shape[-1]
        # hermi=0: exact for any D, the cotangents of the backward included.
        vj, vk = _vhf.incore(eri.numpy(), dm.detach().double().reshape(-1, nao, nao).numpy(), hermi=0,
                             with_j=with_j, with_k=with_k)
        return torch.stack([torch.from_numpy(v).to(dm.dtype).reshape(dm.shape) for v in (vj, vk) if v is not None])

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.eri, ctx.with_j, ctx.with_k = inputs

    @staticmethod
    def backward(ctx, g):
        d_dm = 0
        if ctx.with_j:
            d_dm = d_dm + _IncoreJK.apply(g[0], ctx.eri, True, False)[0]
        if ctx.with_k:
            d_dm = d_dm + _IncoreJK.apply(g[-1], ctx.eri, False, True)[0]
        return d_dm, None, None, None


def _get_j(eri, dm):
    """J[D] (shaped like ``dm``) from the full or 4-fold packed ERIs or a density-fitting factor."""
    shape = dm.shape
    nao = shape[-1]
    dms = dm.reshape(-1, nao, nao)
    if eri.ndim == 2:
        i, j = torch.tril_indices(nao, nao, device=dm.device)
        # sum_kl (ij|kl) D_kl over pairs k >= l: off-diagonal pairs count twice.
        pairs = (dms + dms.transpose(-1, -2))[:, i, j] - torch.where(i == j, dms[:, i, j], 0)
        vj_pairs = pairs @ eri
        vj = dm.new_zeros(dms.shape)
        vj[:, i, j] = vj_pairs
        vj[:, j, i] = vj_pairs
        return vj.reshape(shape)
    if eri.ndim == 4:
        return (dms.reshape(-1, nao * nao) @ eri.reshape(nao * nao, nao * nao)).reshape(shape)
    flat = eri.reshape(eri.shape[0], nao * nao)
    return ((dms.reshape(-1, nao * nao) @ flat.T) @ flat).reshape(shape)


def eval_rho(ao, dm, gga=False):
    """Electron density on grid points from AO values ``ao`` (1 or 4, Nb, nao) and density matrices ``dm``
    (..., nao, nao): ``(rho, grad_rho)`` with rho (..., Nb) in bohr^-3 and, when ``gga``, grad rho (..., 3, Nb)
    in bohr^-4 (else None)."""
    half = ao[0] @ dm  # (..., Nb, nao)
    # Row-wise dot products of every AO component with ``half``; einsum avoids (4, Nb, nao) temporaries.
    values = torch.einsum("xgi,...gi->...xg", ao if gga else ao[:1], half)
    rho = values[..., 0, :]
    return (rho, 2 * values[..., 1:, :]) if gga else (rho, None)


def eval_tau(ao, dm):
    """Kinetic-energy density tau = 1/2 sum_x sum_ij D_ij d_x phi_i d_x phi_j on grid points [Hartree bohr^-3]
    (PySCF's ``eval_rho(..., xctype='MGGA')`` row 5): AO values with first derivatives ``ao`` (4, Nb, nao),
    ``dm`` (..., nao, nao) -> (..., Nb). Linear in ``dm``."""
    return 0.5 * sum(((ao[x] @ dm) * ao[x]).sum(-1) for x in (1, 2, 3))


def _eval_rho_transpose(ao, rho_bar, grad_bar=None, tau_bar=None):
    """The transpose of :func:`eval_rho` (and :func:`eval_tau`) as a linear map of ``dm``: d/dD sum_g (rho_bar_g
    rho_g + grad_bar_g . grad rho_g + tau_bar_g tau_g) for cotangents rho_bar (..., Nb), grad_bar (..., 3, Nb)
    (None for LDA) and tau_bar (..., Nb) (None unless meta-GGA); (..., nao, nao)."""
    weighted = rho_bar.unsqueeze(-1) * ao[0]  # (..., Nb, nao); accumulated in place: twice einsum's speed
    for x in range(3 if grad_bar is not None else 0):
        weighted.addcmul_(grad_bar[..., x, :, None], ao[x + 1], value=2)
    out = ao[0].mT @ weighted
    if tau_bar is not None:
        half = 0.5 * tau_bar.unsqueeze(-1)
        for x in (1, 2, 3):
            out = out + ao[x].mT @ (half * ao[x])
    return out


def _sigma(grad):
    """Contracted density gradients: (3, Nb) -> sigma (Nb,) restricted; (2, 3, Nb) per spin -> (3, Nb) =
    (sigma_aa, sigma_ab, sigma_bb)."""
    if grad.ndim == 2:
        return (grad * grad).sum(0)
    return torch.stack([(grad[0] * grad[0]).sum(0), (grad[0] * grad[1]).sum(0), (grad[1] * grad[1]).sum(0)])


def _sigma_jvp(grad, grad1):
    """The change of :func:`_sigma` at ``grad`` along ``grad1``."""
    if grad.ndim == 2:
        return 2 * (grad * grad1).sum(0)
    return torch.stack([2 * (grad[0] * grad1[0]).sum(0), (grad[0] * grad1[1] + grad1[0] * grad[1]).sum(0),
                        2 * (grad[1] * grad1[1]).sum(0)])


def _sigma_vjp(grad, sigma_bar):
    """sum_k sigma_bar_k d sigma_k / d grad at ``grad``, shaped like ``grad``."""
    if grad.ndim == 2:
        return 2 * sigma_bar * grad
    aa, ab, bb = sigma_bar.unsqueeze(-2)
    return torch.stack([2 * aa * grad[0] + ab * grad[1], ab * grad[0] + 2 * bb * grad[1]])


def _energy_density(xc, rho, sigma, tau=None):
    """e (Nb,) [Hartree bohr^-3] from rho (Nb,) restricted or (2, Nb) per spin, sigma from :func:`_sigma`
    (None for LDA) and tau like rho (meta-GGA only, else None)."""
    if tau is None:
        return xc(rho, sigma, spin=rho.ndim - 1)
    return xc(rho, sigma, spin=rho.ndim - 1, tau=tau)


def _xc_block(xc, weights, ao, dm):
    """E_xc (Hartree) of one grid block."""
    rho, grad = eval_rho(ao, dm, xc.family != "lda")
    tau = eval_tau(ao, dm) if xc.family == "mgga" else None
    return (weights * _energy_density(xc, rho, None if grad is None else _sigma(grad), tau)).sum()


def xc_energy(xc, grid, dm):
    """Semi-local XC energy E_xc[dm] = sum_g w_g e(rho_g, sigma_g), Hartree; a torch function of ``dm``."""
    return sum(_xc_block(xc, weights, ao, dm) for weights, ao in grid.blocks())


def get_vxc(xc, grid, dm):
    """E_xc and V_xc = dE_xc/dD (symmetrized), by autograd, block by block so memory stays bounded.

    With grad mode on and ``dm``, a parameter of ``xc`` or the grid's AO values or weights (``mol.coords``
    requiring grad) requiring grad, the result is itself differentiable (double backward); otherwise it is a
    plain value. When ``dm`` is the only one of these requiring grad, V_xc is an :class:`_XCPotential`, whose
    first derivative applies the XC kernel, computed once (the adjoint of ``dft.response`` applies it many
    times).

    Returns:
        ``(exc, vxc)``: scalar Hartree, and (..., nao, nao) like ``dm``, Hartree.
    """
    trainable = any(p.requires_grad for p in (xc.parameters() if hasattr(xc, "parameters") else ()))
    blocks = grid.blocks()
    if torch.is_grad_enabled() and dm.requires_grad and not trainable:
        blocks = list(blocks)
        if not any(t.requires_grad for block in blocks for t in block):
            exc, vxc, _ = _XCPotential.apply(dm, xc, blocks)
            return exc, _symmetrized(vxc)
    exc, vxc = _vxc(xc, blocks, dm, differentiable=torch.is_grad_enabled() and (dm.requires_grad or trainable))
    return exc, _symmetrized(vxc)


def _symmetrized(vxc):
    # The GGA term 2 grad(phi_i) phi_j D_ij is not symmetric in (i, j) per element; the potential is.
    return (vxc + vxc.transpose(-1, -2)) / 2


def _vxc(xc, blocks, dm, differentiable):
    """E_xc and the unsymmetrized dE_xc/dD summed over ``blocks`` ((weights, ao) pairs), by autograd; with
    ``differentiable``, or grad mode on and a block requiring grad, both carry a graph."""
    grad_mode = torch.is_grad_enabled()
    exc = dm.new_zeros(())
    vxc = torch.zeros_like(dm)
    d = dm if dm.requires_grad else dm.detach().requires_grad_()
    # The blocks are drawn in the caller's grad mode: in a no-grad SCF cycle they carry no coordinate graph.
    for weights, ao in blocks:
        graph = differentiable or (grad_mode and (ao.requires_grad or weights.requires_grad))
        with torch.enable_grad():
            e = _xc_block(xc, weights, ao, d)
            (v,) = torch.autograd.grad(e, d, create_graph=graph)
        exc = exc + (e if graph else e.detach())
        vxc = vxc + v
    return exc, vxc


class _XCPotential(torch.autograd.Function):
    """D -> (E_xc, unsymmetrized dE_xc/dD, the blocks' :class:`_Kernel`s) over fixed grid ``blocks``, for a
    functional without trainable inputs.

    A first-order backward applies the Hessian of E_xc: with v = (rho, sigma) per point (from u = (rho, grad
    rho), linear in D by :func:`eval_rho`), d2E/dD2 = L^T (dv/du^T w d2e/dv2 dv/du + w de/dsigma d2sigma/du2) L.
    For a meta-GGA v also holds tau, linear in D (:func:`eval_tau`), so it enters through L alone.
    The per-point second derivatives are computed once, at the first backward, from the graph of the first
    derivatives that the forward built anyway, and kept: each backward then costs two AO products instead of
    differentiating the functional twice. A double backward (create_graph) goes through the functional by
    autograd.
    """

    @staticmethod
    def forward(dm, xc, blocks):
        kernels = [_Kernel(xc, weights, ao, dm) for weights, ao in blocks]
        return sum(k.energy for k in kernels), sum(k.potential() for k in kernels), kernels

    @staticmethod
    def setup_context(ctx, inputs, output):
        dm, ctx.xc, ctx.blocks = inputs
        ctx.save_for_backward(dm, output[1])
        ctx.kernels = output[2]

    @staticmethod
    def backward(ctx, g_exc, g_vxc, _):
        dm, vxc = ctx.saved_tensors
        if torch.is_grad_enabled():
            # torch.func, not autograd.grad: this backward may itself run inside a torch.func transform.
            def potential_and_energy(d):
                return torch.func.grad_and_value(lambda d: sum(_xc_block(ctx.xc, w, ao, d) for w, ao in ctx.blocks))(d)

            _, vjp = torch.func.vjp(potential_and_energy, dm)
            return vjp((g_vxc, g_exc))[0], None, None
        return g_exc * vxc + sum(kernel.apply(g_vxc) for kernel in ctx.kernels), None, None


class _Kernel:
    """One block's E_xc at a density matrix, with its first derivatives and (computed on first use, from their
    graph) its second derivatives in the variables v = (rho per spin, sigma components, tau per spin for a
    meta-GGA) of the functional."""

    def __init__(self, xc, weights, ao, dm):
        self.ao = ao
        self.mgga = xc.family == "mgga"
        rho, self.grad = eval_rho(ao, dm.detach(), xc.family != "lda")
        with torch.enable_grad():
            rho = rho.requires_grad_()
            sigma = None if self.grad is None else _sigma(self.grad).requires_grad_()
            tau = eval_tau(ao, dm.detach()).requires_grad_() if self.mgga else None
            self._variables = [v for v in (rho, sigma, tau) if v is not None]
            e = (weights * _energy_density(xc, rho, sigma, tau)).sum()
            self._firsts = torch.autograd.grad(e, self._variables, create_graph=True, materialize_grads=True)
        self.energy = e.detach()
        self.e_rho = self._firsts[0].detach()  # w de/drho, like rho
        self.e_sigma = None if sigma is None else self._firsts[1].detach()  # w de/dsigma, like sigma
        self.e_tau = self._firsts[2].detach() if self.mgga else None  # w de/dtau, like rho
        self._hessian = None

    def potential(self):
        """dE/dD of the block (unsymmetrized), (..., nao, nao)."""
        grad_bar = None if self.grad is None else _sigma_vjp(self.grad, self.e_sigma)
        return _eval_rho_transpose(self.ao, self.e_rho, grad_bar, self.e_tau)

    def hessian(self):
        """w d2e/dv_i dv_j, (m, m, Nb); the graph of the first derivatives is released once it is built."""
        if self._hessian is None:
            nb = self.e_rho.shape[-1]
            m = sum(v.numel() for v in self._variables) // nb
            # e is local: the gradient of sum_g de/dv_i is the row d2e/dv_i dv_j point by point.
            with torch.enable_grad():
                rows = [torch.cat([h.reshape(-1, nb) for h in torch.autograd.grad(
                            row.sum(), self._variables, retain_graph=True, allow_unused=True, materialize_grads=True)])
                        if row.requires_grad else self.e_rho.new_zeros(m, nb)
                        for row in torch.cat([f.reshape(-1, nb) for f in self._firsts])]
            self._hessian = torch.stack(rows).detach()
            self._variables = self._firsts = None
        return self._hessian

    def apply(self, dm1):
        """d2E/dD2 of the block applied to ``dm1`` (..., nao, nao), by the chain rule through v(rho, grad rho)
        and :func:`eval_rho`: two AO products."""
        hessian = self.hessian()
        rho1, grad1 = eval_rho(self.ao, dm1, self.grad is not None)
        nb = rho1.shape[-1]
        v1 = [rho1.reshape(-1, nb)]
        if self.grad is not None:
            v1.append(_sigma_jvp(self.grad, grad1).reshape(-1, nb))
        if self.mgga:
            v1.append(eval_tau(self.ao, dm1).reshape(-1, nb))
        v_bar = torch.einsum("ijg,jg->ig", hessian, torch.cat(v1))
        nrho = rho1.numel() // nb
        rho_bar = v_bar[:nrho].view_as(rho1)
        if self.grad is None:
            return _eval_rho_transpose(self.ao, rho_bar)
        nsigma = self.e_sigma.numel() // nb
        grad_bar = (_sigma_vjp(self.grad, v_bar[nrho:nrho + nsigma].view_as(self.e_sigma))
                    + _sigma_vjp(grad1, self.e_sigma))
        tau_bar = v_bar[nrho + nsigma:].view_as(rho1) if self.mgga else None
        return _eval_rho_transpose(self.ao, rho_bar, grad_bar, tau_bar)


class Veff(NamedTuple):
    """Two-electron + XC potential and its energy parts (Hartree)."""

    matrix: torch.Tensor | None  # (nao, nao) restricted or (2, nao, nao) unrestricted; None if not asked for
    coulomb: torch.Tensor  # 1/2 tr(D J)
    exact_exchange: torch.Tensor  # -hyb/4 tr(D K) restricted; -hyb/2 sum_s tr(D_s K_s) unrestricted
    xc: torch.Tensor  # semi-local E_xc


def get_veff(eri, dm, xc, grid=None, potential=True):
    """Kohn-Sham potential J - hyb K + V_xc and its energies.

    Args:
        eri: ERIs or density-fitting factor (see :func:`get_jk`).
        dm: (nao, nao) total or (2, nao, nao) spin density matrices.
        xc: XC functional; its ``hyb`` (a float or a tensor) scales exact exchange.
        grid: :class:`dft.grids.Grid`, or None when the functional has no semi-local part (Hartree-Fock).
        potential: False for the energies only (``matrix`` is then None): E_xc without V_xc, which saves the
            autograd pass over the grid when only the energy of a fixed density is wanted.
    """
    hyb = xc.hyb
    restricted = dm.ndim == 2
    exchange = torch.is_tensor(hyb) or hyb != 0
    total = dm if restricted else dm[0] + dm[1]
    if restricted:
        vj, vk = get_jk(eri, dm, with_k=exchange)
    else:
        vj, _ = get_jk(eri, total, with_k=False)
        vk = get_jk(eri, dm, with_j=False)[1] if exchange else None
    e_coul = 0.5 * (total * vj).sum()
    veff = vj if restricted else vj.expand_as(dm)
    e_exx = dm.new_zeros(())
    if exchange:
        scale = 0.5 * hyb if restricted else hyb
        veff = veff - scale * vk
        e_exx = -0.5 * scale * (dm * vk).sum()
    e_xc = dm.new_zeros(())
    if grid is not None and not potential:
        e_xc = xc_energy(xc, grid, dm)
    elif grid is not None:
        e_xc, vxc = get_vxc(xc, grid, dm)
        veff = veff + vxc
    return Veff(veff if potential else None, e_coul, e_exx, e_xc)


def energy_elec(dm, hcore, veff):
    """Electronic energy (Hartree) and its parts from a density matrix, H_core and :class:`Veff`.

    Returns:
        ``(e_elec, parts)`` with parts ``one_electron``, ``coulomb``, ``exact_exchange``, ``xc``.
    """
    total = dm if dm.ndim == 2 else dm[0] + dm[1]
    parts = {"one_electron": (total * hcore).sum(), "coulomb": veff.coulomb,
             "exact_exchange": veff.exact_exchange, "xc": veff.xc}
    return sum(parts.values()), parts


def orthogonalizer(s):
    """Canonical orthogonalization X = U e^-1/2 (nao, nmo), X^T S X = 1, dropping overlap eigenvalues below
    1e-6 (linear dependencies), as PySCF."""
    e, u = torch.linalg.eigh(s)
    keep = e > OVERLAP_LINDEP
    return u[:, keep] / e[keep].sqrt()


def eig(fock, x):
    """Solve F C = S C e through the orthogonalizer ``x`` of S (the SCF loop's eigensolver, without gradients;
    ``dft.response`` differentiates the eigenproblem with ``inference.implicit.eigh``).

    Args:
        fock: (..., nao, nao) Hartree.
        x: (nao, nmo) from :func:`orthogonalizer`.

    Returns:
        ``(mo_energy, mo_coeff)``: (..., nmo) ascending, Hartree; (..., nao, nmo) in :func:`fix_phase`'s
        convention.
    """
    e, c = torch.linalg.eigh(x.transpose(-1, -2) @ fock @ x)
    return e, fix_phase(x @ c)


def fix_phase(mo_coeff):
    """Orbitals (..., nao, nmo) with the largest-magnitude coefficient of each made positive (PySCF's
    convention); the sign is a constant for derivatives."""
    biggest = mo_coeff.abs().argmax(-2, keepdim=True)
    return mo_coeff * torch.gather(mo_coeff, -2, biggest).sign()


def get_occ(mo_energy, nelec):
    """Aufbau occupations: restricted (nmo,) with nelec a pair count -> 2 for the nelec//2 lowest orbitals;
    unrestricted (2, nmo) with nelec = (N_alpha, N_beta) -> 1 for the lowest of each spin."""
    occ = torch.zeros_like(mo_energy)
    if mo_energy.ndim == 1:
        order = mo_energy.argsort()
        occ[order[: nelec // 2]] = 2.0
        return occ
    for s in range(2):
        order = mo_energy[s].argsort()
        occ[s, order[: nelec[s]]] = 1.0
    return occ


def orbital_gradient(mo_coeff, mo_occ, fock):
    """Occupied-virtual block of the MO Fock matrix (the FDS - SDF commutator in the MO basis), as PySCF's
    ``get_grad``: 2 C_vir^T F C_occ restricted, (C_vir^T F_s C_occ per spin) unrestricted, flattened."""
    if mo_occ.ndim == 1:
        occ = mo_occ > 0
        return (2 * mo_coeff[:, ~occ].T @ fock @ mo_coeff[:, occ]).reshape(-1)
    return torch.cat([(mo_coeff[s][:, ~(mo_occ[s] > 0)].T @ fock[s] @ mo_coeff[s][:, mo_occ[s] > 0]).reshape(-1)
                      for s in range(2)])


def commutator(s, dm, fock, x):
    """DIIS error X^T (S D F - F D S) X in the orthonormal basis, flattened; unrestricted spins concatenated."""
    sdf = x.transpose(-1, -2) @ s @ dm @ fock @ x
    return (sdf.transpose(-1, -2) - sdf).reshape(-1)


class DIIS:
    """Pulay's DIIS on Fock matrices with commutator error vectors (PySCF's CDIIS), last ``space`` kept."""

    def __init__(self, space=8):
        self.space = space
        self.focks = []
        self.errors = []

    def update(self, fock, error):
        """Store (fock, error) and return the extrapolated Fock matrix."""
        self.focks = (self.focks + [fock])[-self.space:]
        self.errors = (self.errors + [error])[-self.space:]
        n = len(self.focks)
        errors = torch.stack(self.errors)
        h = fock.new_zeros(n + 1, n + 1)
        h[0, 1:] = h[1:, 0] = 1
        h[1:, 1:] = errors @ errors.T
        g = fock.new_zeros(n + 1)
        g[0] = 1
        w, v = torch.linalg.eigh(h)
        keep = w.abs() > 1e-14  # PySCF's guard against linearly dependent error vectors
        c = v[:, keep] @ ((v[:, keep].T @ g) / w[keep])
        return torch.einsum("i,i...->...", c[1:], torch.stack(self.focks))


def level_shifted(s, dm, fock, shift):
    """Raise virtual levels by ``shift`` (Hartree): F + shift (S - S D S), D per spin (half the total when
    restricted)."""
    d = dm / 2 if dm.ndim == 2 else dm
    return fock + shift * (s - s @ d @ s)


class SCFResult(NamedTuple):
    converged: bool
    e_tot: torch.Tensor  # Hartree
    mo_energy: torch.Tensor  # (nmo,) or (2, nmo), Hartree
    mo_coeff: torch.Tensor  # (nao, nmo) or (2, nao, nmo)
    mo_occ: torch.Tensor  # (nmo,) or (2, nmo)
    dm: torch.Tensor  # density matrix of mo_coeff/mo_occ
    energy_components: dict  # nuclear, one_electron, coulomb, exact_exchange, xc (Hartree)
    cycles: int
    history: list  # (energy, delta_energy, |orbital gradient|) per cycle


def check_controls(where, conv_tol=1e-9, conv_tol_grad=None, max_cycle=50, diis_space=8, level_shift=0.0, damp=0.0):
    """Raise :class:`dft.OptionError` (naming ``where`` and the control) unless the SCF controls of
    :func:`run_scf` are in range: ``conv_tol`` and ``conv_tol_grad`` (or None) finite > 0 (Hartree), ``max_cycle``
    an integer >= 1, ``diis_space`` an integer >= 0 (0: no DIIS), ``level_shift`` finite >= 0 (Hartree), ``damp``
    in [0, 1)."""
    check = partial(check_number, where, error=OptionError)
    check("conv_tol", conv_tol, above=0)
    if conv_tol_grad is not None:
        check("conv_tol_grad", conv_tol_grad, above=0)
    check("max_cycle", max_cycle, integer=True, at_least=1)
    check("diis_space", diis_space, integer=True, at_least=0)
    check("level_shift", level_shift, at_least=0)
    check("damp", damp, at_least=0, below=1)


def run_scf(hcore, s, veff_fn, dm0, nelec, e_nuc, conv_tol=1e-9, conv_tol_grad=None, max_cycle=50,
            diis_space=8, level_shift=0.0, damp=0.0, verbose=False):
    """Self-consistent field iterations, following PySCF's ``scf.hf.kernel``.

    Args:
        hcore, s: (nao, nao) core Hamiltonian (Hartree) and overlap.
        veff_fn: ``dm -> Veff``.
        dm0: initial density matrix (restricted or unrestricted).
        nelec: number of electrons (restricted) or (N_alpha, N_beta).
        e_nuc: nuclear repulsion, Hartree.
        conv_tol: energy change threshold, Hartree; conv_tol_grad: orbital-gradient norm threshold
            (default sqrt(conv_tol)). Both must hold.
        diis_space: DIIS subspace size (0 disables DIIS); DIIS starts at the second cycle, as PySCF.
        level_shift: virtual-level shift, Hartree. damp: weight of the previous Fock matrix in the mix.
        verbose: show a tqdm progress bar.

    A converged SCF ends, as PySCF, with one more diagonalization of the undamped, unshifted Fock matrix so
    that the orbitals are the canonical orbitals of the final density.

    Raises:
        OptionError: a control out of its range (see :func:`check_controls`).
    """
    check_controls("run_scf", conv_tol, conv_tol_grad, max_cycle, diis_space, level_shift, damp)
    if conv_tol_grad is None:
        conv_tol_grad = math.sqrt(conv_tol)
    with torch.no_grad():
        x = orthogonalizer(s)
        diis = DIIS(diis_space) if diis_space > 0 else None
        dm = dm0
        veff = veff_fn(dm)
        e_elec, parts = energy_elec(dm, hcore, veff)
        e_tot = e_elec + e_nuc
        fock_last = None
        history = []
        converged = False
        mo_energy = mo_coeff = mo_occ = None
        progress = tqdm(total=max_cycle, desc="SCF", disable=not verbose, leave=False)
        for cycle in range(max_cycle):
            e_last = e_tot
            fock = hcore + veff.matrix
            if damp and fock_last is not None:
                fock = (1 - damp) * fock + damp * fock_last
            if diis is not None and cycle >= 1:
                fock = diis.update(fock, commutator(s, dm, fock, x))
            fock_last = fock
            if level_shift:
                fock = level_shifted(s, dm, fock, level_shift)
            mo_energy, mo_coeff = eig(fock, x)
            mo_occ = get_occ(mo_energy, nelec)
            dm = make_rdm1(mo_coeff, mo_occ)
            veff = veff_fn(dm)
            e_elec, parts = energy_elec(dm, hcore, veff)
            e_tot = e_elec + e_nuc
            norm_g = float(orbital_gradient(mo_coeff, mo_occ, hcore + veff.matrix).norm())
            delta = float(e_tot - e_last)
            history.append((float(e_tot), delta, norm_g))
            progress.update()
            progress.set_postfix(E=f"{float(e_tot):.10f}", dE=f"{delta:.2e}", grad=f"{norm_g:.2e}")
            if abs(delta) < conv_tol and norm_g < conv_tol_grad:
                converged = True
                break
        progress.close()
        if converged:
            mo_energy, mo_coeff = eig(hcore + veff.matrix, x)
            mo_occ = get_occ(mo_energy, nelec)
            dm = make_rdm1(mo_coeff, mo_occ)
            veff = veff_fn(dm)
            e_elec, parts = energy_elec(dm, hcore, veff)
            e_tot = e_elec + e_nuc
    components = {"nuclear": e_nuc, **parts}
    return SCFResult(converged, e_tot, mo_energy, mo_coeff, mo_occ, dm, components, len(history), history)


def not_converged_message(history, max_cycle, conv_tol, conv_tol_grad=None):
    """What to tell the user about an SCF that stopped at ``max_cycle``: the last cycles and what to try."""
    if conv_tol_grad is None:
        conv_tol_grad = math.sqrt(conv_tol)
    first = len(history) - len(history[-3:]) + 1
    last = "; ".join(f"cycle {first + i}: E={e:.10f} dE={d:.2e} |g|={g:.2e}"
                     for i, (e, d, g) in enumerate(history[-3:]))
    return (f"SCF not converged in {max_cycle} cycles (conv_tol={conv_tol:g}, orbital gradient < "
            f"{conv_tol_grad:g}); last cycles: {last}. Try level_shift=0.3, damp=0.5, or a larger max_cycle.")
