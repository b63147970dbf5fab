"""The ``diffsci`` command line.

Each subcommand is a module of this package with ``HELP`` (one line), ``EXAMPLE`` (shown at the end of its
``--help``), ``add_arguments(parser)`` and ``run(args) -> exit code``; ``SUBCOMMANDS`` lists them. A subcommand
reports bad input itself, as one line and a non-zero exit code. Anything else that escapes it is a bug in
diffsci: ``main`` prints it as one line too (``--debug`` shows the traceback); Ctrl-C exits with code 130.
"""

import argparse
import sys

from diffsci import __version__, dft, dock, fit_xc, mm, tour

SUBCOMMANDS = {"tour": tour, "dft": dft, "fit-xc": fit_xc, "mm": mm, "dock": dock}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffsci",
        description="diffsci: differentiable probabilistic programming, inference, DFT and molecular mechanics.",
        epilog="example: diffsci tour --quick    (each command's --help ends with an example)",
    )
    parser.add_argument("--version", action="version", version=f"diffsci {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, epilog=f"example: {module.EXAMPLE}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"diffsci {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        print(f"diffsci {args.command}: internal error, a bug in diffsci ({type(error).__name__}: "
              + " ".join(str(error).split()) + "); please report it with the command line (--debug shows the "
              "traceback).", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
