"""Running `lmeval` as a real subprocess against the stand-in `lmdeploy`, and finding every
process it started.

`LmevalProcess` reads lmeval's stdout and stderr on threads, timestamping each line as it is
read, so a test can wait for a line and know when it appeared. `LmevalRunner` starts them; the
`lmeval_runner` fixture (conftest.py) wraps it in `lmeval_runner_in`, whose teardown (test passed
or failed) kills each lmeval it started and every process whose environment carries LMEVAL_TAG
with one of them as LMEVAL_OWNER. Assertions about lmeval's own cleanup must run before that.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
STANDIN = REPO / "tests" / "standin" / "lmdeploy"
VENVS = Path(os.environ.get("LMEVAL_VENVS", REPO / ".venvs"))  # made by scripts/setup
TAG_ENV, OWNER_ENV, RUN_ENV = "LMEVAL_TAG", "LMEVAL_OWNER", "LMEVAL_RUN_ID"
WORKER_LINE = re.compile(r"started worker (\d+) pid (\d+)")

# Small stand-in timings keep the files fast; the workers' safety net ends them even if
# everything else failed.
STANDIN_ENV = {
    "STANDIN_LOAD_SECONDS": "0.2",
    "STANDIN_WARMUP_SECONDS": "0.2",
    "STANDIN_WORKER_MAX_SECONDS": "120",
}


def lmeval_env(standin: dict[str, str], **extra: str) -> dict[str, str]:
    """This process's environment without any STANDIN_/LMEVAL_ setting of its own, then the
    stand-in's settings STANDIN, then EXTRA: what an lmeval under test runs with."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("STANDIN_", "LMEVAL_"))}
    return {**env, **standin, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def running(process: psutil.Process) -> bool:
    """Alive and not a zombie (a zombie has ended; only its exit status is left)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def processes_where(select: Callable[[dict[str, str]], bool]) -> list[psutil.Process]:
    """Running processes (zombies left out) whose environment SELECT accepts."""
    found = []
    for process in psutil.process_iter():
        try:
            env = process.environ()
        except (psutil.Error, OSError):
            continue
        if select(env) and running(process):
            found.append(process)
    return found


def owner_pid(env: dict[str, str]) -> str:
    """The pid of the lmeval that started the process with ENV (LMEVAL_OWNER is `pid:token`)."""
    return env.get(OWNER_ENV, "").split(":")[0]


def tagged(owner_pids: Iterable[int] | None = None) -> list[psutil.Process]:
    """Running processes whose environment has LMEVAL_TAG (and, if given, an owner among OWNER_PIDS)."""
    owners = {str(pid) for pid in owner_pids} if owner_pids is not None else None
    return processes_where(lambda env: TAG_ENV in env and (owners is None or owner_pid(env) in owners))


def worker_pids(log: Path) -> dict[int, int]:
    """{worker index: pid} as the stand-in logs them (`INFO: started worker K pid P`)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return {}
    return {int(k): int(p) for k, p in WORKER_LINE.findall(text)}


def _restore_sigint() -> None:
    # A shell starting pytest in the background leaves SIGINT ignored, and an ignored signal
    # stays ignored across exec; lmeval must get Ctrl-C as it would in a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class LmevalProcess:
    """One `python -m lmeval ...` with its output lines read as they come."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.args = args
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "lmeval", *args], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_restore_sigint,  # noqa: PLW1509 - only resets a signal
        )
        self.pid = self.popen.pid
        self.out: list[tuple[float, str]] = []
        self.err: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.popen.stdout, self.out), (self.popen.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, lines: list[tuple[float, str]]) -> None:
        for raw in iter(stream.readline, b""):
            moment = time.monotonic()
            with self._changed:
                lines.append((moment, raw.decode(errors="replace").rstrip("\n")))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def stdout_lines(self) -> list[str]:
        with self._changed:
            return [line for _, line in self.out]

    @property
    def stderr_lines(self) -> list[str]:
        with self._changed:
            return [line for _, line in self.err]

    def transcript(self) -> str:
        return "\n".join(["stdout:", *self.stdout_lines, "stderr:", *self.stderr_lines])

    def wait_line(self, pattern: str, timeout: float = 30.0) -> tuple[float, re.Match]:
        """Wait for a stderr line fully matching PATTERN; return when it was read and the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = 0
            while True:
                for moment, line in self.err[seen:]:
                    match = regex.fullmatch(line)
                    if match:
                        return moment, match
                seen = len(self.err)
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not any(r.is_alive() for r in self._readers)):
                    raise AssertionError(f"no stderr line matching {pattern!r} "
                                         f"(rc={self.popen.poll()})\n{self.transcript()}")
                self._changed.wait(min(left, 0.1))

    def wait(self, timeout: float = 30.0) -> int:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"lmeval still running after {timeout} s\n{self.transcript()}") from None
        for reader in self._readers:
            reader.join(5)
        return code

    def signal(self, sig: int) -> float:
        self.popen.send_signal(sig)
        return time.monotonic()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        for reader in self._readers:
            reader.join(5)


class LmevalRunner:
    """Starts lmeval subprocesses for one test and remembers them for the teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[LmevalProcess] = []

    def env(self, **extra: str) -> dict[str, str]:
        return lmeval_env(STANDIN_ENV, **extra)

    def start(self, *args: str, env: dict[str, str] | None = None) -> LmevalProcess:
        process = LmevalProcess(list(args), env if env is not None else self.env(), self.tmp_path)
        self.started.append(process)
        return process

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 30.0) -> LmevalProcess:
        process = self.start(*args, env=env)
        process.wait(timeout)
        return process

    def teardown(self) -> None:
        for process in self.started:
            process.kill()
        owners = [process.pid for process in self.started]
        leftovers = tagged(owners)
        for process in leftovers:
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(leftovers, timeout=5)


@contextmanager
def lmeval_runner_in(tmp_path: Path) -> Iterator[LmevalRunner]:
    """For the `lmeval_runner` fixture (conftest.py): the runner, torn down whatever happened."""
    runner = LmevalRunner(tmp_path)
    try:
        yield runner
    finally:
        runner.teardown()


def serve_folder(work_dir: Path) -> Path:
    """The one serve_* folder lmeval made in WORK_DIR."""
    folders = sorted(work_dir.glob("serve_*"))
    assert len(folders) == 1, folders
    return folders[0]


def read_state(path: Path) -> dict:
    """The server's state file, once it is complete."""
    def load():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None
    state = wait_until(load, 10)
    assert state, f"no state file {path}"
    return state


def no_driver_warning(gpus: str) -> list[str]:
    """The warning lmeval prints where no NVIDIA driver answers (as on this CPU machine)."""
    from lmeval.gpus import inventory

    return [f"lmeval: warning: no NVIDIA driver answered; using GPUs {gpus} as given, unchecked"] \
        if inventory() is None else []
