"""`lmeval compare`: runs side by side, with each difference's confidence interval
(lmeval.compare) and, with --plot, a chart of them (lmeval.plot)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmeval.commands.options import DEFAULT_WORK_DIR, WorkDir
from lmeval.exceptions import UsageError


def command(
    ctx: typer.Context,
    runs: Annotated[list[str], typer.Argument(metavar="RUN...", help="Two run ids or more; the first is the baseline.")],
    work_dir: WorkDir = DEFAULT_WORK_DIR,
    fmt: Annotated[str, typer.Option("--format", help="table, json, csv or markdown.")] = "table",
    plot: Annotated[Path | None, typer.Option("--plot", help="Also draw the comparison as a bar chart "
                                              "into this .png or .svg file.", metavar="FILE")] = None,
) -> None:
    """Compare runs on the datasets they share: each run's score with its standard error over
    questions, and its difference to the first run with a 95% confidence interval from a paired
    bootstrap over the questions both runs answered, a question asked n times counting once as
    its share of answers right (10,000 resamples, seed 0). A difference whose interval holds 0 is
    marked not significant."""
    ctx.obj.run(compare, run_ids=runs, work_dir=work_dir, fmt=fmt, plot=plot)


def compare(app, *, run_ids: list[str], work_dir: Path, fmt: str, plot: Path | None) -> int:
    from lmeval import compare as comparing

    if fmt not in comparing.FORMATS:
        raise UsageError(f"--format must be one of {', '.join(comparing.FORMATS)}; got {fmt!r}")
    if plot is not None:
        from lmeval.plot import FORMATS as PLOT_FORMATS

        if plot.suffix.lower() not in PLOT_FORMATS:
            raise UsageError(f"--plot {plot}: the file must end in {' or '.join(PLOT_FORMATS)}")
        if not plot.absolute().parent.is_dir():
            raise UsageError(f"--plot {plot}: folder {plot.absolute().parent} does not exist")
    comparison = comparing.compare(work_dir, run_ids)
    comparing.print_comparison(app, comparison, fmt)
    if plot is not None:
        from lmeval.plot import draw

        draw(comparison, plot)
        app.info(f"wrote the chart to {plot}")
    return 0
