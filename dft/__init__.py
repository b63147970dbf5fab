"""dft: a differentiable Kohn-Sham DFT solver for molecules (atomic units).

PySCF supplies basis sets, integrals, grids and AO values; the SCF, the XC functionals and all derivatives
are torch. Typical use::

    import dft
    mol = dft.Molecule("O 0 0 0.117; H 0 0.757 -0.470; H 0 -0.757 -0.470", basis="def2-svp")
    mf = dft.RKS(mol, xc="b3lyp")
    energy = mf.kernel()  # Hartree; differentiable w.r.t. whatever upstream requires grad
    mu = dft.dipole(mf)  # atomic units, through the implicit response of the density
"""

from . import response
from .errors import (BasisError, DFTError, MoleculeError, OptionError, SCFNotConvergedError, SCFNotConvergedWarning)
from .geomopt import GeometryOptimization, optimize_geometry
from .ks import RKS, UKS
from .molecule import Molecule
from .properties import density, dipole, homo_lumo_gap, polarizability
from .vibrations import HarmonicAnalysis, frequencies, harmonic_analysis, hessian

__all__ = ["Molecule", "RKS", "UKS", "DFTError", "MoleculeError", "OptionError", "BasisError", "SCFNotConvergedError",
           "SCFNotConvergedWarning", "density", "dipole", "homo_lumo_gap", "polarizability", "response", "hessian",
           "frequencies", "harmonic_analysis", "HarmonicAnalysis", "optimize_geometry", "GeometryOptimization"]
