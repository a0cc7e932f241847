"""`lmeval doctor`: what lmeval needs on this machine, each check ok / warn / fail with what to
do (lmeval.doctor). Exit 1 when any fails."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from lmeval import defaults
from lmeval.commands.options import (
    DEFAULT_WORK_DIR,
    ConfigFile,
    DataDir,
    DatasetFiles,
    Host,
    Lmdeploy,
    Opencompass,
    Task,
    WorkDir,
)


def command(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Argument(help="A model folder (or hub id) to check.")] = None,
    task: Task = None,
    dataset_files: DatasetFiles = None,
    data_dir: DataDir = None,
    work_dir: WorkDir = DEFAULT_WORK_DIR,
    host: Host = defaults.HOST,
    lmdeploy: Lmdeploy = None,
    opencompass: Opencompass = None,
    config: ConfigFile = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Check this machine for lmeval: GPUs, the tool venvs, datasets, the model, disk, ports, and
    where each setting comes from."""
    from lmeval import defaults_file

    given = {key: value for key, value in locals().items() if key not in ("ctx", "config", "fmt", "defaults_file")}
    # Every key a defaults file may set, so that the settings check shows each one it sets.
    values = {key: None for key in defaults_file.DefaultsFile.model_fields} | given
    values["dataset_files"] = tuple(dataset_files or ())

    def run(application) -> int:
        merged, sources = defaults_file.apply(values, defaults_file.given_options(ctx), config)
        return doctor(application, merged, sources, fmt)

    ctx.obj.run(run)


def doctor(app, values: dict, sources: dict[str, str], fmt: str) -> int:
    from rich.table import Table

    from lmeval.doctor import as_json, run_checks
    from lmeval.exceptions import UsageError

    if fmt not in ("table", "json"):
        raise UsageError(f"--format must be table or json; got {fmt!r}")
    checks = run_checks(values, sources)
    if fmt == "json":
        app.out.print(as_json(checks), markup=False)
    else:
        table = Table(title="lmeval doctor")
        for column in ("check", "status", "found, and what to do"):
            table.add_column(column)
        for check in checks:
            table.add_row(check.check, check.status, check.detail)
        app.out.print(table)
    return 1 if any(check.status == "fail" for check in checks) else 0
