"""The run's manifest `{run}/lmeval.json`: what was asked, what was resolved, what happened.

`lmeval judge --reuse RUN` reads it so the user repeats nothing. Keys never enter it: servers
are recorded by their redacted commands.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from lmeval.exceptions import UsageError
from lmeval.files import write_private
from lmeval.runs import LOCK_NAME, lock_owner, lock_pid, unlockable

MANIFEST_NAME = "lmeval.json"


class StageRecord(BaseModel):
    status: str = "pending"  # pending | running | ok | failed | interrupted
    started: float | None = None
    ended: float | None = None
    seconds: float | None = None
    opencompass_seconds: float | None = None
    message: str = ""


class ServerRecord(BaseModel):
    role: str
    model: str
    served_name: str
    url: str
    gpus: list[int] = []
    tp: int = 0
    command: str = ""  # redacted; empty for a server lmeval did not start
    external: bool = False
    started: float | None = None
    job_id: str = ""  # the Slurm job it runs in (--launcher slurm)
    node: str = ""  # the Slurm node it ran on
    ready_seconds: float | None = None  # from start to ready: the model's load time
    waited_seconds: float = 0.0  # how long lmeval waited for it (less when it loaded meanwhile)


class RestartRecord(BaseModel):
    """A server that died during a stage and was started again (--restarts)."""

    role: str
    stage: str
    at: float
    died: str  # how it ended: `exited with code -9 (SIGKILL)`, or how it stalled
    cause: str = "died"  # died, or stalled (alive, its /health failing: lmeval.watchdog)
    log_tail: str  # the last lines of its log as it died


class Manifest(BaseModel):
    run_id: str
    created: float = Field(default_factory=time.time)
    command: list[str] = []
    inputs: dict[str, Any] = {}
    model_abbr: str = ""
    fingerprint: str = ""  # sha256 of what the predictions depend on (plan.fingerprint_of)
    fingerprint_inputs: dict[str, Any] = {}  # what went into it, to say what a reuse changed
    # Outputs of earlier settings, moved aside by `--reuse RUN --redo`: where to, when, and why.
    stale: list[dict[str, Any]] = []
    servers: dict[str, ServerRecord] = {}
    restarts: list[RestartRecord] = []
    # dataset -> when its predictions were complete ("inferred") and when it was scored ("judged")
    dataset_times: dict[str, dict[str, float]] = {}
    versions: dict[str, str] = {}
    stages: dict[str, StageRecord] = {}
    wall_seconds: float | None = None  # the whole command, start to end
    # One entry per summary row: dataset, metric, value, and for judged rows judge_replies and
    # judge_invalid (replies that were neither correct nor incorrect).
    scores: list[dict[str, Any]] = []
    # Each judged summary row and the datasets whose judge replies are behind it
    # (suites.judged_rows), so `lmeval results` counts them as the run did.
    judge_rows: dict[str, list[str]] = {}
    # A run made by `--reuse RUN --retry-truncated`: RUN, its --max-out-len, and per dataset the
    # answers asked again (OpenCompass's indices).
    derived_from: dict[str, Any] = {}
    # Each summary row's answers counted (lmeval.answers.AnswerStats): cut, empty, too long, tokens.
    answers: dict[str, dict[str, Any]] = {}
    # The training step of the checkpoint (lmeval.steps): --step, or read from its folder's name.
    step: int | None = None
    # Each time its scores were logged to a tracker (lmeval.tracking): to, run_id, url, step, at.
    tracking: list[dict[str, Any]] = []

    def stage(self, name: str) -> StageRecord:
        return self.stages.setdefault(name, StageRecord())

    def save(self, run_dir: Path) -> None:
        """Write atomically, owner-only: a crash never leaves half a manifest."""
        write_private(run_dir / MANIFEST_NAME, self.model_dump_json(indent=2))

    @classmethod
    def load(cls, run_dir: Path) -> Manifest:
        path = run_dir / MANIFEST_NAME
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except FileNotFoundError:
            raise UsageError(f"{run_dir} has no {MANIFEST_NAME}: it was not made by lmeval") from None
        except ValueError as error:
            raise UsageError(f"{path} is unreadable ({error.__class__.__name__}); it cannot be reused") from None


class RunLock:
    """An exclusive lock on a run folder: two lmeval processes never work on one run."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_pid(fd) or "another process"
            os.close(fd)
            raise UsageError(
                f"run {self.path.parent.name} is in use by another lmeval (pid {holder}); "
                "wait for it to finish or pick another run"
            ) from None
        except OSError as error:
            os.close(fd)
            raise unlockable(self.path, error) from None
        os.ftruncate(fd, 0)
        os.write(fd, lock_owner().encode())
        self.fd = fd
        return self

    def __exit__(self, *exc_info) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
