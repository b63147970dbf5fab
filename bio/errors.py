"""Exceptions raised by `bio`: bad structure files, residues the force field cannot parameterize, OpenMM
forces that have no torch implementation yet, input files that would run code, and bad arguments."""


class BioError(Exception):
    """Base class of every error raised by `bio`."""


class StructureError(BioError, ValueError):
    """A structure file is unreadable, truncated or holds non-finite coordinates."""


class LigandError(StructureError):
    """A ligand that cannot be built or read: an unparsable SMILES (with RDKit's reason), an unreadable file,
    or a molecule without 3D coordinates or with implicit hydrogens."""


class ParameterizationError(BioError, ValueError):
    """The force field has no template for a residue (or atoms are missing or extra), or a force-field file is
    missing or malformed."""


class UnsafeInputError(ParameterizationError):
    """A force-field file holds Python code that OpenMM would run (a <Script> or <InitializationScript> element,
    or an expression where OpenMM calls eval()); refused unless the caller trusts the file (trust_scripts=True)."""


class UnsupportedForceError(BioError, NotImplementedError):
    """An OpenMM force (or a setting of one) that `bio` cannot turn into a torch energy term."""


class ConstraintError(BioError, RuntimeError):
    """Constraints (SHAKE/RATTLE/SETTLE) could not be satisfied, or a simulation blew up."""


class ArgumentError(BioError, ValueError):
    """An argument outside its allowed range: names the argument, the value and what is allowed.

    Attributes: argument (its name), value, rule (what is allowed, in words), owner (the function or class, or
    None), note (an extra reason, or None), shown (the text shown for the value; default its repr).
    """

    def __init__(self, argument, value, rule, owner=None, note=None, shown=None):
        self.argument, self.value, self.rule, self.owner, self.note = argument, value, rule, owner, note
        self.shown = repr(value) if shown is None else shown
        super().__init__(self.message())

    def message(self, name=None):
        """The one-line message, with `name` (e.g. a command-line option) in place of the argument's name."""
        where = f"{self.owner}: " if self.owner and name is None else ""
        note = f" ({self.note})" if self.note else ""
        return f"{where}{name or self.argument} must be {self.rule}, got {self.shown}{note}."


def one_line(error):
    """The text of an exception (e.g. OpenMM's, which may span lines) on one line, with its type's name."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"
