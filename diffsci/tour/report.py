"""What the tour's stages share: the run context, a stage's section of the report, and report.md itself."""

import dataclasses
import time
from pathlib import Path


@dataclasses.dataclass
class Context:
    """Settings every stage reads. ``out``: the output folder; ``quick``: smaller runs; ``device``: a
    ``torch.device``; ``seed``: the random seed; ``echo``: prints one line of the terminal report."""

    out: Path
    quick: bool
    device: object
    seed: int
    echo: object

    @classmethod
    def create(cls, out, quick, device, seed, echo):
        import torch

        try:
            device = torch.device(device)
        except RuntimeError as error:
            raise ValueError(f"--device: {device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from error
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device: {device} asked for, but torch sees no CUDA device; use --device cpu")
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"--device: {device} is not supported; use cpu or cuda")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        return cls(out, quick, device, seed, echo)

    def plot_path(self, name):
        """Where a stage writes the plot ``name`` (a PNG file name)."""
        return self.out / name


@dataclasses.dataclass
class Section:
    """A stage's outcome: ``markdown`` (its part of report.md, plots linked by file name), ``plots`` (PNG file
    names in the output folder), ``results`` (the numbers it measured, by name, for tests and reports),
    ``seconds`` (filled in by the tour)."""

    markdown: str
    plots: list
    results: dict
    seconds: float = 0.0


def markdown_table(header, rows):
    """A GitHub-flavoured markdown table from a header and rows of already formatted cells."""
    def line(row):  # a literal "|" in a cell (as in |x|) is escaped
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header)] + [line(row) for row in rows])


def text_table(header, rows):
    """The same table, aligned for a terminal."""
    cells = [list(map(str, header))] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in cells)


def write_report(ctx, sections):
    """Write ``ctx.out / "report.md"`` from the sections (in tour order); returns its path."""
    import torch

    from diffsci import __version__

    lines = ["# diffsci tour", "",
             f"diffsci {__version__}, torch {torch.__version__}, device {ctx.device}, "
             f"{'quick' if ctx.quick else 'full'} run, seed {ctx.seed}, {time.strftime('%Y-%m-%d %H:%M')}.", ""]
    for section in sections.values():
        lines += [section.markdown.strip(), "", f"*({section.seconds:.0f} s)*", ""]
    path = ctx.out / "report.md"
    path.write_text("\n".join(lines))
    return path
