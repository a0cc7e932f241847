"""`lmeval results`: the scores of a run, from its folder. Kept light (no pydantic, no httpx),
so it answers fast."""

from __future__ import annotations

import json
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
    """Show the scores of a run."""
    ctx.obj.run(results, run=run, work_dir=work_dir, fmt=fmt)


def results(app, *, run: str, work_dir: Path, fmt: str) -> int:
    from lmeval import outputs
    from lmeval.results import FORMATS, judged_scores, print_scores
    from lmeval.runs import find_run

    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    folder = find_run(work_dir, run)
    try:
        manifest = json.loads((folder / "lmeval.json").read_text())
        model = manifest["model_abbr"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"{folder} has no readable lmeval.json: not an lmeval run") from None
    summary = outputs.latest_summary(folder)
    if summary is None:
        raise UsageError(f"run {folder.name} has no scores yet; evaluate it with `lmeval judge --reuse {folder.name}`")
    scores = outputs.read_summary(summary, model)
    print_scores(app, model, judged_scores(folder, model, scores, manifest), fmt)
    return 0
