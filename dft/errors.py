"""Exceptions and warnings of the dft package.

Every message says what went wrong, where (file, line, atom) and what to do about it.
"""


class DFTError(Exception):
    """Base class of every error raised by ``dft``."""


class MoleculeError(DFTError, ValueError):
    """A molecule cannot be built: unknown element, bad geometry, inconsistent charge/spin, bad file."""


class OptionError(DFTError, ValueError):
    """An argument out of its range or of the wrong kind (``max_cycle``, ``conv_tol``, ``grid_level``, ``field``,
    ``device``, ...); the message names it, and the exception's ``argument`` attribute holds its name."""

    def __init__(self, message, argument=None):
        super().__init__(message)
        self.argument = argument


class BasisError(DFTError, ValueError):
    """An unknown or unusable basis set (or auxiliary basis) name."""


class SCFNotConvergedError(DFTError, RuntimeError):
    """The SCF did not reach its convergence thresholds (raised by ``kernel(strict=True)``)."""


class SCFNotConvergedWarning(UserWarning):
    """The SCF did not reach its convergence thresholds; results are those of the last cycle."""
