"""Exceptions raised by the exchange-correlation functionals."""


class XCError(ValueError):
    """A functional name, or the densities passed to a functional, cannot be used."""
