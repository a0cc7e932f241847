"""Processes lmeval starts and must be able to end, whoever started them (LMDeploy servers,
OpenCompass and its tasks, the fork server): each carries a tag in its environment, inherited
by every descendant (workers in sessions of their own included), so a stop, or a later `lmeval
cleanup`, finds them all even after their parent died; and a stop that ends a whole tree, with
a deadline on every wait."""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

from lmeval import signals

TAG_ENV = "LMEVAL_TAG"  # unique per server; inherited by all its descendants
OWNER_ENV = "LMEVAL_OWNER"  # "pid:create_time" of the lmeval process that owns the server
RUN_ENV = "LMEVAL_RUN_ID"
# After SIGKILL, how long a stop waits for the processes to end: on a GPU a killed process can
# sit in the driver (state D) while its memory is released. Then lmeval says what is left.
KILL_WAIT_SECONDS = 30.0


def tagged_env(base: dict[str, str], tag: str, owner: str, run_id: str = "") -> dict[str, str]:
    """BASE plus the tags every descendant inherits, by which a stop or `lmeval cleanup` finds it."""
    env = {**base, TAG_ENV: tag, OWNER_ENV: owner}
    if run_id:
        env[RUN_ENV] = run_id
    return env


def owner_token(pid: int | None = None) -> str:
    """Identify a process across PID reuse: pid plus its start time."""
    process = psutil.Process(pid)
    return f"{process.pid}:{process.create_time():.3f}"


def owner_alive(token: str) -> bool:
    pid, _, created = token.partition(":")
    try:
        return f"{float(psutil.Process(int(pid)).create_time()):.3f}" == created
    except (ValueError, psutil.Error):
        return False


def _libc_prctl():
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:
        return None


# Resolved here, not in the child: between fork and exec the child of a process with threads
# should run as little Python as it can (no dlopen, no import).
_PRCTL = _libc_prctl()
CHILD_UMASK = 0o077  # files a child writes are the owner's alone (Popen's umask=)


def prepare_child() -> None:
    """In a child before exec: it gets SIGTERM when lmeval dies, even by SIGKILL (Linux
    PR_SET_PDEATHSIG; in fact when the thread that started it ends: see ServerGroup.starter).
    One C call, already resolved."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)


def tagged_processes(match) -> list[psutil.Process]:
    """Every process of this user whose lmeval tag satisfies MATCH(tag, owner)."""
    found = []
    me, uid = os.getpid(), os.getuid()
    for process in psutil.process_iter():
        if process.pid == me:
            continue
        try:
            if process.uids().real != uid:
                continue  # never another user's processes, even when run as root
            env = process.environ()
        except (psutil.Error, OSError):
            continue
        tag = env.get(TAG_ENV)
        if tag and match(tag, env.get(OWNER_ENV, "")):
            found.append(process)
    return found


@dataclass(frozen=True)
class Stopped:
    """What one stop really did: how many processes (or jobs) ended, in words, and what still
    ran at its end."""

    ended: int
    left: tuple[str, ...] = ()  # "pid 1234 (disk-sleep)", "Slurm job 12 (COMPLETING)"
    summary: str = ""  # "3 processes ended"; made from ENDED when not given

    def __post_init__(self) -> None:
        if not self.summary:
            object.__setattr__(self, "summary", f"{self.ended} processes ended")


def _pids(processes: Iterable[psutil.Process]) -> str:
    return ", ".join(str(process.pid) for process in processes)


def end_processes(processes: Iterable[psutil.Process], what: str,
                  timeout: float = KILL_WAIT_SECONDS) -> list[psutil.Process]:
    """SIGKILL PROCESSES and wait up to TIMEOUT seconds until each has ended; return those
    still running then (a process stuck in the GPU driver outlives SIGKILL for a while).

    Ended means gone or a zombie: an orphan's zombie waits for init to reap it, which can take
    a second or more, yet it holds no memory, GPU or port any more."""
    killed = []
    for process in running(processes).values():
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue
        killed.append(process)
    signals.wait(lambda: not running(killed), timeout,
                 lambda: f"{what} to end after SIGKILL (pids {_pids(running(killed).values())})")
    return list(running(killed).values())


def _state_of(process: psutil.Process) -> str:
    try:
        return process.status()
    except psutil.Error:
        return "gone"


def terminate(leader: psutil.Process | None, tag: str, grace: float, what: str) -> Stopped:
    """Stop a server's whole tree: LEADER and descendants, plus anything carrying TAG. WHAT
    names them to the user ("the target server").

    Descendants are listed before any signal (once the leader dies they are orphans). The
    leader's group gets SIGTERM so LMDeploy can shut down cleanly; once the leader has exited,
    or after GRACE seconds, whatever remains - workers that ignore SIGTERM, workers in sessions
    of their own - is killed. Every wait has a deadline; Ctrl-C is held off throughout.
    """
    def tagged() -> dict[int, psutil.Process]:
        return running(tagged_processes(lambda found, owner: found == tag))

    with signals.shielded():
        known = running(process_tree(leader)) if leader else {}
        known.update(tagged())
        if leader is not None:
            try:
                os.killpg(leader.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            signals.wait(lambda: not running([leader]), grace,
                         lambda: f"{what} to exit after SIGTERM (pid {leader.pid}; SIGKILL after {grace:g} s)")
        known.update(tagged())
        left = end_processes(known.values(), what)
        return Stopped(ended=len(known) - len(left),
                       left=tuple(f"pid {process.pid} ({_state_of(process)})" for process in left))


def live_process(pid: int, created: float) -> psutil.Process | None:
    """The process PID if it is still the one that started at CREATED (not a reused pid)."""
    try:
        process = psutil.Process(pid)
        return process if process.create_time() == created else None
    except psutil.Error:
        return None


def process_tree(leader: psutil.Process) -> list[psutil.Process]:
    try:
        return [leader, *leader.children(recursive=True)]
    except psutil.Error:
        return [leader]


def running(processes: Iterable[psutil.Process]) -> dict[int, psutil.Process]:
    """The processes that still run: a zombie has ended already and is not counted as ended by us."""
    found = {}
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                found[process.pid] = process
        except psutil.NoSuchProcess:
            pass
    return found
