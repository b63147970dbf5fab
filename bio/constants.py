"""Physical constants in OpenMM's units (nm, kJ/mol, elementary charge)."""

import math

# OpenMM's ONE_4PI_EPS0 = 1/(4 pi eps0) in kJ nm / (mol e^2), from the 2018 CODATA eps0 OpenMM uses.
_EPSILON0 = 1e-6 * 8.8541878128e-12 / (1.602176634e-19**2 * 6.02214076e23)
COULOMB = 1.0 / (4.0 * math.pi * _EPSILON0)
