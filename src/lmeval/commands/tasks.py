"""`lmeval tasks`: the suites lmeval knows and what scores each dataset."""

from __future__ import annotations

import typer


def command(ctx: typer.Context) -> None:
    """List the task suites, their datasets, and which need the judge model."""
    ctx.obj.run(tasks)


def tasks(app) -> int:
    from rich.table import Table

    from lmeval.suites import task_rows

    table = Table(title="Task suites (--task SUITE, --datasets NAME,...)")
    for column in ("suite", "dataset", "scored by", "judge"):
        table.add_column(column)
    for row in task_rows():
        table.add_row(row.suite, row.dataset, row.evaluator, "yes" if row.needs_judge else "no")
    table.add_row("(any)", "--dataset FILE.jsonl", "QA rows: judge; multiple choice: rule", "QA only")
    app.out.print(table)
    return 0
