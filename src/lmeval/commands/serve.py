"""`lmeval serve`: one LMDeploy server on loopback with a fresh key, until Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmeval import defaults
from lmeval.commands.options import (
    DEFAULT_WORK_DIR,
    Gpus,
    Grace,
    Host,
    Lmdeploy,
    Port,
    ReadyTimeout,
    ServerArgs,
    Tp,
    WorkDir,
)


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
) -> None:
    """Start one LMDeploy server on loopback with a fresh API key; Ctrl-C stops it."""
    ctx.obj.run(serve, model=model, gpus=gpus, tp=tp, port=port, host=host, server_args=server_args,
                lmdeploy=lmdeploy, work_dir=work_dir, ready_timeout=ready_timeout, grace=grace)


def serve(app, *, model: str, gpus: str | None, tp: int | None, port: int | None, host: str,
          server_args: str, lmdeploy: str | None, work_dir: Path, ready_timeout: float, grace: float) -> int:
    from lmeval.files import write_private
    from lmeval.fleet import plan_server_set
    from lmeval.launch import ServerGroup
    from lmeval.readiness import wait_ready
    from lmeval.runs import claim_new_folder, prepare_work_dir
    from lmeval.signals import Terminated, shielded
    from lmeval.tools import LMDEPLOY, find_executable

    executable = find_executable(LMDEPLOY, lmdeploy)
    server_set, warning = plan_server_set("model", model=model, gpus=gpus, tp=tp, port=port, host=host,
                                          server_args=server_args)
    spec = server_set.front
    if warning:
        app.warn(warning)
    work_dir = prepare_work_dir(work_dir)
    _, folder = claim_new_folder(work_dir, prefix="serve_")
    servers = folder / "servers"
    key_file = servers / "model.key"
    write_private(key_file, spec.api_key.get_secret_value() + "\n")
    with ServerGroup(executable, servers, app, grace=grace) as group:
        server = group.start(spec)
        app.info(f"loading {spec.model}; log in {server.log_path}")
        wait_ready([server], ready_timeout)
        try:
            # Once the user can read "ready", Ctrl-C is the normal stop; held off while these
            # lines print, so a Ctrl-C right after them neither cuts one short nor repeats it.
            with shielded():
                app.info(f"ready at {spec.url}/v1 serving {spec.served_name!r}; API key in {key_file}")
                app.info("press Ctrl-C to stop")
            server.popen.wait()
        except KeyboardInterrupt as interrupt:
            if isinstance(interrupt, Terminated):
                raise
            return 0  # Ctrl-C is how a user ends `serve`: the server stops as the block closes
        server.check_alive()
    return 0
