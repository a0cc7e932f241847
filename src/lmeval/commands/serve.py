"""`lmeval serve`: one LMDeploy server on loopback with a fresh key, until Ctrl-C."""

from __future__ import annotations

import os
from pathlib import Path

from lmeval.app import Application
from lmeval.launch import ServerGroup
from lmeval.fleet import plan_server_set
from lmeval.readiness import wait_ready
from lmeval.runs import claim_new_folder, prepare_work_dir
from lmeval.signals import Terminated, shielded
from lmeval.tools import LMDEPLOY, find_executable


def serve(app: Application, *, model: str, gpus: str | None, tp: int | None, port: int | None, host: str,
          server_args: str, lmdeploy: str | None, work_dir: Path, ready_timeout: float, grace: float) -> int:
    executable = find_executable(LMDEPLOY, lmdeploy)
    server_set, warning = plan_server_set("model", model=model, gpus=gpus, tp=tp, port=port, host=host,
                                          server_args=server_args)
    spec = server_set.front
    if warning:
        app.warn(warning)
    work_dir = prepare_work_dir(work_dir)
    _, folder = claim_new_folder(work_dir, prefix="serve_")
    servers = folder / "servers"
    servers.mkdir(mode=0o700)
    key_file = servers / "model.key"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(spec.api_key.get_secret_value() + "\n")
    with ServerGroup(executable, servers, grace=grace, notify=app.info) as group:
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
