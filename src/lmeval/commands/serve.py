"""`lmeval serve`: one LMDeploy server on loopback with a fresh key, until Ctrl-C."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from lmeval import defaults
from lmeval.commands.options import (
    DEFAULT_WORK_DIR,
    ConfigFile,
    Gpus,
    Grace,
    Host,
    Launcher,
    LauncherOption,
    Lmdeploy,
    Partition,
    Port,
    ReadyTimeout,
    ServerArgs,
    SlurmArgs,
    Tp,
    WorkDir,
)


HOLD_POLL_SECONDS = 0.2  # how soon `serve` notices its server ended by itself


def command(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model folder or hub id.")],
    gpus: Gpus = None,
    tp: Tp = None,
    port: Port = None,
    host: Host = defaults.HOST,
    server_args: ServerArgs = "",
    lmdeploy: Lmdeploy = None,
    work_dir: WorkDir = DEFAULT_WORK_DIR,
    ready_timeout: ReadyTimeout = defaults.READY_TIMEOUT,
    grace: Grace = defaults.GRACE,
    launcher: LauncherOption = Launcher.local,
    partition: Partition = None,
    slurm_args: SlurmArgs = "",
    config: ConfigFile = None,
) -> None:
    """Start one LMDeploy server with a fresh API key (on loopback, or as a Slurm job on its
    node's address); Ctrl-C stops it."""
    from lmeval import defaults_file

    values = {key: value for key, value in locals().items() if key not in ("ctx", "config", "defaults_file")}
    values["launcher"] = launcher.value

    def run(application) -> int:
        merged, _ = defaults_file.apply(values, defaults_file.given_options(ctx), config)
        return serve(application, **merged)

    ctx.obj.run(run)


def serve(app, *, model: str, gpus: str | None, tp: int | None, port: int | None, host: str,
          server_args: str, lmdeploy: str | None, work_dir: Path, ready_timeout: float, grace: float,
          launcher: str = defaults.LAUNCHER, partition: str | None = None, slurm_args: str = "") -> int:
    from lmeval.exceptions import UsageError
    from lmeval.files import write_private
    from lmeval.fleet import plan_server_set
    from lmeval.launch import ServerGroup
    from lmeval.readiness import wait_ready
    from lmeval.runs import claim_new_folder, prepare_work_dir
    from lmeval.signals import Terminated, shielded
    from lmeval.slurm import check_shared
    from lmeval.slurm_server import SlurmPlacement, parse_slurm_args
    from lmeval.tools import LMDEPLOY, find_executable

    executable = find_executable(LMDEPLOY, lmdeploy)
    placement = None
    if launcher == "slurm":
        placement = SlurmPlacement(partition, parse_slurm_args(slurm_args), proxy=False)
    elif partition or slurm_args:
        raise UsageError("--partition and --slurm-args go with --launcher slurm")
    server_set, warning = plan_server_set("model", model=model, gpus=gpus, tp=tp, port=port, host=host,
                                          server_args=server_args, placement=placement)
    spec = server_set.front
    if warning:
        app.warn(warning)
    work_dir = prepare_work_dir(work_dir)
    if placement is not None:
        check_shared(work_dir, [partition])
    _, folder = claim_new_folder(work_dir, prefix="serve_")
    servers = folder / "servers"
    key_file = servers / "model.key"
    write_private(key_file, spec.api_key.get_secret_value() + "\n")
    with ServerGroup(executable, servers, app, grace=grace) as group:
        server = group.start(spec, placement)
        app.info(f"loading {spec.model}; log in {server.log_path}")
        wait_ready([server], ready_timeout)
        try:
            # Once the user can read "ready", Ctrl-C is the normal stop; held off while these
            # lines print, so a Ctrl-C right after them neither cuts one short nor repeats it.
            with shielded():
                on = f" on node {server.node}" if server.node else ""
                app.info(f"ready at {server.url}/v1{on} serving {spec.served_name!r}; API key in {key_file}")
                app.info("press Ctrl-C to stop")
            while server.exit_status() is None:
                time.sleep(HOLD_POLL_SECONDS)
        except KeyboardInterrupt as interrupt:
            if isinstance(interrupt, Terminated):
                raise
            return 0  # Ctrl-C is how a user ends `serve`: the server stops as the block closes
        server.check_alive()
    return 0
