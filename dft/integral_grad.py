"""Nuclear-coordinate derivatives of the integrals, as autograd Functions (first and second order).

Every integral tensor M(R) the SCF uses -- overlap, kinetic, nuclear attraction, ERIs, density-fitting 3- and
2-centre integrals, AO values on a grid -- becomes a differentiable function of the nuclear coordinates
R = ``mol.coords`` (natm, 3), Bohr, through :func:`attach`. Its value comes from PySCF; its first and second
derivatives from PySCF's analytic derivative integrals (libcint), never from autodiff of Gaussian integrals.
One ``*Derivatives`` object per integral supplies, with g shaped like M and h shaped like R:

    value                   M
    gradient(g)             sum g * dM/dR                      (natm, 3)   backward
    response(h)             sum_Ax h_Ax dM/dR_Ax               like M      double backward, w.r.t. g
    hessian_vector(g, h)    sum g * d2M/(dR dR_Ax) h_Ax        (natm, 3)   double backward, w.r.t. R

Derivatives are taken per basis function (each centred on its atom) and summed into atoms, contracting with g
as they are formed: no (natm, 3) + M.shape tensor is built. Conventions: a function chi(r - A) centred at A has
d chi/dA = -nabla chi; PySCF's ``ip`` integrals carry nabla on the function they name (``int1e_ipovlp`` =
<nabla i|j>, ``int2e_ip1`` = (nabla i j|kl), 9-component second derivatives ordered 3 a + b with a on the first
named function). An operator centred on nucleus C (1/|r - C|) is handled by translation invariance: moving C by
h is moving every basis function by -h. Third derivatives are not available (the second-order backward is
``once_differentiable`` and says so if asked).

The Coulomb matrix J[D] of the ERIs has its own Function (:func:`coulomb`): its coordinate gradient contracts
the derivative integrals with density matrices, as PySCF's analytic gradient does, without forming the
(nao,)*4 cotangent of the ERIs.
"""

import numpy as np
import torch
from pyscf import df
from pyscf.grad import rhf as rhf_grad
from torch.autograd.function import once_differentiable

from .errors import DFTError

# Largest set of one kind of ERI derivative integrals (all atoms) kept for reuse, bytes (water/def2-SVP's 9-component
# second derivatives take 24 MB; larger sets are recomputed for each use, one atom at a time).
ERI_CACHE_BYTES = 2**27


class _Value(torch.autograd.Function):
    """M(R): forward returns the precomputed value, backward contracts the derivative integrals."""

    @staticmethod
    def forward(coords, derivatives):
        # A new tensor object sharing storage: autograd attaches to it, never to the cached value.
        return derivatives.value.detach()

    @staticmethod
    def setup_context(ctx, inputs, output):
        coords, ctx.derivatives = inputs
        ctx.save_for_backward(coords)

    @staticmethod
    def backward(ctx, grad):
        (coords,) = ctx.saved_tensors
        return _Gradient.apply(coords, grad, ctx.derivatives), None


class _Gradient(torch.autograd.Function):
    """(R, g) -> sum g * dM/dR, itself differentiable once (for Hessians by double backward)."""

    @staticmethod
    def forward(coords, grad, derivatives):
        return derivatives.gradient(grad)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, grad, ctx.derivatives = inputs
        ctx.save_for_backward(grad)

    @staticmethod
    @once_differentiable
    def backward(ctx, h):
        (grad,) = ctx.saved_tensors
        d = ctx.derivatives
        d_coords = d.hessian_vector(grad, h) if ctx.needs_input_grad[0] else None
        d_grad = d.response(h) if ctx.needs_input_grad[1] else None
        return d_coords, d_grad, None


def attach(mol, value, make_derivatives):
    """``value`` as a differentiable function of ``mol.coords`` when it requires grad (and grad mode is on);
    else ``value`` itself, with no overhead. ``make_derivatives(value)`` builds the derivatives object."""
    if torch.is_grad_enabled() and mol.coords.requires_grad:
        return _Value.apply(mol.coords, make_derivatives(value))
    return value


def _tensor(array, device):
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64)).to(device)


def _owner(pyscf_mol, device):
    """(nao,) atom index of each basis function."""
    owner = np.empty(pyscf_mol.nao, dtype=np.int64)
    for atom, (_, _, p0, p1) in enumerate(pyscf_mol.aoslice_by_atom()):
        owner[p0:p1] = atom
    return torch.from_numpy(owner).to(device)


def _to_atoms(per_function, owner, natm):
    """Sum (n, 3) per-function vectors into (natm, 3) per-atom ones."""
    return per_function.new_zeros(natm, 3).index_add_(0, owner, per_function)


class TwoCentreDerivatives:
    """Derivatives of M_ij = <i|O|j> for a symmetric operator O: overlap and kinetic energy (O free of nuclei),
    the nuclear attraction (O = sum_C -Z_C / |r - C|, one operator centre per nucleus), and the auxiliary-basis
    Coulomb metric (P|Q).

    Args:
        pyscf_mol: the PySCF ``Mole`` whose basis i, j run over (the auxiliary one for (P|Q)).
        value: (n, n) tensor M.
        names: PySCF integral names (first derivative <nabla i|O|j>, second <nabla nabla i|O|j>,
            <nabla i|O|nabla j>), e.g. ``("int1e_ipovlp", "int1e_ipipovlp", "int1e_ipovlpip")``.
        centres: None, or [(C, Z_C)]: O = sum_C -Z_C 1/|r - C| with the ``rinv`` integral names.
    """

    def __init__(self, pyscf_mol, value, names, centres=None):
        self.mol = pyscf_mol
        self.value = value
        self.names = names
        self.centres = centres
        self.natm = pyscf_mol.natm
        self.owner = _owner(pyscf_mol, value.device)

    def _terms(self, order):
        """Yield (integrals, operator centre or None): order 1 -> (3, n, n); order 2 -> two (3, 3, n, n)."""
        device = self.value.device
        names = self.names[:1] if order == 1 else self.names[1:]
        comp = 3 if order == 1 else 9

        def get(scale=1.0):
            ints = [_tensor(self.mol.intor(name, comp=comp), device) * scale for name in names]
            return ints[0] if order == 1 else [x.reshape(3, 3, *x.shape[1:]) for x in ints]

        if self.centres is None:
            yield get(), None
            return
        for centre, charge in self.centres:
            with self.mol.with_rinv_at_nucleus(centre):
                yield get(-charge), centre

    def _directions(self, h, centre):
        """Per-function displacement (n, 3) relative to the operator centre."""
        e = h[self.owner]
        return e if centre is None else e - h[centre]

    def _add(self, out, per_function, centre):
        out += _to_atoms(per_function, self.owner, self.natm)
        if centre is not None:
            out[centre] -= per_function.sum(0)

    def gradient(self, g):
        gs = g + g.transpose(-1, -2)
        out = g.new_zeros(self.natm, 3)
        for ip, centre in self._terms(1):
            self._add(out, -torch.einsum("xij,ij->ix", ip, gs), centre)
        return out

    def response(self, h):
        out = torch.zeros_like(self.value)
        for ip, centre in self._terms(1):
            d = -torch.einsum("ix,xij->ij", self._directions(h, centre), ip)
            out += d + d.T
        return out

    def hessian_vector(self, g, h):
        gs = g + g.transpose(-1, -2)
        out = g.new_zeros(self.natm, 3)
        for (ipip, ipvip), centre in self._terms(2):
            e = self._directions(h, centre)
            q = torch.einsum("ix,xyij->iy", e, ipip * gs) + torch.einsum("kx,xyki->iy", e, ipvip * gs)
            self._add(out, q, centre)
        return out


class DipoleDerivatives:
    """Derivatives of the dipole integrals M_xij = <i|r_x|j> about a fixed origin (0 here), value (3, n, n).

    The origin stays put when the nuclei move, so only the basis functions' centres count:
    dM_xij/dA = -<nabla i|r_x|j> for i on A (and the same for j), from PySCF's ``int1e_irp`` = <i|r_x nabla_y|j>.
    First order only: libcint has no <nabla nabla i|r|j>, so :meth:`hessian_vector` raises (a Hessian in an
    electric field is not available).
    """

    def __init__(self, pyscf_mol, value):
        self.mol = pyscf_mol
        self.value = value
        self.natm = pyscf_mol.natm
        self.owner = _owner(pyscf_mol, value.device)

    def _ip(self):
        """(3, 3, n, n): [x, y, i, j] = <nabla_y i|r_x|j>."""
        n = self.mol.nao
        with self.mol.with_common_orig((0, 0, 0)):
            irp = self.mol.intor("int1e_irp", comp=9)
        return _tensor(irp, self.value.device).reshape(3, 3, n, n).transpose(-1, -2)

    def gradient(self, g):
        gs = g + g.transpose(-1, -2)
        return _to_atoms(-torch.einsum("xyij,xij->iy", self._ip(), gs), self.owner, self.natm)

    def response(self, h):
        d = -torch.einsum("iy,xyij->xij", h[self.owner], self._ip())
        return d + d.transpose(-1, -2)

    def hessian_vector(self, g, h):
        raise DFTError("second derivatives of the dipole integrals w.r.t. nuclear coordinates are not available "
                       "(libcint has no <nabla nabla i|r|j>): a nuclear Hessian in an electric field cannot be "
                       "computed. Take it at zero field, or differentiate the field and the nuclei to first order "
                       "each (dipole derivatives, forces in a field).")


OVERLAP = ("int1e_ipovlp", "int1e_ipipovlp", "int1e_ipovlpip")
KINETIC = ("int1e_ipkin", "int1e_ipipkin", "int1e_ipkinip")
RINV = ("int1e_iprinv", "int1e_ipiprinv", "int1e_iprinvip")
METRIC = ("int2c2e_ip1", "int2c2e_ipip1", "int2c2e_ip1ip2")


def nuclear_centres(pyscf_mol):
    """[(C, Z_C)] of the point nuclei, for :class:`TwoCentreDerivatives` of the nuclear attraction."""
    return [(c, float(z)) for c, z in enumerate(pyscf_mol.atom_charges())]


class _Coulomb(torch.autograd.Function):
    """(R, D) -> J[D]_ij = sum_kl (ij|kl)(R) D_kl with ``contract(eri, dm)`` forming J.

    The first derivative w.r.t. R contracts (nabla i j|kl) with density matrices as PySCF's analytic gradient
    does (``pyscf.grad.rhf.get_j``), never forming the 4-index cotangent of the ERIs: for a cotangent G of J,
    sum G_ij dJ_ij/dR_A = -1/2 sum_(i on A) sum_j (Gs v[Ds] + Ds v[Gs])_ij, with Ds = D + D^T, Gs = G + G^T and
    v[M]_ij = sum_kl (nabla i j|kl) M_lk. A double backward (create_graph) goes through the 4-index path.
    """

    @staticmethod
    def forward(coords, dm, derivatives, contract):
        return contract(derivatives.value, dm)

    @staticmethod
    def setup_context(ctx, inputs, output):
        coords, dm, ctx.derivatives, ctx.contract = inputs
        ctx.save_for_backward(coords, dm)

    @staticmethod
    def backward(ctx, g):
        coords, dm = ctx.saved_tensors
        d, contract = ctx.derivatives, ctx.contract
        if torch.is_grad_enabled():
            return (*_coulomb_backward_twice(coords, dm, g, d, contract), None, None)
        d_dm = contract(d.value, g) if ctx.needs_input_grad[1] else None
        d_coords = _coulomb_gradient(d, dm, g) if ctx.needs_input_grad[0] else None
        return d_coords, d_dm, None, None


def _coulomb_gradient(derivatives, dm, g):
    """sum G_ij dJ[D]_ij/dR, (natm, 3), from PySCF's density-matrix contractions of ``int2e_ip1``."""
    nao = dm.shape[-1]
    ds = (dm + dm.transpose(-1, -2)).reshape(-1, nao, nao)
    gs = (g + g.transpose(-1, -2)).reshape(-1, nao, nao)
    # An energy's cotangent is proportional to D (1/2 D for 1/2 tr(D J[D])): then one contraction serves both
    # terms, half the work.
    scale = (gs * ds).sum() / (ds * ds).sum()
    proportional = bool(torch.allclose(gs, scale * ds, rtol=1e-12, atol=0))
    # The integrals live in libcint: their contraction runs on host memory, as every derivative integral here.
    mats = (ds if proportional else torch.cat([ds, gs])).detach().cpu().numpy()
    v = -_tensor(rhf_grad.get_j(derivatives.mol, mats), dm.device)  # (n or 2 n, 3, nao, nao)
    if proportional:
        per_function = 2 * scale * torch.einsum("bij,bxij->ix", ds, v)
    else:
        n = len(ds)
        per_function = torch.einsum("bij,bxij->ix", gs, v[:n]) + torch.einsum("bij,bxij->ix", ds, v[n:])
    return _to_atoms(-0.5 * per_function, derivatives.owner, derivatives.natm)


def _coulomb_backward_twice(coords, dm, g, derivatives, contract):
    """The backward of :class:`_Coulomb` as differentiable functions of (R, D, G), through the 4-index ERIs."""
    d_dm = contract(_Value.apply(coords, derivatives), g)
    with torch.enable_grad():
        eri = derivatives.value.detach().requires_grad_()
        (d_eri,) = torch.autograd.grad(contract(eri, dm), eri, g, create_graph=True)
    return _Gradient.apply(coords, d_eri, derivatives), d_dm


def coulomb(eri, dm, contract):
    """J[D] = ``contract(eri, dm)``; when ``eri`` is the coordinate-differentiable packed ERI tensor of
    :func:`attach`, through :class:`_Coulomb`, whose coordinate gradient avoids the 4-index cotangent.

    The full tensor (kept for exact exchange) keeps the generic path: K's cotangent is 4-index anyway, and J
    sharing it keeps a Hessian at one sweep of the second-derivative integrals."""
    node = eri.grad_fn
    # A custom Function's graph node is its ctx: it holds the derivatives object and the saved coordinates.
    if (torch.is_grad_enabled() and type(node) is _Value._backward_cls
            and isinstance(node.derivatives, ERIDerivatives) and node.derivatives.packed):
        (coords,) = node.saved_tensors
        return _Coulomb.apply(coords, dm, node.derivatives, contract)
    return contract(eri, dm)


def _eri_symmetrized(g):
    """G_ijkl + G_jikl + G_klij + G_klji: with it, the derivative of sum G (ij|kl) with respect to the centre
    of function m, wherever m stands, is -sum_jkl G'_mjkl (nabla m j|kl) (the 8-fold symmetry of (ij|kl))."""
    return g + g.permute(1, 0, 2, 3) + g.permute(2, 3, 0, 1) + g.permute(3, 2, 0, 1)


class ERIDerivatives:
    """Derivatives of the 4-index ERIs (ij|kl), full (nao,)*4 or packed (npair, npair) over pairs i >= j.

    The incoming gradient is a dense tensor like the ERIs (the same memory as they take); derivative integrals
    are computed one atom (of the first index) at a time: (3 or 9, nao_A, nao, nao, nao).
    """

    def __init__(self, pyscf_mol, value, packed=False):
        self.mol = pyscf_mol
        self.value = value
        self.packed = packed
        self.nao = pyscf_mol.nao
        self.natm = pyscf_mol.natm
        self.owner = _owner(pyscf_mol, value.device)
        self._cache = {}
        if packed:
            i, j = torch.tril_indices(self.nao, self.nao, device=value.device)
            self.pairs = i * self.nao + j

    def _full(self, g):
        if not self.packed:
            return g
        n2 = self.nao * self.nao
        full = g.new_zeros(n2, n2)
        full[self.pairs[:, None], self.pairs[None, :]] = g
        return full.reshape(self.nao, self.nao, self.nao, self.nao)

    def _pack(self, m):
        if not self.packed:
            return m
        n2 = self.nao * self.nao
        return m.reshape(n2, n2)[self.pairs[:, None], self.pairs[None, :]]

    def _by_atom(self, name, comp):
        """Iterator over (atom, p0, p1, the derivative integrals ``name`` of the atom's functions p0:p1). Kept
        when they take at most ``ERI_CACHE_BYTES``: a Hessian asks for the same ones once per coordinate."""
        if name in self._cache:
            return iter(self._cache[name])
        per_atom = self._per_atom(name, comp)
        if self.nao ** 4 * comp * 8 > ERI_CACHE_BYTES:
            return per_atom
        self._cache[name] = list(per_atom)
        return iter(self._cache[name])

    def _per_atom(self, name, comp):
        nbas = self.mol.nbas
        for atom, (s0, s1, p0, p1) in enumerate(self.mol.aoslice_by_atom()):
            ints = self.mol.intor(name, comp=comp, shls_slice=(s0, s1, 0, nbas, 0, nbas, 0, nbas))
            ints = _tensor(ints, self.value.device)
            yield atom, p0, p1, (ints if comp == 3 else ints.reshape(3, 3, *ints.shape[1:]))

    def gradient(self, g):
        geff = _eri_symmetrized(self._full(g))
        out = geff.new_zeros(self.natm, 3)
        for atom, p0, p1, ip1 in self._by_atom("int2e_ip1", 3):
            out[atom] -= torch.tensordot(ip1, geff[p0:p1], dims=4)
        return out

    def response(self, h):
        t = h.new_zeros((self.nao,) * 4)
        for atom, p0, p1, ip1 in self._by_atom("int2e_ip1", 3):
            t[p0:p1] = torch.tensordot(h[atom], ip1, dims=1)
        # d(ij|kl) = -(h_i (nabla i j|kl) + h_j (nabla j i|kl) + h_k (nabla k l|ij) + h_l (nabla l k|ij)).
        d = t + t.permute(1, 0, 2, 3) + t.permute(2, 3, 0, 1) + t.permute(2, 3, 1, 0)
        return -self._pack(d)

    def hessian_vector(self, g, h):
        geff = _eri_symmetrized(self._full(g))
        h_ao = h[self.owner]
        out = geff.new_zeros(self.natm, 3)
        ipip1 = self._by_atom("int2e_ipip1", 9)
        ipvip1 = self._by_atom("int2e_ipvip1", 9)
        ip1ip2 = self._by_atom("int2e_ip1ip2", 9)
        for (atom, p0, p1, aa), (_, _, _, ab), (_, _, _, ac) in zip(ipip1, ipvip1, ip1ip2):
            ga = geff[p0:p1]
            # Second slot of the pair moved: the same function (aa), the ket partner j (ab), or k or l (ac).
            out[atom] += torch.einsum("x,xy->y", h[atom], torch.tensordot(aa, ga, dims=4))
            out[atom] += torch.einsum("yxmjkl,mjkl,jx->y", ab, ga, h_ao)
            out[atom] += torch.einsum("yxmjkl,mjkl,kx->y", ac, ga + ga.transpose(2, 3), h_ao)
        return out


def _aux_slices(auxmol):
    return [(atom, s0, s1, p0, p1) for atom, (s0, s1, p0, p1) in enumerate(auxmol.aoslice_by_atom())]


class ThreeCentreDerivatives:
    """Derivatives of the density-fitting 3-centre integrals (P|ij), value shaped (naux, nao, nao).

    Args:
        pyscf_mol, auxmol: PySCF ``Mole`` of the orbital and of the auxiliary basis (same atoms).
        value: (naux, nao, nao) tensor.
    """

    def __init__(self, pyscf_mol, auxmol, value):
        self.mol = pyscf_mol
        self.auxmol = auxmol
        self.value = value
        self.natm = pyscf_mol.natm
        self.owner = _owner(pyscf_mol, value.device)
        self.aux_owner = _owner(auxmol, value.device)

    def _ints(self, name, comp, shls_slice):
        ints = df.incore.aux_e2(self.mol, self.auxmol, name, aosym="s1", comp=comp, shls_slice=shls_slice)
        ints = _tensor(ints, self.value.device)
        return ints if comp == 3 else ints.reshape(3, 3, *ints.shape[1:])

    def _by_ao_atom(self, name, comp):
        nbas, naux = self.mol.nbas, self.auxmol.nbas
        for atom, (s0, s1, p0, p1) in enumerate(self.mol.aoslice_by_atom()):
            yield atom, p0, p1, self._ints(name, comp, (s0, s1, 0, nbas, 0, naux))

    def _by_aux_atom(self, name, comp):
        nbas = self.mol.nbas
        for atom, s0, s1, p0, p1 in _aux_slices(self.auxmol):
            yield atom, p0, p1, self._ints(name, comp, (0, nbas, 0, nbas, s0, s1))

    @staticmethod
    def _layout(g):
        """(naux, nao, nao) -> (i, j, P) as PySCF's integrals, and its (i, j)-symmetrized form."""
        g = g.permute(1, 2, 0)
        return g, g + g.transpose(0, 1)

    def gradient(self, g):
        g, gs = self._layout(g)
        out = g.new_zeros(self.natm, 3)
        for atom, p0, p1, ip1 in self._by_ao_atom("int3c2e_ip1", 3):
            out[atom] -= torch.tensordot(ip1, gs[p0:p1], dims=3)
        for atom, p0, p1, ip2 in self._by_aux_atom("int3c2e_ip2", 3):
            out[atom] -= torch.tensordot(ip2, g[:, :, p0:p1], dims=3)
        return out

    def response(self, h):
        t = h.new_zeros(self.value.shape[1:] + self.value.shape[:1])
        for atom, p0, p1, ip1 in self._by_ao_atom("int3c2e_ip1", 3):
            t[p0:p1] = torch.tensordot(h[atom], ip1, dims=1)
        d = t + t.transpose(0, 1)
        for atom, p0, p1, ip2 in self._by_aux_atom("int3c2e_ip2", 3):
            d[:, :, p0:p1] += torch.tensordot(h[atom], ip2, dims=1)
        return -d.permute(2, 0, 1)

    def hessian_vector(self, g, h):
        g, gs = self._layout(g)
        h_ao, h_aux = h[self.owner], h[self.aux_owner]
        out = g.new_zeros(self.natm, 3)
        ao_blocks = zip(self._by_ao_atom("int3c2e_ipip1", 9), self._by_ao_atom("int3c2e_ipvip1", 9),
                        self._by_ao_atom("int3c2e_ip1ip2", 9))
        for (atom, p0, p1, aa), (_, _, _, ab), (_, _, _, ap) in ao_blocks:
            ga = gs[p0:p1]
            out[atom] += torch.einsum("x,xy->y", h[atom], torch.tensordot(aa, ga, dims=3))
            out[atom] += torch.einsum("yxmjP,mjP,jx->y", ab, ga, h_ao)
            out[atom] += torch.einsum("yxmjP,mjP,Px->y", ap, ga, h_aux)
        aux_blocks = zip(self._by_aux_atom("int3c2e_ipip2", 9), self._by_aux_atom("int3c2e_ip1ip2", 9))
        for (atom, p0, p1, pp), (_, _, _, ap) in aux_blocks:
            out[atom] += torch.einsum("x,xy->y", h[atom], torch.tensordot(pp, g[:, :, p0:p1], dims=3))
            out[atom] += torch.einsum("xyijP,ijP,ix->y", ap, gs[:, :, p0:p1], h_ao)
        return out


def _powers(order):
    """Cartesian derivative multi-indices of one order, in PySCF's ``GTOval_*_deriv`` order (xx, xy, xz, yy...)."""
    return [(lx, ly, order - lx - ly) for lx in range(order, -1, -1) for ly in range(order - lx, -1, -1)]


_COMPONENTS = [p for order in range(5) for p in _powers(order)]
_INDEX = {p: n for n, p in enumerate(_COMPONENTS)}


def n_components(deriv):
    """Number of AO components (value and derivatives) up to order ``deriv``: 1, 4, 10, 20."""
    return (deriv + 1) * (deriv + 2) * (deriv + 3) // 6


def _raised(deriv):
    """(ncomp(deriv), 3) index of d/dx, d/dy, d/dz of each component up to order ``deriv``."""
    table = [[_INDEX[tuple(p + (a == x) for a, p in enumerate(_COMPONENTS[c]))] for x in range(3)]
             for c in range(n_components(deriv))]
    return torch.tensor(table)


class AOValueDerivatives:
    """Derivatives of AO values (and their derivatives) phi_i(r_g - A_i) on grid points r_g.

    A basis function's value moves with its atom: d phi/dA = -nabla phi. The points are either fixed in space
    (PySCF's default for analytic gradients and Hessians) or, with ``point_atoms``, each moves with its atom
    (grid response): then d phi/dR_B also has +nabla phi for the points of atom B.

    Args:
        mol: :class:`dft.Molecule`.
        points: (N, 3) numpy array of the points, Bohr.
        value: (ncomp, N, nao) tensor, ncomp = 1 (values) or 4 (values and gradients).
        point_atoms: (N,) long tensor (atom each point moves with), or None for fixed points.
        block_values: most AO values (points x components x orbitals) evaluated at once.
    """

    def __init__(self, mol, points, value, point_atoms=None, block_values=8_000_000):
        self.mol = mol.pyscf
        self.points = points
        self.value = value
        self.point_atoms = point_atoms
        self.natm = mol.natm
        self.owner = _owner(self.mol, value.device)
        self.deriv = {1: 0, 4: 1}[value.shape[0]]
        self.block_values = block_values

    def _blocks(self, extra):
        """Yield (slice, AO values up to order deriv + extra): (ncomp, Nb, nao)."""
        deriv = self.deriv + extra
        name = ["GTOval_sph", "GTOval_sph_deriv1", "GTOval_sph_deriv2", "GTOval_sph_deriv3"][deriv]
        size = max(64, self.block_values // (n_components(deriv) * self.mol.nao))
        for start in range(0, len(self.points), size):
            block = slice(start, start + size)
            # libcint writes (ncomp, nao, Nb): keep its strides (a view) rather than copying to (ncomp, Nb, nao).
            yield block, torch.from_numpy(self.mol.eval_gto(name, self.points[block])).to(self.value.device)

    def _to_atoms(self, t, block):
        """(3, Nb, nao) per (point, function) derivative -> (natm, 3): -function centres (+points if moving)."""
        out = _to_atoms(-t.sum(1).T, self.owner, self.natm)
        if self.point_atoms is not None:
            out += _to_atoms(t.sum(2).T, self.point_atoms[block], self.natm)
        return out

    def _direction(self, h, block):
        """Displacement of each point relative to each function's centre, (3, Nb, nao)."""
        npoints = len(self.points[block])
        e = -h[self.owner].T[:, None, :].expand(3, npoints, self.mol.nao)
        if self.point_atoms is not None:
            e = e + h[self.point_atoms[block]].T[:, :, None]
        return e

    def gradient(self, g):
        up = _raised(self.deriv).tolist()
        out = g.new_zeros(self.natm, 3)
        for block, ao in self._blocks(1):
            # t_x = sum_c g_c d(phi_c)/dx, accumulated in place from views: no gathered copy, no temporaries.
            t = ao.new_empty((3,) + ao.shape[1:])
            for x in range(3):
                torch.mul(g[0, block], ao[up[0][x]], out=t[x])
                for c in range(1, len(up)):
                    t[x].addcmul_(g[c, block], ao[up[c][x]])
            out += self._to_atoms(t, block)
        return out

    def response(self, h):
        up = _raised(self.deriv).to(h.device)
        out = torch.zeros_like(self.value)
        for block, ao in self._blocks(1):
            out[:, block] = torch.einsum("cxgi,xgi->cgi", ao[up], self._direction(h, block))
        return out

    def hessian_vector(self, g, h):
        up = _raised(self.deriv).to(g.device)
        up2 = _raised(self.deriv + 1).to(g.device)
        out = g.new_zeros(self.natm, 3)
        for block, ao in self._blocks(2):
            # k[c'] = sum over (c, x) raising c to c' of g_c e_x; then t_y = sum_c' k_c' d(phi_c')/dy.
            ge = g[:, None, block] * self._direction(h, block)[None]  # (ncomp, 3, Nb, nao)
            k = ao.new_zeros((up2.shape[0],) + ao.shape[1:]).index_add_(0, up.reshape(-1), ge.flatten(0, 1))
            t = torch.einsum("cgi,cygi->ygi", k, ao[up2])
            out += self._to_atoms(t, block)
        return out
