"""``diffsci tour``: a guided run of diffsci's jobs on bundled data, with a terminal report, plots and report.md.

    diffsci tour [--quick] [--device cpu|cuda] [--out diffsci-tour] [--only bayes,dft,...] [--seed 0]

Each stage is a module of this package with ``TITLE`` and ``run(ctx) -> Section``; ``STAGES`` lists them in
order. A stage prints a few lines as it goes, writes its plots into ``ctx.out``, and returns the numbers it
measured (``Section.results``: what the tests check against the reference tools) and its part of
``report.md``. Torch and the science packages are imported only when the tour runs.
"""

import sys
import time

from diffsci.tour.report import Context, write_report

# name -> module path; each module has TITLE and run(ctx)
STAGES = {
    "bayes": "diffsci.tour.bayes",
    "dft": "diffsci.tour.kohn_sham",
    "fit": "diffsci.tour.functional_fit",
    "proteins": "diffsci.tour.proteins",
    "binding": "diffsci.tour.binding",
}
HELP = "a guided run of diffsci's jobs on bundled data, with report.md and plots (3 minutes; --quick 35 s)"
EXAMPLE = "diffsci tour --quick --only bayes,dft --out my-tour"


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true", help="smaller runs: under a minute on 2 CPU cores")
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--out", default="diffsci-tour", help="folder for report.md and the plots "
                                                               "(default ./diffsci-tour)")
    parser.add_argument("--only", default=None, metavar="STAGE[,STAGE]",
                        help=f"run only these stages, of: {', '.join(STAGES)}")
    parser.add_argument("--seed", type=int, default=0, help="random seed of every stage (default 0)")


def stage_names(only):
    """The stages to run, in tour order, from ``--only`` ("a,b" or None for all); ValueError on an unknown one."""
    if only is None:
        return list(STAGES)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in STAGES]
    if unknown or not names:
        raise ValueError(f"--only: unknown stage {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"choose from {', '.join(STAGES)}")
    return [name for name in STAGES if name in names]


def tour(out="diffsci-tour", quick=False, device="cpu", only=None, seed=0, echo=print):
    """Run the tour's stages and write ``out/report.md``; returns {stage name: Section}.

    ``echo`` receives the terminal report line by line.
    """
    import importlib

    names = stage_names(only)
    ctx = Context.create(out, quick=quick, device=device, seed=seed, echo=echo)
    sections = {}
    start = time.perf_counter()
    for number, name in enumerate(names, 1):
        module = importlib.import_module(STAGES[name])
        echo(f"\n== {number}/{len(names)} {module.TITLE} ==")
        began = time.perf_counter()
        section = module.run(ctx)
        section.seconds = time.perf_counter() - began
        echo(f"   ({section.seconds:.0f} s)")
        sections[name] = section
    report = write_report(ctx, sections)
    echo(f"\ndiffsci tour: {len(names)} stages in {time.perf_counter() - start:.0f} s; report: {report}")
    return sections


def run(args):
    try:
        stage_names(args.only)
        tour(args.out, quick=args.quick, device=args.device, only=args.only, seed=args.seed)
    except ValueError as error:
        print(f"diffsci tour: error: {error}", file=sys.stderr)
        return 2
    return 0

