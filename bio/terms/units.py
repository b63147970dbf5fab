"""Plain floats from OpenMM quantities, in OpenMM's MD unit system (nm, kJ/mol, ps, e, radians)."""

import openmm.unit as unit


def strip(value):
    """A float (or list of floats) in MD units from an OpenMM Quantity; plain numbers pass through."""
    if unit.is_quantity(value):
        return value.value_in_unit_system(unit.md_unit_system)
    return value
