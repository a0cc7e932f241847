"""`lmeval slurm-job SETTINGS` (hidden): what a Slurm job of lmeval's runs on its node."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(ctx: typer.Context,
            settings: Annotated[Path, typer.Argument(help="The job's settings in the run folder.")]) -> None:
    """Run one server inside a Slurm job that lmeval submitted."""
    from lmeval.slurm_server import serve_in_job

    ctx.obj.run(serve_in_job, settings)
