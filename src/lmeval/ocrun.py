"""The OpenCompass CLI as a child lmeval supervises: its own session, its output in a log,
tagged like the servers so a stop or `lmeval cleanup` finds its task processes too."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import psutil

from lmeval.launch import Stopped, live_process, owner_token, prepare_child, tagged_env, terminate

STOP_GRACE_SECONDS = 5.0
# Modules lmeval's configs name, for OpenCompass's own processes (lmeval never imports them).
PLUGIN_DIR = Path(__file__).resolve().parent / "opencompass_plugin"


def opencompass_env(base: dict[str, str]) -> dict[str, str]:
    """BASE with the plugin folder first on PYTHONPATH, where OpenCompass's task processes
    (which inherit it) import the model class the configs name."""
    paths = [str(PLUGIN_DIR), *filter(None, base.get("PYTHONPATH", "").split(os.pathsep))]
    return {**base, "PYTHONPATH": os.pathsep.join(paths)}


def opencompass_argv(executable: Path, config: Path, mode: str, work_dir: Path, run_id: str) -> list[str]:
    """Always `-r RUN`: the run folder is lmeval's choice, known before OpenCompass starts."""
    return [str(executable), str(config), "-m", mode, "-w", str(work_dir), "-r", run_id]


class OpenCompassRun:
    def __init__(self, executable: Path, config: Path, mode: str, work_dir: Path, run_id: str,
                 cwd: Path, log_path: Path) -> None:
        self.argv = opencompass_argv(executable, config, mode, work_dir, run_id)
        self.mode = mode
        self.cwd = cwd
        self.log_path = log_path
        self.run_id = run_id
        self.tag = f"opencompass-{mode}-{uuid.uuid4().hex[:12]}"
        self.popen: subprocess.Popen | None = None
        self.created = 0.0

    @property
    def name(self) -> str:
        return f"OpenCompass {self.mode}"

    def start(self) -> None:
        # OpenCompass writes tmp/, icl_inference_output/ and a dataset size cache into its
        # current directory: give each run its own.
        self.cwd.mkdir(parents=True, exist_ok=True, mode=0o700)
        env = opencompass_env(tagged_env(dict(os.environ), self.tag, owner_token(), self.run_id))
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=prepare_child,  # noqa: PLW1509 - umask and prctl only
            )
        self.created = psutil.Process(self.popen.pid).create_time()

    def poll(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def stop(self) -> Stopped:
        """End OpenCompass and its task processes (found by tag even after it exited)."""
        leader = live_process(self.popen.pid, self.created) if self.popen else None
        stopped = terminate(leader, self.tag, STOP_GRACE_SECONDS, f"{self.name}'s processes")
        if self.popen is not None:
            self.popen.poll()
        return stopped
