"""``diffsci fit-xc``: fit a neural exchange-correlation functional to G2 data from a TOML file.

    diffsci fit-xc CONFIG.toml [--out DIR] [--epochs N] [--device cpu] [--no-progress]

Writes into DIR (default ``./fit-xc/``): the functional (``[output] functional``, default ``functional.pt``;
use it with ``diffsci dft --xc DIR/functional.pt`` or ``dft.RKS(mol, xc=path)``), ``training.png`` (loss and
errors per epoch), ``report.md`` (per-molecule atomization energies: start, learned, reference) and
``checkpoints/`` (a killed run resumes from there when rerun with the same file). The file's format:
``dft.learning.config``.
"""

import sys
from pathlib import Path

HELP = "fit a neural XC functional (dft.xc.NeuralXC) to G2 atomization energies from a TOML file"
EXAMPLE = "diffsci fit-xc tutorials/fit_xc.toml --out fit-xc --epochs 5"


def add_arguments(parser):
    parser.add_argument("config", help="TOML file: [functional], [data], [validation], [loss], [training], [output]")
    parser.add_argument("--out", default="fit-xc", help="output folder (default ./fit-xc)")
    parser.add_argument("--epochs", type=int, default=None, help="override [training] epochs")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args):
    import dft
    from dft import learning
    from dft.learning import config
    from dft.molecule import torch_device
    from inference.checkpoint import CheckpointError

    out = Path(args.out)
    try:
        if args.epochs is not None and args.epochs < 0:
            raise ValueError(f"--epochs must be >= 0, got {args.epochs}")
        device = torch_device(args.device)
        settings = config.load(args.config)
        training = dict(settings["training"])
        if args.epochs is not None:
            training["epochs"] = args.epochs
        functional = dft.xc.NeuralXC(**settings["functional"]).to(device)
        result = learning.train(functional, settings["dataset"], settings["loss"], validation=settings["validation"],
                                checkpoint_dir=out / "checkpoints", device=device, progress=not args.no_progress,
                                **training)
    except (config.ConfigError, dft.DFTError, CheckpointError, ValueError, TypeError, OSError) as error:
        option = "--device: " if getattr(error, "argument", None) == "device" else ""
        print(f"diffsci fit-xc: error: {option}{error}", file=sys.stderr)
        return 1
    path = out / settings["output"]["functional"]
    dft.xc.save(functional, path, metadata={"config": str(args.config)})
    learning.plot_history(result.history, out / "training.png")
    table = learning.format_report(result.report)
    (out / "report.md").write_text(f"# fit-xc report\n\nconfig: `{args.config}`, basis {functional.basis}, best epoch "
                                   f"{result.best_epoch} of {result.history[-1]['epoch']}\n\n![training](training.png)"
                                   f"\n\n```\n{table}\n```\n")
    print(table)
    print(f"functional written to {path} (best epoch {result.best_epoch}); report in {out / 'report.md'}")
    return 0
