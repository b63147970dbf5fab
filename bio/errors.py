"""Exceptions raised by `bio`: bad structure files, residues the force field cannot parameterize, and
OpenMM forces that have no torch implementation yet."""


class BioError(Exception):
    """Base class of every error raised by `bio`."""


class StructureError(BioError, ValueError):
    """A structure file is unreadable, truncated or holds non-finite coordinates."""


class ParameterizationError(BioError, ValueError):
    """The force field has no template for a residue (or atoms are missing or extra)."""


class UnsupportedForceError(BioError, NotImplementedError):
    """An OpenMM force (or a setting of one) that `bio` cannot turn into a torch energy term."""


class ConstraintError(BioError, RuntimeError):
    """Constraints (SHAKE/RATTLE/SETTLE) could not be satisfied, or a simulation blew up."""
