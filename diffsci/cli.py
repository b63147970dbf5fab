"""The ``diffsci`` command line.

Each subcommand lives in its own module with ``add_arguments(parser)`` and ``run(args) -> exit code``,
and is listed in ``SUBCOMMANDS`` as ``name -> (help, add_arguments, run)``; later issues add
``tour``, ``dft``, ``mm`` and ``dock``.
"""

import argparse
import sys

from diffsci import __version__, dft, mm

SUBCOMMANDS: dict = {
    "dft": ("Kohn-Sham DFT single point on an XYZ file (PySCF's functional and basis names)", dft.add_arguments,
            dft.run),
    "mm": ("molecular mechanics: minimize a structure or run dynamics (OpenMM force fields)", mm.add_arguments,
           mm.run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffsci",
        description="diffsci: differentiable probabilistic programming, inference, DFT and molecular mechanics.",
    )
    parser.add_argument("--version", action="version", version=f"diffsci {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, run) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
