"""Parameterizing a topology with OpenMM's ForceField, with errors that say which residue failed and how to
fix it."""

from collections import Counter

import openmm.app as app
import openmm.unit as unit

from .errors import ParameterizationError

NONBONDED_METHODS = {
    "nocutoff": app.NoCutoff,
    "cutoff_nonperiodic": app.CutoffNonPeriodic,
    "cutoff_periodic": app.CutoffPeriodic,
    "pme": app.PME,
}
CONSTRAINTS = {None: None, "hbonds": app.HBonds, "allbonds": app.AllBonds, "hangles": app.HAngles}

_FIX = ("Fix: add hydrogens (add_hydrogens=True, or openmm.app.Modeller.addHydrogens), cap or complete the "
        "termini (ACE/NME caps, or the standard terminal atoms), or supply a template for the residue (an extra "
        "force-field XML file, or ForceField.registerResidueTemplate).")


def resolve_nonbonded_method(name, topology):
    """OpenMM's nonbonded method for `name`; 'cutoff' is periodic when the topology has a box."""
    if name == "cutoff":
        name = "cutoff_periodic" if topology.getPeriodicBoxVectors() is not None else "cutoff_nonperiodic"
    if name not in NONBONDED_METHODS:
        raise ValueError(f"nonbonded_method={name!r}; choose one of 'nocutoff', 'cutoff', "
                         + ", ".join(repr(n) for n in NONBONDED_METHODS if n != "nocutoff") + ".")
    return NONBONDED_METHODS[name]


def load_forcefield(files):
    """openmm.app.ForceField from XML file names (OpenMM's bundled ones or paths)."""
    files = (files,) if isinstance(files, str) else tuple(files)
    try:
        return app.ForceField(*files)
    except Exception as error:
        raise ParameterizationError(f"could not load force field {files}: {error}") from error


def parameterize(topology, positions, forcefield, *, nonbonded_method="nocutoff", cutoff=1.0,
                 add_hydrogens=False, constraints=None, ph=7.0):
    """An openmm.System for the topology (adding hydrogens first if asked).

    positions: OpenMM Quantity or (N, 3) nm array; cutoff in nm. Returns (system, topology, positions in nm)
    where topology/positions include any added hydrogens. Raises ParameterizationError naming the first
    residue no template matches, its closest template and how to fix it.
    """
    files = forcefield
    forcefield = load_forcefield(files)
    method = resolve_nonbonded_method(nonbonded_method, topology)
    if constraints not in CONSTRAINTS:
        raise ValueError(f"constraints={constraints!r}; choose one of {list(CONSTRAINTS)}.")
    if add_hydrogens:
        modeller = app.Modeller(topology, positions * unit.nanometer if not unit.is_quantity(positions)
                                else positions)
        try:
            modeller.addHydrogens(forcefield, pH=ph)
        except Exception as error:
            raise ParameterizationError(f"adding hydrogens failed: {error}. {_FIX}") from error
        topology, positions = modeller.topology, modeller.positions
    unmatched = forcefield.getUnmatchedResidues(topology)
    if unmatched:
        raise ParameterizationError(_describe_unmatched(forcefield, files, unmatched))
    try:
        system = forcefield.createSystem(topology, nonbondedMethod=method, nonbondedCutoff=cutoff * unit.nanometer,
                                         constraints=CONSTRAINTS[constraints])
    except Exception as error:  # OpenMM raises ValueError/Exception, e.g. for ambiguous templates
        raise ParameterizationError(f"OpenMM could not parameterize the structure with {files}: {error}") \
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
