"""``diffsci dft``: a Kohn-Sham single point on an XYZ file, printing the energy and how the SCF converged.

    diffsci dft water.xyz --xc pbe --basis def2-svp [--charge 0] [--spin 0] [--grid-level 3] [--density-fit]
                          [--unrestricted] [--conv-tol 1e-9] [--max-cycle 50] [--progress] [--device cpu]

Energies in Hartree (atomic units); the XYZ file's coordinates in Ångström. `dft` (torch, PySCF) is imported
only when the job runs, so that `diffsci --help` stays fast.

Option values are checked by the `dft` API itself (`dft.Molecule`, `dft.RKS`); a bad file or option ends the
command with exit code 1 and a one-line message naming it (the option's flag where the API names the argument).
"""

import sys

HELP = "Kohn-Sham DFT single point on an XYZ file (PySCF's functional and basis names)"
EXAMPLE = "diffsci dft water.xyz --xc b3lyp --basis def2-svp"


def add_arguments(parser):
    parser.add_argument("xyz", help="XYZ file (Ångström)")
    parser.add_argument("--xc", default="lda,vwn",
                        help="functional, PySCF's names: lda,vwn (default), pbe, blyp, b3lyp, b3lyp5, pbe0, hf, ...; "
                             "the shipped learned nn-pbe; or a file saved by dft.xc.save / diffsci fit-xc")
    parser.add_argument("--basis", default="def2-svp", help="basis set known to PySCF (default def2-svp)")
    parser.add_argument("--charge", type=int, default=0, help="net charge (default 0)")
    parser.add_argument("--spin", type=int, default=0, help="2S = N_alpha - N_beta (default 0)")
    parser.add_argument("--unrestricted", action="store_true", help="UKS (the default for spin != 0)")
    parser.add_argument("--grid-level", type=int, default=3, help="PySCF grid level (default 3)")
    parser.add_argument("--density-fit", action="store_true", help="density fitting (PySCF's auxiliary basis)")
    parser.add_argument("--conv-tol", type=float, default=1e-9, help="energy convergence, Hartree (default 1e-9)")
    parser.add_argument("--max-cycle", type=int, default=50, help="most SCF cycles (default 50)")
    parser.add_argument("--progress", action="store_true", help="show SCF progress")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")


def run(args):
    import dft

    try:
        mol = dft.Molecule.from_xyz(args.xyz, basis=args.basis, charge=args.charge, spin=args.spin,
                                    device=args.device)
        method = dft.UKS if args.unrestricted or args.spin != 0 else dft.RKS
        mf = method(mol, xc=args.xc, grid_level=args.grid_level, density_fit=args.density_fit,
                    conv_tol=args.conv_tol, max_cycle=args.max_cycle, verbose=args.progress)
        energy = mf.kernel(strict=True)
    except (dft.DFTError, ValueError, OSError) as error:
        argument = getattr(error, "argument", None)
        option = f"--{argument.replace('_', '-')}: " if argument in vars(args) else ""
        print(f"diffsci dft: error: {option}{error}", file=sys.stderr)
        return 1
    print(f"{method.__name__} {mf.functional.name} / {args.basis}: {len(mol.symbols)} atoms, {mol.nelectron} electrons")
    trained_in = getattr(mf.functional, "basis", None)
    if trained_in is not None and trained_in.lower() != args.basis.lower():
        print(f"note: {args.xc} was trained in the {trained_in} basis; its errors were measured there", file=sys.stderr)
    print(f"converged in {mf.cycles} cycles")
    for name, value in mf.energy_components.items():
        print(f"  {name:<16s} {float(value): .10f} Ha")
    print(f"total energy      {float(energy): .10f} Ha")
    return 0
