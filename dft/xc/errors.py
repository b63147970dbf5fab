"""Exceptions raised by the exchange-correlation functionals."""

from ..errors import DFTError


class XCError(DFTError, ValueError):
    """A functional name, or the densities passed to a functional, cannot be used."""
