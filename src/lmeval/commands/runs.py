"""`lmeval runs`: the runs of a work dir, newest first (lmeval.runlist)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmeval.commands.options import DEFAULT_WORK_DIR, WorkDir
from lmeval.exceptions import UsageError

FORMATS = ("table", "json")


def command(
    ctx: typer.Context,
    work_dir: WorkDir = DEFAULT_WORK_DIR,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """List the runs in the work dir, newest first: model, datasets, state, duration, scores."""
    ctx.obj.run(runs, work_dir=work_dir, fmt=fmt)


def runs(app, *, work_dir: Path, fmt: str) -> int:
    from rich.table import Table

    from lmeval.results import score_text
    from lmeval.runlist import as_json, list_runs

    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    work_dir = work_dir.expanduser().absolute()
    rows = list_runs(work_dir)
    if fmt == "json":
        app.out.print(as_json(rows), markup=False, soft_wrap=True)
        return 0
    if not rows:
        raise UsageError(f"no runs in {work_dir}; run `lmeval run` first or pass -w")
    table = Table(title=f"Runs in {work_dir}")
    for column in ("run", "model", "datasets", "state", "stages", "duration", "scores"):
        table.add_column(column, no_wrap=column in ("run", "duration"))
    for row in rows:
        table.add_row(row.run_id, row.model, ", ".join(row.datasets), row.state,
                      " ".join(f"{stage} {status}" for stage, status in row.stages.items()),
                      "-" if row.seconds is None else f"{row.seconds:.0f} s",
                      ", ".join(f"{name} {score_text(value)}" for name, value in row.scores.items())
                      + "".join(f"\n{name}: {share:.0%} cut" for name, share in row.cut.items()))
    app.out.print(table)
    return 0
