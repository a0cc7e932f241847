"""`lmeval setup`: make the OpenCompass and LMDeploy venvs lmeval drives (lmeval.toolvenvs)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from lmeval import toolvenvs


def command(
    ctx: typer.Context,
    cpu: Annotated[bool, typer.Option("--cpu", help="LMDeploy without its GPU stack: enough for `lmdeploy serve "
                                      "proxy` (and the tests); the default on a machine where NVML sees no GPU.")] = False,
    opencompass_version: Annotated[str, typer.Option("--opencompass-version")] = toolvenvs.DEFAULT_OPENCOMPASS,
    lmdeploy_version: Annotated[str, typer.Option("--lmdeploy-version")] = toolvenvs.DEFAULT_LMDEPLOY,
    extras: Annotated[Optional[str], typer.Option("--extras", help="OpenCompass extras, e.g. full.")] = None,
) -> None:
    """Make the tool venvs under $LMEVAL_HOME (default ~/.local/share/lmeval) with uv, and record
    them in its tools.json; lmeval then finds the executables by itself. Nothing to do when they
    are made as asked already."""
    ctx.obj.run(setup, cpu=cpu, opencompass_version=opencompass_version, lmdeploy_version=lmdeploy_version,
                extras=extras)


def setup(app, *, cpu: bool, opencompass_version: str, lmdeploy_version: str, extras: str | None) -> int:
    from lmeval import gpus

    home = toolvenvs.lmeval_home()
    if not cpu and not gpus.inventory():
        app.info("no GPU answers through NVML here: making LMDeploy's CPU build (proxy and argument parser); "
                 "run `lmeval setup` on a GPU machine for the servers")
        cpu = True
    python = toolvenvs.default_python()
    for recipe in (toolvenvs.opencompass_recipe(opencompass_version, extras),
                   toolvenvs.lmdeploy_recipe(lmdeploy_version, cpu)):
        made, new = toolvenvs.make(recipe, home, python, app.info)
        if not new:
            app.info(f"{made.tool} {made.version} ({made.build}) is up to date: {made.executable}")
    app.info(f"tools recorded in {home / toolvenvs.TOOLS_FILE}")
    return 0
