"""Exchange-correlation functionals in torch (``dft.xc``).

``get_functional(name_or_callable)`` gives an ``XCFunctional``: ``e = f(rho, sigma=None, spin=0, tau=None)`` is
the XC energy density per volume [Hartree bohr^-3] on grid points, E_xc = sum_g w_g e_g, and potentials come
from autograd of E_xc.  Families: "lda" (rho), "gga" (rho, sigma), "mgga" (rho, sigma and the kinetic-energy
density tau: TPSS, SCAN, r2SCAN).  Components match libxc (through ``pyscf.dft.libxc``) pointwise, including its screening
of small densities.
"""

from .component import Component, Correlation, Exchange
from .errors import XCError
from .functional import ALIASES, CORRELATION, EXCHANGE, XCFunctional, get_functional
from .gga import B88, LYP, PBECorrelation, PBEExchange
from .io import load, save
from .lda import PW92, VWN5, VWNRPA, Slater
from .mgga import R2SCANCorrelation, R2SCANExchange, SCANCorrelation, SCANExchange, TPSSCorrelation, TPSSExchange
from .neural import NeuralXC

__all__ = [
    "ALIASES", "B88", "CORRELATION", "Component", "Correlation", "EXCHANGE", "Exchange", "LYP", "NeuralXC", "PBECorrelation",
    "PBEExchange", "PW92", "R2SCANCorrelation", "R2SCANExchange", "SCANCorrelation", "SCANExchange", "Slater",
    "TPSSCorrelation", "TPSSExchange", "VWN5", "VWNRPA", "XCError", "XCFunctional", "get_functional", "load", "save",
]
