"""Run ids and run folders. lmeval picks the id, so the folder is known before anything starts,
and claims the folder atomically, so no run's outputs are ever overwritten."""

from __future__ import annotations

import os
import re
import socket
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from lmeval.exceptions import UsageError

RUN_ID_FORMAT = "%Y%m%d_%H%M%S"
RUN_ID_PATTERN = re.compile(r"\d{8}_\d{6}")
LOCK_NAME = ".lmeval.lock"  # held by the lmeval working on a run (lmeval.manifest.RunLock)


def lock_owner() -> str:
    """What a lock file says of the lmeval holding it: `HOST:PID`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def lock_pid(fd: int) -> str:
    """Who holds a run's lock, as its lock file says: `123` (on this host), `123 on host n2`
    (on a shared file system, another node's), '' if it wrote nothing."""
    text = os.read(fd, 256).decode(errors="replace").strip()
    host, separator, pid = text.rpartition(":")
    if not separator or host == socket.gethostname():
        return pid
    return f"{pid} on host {host}"


def file_system(path: Path) -> str:
    """`lustre at /scratch`: the file system PATH is on, as the mount table says."""
    import psutil

    path_text = str(Path(path).absolute())
    mounts = [part for part in psutil.disk_partitions(all=True)
              if path_text == part.mountpoint or path_text.startswith(part.mountpoint.rstrip("/") + "/")]
    best = max(mounts, key=lambda part: len(part.mountpoint), default=None)
    return f"{best.fstype} at {best.mountpoint}" if best else "an unknown file system"


def unlockable(path: Path, error: OSError) -> UsageError:
    """The refusal for a lock file whose file system has no working flock (Lustre mounted without
    `-o flock` answers ENOSYS; some NFS setups ENOLCK)."""
    return UsageError(f"cannot lock {path}: {file_system(path.parent)} does not support flock "
                      f"({error.strerror or error}); use a work dir on a file system that does (mount Lustre with "
                      "-o flock, or pick a local disk with -w)")


def prepare_work_dir(work_dir: Path) -> Path:
    """Create WORK_DIR if needed and check lmeval can write there; return it absolute."""
    work_dir = work_dir.expanduser().absolute()
    if work_dir.exists() and not work_dir.is_dir():
        raise UsageError(f"work dir {work_dir} is not a folder; pick another -w")
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create work dir {work_dir}: {error.strerror}; pick another -w") from None
    # Try it: permission bits say nothing for root, read-only mounts or immutable folders.
    try:
        with tempfile.TemporaryFile(dir=work_dir, prefix=".lmeval-probe-"):
            pass
    except OSError as error:
        raise UsageError(f"work dir {work_dir} is not writable ({error.strerror}); pick another -w") from None
    return work_dir


def claim_new_folder(work_dir: Path, prefix: str = "", now: datetime | None = None) -> tuple[str, Path]:
    """Make a new folder named PREFIX + a timestamp id, owner-only; later seconds if taken."""
    moment = now or datetime.now()
    for step in range(3600):
        run_id = (moment + timedelta(seconds=step)).strftime(RUN_ID_FORMAT)
        folder = work_dir / f"{prefix}{run_id}"
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return run_id, folder
    raise UsageError(f"could not find a free run id in {work_dir}; clean up old runs")


def check_run_id(run_id: str) -> str:
    if not RUN_ID_PATTERN.fullmatch(run_id):
        raise UsageError(f"run id {run_id!r} is malformed; run ids look like 20250101_120000")
    return run_id


STALE_PREFIX = "stale-"


def move_aside(run_dir: Path, names: list[str], now: datetime | None = None) -> Path:
    """Move the entries of RUN_DIR that NAMES match (glob patterns) into a new `stale-<time>/`
    folder inside it.

    Nothing is deleted: the outputs of earlier settings stay in the run folder, out of
    OpenCompass's way (it reuses any predictions or results it finds).
    """
    _, folder = claim_new_folder(run_dir, prefix=STALE_PREFIX, now=now)
    for name in names:
        for source in sorted(run_dir.glob(name)):
            target = folder / source.relative_to(run_dir)
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.replace(source, target)
    return folder


def run_folder(work_dir: Path, run_id: str) -> Path:
    """The folder of the existing run RUN_ID in WORK_DIR (the id checked first)."""
    folder = work_dir / check_run_id(run_id)
    if not folder.is_dir():
        raise UsageError(f"run {run_id} does not exist in {work_dir}; check the id or pass -w")
    return folder


def find_run(work_dir: Path, run: str) -> Path:
    """The folder of RUN: an id, or `latest` (the newest run that has lmeval's manifest)."""
    work_dir = work_dir.expanduser().absolute()
    if run != "latest":
        return run_folder(work_dir, run)
    runs = sorted(p for p in work_dir.glob("*") if RUN_ID_PATTERN.fullmatch(p.name) and (p / "lmeval.json").is_file())
    if not runs:
        raise UsageError(f"no lmeval runs in {work_dir}; run `lmeval run` first or pass -w")
    return runs[-1]
