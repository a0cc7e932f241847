"""`lmeval report`: one self-contained HTML page of a run (lmeval.report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lmeval.commands.options import DEFAULT_WORK_DIR, WorkDir

REPORT_NAME = "report.html"


def command(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="Run id, or latest.")] = "latest",
    work_dir: WorkDir = DEFAULT_WORK_DIR,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", metavar="FILE.html", help="Where to write "
                                                   f"the page (default: RUN_DIR/{REPORT_NAME}).")] = None,
    open_page: Annotated[bool, typer.Option("--open", help="Open the page in the browser.")] = False,
) -> None:
    """Write one HTML page of a run that opens from disk: its settings, scores (± standard error
    over questions) and every question with its answers (prompt, prediction, reasoning, judge
    reply, the checker's findings) with filters. Prints the page's path."""
    ctx.obj.run(report, run=run, work_dir=work_dir, output=output, open_page=open_page)


def report(app, *, run: str, work_dir: Path, output: Path | None, open_page: bool) -> int:
    from lmeval.report import read_run, render_page, write_page
    from lmeval.runs import find_run

    folder = find_run(work_dir, run)
    app.info(f"reading run {folder.name}")
    content = read_run(folder)
    for part in content.missing:
        app.warn(f"{part.name}: {part.missing}")
    path = write_page(render_page(content), output or folder / REPORT_NAME)
    answers = sum(len(part.answers) for part in content.datasets)
    questions = sum(len(part.questions or []) for part in content.datasets)
    app.info(f"wrote the report of {answers} samples" + (f" ({questions} questions)" if questions != answers else ""))
    if open_page:
        import webbrowser

        if not webbrowser.open(path.as_uri()):
            app.warn(f"found no browser to open it; open {path.as_uri()} yourself")
    app.out.print(str(path), markup=False)
    return 0
