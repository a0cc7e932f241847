"""`lmeval cleanup`: end what an lmeval killed outright (SIGKILL, OOM killer) left running."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import psutil

from lmeval.app import Application
from lmeval.launch import (
    TAG_ENV,
    live_process,
    owner_alive,
    tagged_processes,
    terminate,
)


def cleanup(app: Application, *, work_dir: Path, grace: float) -> int:
    work_dir = work_dir.expanduser().absolute()
    ended = 0
    for state_path in sorted(work_dir.glob("*/servers/*.json")):
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError):
            continue
        if state.get("stopped"):
            continue
        if owner_alive(state["owner"]):
            app.info(f"{state['role']} server on port {state['port']} belongs to a running lmeval "
                     f"(pid {state['owner'].split(':')[0]}); left alone")
            continue
        count = terminate(live_process(state["pid"], state["created"]), state["tag"], grace)
        state["stopped"] = True
        state_path.write_text(json.dumps(state, indent=2))
        if count:
            ended += count
            app.info(f"ended {state['role']} server of {state_path.parent.parent.name} "
                     f"(port {state['port']}, {count} processes)")
    # Processes whose state file is elsewhere or gone: the tag still names them.
    orphans: dict[str, int] = defaultdict(int)
    for process in tagged_processes(lambda tag, owner: not owner_alive(owner)):
        try:
            orphans[process.environ()[TAG_ENV]] += 1
        except (psutil.Error, KeyError):  # it exited meanwhile
            continue
    for tag in sorted(orphans):
        count = terminate(None, tag, grace)
        if count:
            ended += count
            app.info(f"ended {count} leftover process(es) tagged {tag}")
    app.info(f"cleanup done: {ended} process(es) ended" if ended else "nothing to clean up")
    return 0
