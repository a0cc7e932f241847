"""The `lmeval` command line: the Typer app, which only registers the commands of
`lmeval.commands`. Heavy modules (httpx, pydantic, psutil) are imported when a command runs,
so `lmeval --help` stays fast."""

from __future__ import annotations

from typing import Annotated

import typer

from lmeval.commands import cleanup, compare, data, doctor, evaluate, job, log, report, results, runs, serve, setup, tasks

app = typer.Typer(
    name="lmeval",
    help="Evaluate LLMs with LMDeploy servers and OpenCompass in one command.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def main_callback(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    from lmeval.app import Application

    ctx.obj = Application(debug=debug)


app.command("run")(evaluate.run)
app.command("infer")(evaluate.infer)
app.command("judge")(evaluate.judge)
app.command("results")(results.command)
app.command("runs")(runs.command)
app.command("compare")(compare.command)
app.command("report")(report.command)
app.command("log")(log.command)
app.command("tasks")(tasks.command)
app.command("serve")(serve.command)
app.command("cleanup")(cleanup.command)
app.command("setup")(setup.command)
app.command("doctor")(doctor.command)
app.add_typer(data.app, name="data")
app.command("slurm-job", hidden=True)(job.command)


def main() -> None:
    app()
