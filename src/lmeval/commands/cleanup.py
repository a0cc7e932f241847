"""`lmeval cleanup`: end what an lmeval killed outright (SIGKILL, OOM killer) left running."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import typer

from lmeval import defaults
from lmeval.commands.options import DEFAULT_WORK_DIR, Grace, WorkDir


def command(ctx: typer.Context, work_dir: WorkDir = DEFAULT_WORK_DIR, grace: Grace = defaults.GRACE) -> None:
    """End every server process an lmeval that was killed outright left behind."""
    ctx.obj.run(cleanup, work_dir=work_dir, grace=grace)


def cleanup(app, *, work_dir: Path, grace: float) -> int:
    """Servers through their state files first (a Slurm job's is cancelled), then every process
    of this user that carries lmeval's tag and whose lmeval is gone (its state file elsewhere,
    or never written)."""
    import psutil

    from lmeval.exceptions import UsageError
    from lmeval.launch import ServerState
    from lmeval.processes import TAG_ENV, live_process, owner_alive, tagged_processes, terminate
    from lmeval.slurm_server import cancel_jobs, jobs_tagged

    work_dir = work_dir.expanduser().absolute()
    ended = 0
    for state_path in sorted(work_dir.glob("*/servers/*.json")):
        try:
            state = ServerState.load(state_path)
        except UsageError as error:
            app.warn(f"{error.message}; skipped it (the tag sweep below still finds its processes)")
            continue
        if state.stopped:
            continue
        if owner_alive(state.owner):
            app.info(f"{state.role} server on port {state.port} belongs to a running lmeval "
                     f"(pid {state.owner.split(':')[0]}); left alone")
            continue
        what = f"{state.role} server of {state_path.parent.parent.name}"
        if state.launcher == "slurm":
            ids = [state.job_id] if state.job_id else jobs_tagged(state.tag)
            stopped = cancel_jobs(ids, f"the {what}", grace)
            done = f"cancelled {what} ({stopped.summary})"
        else:
            leader = live_process(state.pid, state.created) if state.pid is not None else None
            stopped = terminate(leader, state.tag, grace, f"the {what}")
            done = f"ended {what} (port {state.port}, {stopped.ended} processes)"
        if stopped.left:
            app.stopped(what, stopped, work_dir)
        else:
            state.model_copy(update={"stopped": True}).save(state_path)
        if stopped.ended:
            ended += stopped.ended
            app.info(done)
    orphans: dict[str, int] = defaultdict(int)
    for process in tagged_processes(lambda tag, owner: not owner_alive(owner)):
        try:
            orphans[process.environ()[TAG_ENV]] += 1
        except (psutil.Error, KeyError):  # it exited meanwhile
            continue
    for tag in sorted(orphans):
        stopped = terminate(None, tag, grace, f"the processes tagged {tag}")
        if stopped.left:
            app.stopped(f"processes tagged {tag}", stopped, work_dir)
        if stopped.ended:
            ended += stopped.ended
            app.info(f"ended {stopped.ended} leftover process(es) tagged {tag}")
    app.info(f"cleanup done: {ended} process(es) ended" if ended else "nothing to clean up")
    return 0
