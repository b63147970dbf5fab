"""``diffsci mm``: molecular-mechanics jobs on a structure file, with OpenMM force fields and bio's engine.

    diffsci mm minimize protein.pdb --out minimized.pdb [--forcefield amber14-all.xml implicit/obc2.xml]
                                    [--tolerance 10] [--max-steps 0] [--constraints hbonds] [--add-hydrogens]
    diffsci mm md protein.pdb --steps 5000 --out trajectory.dcd [--temperature 300] [--friction 1]
                              [--step-size 0.002] [--report-interval 500] [--checkpoint run.pt] [--minimize]

Energies in kJ/mol, lengths in nm, time in ps (OpenMM's units). `bio` (torch, OpenMM) is imported only when a
job runs, so that `diffsci --help` stays fast.

Options are checked by bio's own argument checks, all before the work starts; bad input (an option out of
range, a bad or missing file, a force-field file with a <Script>, which is refused unless
--trust-forcefield-scripts) ends with exit code 1 and a one-line message naming the option or file, never a
traceback. Ctrl-C says where the last checkpoint is.
"""

import os
import sys

HELP = "molecular mechanics: minimize a structure or run dynamics (OpenMM force fields)"
EXAMPLE = """diffsci mm minimize protein.pdb --out minimized.pdb
         diffsci mm md protein.pdb --steps 5000 --out trajectory.dcd --checkpoint run.pt"""

# bio's argument names -> the options that set them, so that messages name what the user typed.
_OPTIONS = {"cutoff": "--cutoff", "nonbonded_method": "--nonbonded-method", "constraints": "--constraints",
            "forcefield": "--forcefield", "device": "--device", "tolerance": "--tolerance", "max_steps": "--max-steps",
            "steps": "--steps", "temperature": "--temperature", "friction": "--friction", "step_size": "--step-size",
            "report_interval": "--report-interval", "seed": "--seed"}


def add_arguments(parser):
    jobs = parser.add_subparsers(dest="job", metavar="JOB", required=True)
    minimize = jobs.add_parser("minimize", help="minimize the energy of a structure (L-BFGS, OpenMM's criterion)",
                               description="Minimize the potential energy of a PDB/PDBx structure and print the "
                                           "initial and final energies.")
    _system_arguments(minimize)
    minimize.add_argument("--out", help="write the minimized structure to this PDB file")
    minimize.add_argument("--tolerance", type=float, default=10.0,
                          help="stop when the RMS gradient is at most this, kJ/mol/nm (default 10, as OpenMM)")
    minimize.add_argument("--max-steps", type=int, default=0, help="most L-BFGS steps; 0 = until converged")
    minimize.set_defaults(job_run=_minimize)

    md = jobs.add_parser("md", help="Langevin dynamics (OpenMM's LangevinMiddleIntegrator)",
                         description="Run Langevin dynamics, printing state data as CSV and writing a trajectory.")
    _system_arguments(md, constraints="hbonds")
    md.add_argument("--steps", type=int, required=True,
                    help="total number of integration steps (a resumed run continues up to it)")
    md.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    md.add_argument("--friction", type=float, default=1.0, help="1/ps (default 1)")
    md.add_argument("--step-size", type=float, default=0.002, help="ps (default 0.002; needs --constraints hbonds)")
    md.add_argument("--report-interval", type=int, default=500, help="steps between reports (default 500)")
    md.add_argument("--out", help="trajectory file, .dcd or .pdb")
    md.add_argument("--checkpoint", help="checkpoint file: resumed from if it exists, written at every report")
    md.add_argument("--minimize", action="store_true", help="minimize the energy before the run")
    md.add_argument("--seed", type=int, default=None, help="random seed (default: drawn)")
    md.set_defaults(job_run=_md)


def run(args):
    import bio
    from inference.errors import NonFiniteError

    try:
        return args.job_run(args)
    except bio.ArgumentError as error:
        option = _OPTIONS.get(error.argument)
        return _fail(args, error.message(option) if option else str(error))
    except (bio.BioError, NonFiniteError, ValueError, OSError) as error:
        return _fail(args, str(error))
    except KeyboardInterrupt:
        return _fail(args, "interrupted" + (f"; the last checkpoint is in {args.checkpoint}: run the same command "
                                            "again to resume from it" if getattr(args, "checkpoint", None) else ""),
                     130)


def _fail(args, message, code=1):
    print(f"diffsci mm {args.job}: error: " + " ".join(message.split()), file=sys.stderr)
    return code


def _system_arguments(parser, constraints="none"):
    parser.add_argument("structure", help="PDB or PDBx/mmCIF file")
    parser.add_argument("--forcefield", nargs="+", default=["amber14-all.xml", "implicit/obc2.xml"],
                        help="OpenMM force-field XML files (default: amber14-all.xml implicit/obc2.xml)")
    parser.add_argument("--nonbonded-method", default="nocutoff",
                        choices=["nocutoff", "cutoff", "cutoff_nonperiodic", "cutoff_periodic", "pme"],
                        help="default nocutoff")
    parser.add_argument("--cutoff", type=float, default=1.0, help="nonbonded cutoff, nm (default 1.0)")
    parser.add_argument("--constraints", choices=["none", "hbonds", "allbonds", "hangles"], default=constraints,
                        help=f"bond constraints (default {constraints})")
    parser.add_argument("--add-hydrogens", action="store_true", help="add missing hydrogens (pH 7) first")
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--trust-forcefield-scripts", action="store_true",
                        help="allow force-field files (other than OpenMM's own) with <Script> elements: OpenMM runs "
                             "them as Python code. Refused by default")


def _check_options(args):
    """Check the options the system needs, and the output files' directories, before any work starts."""
    from bio import checks
    from bio.forcefield import check_system_options

    check_system_options(args.nonbonded_method, args.cutoff, _constraints(args))
    checks.device(args.device)
    for option in ("out", "checkpoint"):
        path = getattr(args, option, None)
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise ValueError(f"--{option} {path}: the directory {os.path.dirname(os.path.abspath(path))} does not "
                             "exist.")


def _constraints(args):
    return None if args.constraints == "none" else args.constraints


def _system(args):
    import bio

    return bio.System.from_pdb(args.structure, forcefield=tuple(args.forcefield),
                               nonbonded_method=args.nonbonded_method, cutoff=args.cutoff,
                               add_hydrogens=args.add_hydrogens, constraints=_constraints(args), device=args.device,
                               trust_scripts=args.trust_forcefield_scripts)


def _minimize(args):
    import bio
    import openmm.app as app
    import openmm.unit as unit
    from bio.minimize import check_options

    _check_options(args)
    check_options(args.tolerance, args.max_steps)
    system = _system(args)
    result = bio.minimize(system, tolerance=args.tolerance, max_steps=args.max_steps)
    print(f"atoms: {system.n_atoms}")
    print(f"initial energy: {float(result.initial_energy):.6f} kJ/mol")
    print(f"final energy: {float(result.energy):.6f} kJ/mol")
    print(f"RMS gradient: {result.rms_gradient:.4g} kJ/mol/nm (tolerance {args.tolerance:g})")
    print(f"steps: {result.n_steps}")
    print(f"converged: {'yes' if result.converged else 'no'} ({result.message})")
    if args.out:
        with open(args.out, "w") as out:
            app.PDBFile.writeFile(system.topology, result.positions.cpu().numpy() * unit.nanometer, out)
        print(f"wrote {args.out}")
    if not result.converged:  # as `diffsci dft` does: a result that did not converge is not a success
        return _fail(args, f"not converged: {result.message} (RMS gradient {result.rms_gradient:.4g} kJ/mol/nm, "
                           f"tolerance {args.tolerance:g}); raise --max-steps or --tolerance"
                           + (f"; the last structure is in {args.out}" if args.out else ""))
    return 0


def _md(args):
    import bio
    from bio import checks
    from bio.reporters import check_interval

    _check_options(args)
    checks.integer("steps", args.steps, low=0)
    check_interval(args.report_interval)
    checks.seed(args.seed)
    _trajectory_format(args.out)
    integrator = bio.LangevinMiddleIntegrator(args.temperature, args.friction, args.step_size)
    system = _system(args)
    simulation = bio.Simulation(system, integrator, seed=args.seed)
    resumed = args.checkpoint is not None and os.path.exists(args.checkpoint)
    if resumed:
        simulation.load_checkpoint(args.checkpoint)
        print(f"resumed from {args.checkpoint} at step {simulation.current_step}", file=sys.stderr)
    else:
        if args.minimize:
            simulation.minimize_energy()
        simulation.set_velocities_to_temperature(args.temperature)
    reporters = [bio.StateDataReporter(sys.stdout, args.report_interval, step=True, time=True,
                                       potential_energy=True, kinetic_energy=True, total_energy=True,
                                       temperature=True)]
    if args.out:
        reporters.append(_trajectory_reporter(args.out, args.report_interval, append=resumed))
    if args.checkpoint:
        reporters.append(bio.CheckpointReporter(args.checkpoint, args.report_interval))
    simulation.reporters.extend(reporters)
    try:
        simulation.step(max(0, args.steps - simulation.current_step), progress=sys.stderr.isatty())
    finally:
        for reporter in reporters:
            reporter.close()
    return 0


def _trajectory_format(path):
    extension = os.path.splitext(path)[1].lower() if path else None
    if path and extension not in (".dcd", ".pdb"):
        raise ValueError(f"--out {path}: unknown trajectory format {extension!r}; use .dcd or .pdb.")
    return extension


def _trajectory_reporter(path, interval, append):
    import bio

    if _trajectory_format(path) == ".dcd":
        return bio.DCDReporter(path, interval, append=append and os.path.exists(path))
    if append:
        raise ValueError(f"{path}: a PDB trajectory cannot be continued; use a .dcd file with --checkpoint.")
    return bio.PDBReporter(path, interval)

