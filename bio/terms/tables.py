"""Tabulated functions of OpenMM custom forces, as tensors."""

import openmm
import torch


def discrete_2d_table(force, name):
    """The Discrete2DFunction `name` of a custom force as a float64 (nx, ny) tensor t with t[x, y] = f(x, y)
    (OpenMM stores values[x + nx * y]), or None when the force has no such 2-D discrete table."""
    for f in range(force.getNumTabulatedFunctions()):
        if force.getTabulatedFunctionName(f) == name:
            function = force.getTabulatedFunction(f)
            if not isinstance(function, openmm.Discrete2DFunction):
                return None
            nx, ny, values = function.getFunctionParameters()
            return torch.tensor(values, dtype=torch.float64).reshape(ny, nx).T
    return None
