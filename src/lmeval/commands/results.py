"""`lmeval results`: the scores of a run, from its folder. Kept light (no pydantic, no httpx),
so it answers fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmeval.commands.options import DEFAULT_WORK_DIR, WorkDir
from lmeval.exceptions import UsageError


def command(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="Run id, or latest.")] = "latest",
    work_dir: WorkDir = DEFAULT_WORK_DIR,
    fmt: Annotated[str, typer.Option("--format", help="table, json, csv or markdown.")] = "table",
) -> None:
    """Show the scores of a run, each with its standard error over questions (±)."""
    ctx.obj.run(results, run=run, work_dir=work_dir, fmt=fmt)


def results(app, *, run: str, work_dir: Path, fmt: str) -> int:
    from lmeval.results import FORMATS, print_scores, recorded_answers, run_scores

    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    shown = run_scores(work_dir, run)
    print_scores(app, shown.model, shown.scores, fmt, recorded_answers(shown.manifest))
    return 0
