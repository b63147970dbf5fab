"""Parameterizing a topology with OpenMM's ForceField, with errors that say which residue failed and how to
fix it.

Force-field XML can hold Python code that OpenMM runs: the text of <Script> elements (run when a system is
built) and of <InitializationScript> elements (run when the file is loaded), and the useDispersionCorrection
attribute of <NonbondedForce>/<LennardJonesForce> (passed to eval()). `load_forcefield` reads every file OpenMM
would read (the ones named and those they pull in through <Include>, found the way OpenMM finds them) before
OpenMM does, and refuses such code unless the caller trusts the files (`trust_scripts=True`). Files in OpenMM's
force-field directories (its bundled data/ directory and those that installed packages register) are trusted:
they ship with installed code. Several bundled files rely on scripts: implicit/obc2.xml (bio's default),
implicit/hct.xml, obc1.xml, gbn.xml, gbn2.xml, charmm36*.xml and their water models, charmm_polar_*.xml,
amber14/GLYCAM_06j-1.xml, amber19/lipid21.xml.
"""

import ast
import os
import xml.parsers.expat
from collections import Counter

import numpy as np
import openmm.app as app
import openmm.unit as unit

from . import checks
from .errors import ArgumentError, ParameterizationError, UnsafeInputError, one_line

NONBONDED_METHODS = {
    "nocutoff": app.NoCutoff,
    "cutoff_nonperiodic": app.CutoffNonPeriodic,
    "cutoff_periodic": app.CutoffPeriodic,
    "pme": app.PME,
}
METHOD_NAMES = ("nocutoff", "cutoff", "cutoff_nonperiodic", "cutoff_periodic", "pme")  # 'cutoff': either
PERIODIC_METHODS = ("cutoff_periodic", "pme")
CONSTRAINTS = {None: None, "hbonds": app.HBonds, "allbonds": app.AllBonds, "hangles": app.HAngles}

_FIX = ("Fix: add hydrogens (add_hydrogens=True, or openmm.app.Modeller.addHydrogens), cap or complete the "
        "termini (ACE/NME caps, or the standard terminal atoms), or supply a template for the residue (an extra "
        "force-field XML file, or ForceField.registerResidueTemplate).")



def resolve_nonbonded_method(name, topology):
    """OpenMM's nonbonded method for `name`; 'cutoff' is periodic when the topology has a box."""
    checks.choice("nonbonded_method", name, METHOD_NAMES)
    if name == "cutoff":
        name = "cutoff_periodic" if topology.getPeriodicBoxVectors() is not None else "cutoff_nonperiodic"
    if name in PERIODIC_METHODS and topology.getPeriodicBoxVectors() is None:
        raise ArgumentError("nonbonded_method", name, "'nocutoff', 'cutoff' or 'cutoff_nonperiodic' for a "
                            "structure without a periodic box (no CRYST1 record in the PDB file, no cell in the "
                            "mmCIF file)")
    return NONBONDED_METHODS[name]


def check_system_options(nonbonded_method="nocutoff", cutoff=1.0, constraints=None, ewald_error_tolerance=0.0005):
    """Check the options of building a system (see `parameterize`); raises ArgumentError."""
    checks.choice("nonbonded_method", nonbonded_method, METHOD_NAMES)
    check_cutoff(cutoff)
    checks.choice("constraints", constraints, tuple(CONSTRAINTS))
    checks.number("ewald_error_tolerance", ewald_error_tolerance, low=0, high=1)


def check_cutoff(cutoff, name="cutoff", owner=None):
    """A nonbonded cutoff, nm, checked to be a finite number in [1e-6, 1e6] (outside, the reaction-field constant
    1/cutoff^3 overflows or the neighbour search loses precision; nonbonded_method='nocutoff' has no cutoff).
    Raises ArgumentError."""
    return checks.number(name, cutoff, low=1e-6, high=1e6, low_inclusive=True, high_inclusive=True, unit="nm",
                         owner=owner)


def check_cutoff_fits_box(cutoff, box_vectors, name="cutoff", owner=None):
    """OpenMM's rule for periodic cutoffs: at most half the box's smallest width (box_vectors (3, 3) nm rows)."""
    box = np.asarray(box_vectors, dtype=np.float64)
    volume = abs(np.linalg.det(box))
    half = 0.5 * min(volume / np.linalg.norm(np.cross(box[(k + 1) % 3], box[(k + 2) % 3])) for k in range(3))
    if not cutoff <= half + 1e-12:
        raise ArgumentError(name, cutoff, f"at most half the periodic box's smallest width ({half:g} nm) with a "
                            "periodic nonbonded method", owner)


def load_forcefield(files, trust_scripts=False):
    """openmm.app.ForceField from XML file names (OpenMM's bundled ones or paths).

    Every file OpenMM would read (includes too) is checked first: a missing or malformed file raises
    ParameterizationError naming it (and the line); Python code in a file outside OpenMM's force-field
    directories raises UnsafeInputError unless `trust_scripts` (see the module docstring).
    """
    checks.flag("trust_scripts", trust_scripts)
    files = _file_names(files)
    for path, trusted, included_from, code in _files_to_read(files):
        if code and not trusted and not trust_scripts:
            what, line = code[0]
            via = f" (included by {included_from})" if included_from else ""
            if not os.path.isabs(path) and any(os.path.isfile(os.path.join(d, path)) for d in _data_directories()):
                via += f" (this file in the working directory is read instead of OpenMM's own {path})"
            more = f" and {len(code) - 1} more place(s)" if len(code) > 1 else ""
            raise UnsafeInputError(
                f"{path}, line {line}{via}: refusing to load this force-field file: it holds {what}{more}, which "
                f"OpenMM would run as arbitrary Python code. {_TRUST}")
    try:
        return app.ForceField(*files)
    except Exception as error:
        raise ParameterizationError(f"could not load force field {files}: {one_line(error)}") from error


def parameterize(topology, positions, forcefield, *, nonbonded_method="nocutoff", cutoff=1.0,
                 add_hydrogens=False, constraints=None, ph=7.0, ewald_error_tolerance=0.0005, trust_scripts=False,
                 source=None):
    """An openmm.System for the topology (adding hydrogens first if asked).

    positions: OpenMM Quantity or (N, 3) nm array; cutoff in nm (in [1e-6, 1e6], and with a periodic method at
    most half the box's smallest width, as OpenMM requires). ewald_error_tolerance: PME's relative accuracy, in
    (0, 1). trust_scripts: allow Python code in force-field files outside OpenMM's own (see the module
    docstring). Returns (system, topology, positions in nm) where topology/positions include any added
    hydrogens. Raises ArgumentError for bad options, UnsafeInputError for force-field files with code, and
    ParameterizationError naming the first residue no template matches, its closest template and how to fix it
    (after `source`, the structure's file name, if given).
    """
    where = f"{source}: " if source is not None else ""
    check_system_options(nonbonded_method, cutoff, constraints, ewald_error_tolerance)
    checks.flag("add_hydrogens", add_hydrogens)
    checks.number("ph", ph, low=0, high=14, low_inclusive=True, high_inclusive=True)
    method = resolve_nonbonded_method(nonbonded_method, topology)
    if method in (app.CutoffPeriodic, app.PME):
        check_cutoff_fits_box(cutoff, topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
    files = forcefield
    forcefield = load_forcefield(files, trust_scripts)
    if add_hydrogens:
        modeller = app.Modeller(topology, positions * unit.nanometer if not unit.is_quantity(positions)
                                else positions)
        try:
            modeller.addHydrogens(forcefield, pH=ph)
        except Exception as error:
            raise ParameterizationError(f"{where}adding hydrogens failed: {one_line(error)}. {_FIX}") from error
        topology, positions = modeller.topology, modeller.positions
    unmatched = forcefield.getUnmatchedResidues(topology)
    if unmatched:
        raise ParameterizationError(where + _describe_unmatched(forcefield, files, unmatched))
    try:
        system = forcefield.createSystem(topology, nonbondedMethod=method, nonbondedCutoff=cutoff * unit.nanometer,
                                         constraints=CONSTRAINTS[constraints],
                                         ewaldErrorTolerance=ewald_error_tolerance)
    except Exception as error:  # OpenMM raises ValueError/Exception, e.g. for ambiguous templates
        raise ParameterizationError(f"{where}OpenMM could not parameterize the structure with {files}: "
                                    f"{one_line(error)}") \
            from error
    if unit.is_quantity(positions):
        positions = positions.value_in_unit(unit.nanometer)
    return system, topology, positions


def _describe_unmatched(forcefield, files, residues):
    # A residue of unknown name also leaves its neighbours unmatched (no bonds to it): report it first.
    residues = sorted(residues, key=lambda r: r.name in forcefield._templates)
    residue = residues[0]
    where = f"residue {residue.name} {residue.id} (chain {residue.chain.id}, residue index {residue.index})"
    closest, missing, extra = _closest_template(forcefield, residue)
    text = f"{where} matches no residue template of {files}"
    if closest is not None:
        details = [f"missing {n} {e}" for e, n in sorted(missing.items())] + \
                  [f"{n} extra {e}" for e, n in sorted(extra.items())]
        text += f"; the closest template is {closest}" + (f" ({', '.join(details)})" if details else
                                                           " (same atoms, different bonds)")
    others = len(residues) - 1
    if others:
        text += f". {others} more residue(s) are unmatched: " + ", ".join(
            f"{r.name} {r.id}" for r in residues[1:6]) + (" ..." if others > 5 else "")
    return text + ". " + _FIX


def _closest_template(forcefield, residue):
    """(template name, elements missing from the residue, elements extra in it) with the fewest differences."""
    have = Counter(_symbol(a.element) for a in residue.atoms())
    best = None
    for name, template in forcefield._templates.items():  # OpenMM keeps templates only in this private dict
        want = Counter(_symbol(a.element) for a in template.atoms)
        missing, extra = want - have, have - want
        score = (sum(missing.values()) + sum(extra.values()), name != residue.name)
        if best is None or score < best[0]:
            best = (score, name, missing, extra)
    return (None, None, None) if best is None else best[1:]


def _symbol(element):
    return element.symbol if element is not None else "?"


# ---- reading force-field files before OpenMM does -------------------------------------------------------------

_SCRIPT_TAGS = ("Script", "InitializationScript")
_EVALUATED = "useDispersionCorrection"  # an attribute OpenMM passes to eval()
_TRUST = "If you trust the file, pass trust_scripts=True (command line: --trust-forcefield-scripts)."


def _file_names(files):
    if isinstance(files, (str, os.PathLike)):
        files = (files,)
    try:
        files = tuple(files)
    except TypeError:
        raise ArgumentError("forcefield", files, "a force-field XML file name or a sequence of them") from None
    if not files or not all(isinstance(f, (str, os.PathLike)) for f in files):
        raise ArgumentError("forcefield", files, "a force-field XML file name or a sequence of them")
    return tuple(os.fspath(f) for f in files)


def _data_directories():
    """The directories OpenMM's ForceField looks in for file names that are not paths: its bundled data/ and
    those installed packages register (entry point openmm.forcefielddir)."""
    find = getattr(app.forcefield, "_getDataDirectories", None)
    return list(find()) if find is not None else [os.path.join(os.path.dirname(app.forcefield.__file__), "data")]


def _files_to_read(files):
    """(path, trusted, included from, code found by `_scan`) of every file ForceField(*files) reads, found as
    ForceField.loadFile finds them: a path (relative to the working directory) if it is a file, else in the data
    directories; an <Include> relative to the including file's directory if it is a file there, else as a name."""
    directories = _data_directories()
    trusted_roots = [os.path.realpath(d) + os.sep for d in directories]
    names, parents, found, i = list(files), [None] * len(files), [], 0
    while i < len(names):
        name = path = names[i]
        if not os.path.isfile(path):
            path = next((os.path.join(d, name) for d in directories if os.path.isfile(os.path.join(d, name))), name)
        if not os.path.isfile(path):
            where = f" (included by {parents[i][0]})" if parents[i] else ""
            raise ParameterizationError(
                f"force-field file {name!r}{where} not found: it is neither a file (relative to the working directory "
                f"{os.getcwd()}) nor one of OpenMM's force fields (in {', '.join(directories)}).")
        real = os.path.realpath(path)
        chain = [real] if parents[i] is None else [real, *parents[i][1]]
        if real in chain[1:]:
            raise ParameterizationError(f"{path}: force-field file includes itself (through {parents[i][0]}); "
                                        "remove the <Include> loop.")
        includes, code = _scan(path)
        found.append((path, any(real.startswith(root) for root in trusted_roots), parents[i][0] if parents[i] else None,
                      code))
        directory = os.path.dirname(path)
        for include, line in includes:
            joined = os.path.join(directory, include)
            if os.path.isfile(joined):
                include = joined
            if include not in names:
                names.append(include)
                parents.append((f"{path}, line {line}", chain))
        i += 1
    return found


def _scan(path):
    """(includes [(file, line)] among the root's children, code [(what, line)]) of a force-field XML file,
    which must be well formed; raises ParameterizationError naming the file and line otherwise."""
    includes, code, depth = [], [], [0]
    parser = xml.parsers.expat.ParserCreate()

    def start(tag, attributes):
        depth[0] += 1
        line = parser.CurrentLineNumber
        if depth[0] == 2 and tag == "Include":
            if "file" not in attributes:
                raise ParameterizationError(f"{path}, line {line}: <Include> element without a file attribute.")
            includes.append((attributes["file"], line))
        if tag in _SCRIPT_TAGS:
            code.append((f"{'an' if tag[0] in 'AEIOU' else 'a'} <{tag}> element", line))
        if _EVALUATED in attributes and not _literal(attributes[_EVALUATED]):
            code.append((f"{_EVALUATED}={attributes[_EVALUATED]!r} on <{tag}> (OpenMM passes it to eval())", line))

    def end(tag):
        depth[0] -= 1

    parser.StartElementHandler, parser.EndElementHandler = start, end
    try:
        with open(path, "rb") as handle:
            parser.ParseFile(handle)
    except xml.parsers.expat.ExpatError as error:
        raise ParameterizationError(f"{path}, line {error.lineno}, column {error.offset + 1}: not a well-formed "
                                    f"force-field XML file ({xml.parsers.expat.ErrorString(error.code)}).") from None
    except OSError as error:
        raise ParameterizationError(f"{path}: cannot read the force-field file ({error.strerror or error}).") \
            from None
    return includes, code


def _literal(text):
    """Whether `text` is a plain Python literal (True, False, 0, 1, ...), which eval() reads without running code."""
    if len(text) > 100:
        return False
    try:
        ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return True

