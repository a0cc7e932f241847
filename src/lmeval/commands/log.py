"""`lmeval log`: log runs made earlier, or whose logging failed, to a tracker (lmeval.tracking)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmeval.commands.options import DEFAULT_WORK_DIR, LogGroup, LogRunId, Step, WorkDir
from lmeval.exceptions import StageFailed


def command(
    ctx: typer.Context,
    runs: Annotated[list[str], typer.Argument(metavar="RUN...", help="Run ids (or latest); several land as "
                                              "points of one tracker run, at their steps.")],
    to: Annotated[list[str], typer.Option("--to", metavar="mlflow|wandb", help="The tracker (repeatable), "
                                          "configured by its usual variables, as with --log-to.")],
    work_dir: WorkDir = DEFAULT_WORK_DIR,
    step: Step = None,
    log_run_id: LogRunId = None,
    log_group: LogGroup = None,
) -> None:
    """Log the scores of runs to MLflow or Weights & Biases, as `lmeval run --log-to` does: the
    settings and versions as params, each dataset's score, standard error and share of answers
    cut as metrics at the run's step, the manifest and the report page as artifacts."""
    ctx.obj.run(log, run_ids=runs, trackers=to, work_dir=work_dir, step=step, log_run_id=log_run_id,
                log_group=log_group)


def log(app, *, run_ids: list[str], trackers: list[str], work_dir: Path, step: int | None, log_run_id: str | None,
        log_group: str | None) -> int:
    from lmeval import tracking
    from lmeval.runs import find_run

    tracking.check_trackers(trackers)
    points = tracking.make_points(work_dir, [find_run(work_dir, run).name for run in run_ids], step)
    if not tracking.log_runs(app, work_dir, points, trackers, tracking.Destination(log_run_id, log_group)):
        raise StageFailed("logging failed; see the warnings above")
    return 0
