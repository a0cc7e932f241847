"""`lmeval data pull` and `lmeval data check`: a suite's data in one folder, made on a machine
with network, checked on the one without (lmeval.datapull, lmeval.datadir)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lmeval.commands.options import DEFAULT_WORK_DIR, ConfigFile, DatasetNames, Opencompass, WorkDir

app = typer.Typer(name="data", help="Prepare a suite's data for machines without network, and check it.",
                  no_args_is_help=True, rich_markup_mode=None)

Mirror = Annotated[Optional[str], typer.Option(
    "--mirror", help="An internal mirror of OpenCompass's dataset archives: the same paths under this URL "
    "(http://mirror/opencompass takes datasets/data/gpqa.zip from http://mirror/opencompass/datasets/data/gpqa.zip). "
    "The Hugging Face part follows HF_ENDPOINT.")]


def _chosen_dir(given: Path | None, from_file: str | None) -> Path:
    """The data folder: as given, else lmeval.toml's data_dir, else $LMEVAL_HOME/data."""
    from lmeval.toolvenvs import lmeval_home

    if given is not None:
        return given.expanduser().absolute()
    if from_file:
        return Path(from_file).expanduser().absolute()
    return lmeval_home() / "data"


def _settings(ctx: typer.Context, values: dict, config: Path | None) -> dict:
    from lmeval import defaults_file

    merged, _ = defaults_file.apply(values, defaults_file.given_options(ctx), config)
    return merged


@app.command("pull")
def pull_command(
    ctx: typer.Context,
    task: Annotated[str, typer.Option("--task", help="The suite whose data to pull (see `lmeval tasks`).")] = "chat",
    datasets: DatasetNames = None,
    dest: Annotated[Optional[Path], typer.Option(
        "--dest", help="The data folder (default: data_dir of lmeval.toml, else $LMEVAL_HOME/data); runs read it "
        "with --data-dir.")] = None,
    mirror: Mirror = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds any connection or read may wait before the "
                                           "try fails.")] = 60.0,
    tries: Annotated[int, typer.Option("--tries", help="Tries per file, with growing pauses between them.")] = 4,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be fetched, from where, and each "
                                          "archive's size as its server gives it; fetch nothing.")] = False,
    opencompass: Opencompass = None,
    work_dir: WorkDir = DEFAULT_WORK_DIR,
    config: ConfigFile = None,
) -> None:
    """Fetch everything the suite's datasets read at run time into one folder, on a machine with
    network: OpenCompass's archives (through its own download code, URLs and md5 sums) and HLE
    (a gated Hugging Face dataset: HF_TOKEN). A second pull skips what is there and verified."""
    values = {"mirror": mirror, "opencompass": opencompass, "work_dir": work_dir, "data_dir": None}

    def run(application) -> int:
        from lmeval import datapull, suites
        from lmeval.exceptions import UsageError
        from lmeval.ocenv import venv_python
        from lmeval.tools import OPENCOMPASS, find_executable, installed_version

        settings = _settings(ctx, values, config)
        if timeout <= 0 or tries < 1:
            raise UsageError("--timeout must be above 0 and --tries 1 or more")
        folder = _chosen_dir(dest, settings["data_dir"])
        executable = find_executable(OPENCOMPASS, settings["opencompass"])
        fetcher = datapull.Fetcher(venv_python(executable), installed_version(executable, "opencompass"), timeout,
                                   application.debug)
        chosen = list(suites.select_suite(task, datasets))
        if dry_run:
            return _show_listing(application, datapull.listing(chosen, fetcher, settings["mirror"]))
        datapull.pull(chosen, folder, fetcher, settings["mirror"], tries, application.info)
        application.info(f"the data is in {folder}; runs read it with --data-dir {folder} "
                         f"(or data_dir = \"{folder}\" in lmeval.toml); `lmeval data check {folder}` checks it")
        return 0

    ctx.obj.run(run)


def _show_listing(application, rows: list[tuple[str, str, int | None]]) -> int:
    from rich.table import Table

    from lmeval.datadir import human_size

    table = Table(title="lmeval data pull would fetch")
    for column in ("dataset", "from", "size"):
        table.add_column(column)
    for name, source, size in rows:
        table.add_row(name, source, "unknown" if size is None else human_size(size))
    application.out.print(table)
    return 0


@app.command("check")
def check_command(
    ctx: typer.Context,
    folder: Annotated[Optional[Path], typer.Argument(
        metavar="[DIR]", help="The data folder (default: data_dir of lmeval.toml, else $LMEVAL_HOME/data).")] = None,
    task: Annotated[str, typer.Option("--task", help="The suite whose data to check.")] = "chat",
    datasets: DatasetNames = None,
    work_dir: WorkDir = DEFAULT_WORK_DIR,
    config: ConfigFile = None,
) -> None:
    """Check a data folder offline: each dataset present, missing or corrupt (every file's sha256
    against the folder's manifest). Exit 1 when any is missing or corrupt."""
    values = {"work_dir": work_dir, "data_dir": None}

    def run(application) -> int:
        from rich.table import Table

        from lmeval import datadir, suites

        chosen = _chosen_dir(folder, _settings(ctx, values, config)["data_dir"])
        names = [item.name for item in suites.select_suite(task, datasets)]
        states = datadir.verify(chosen, datadir.DataManifest.load(chosen), names)
        table = Table(title=f"data in {chosen}")
        for column in ("dataset", "status", "detail"):
            table.add_column(column)
        for state in states:
            table.add_row(state.dataset, state.status, state.detail)
        application.out.print(table)
        bad = [state.dataset for state in states if state.status != "present"]
        if bad:
            application.err.print(f"lmeval: error: {', '.join(bad)} not complete in {chosen}: pull "
                                  f"{'it' if len(bad) == 1 else 'them'} with `lmeval data pull --task {task} "
                                  f"--datasets {','.join(bad)} --dest {chosen}` on a machine with network",
                                  markup=False)
            return 1
        return 0

    ctx.obj.run(run)
