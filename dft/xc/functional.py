"""Named exchange-correlation functionals: weighted sums of components plus a fraction of exact exchange.

Names follow PySCF (``mf.xc``): a full name such as ``"b3lyp"`` or the ``"X,C"`` syntax with optional
weights, e.g. ``"lda,vwn"`` or ``"0.25*hf + 0.75*pbe, pbe"``.  The exchange part may contain ``hf``; its
weight becomes the exact-exchange fraction ``hyb`` that the SCF adds from the density matrix.
"""

import difflib
import os
import re

import torch

from .density import split_spin
from .errors import XCError
from .gga import B88, LYP, PBECorrelation, PBEExchange
from .lda import PW92, VWN5, VWNRPA, Slater
from .mgga import R2SCANCorrelation, R2SCANExchange, SCANCorrelation, SCANExchange, TPSSCorrelation, TPSSExchange

EXCHANGE = {"slater": Slater, "lda": Slater, "b88": B88, "pbe": PBEExchange, "tpss": TPSSExchange,
            "scan": SCANExchange, "r2scan": R2SCANExchange}
CORRELATION = {"vwn": VWN5, "vwn5": VWN5, "vwn_rpa": VWNRPA, "vwn3": VWNRPA, "pw92": PW92, "pw": PW92,
               "tpss": TPSSCorrelation, "scan": SCANCorrelation, "r2scan": R2SCANCorrelation,
               "pbe": PBECorrelation, "lyp": LYP}
# Full names in terms of components.  "b3lyp" is PySCF >= 2.3's (libxc HYB_GGA_XC_B3LYP, with VWN-RPA).
ALIASES = {
    "lda": "slater,",
    "slater": "slater,",
    "svwn": "slater,vwn5",
    "pbe": "pbe,pbe",
    "blyp": "b88,lyp",
    "b3lyp": "0.2*hf+0.08*slater+0.72*b88,0.81*lyp+0.19*vwn_rpa",
    "b3lyp5": "0.2*hf+0.08*slater+0.72*b88,0.81*lyp+0.19*vwn5",
    "pbe0": "0.25*hf+0.75*pbe,pbe",
    "hf": "hf,",
    "tpss": "tpss,tpss",  # PySCF/libxc: MGGA_X_TPSS + MGGA_C_TPSS, likewise SCAN and r2SCAN
    "scan": "scan,scan",
    "r2scan": "r2scan,r2scan",
}
_TERM = re.compile(r"(?:([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\*)?([a-z][a-z0-9_]*)")


class XCFunctional(torch.nn.Module):
    """An exchange-correlation functional: e(rho, sigma, tau) = sum_i w_i component_i(rho, sigma, tau), plus ``hyb``.

    Attributes: ``hyb`` (exact-exchange fraction; a float, or the tensor a user functional supplies, kept by
    reference so it can be trained), ``family`` ("lda", "gga" or "mgga": whether sigma, and tau, are needed;
    the highest of the components'), ``name``,
    ``components`` (modules) and ``weights`` (float64 buffer, one per component).  A pure Hartree-Fock
    "functional" has no components and returns zeros.

    ``forward(rho, sigma=None, spin=0, tau=None)`` returns the XC energy density per volume e [Hartree bohr^-3],
    shape (..., N), so that E_xc = sum_g w_g e_g.  Restricted (``spin=0``): rho (..., N) total density
    [bohr^-3], sigma (..., N) = |grad rho|^2 [bohr^-8], tau (..., N) = 1/2 sum_i occ_i |grad phi_i|^2
    [Hartree bohr^-3] (meta-GGAs only).  Unrestricted (``spin=1``): rho (2, ..., N) = (rho_a, rho_b), sigma
    (3, ..., N) = (sigma_aa, sigma_ab, sigma_bb), tau (2, ..., N) = (tau_a, tau_b).  tau is passed on only to
    components of family "mgga", so LDA/GGA components and callables need not accept it.  Potentials are autograd
    derivatives of E_xc; first and second derivatives are finite everywhere, including rho = 0.
    """

    def __init__(self, components, weights, hyb=0.0, name="custom", family=None):
        super().__init__()
        if len(components) != len(weights):
            raise XCError(f"{len(components)} components but {len(weights)} weights")
        self.components = torch.nn.ModuleList(
            c if isinstance(c, torch.nn.Module) else _Callable(c) for c in components)
        self.register_buffer("weights", torch.tensor([float(w) for w in weights], dtype=torch.float64))
        self.hyb = hyb
        self.name = name
        if family is None:
            family = _family(getattr(c, "family", "gga") for c in components)
        if family not in FAMILIES:
            raise XCError(f"family must be one of {FAMILIES}, got {family!r}")
        self.family = family

    def forward(self, rho, sigma=None, spin=0, tau=None):
        rho_a, rho_b, *_ = split_spin(rho, sigma, spin, self.family)
        if not self.components:
            return (rho_a + rho_b) * 0
        weights = self.weights.to(rho_a)
        terms = [weight * (component(rho, sigma, spin=spin, tau=tau) if getattr(component, "family", "gga") == "mgga"
                           else component(rho, sigma, spin=spin))
                 for weight, component in zip(weights, self.components)]
        return sum(terms[1:], terms[0])

    def make_trainable(self, *names):
        """Turn the mixing constants into ``nn.Parameter``s in place, so that optimizers see them: ``"hyb"``
        (the exact-exchange fraction, e.g. B3LYP's a0 = 0.2) and ``"weights"`` (the components' weights, e.g.
        B3LYP's 0.08 Slater + 0.72 B88, 0.81 LYP + 0.19 VWN). A component's own constants are made trainable
        by ``functional.components[i].make_trainable(...)``. Returns ``self``."""
        for name in names:
            if name == "hyb":
                self.hyb = torch.nn.Parameter(torch.as_tensor(self.hyb, dtype=torch.float64).clone())
            elif name == "weights" and "weights" in self._buffers:
                self.weights = torch.nn.Parameter(self._buffers.pop("weights").clone())
            elif name != "weights":
                raise XCError(f"{self.name} has no mixing constant {name!r}: use 'hyb' or 'weights', or "
                              f"components[i].make_trainable(...) for a component's constants")
        return self

    def extra_repr(self):
        return f"name={self.name!r}, hyb={self.hyb}, family={self.family!r}, weights={self.weights.tolist()}"


class _Callable(torch.nn.Module):
    """A plain function with the functional's call signature, held as a module."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.family = getattr(fn, "family", "gga")

    def forward(self, rho, sigma=None, spin=0, tau=None):
        if self.family == "mgga":
            return self.fn(rho, sigma, spin=spin, tau=tau)
        return self.fn(rho, sigma, spin=spin)


FAMILIES = ("lda", "gga", "mgga")  # in order: each needs the inputs of those before it


def _family(families):
    """The family a sum of components of ``families`` belongs to: the highest of theirs ("lda" if none)."""
    # An unknown family ranks highest, so that XCFunctional's check names it.
    return max(families, key=lambda f: FAMILIES.index(f) if f in FAMILIES else len(FAMILIES), default="lda")


def get_functional(xc):
    """The functional ``xc`` names or wraps.

    xc: a PySCF-style name (case-insensitive; see ALIASES, EXCHANGE, CORRELATION and the module docstring), a
    shipped learned functional (``"nn-pbe"``; see ``dft.xc.io.SHIPPED``), the path of a file written by
    :func:`dft.xc.save` (ending in ``.pt`` or containing a path separator),
    an ``XCFunctional`` (returned as is), or any callable / ``torch.nn.Module`` ``f(rho, sigma, spin=0)``
    returning the energy density per volume; its exact-exchange fraction is its attribute ``hyb`` (default
    0) and its family its attribute ``family`` (default "gga"; a "mgga" callable is called
    ``f(rho, sigma, spin=spin, tau=tau)``).
    """
    if isinstance(xc, XCFunctional):
        return xc
    if isinstance(xc, str):
        from . import io  # io builds functionals with this module: imported on use

        if xc.strip().lower() in io.SHIPPED:
            return io.shipped(xc.strip().lower())
        if xc.endswith(".pt") or os.path.sep in xc:
            return io.load(xc)
        return _from_name(xc)
    if callable(xc):
        return XCFunctional([xc], [1.0], hyb=getattr(xc, "hyb", 0.0),
                            name=getattr(xc, "name", type(xc).__name__), family=getattr(xc, "family", "gga"))
    raise XCError(f"xc must be a functional name such as 'pbe' or 'b3lyp', an XCFunctional, or a callable "
                  f"f(rho, sigma, spin=0); got {type(xc).__name__}")


def _from_name(name):
    key = re.sub(r"\s+", "", name.lower())
    spec = ALIASES.get(key, key)
    if "," not in spec:
        choices = list(ALIASES) + [x + "," for x in EXCHANGE]
        raise XCError(f"unknown functional {name!r}{_suggest(key, choices)}; use a full name "
                      f"({', '.join(ALIASES)}) or 'X,C' with X in {sorted(EXCHANGE)} (and 'hf') "
                      f"and C in {sorted(CORRELATION)}")
    x_part, c_part = spec.split(",", 1)
    if "," in c_part:
        raise XCError(f"functional {name!r} has more than one comma; write 'X,C'")
    components, weights, hyb = [], [], 0.0
    for part, table, kind in ((x_part, EXCHANGE, "exchange"), (c_part, CORRELATION, "correlation")):
        for weight, term in _terms(part, name):
            if kind == "exchange" and term == "hf":
                hyb += weight
            elif term in table:
                components.append(table[term]())
                weights.append(weight)
            else:
                choices = list(table) + (["hf"] if kind == "exchange" else [])
                raise XCError(f"unknown {kind} {term!r} in functional {name!r}{_suggest(term, choices)}; "
                              f"known: {sorted(choices)}")
    family = _family(c.family for c in components)
    return XCFunctional(components, weights, hyb=hyb, name=name.strip().lower(), family=family)


def _terms(part, name):
    """(weight, component name) pairs of one side of 'X,C', e.g. '0.2*hf+0.8*b88'."""
    if not part:
        return []
    terms = []
    for text in part.split("+"):
        match = _TERM.fullmatch(text)
        if match is None:
            raise XCError(f"cannot read {text!r} in functional {name!r}: write terms as 'NAME' or "
                          f"'WEIGHT*NAME' joined by '+', e.g. '0.25*hf+0.75*pbe,pbe'")
        weight, term = match.groups()
        terms.append((1.0 if weight is None else float(weight), term))
    return terms


def _suggest(word, choices):
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
