"""The `lmeval` command line: thin Typer commands over the application object.

Heavy modules (httpx, pydantic, psutil) are imported inside the commands, so `lmeval --help`
stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    name="lmeval",
    help="Evaluate LLMs with LMDeploy servers and OpenCompass in one command.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

WORK_DIR = typer.Option(Path("outputs"), "-w", "--work-dir", help="Folder holding the runs.")
GRACE = typer.Option(10.0, "--grace", help="Seconds a server gets to exit after SIGTERM before it is killed.")


def _application(ctx: typer.Context):
    return ctx.obj


@app.callback()
def main_callback(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    from lmeval.app import Application

    ctx.obj = Application(debug=debug)


@app.command()
def serve(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="Model folder or hub id."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="GPU ids, like 0,1 (default: free GPUs)."),
    tp: Optional[int] = typer.Option(None, "--tp", help="Tensor parallel size (default: number of GPUs)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port (default: a free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    server_args: str = typer.Option("", "--server-args", help='Extra LMDeploy flags, e.g. "--session-len 65536".'),
    lmdeploy: Optional[str] = typer.Option(None, "--lmdeploy", help="lmdeploy executable [env LMEVAL_LMDEPLOY]."),
    work_dir: Path = WORK_DIR,
    ready_timeout: float = typer.Option(1800.0, "--ready-timeout", help="Seconds to wait for the model to load."),
    grace: float = GRACE,
) -> None:
    """Start one LMDeploy server on loopback with a fresh API key; Ctrl-C stops it."""
    from lmeval.commands.serve import serve as command

    _application(ctx).run(command, model=model, gpus=gpus, tp=tp, port=port, host=host,
                          server_args=server_args, lmdeploy=lmdeploy, work_dir=work_dir,
                          ready_timeout=ready_timeout, grace=grace)


@app.command()
def cleanup(ctx: typer.Context, work_dir: Path = WORK_DIR, grace: float = GRACE) -> None:
    """End every server process an lmeval that was killed outright left behind."""
    from lmeval.commands.cleanup import cleanup as command

    _application(ctx).run(command, work_dir=work_dir, grace=grace)


def main() -> None:
    app()
