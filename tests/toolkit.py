"""The test toolkit: where the project's venvs and stand-in live, one way to run `lmeval` as a
real subprocess, finding the processes it started, waiting, and reading what it showed.

- `Lmeval`: one `python -m lmeval ...` whose stdout and stderr are read on threads, each line
  timestamped as it is read, so a test can wait for a line and know when it came; its exit
  time is taken by a thread blocked in wait(), not by polling.
- `Runner` (the `lmeval_runner` fixture, conftest.py): starts them for one test and, once the
  test is over (passed or failed), kills each one and every process lmeval tagged for them or
  for their work dirs. Assertions about lmeval's own cleanup must run before that.
- `leftovers`, `tagged`: live processes whose environment carries lmeval's tags.
- `wait_until`: polling with tenacity, as lmeval's readiness checks poll.
- `score_rows`: the rows of the results table as printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from lmeval.launch import ServerState
from lmeval.processes import OWNER_ENV, RUN_ENV, TAG_ENV
from lmeval.readiness import http_client

REPO = Path(__file__).resolve().parent.parent
STANDIN = REPO / "tests" / "standin" / "lmdeploy"
VENVS = Path(os.environ.get("LMEVAL_VENVS", REPO / ".venvs"))  # made by scripts/setup
OPENCOMPASS = VENVS / "opencompass" / "bin" / "opencompass"
REAL_LMDEPLOY = VENVS / "lmdeploy" / "bin" / "lmdeploy"
MODELS = REPO / "examples" / "sample" / "models"
TOOLS = ["--lmdeploy", str(STANDIN), "--opencompass", str(OPENCOMPASS)]
WORKER_LINE = re.compile(r"started worker (\d+) pid (\d+)")

# Fast stand-in servers; the workers' safety net ends them even if everything else failed.
STANDIN_ENV = {
    "STANDIN_LOAD_SECONDS": "0.2",
    "STANDIN_WARMUP_SECONDS": "0.2",
    "STANDIN_WORKER_MAX_SECONDS": "300",
    "STANDIN_SHUTDOWN_TIMEOUT": "2",
}


# OpenCompass's processes forked (--fork-server) in most tests: each new Python costs 7-8 s of CPU,
# half a minute on CI's 2 cores, and the tests start hundreds. The default way, each a new process,
# runs in the session's chat suite run (tests/chat_suite.py) and tests/test_opencompass_starts.py.
FORK_SERVER = {"LMEVAL_FORK_SERVER": "1"}
NEW_PROCESSES = {"LMEVAL_FORK_SERVER": "0"}


def lmeval_env(**extra: str) -> dict[str, str]:
    """What an lmeval under test runs with: this process's environment without any STANDIN_ or
    LMEVAL_ setting of its own, then STANDIN_ENV, LMEVAL_HOME (the project's venvs, as
    scripts/setup made them with `lmeval setup`) and FORK_SERVER, then EXTRA."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("STANDIN_", "LMEVAL_"))}
    return {**env, **STANDIN_ENV, "LMEVAL_HOME": str(VENVS), **FORK_SERVER, **extra}


# ---------------------------------------------------------------- waiting


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.02,
               what: str = "the condition"):
    """PREDICATE's first true value, polled every INTERVAL seconds; a failed assertion naming
    WHAT if none came within TIMEOUT seconds."""
    try:
        return Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(interval),
                        retry=retry_if_result(lambda value: not value))(predicate)
    except RetryError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


# ---------------------------------------------------------------- processes


def running(process: psutil.Process) -> bool:
    """Alive and not a zombie (a zombie has ended; only its exit status is left)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def alive(pid: int) -> bool:
    """Whether process PID runs (a pid that is gone, or a zombie, has ended)."""
    try:
        return running(psutil.Process(pid))
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
    """The pid of the lmeval that started the process with ENV (LMEVAL_OWNER is `pid:start time`)."""
    return env.get(OWNER_ENV, "").split(":")[0]


def tagged(owner_pids: Iterable[int] | None = None) -> list[psutil.Process]:
    """Running processes whose environment has LMEVAL_TAG (and, if given, an owner among OWNER_PIDS)."""
    owners = {str(pid) for pid in owner_pids} if owner_pids is not None else None
    return processes_where(lambda env: TAG_ENV in env and (owners is None or owner_pid(env) in owners))


def leftovers(work_dirs: Iterable[Path] = (), owners: Iterable[int] = ()) -> list[psutil.Process]:
    """Live processes lmeval tagged for a run in WORK_DIRS, or whose owner is one of OWNERS:
    servers, their tp workers, OpenCompass and its tasks."""
    runs = {run.name for work in work_dirs if work.is_dir() for run in work.iterdir()}
    owner_pids = {str(pid) for pid in owners}
    return processes_where(lambda env: (TAG_ENV in env or RUN_ENV in env)
                           and (env.get(RUN_ENV) in runs or owner_pid(env) in owner_pids))


def describe(processes: list[psutil.Process]) -> str:
    lines = []
    for process in processes:
        try:
            lines.append(f"{process.pid} {' '.join(process.cmdline())[:160]}")
        except psutil.Error:
            lines.append(f"{process.pid} (gone)")
    return "\n".join(lines)


def worker_pids(log: Path) -> dict[int, int]:
    """{worker index: pid} as the stand-in logs them (`INFO: started worker K pid P`)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return {}
    return {int(k): int(p) for k, p in WORKER_LINE.findall(text)}


def _restore_signals() -> None:
    # A shell starting pytest in the background leaves SIGINT ignored, and an ignored signal
    # stays ignored across exec; lmeval must get Ctrl-C as it would in a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


FREEZER = Path("/sys/fs/cgroup/freezer")  # the cgroup v1 freezer


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    """PID frozen (cgroup v1 freezer) until the block ends: like a process stuck in the GPU
    driver, it shows state D and outlives SIGKILL until thawed, when it dies at once. The test
    is the holder that thaws it."""
    if not FREEZER.is_dir():
        raise AssertionError(f"{FREEZER} is missing: this test needs the cgroup v1 freezer")
    group = FREEZER / f"lmeval-test-{os.getpid()}-{pid}"
    group.mkdir()
    try:
        (group / "cgroup.procs").write_text(str(pid))
        (group / "freezer.state").write_text("FROZEN")
        wait_until(lambda: (group / "freezer.state").read_text().strip() == "FROZEN", 10, what=f"pid {pid} to freeze")
        yield
    finally:
        (group / "freezer.state").write_text("THAWED")
        for left in (group / "cgroup.procs").read_text().split():  # still alive: back to the root group
            try:
                (FREEZER / "cgroup.procs").write_text(left)
            except OSError:  # it died meanwhile
                pass
        wait_until(lambda: not (group / "cgroup.procs").read_text().strip(), 10, what="the freezer group to empty")
        group.rmdir()


class Lmeval:
    """One `python -m lmeval ...` with its output lines read as they come."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.args = args
        self.started = time.monotonic()
        self.ended: float | None = None
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "lmeval", *args], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_restore_signals,  # noqa: PLW1509 - only resets signals
        )
        self.pid = self.popen.pid
        self.out: list[tuple[float, str]] = []
        self.err: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.popen.stdout, self.out), (self.popen.stderr, self.err))]
        self._exit = threading.Thread(target=self._await_exit, daemon=True)
        for thread in (*self._readers, self._exit):
            thread.start()

    def _read(self, stream, lines: list[tuple[float, str]]) -> None:
        for raw in iter(stream.readline, b""):
            moment = time.monotonic()
            with self._changed:
                lines.append((moment, raw.decode(errors="replace").rstrip("\n")))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _await_exit(self) -> None:
        self.popen.wait()
        self.ended = time.monotonic()

    @property
    def stdout_lines(self) -> list[str]:
        with self._changed:
            return [line for _, line in self.out]

    @property
    def stderr_lines(self) -> list[str]:
        with self._changed:
            return [line for _, line in self.err]

    @property
    def stdout(self) -> str:
        return "".join(line + "\n" for line in self.stdout_lines)

    @property
    def stderr(self) -> str:
        return "".join(line + "\n" for line in self.stderr_lines)

    def transcript(self) -> str:
        return f"$ lmeval {' '.join(self.args)}\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"

    def poll(self) -> int | None:
        return self.popen.poll()

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
        """The exit code, once lmeval has exited and its output is read to the end."""
        self._exit.join(timeout)
        if self._exit.is_alive():
            raise AssertionError(f"lmeval still running after {timeout} s\n{self.transcript()}")
        for reader in self._readers:
            reader.join(5)
        return self.popen.returncode

    def signal(self, sig: int) -> float:
        self.popen.send_signal(sig)
        return time.monotonic()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.wait(10)


class Runner:
    """Starts lmeval subprocesses for one test and remembers them, and the work dirs they use,
    for the teardown."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[Lmeval] = []
        self.work_dirs: list[Path] = []

    def env(self, **extra: str) -> dict[str, str]:
        return lmeval_env(**extra)

    def start(self, *args: str, env: dict[str, str] | None = None, work_dir: Path | None = None) -> Lmeval:
        if work_dir is not None and work_dir not in self.work_dirs:
            self.work_dirs.append(work_dir)
        process = Lmeval(list(args), env if env is not None else self.env(), self.folder)
        self.started.append(process)
        return process

    def run(self, *args: str, env: dict[str, str] | None = None, work_dir: Path | None = None,
            timeout: float = 60.0) -> Lmeval:
        process = self.start(*args, env=env, work_dir=work_dir)
        process.wait(timeout)
        return process

    def leftovers(self) -> list[psutil.Process]:
        return leftovers(self.work_dirs, [process.pid for process in self.started])

    def teardown(self) -> None:
        for process in self.started:
            process.kill()
        left = self.leftovers()
        for process in left:
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=5)


# ---------------------------------------------------------------- run folders and servers


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def only_run(work_dir: Path) -> Path:
    runs = [p for p in work_dir.iterdir() if re.fullmatch(r"\d{8}_\d{6}", p.name)]
    assert len(runs) == 1, runs
    return runs[0]


def serve_folder(work_dir: Path) -> Path:
    """The one serve_* folder lmeval made in WORK_DIR."""
    folders = sorted(work_dir.glob("serve_*"))
    assert len(folders) == 1, folders
    return folders[0]


def read_state(path: Path) -> ServerState:
    """A server's state file, once it is there (it is written atomically: never half of it)."""
    wait_until(path.exists, 10, what=f"the state file {path}")
    return ServerState.load(path)


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under FOLDER with its content hash and mode: to prove nothing changed."""
    digest = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            digest[str(path.relative_to(folder))] = f"{hashlib.sha256(data).hexdigest()} {path.stat().st_mode:o}"
        elif path.is_dir():
            digest[str(path.relative_to(folder)) + "/"] = ""
    return digest


def copy_run(source: Path, work_dir: Path, run_id: str, original: Path) -> Path:
    """A copy of an lmeval run (SOURCE, a snapshot of ORIGINAL) under another id; the paths in
    its manifest follow it."""
    target = work_dir / run_id
    work_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target, symlinks=True)
    (target / ".lmeval.lock").unlink(missing_ok=True)
    manifest_path = target / "lmeval.json"
    manifest = json.loads(manifest_path.read_text().replace(str(original), str(target)))
    manifest["run_id"] = run_id
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return target


def stats(port: int) -> dict | None:
    """The stand-in's request counters (`/standin/stats`), or None while it does not answer."""
    try:
        with http_client() as client:
            return client.get(f"http://127.0.0.1:{port}/standin/stats").json()
    except (httpx.HTTPError, ValueError):
        return None


def health(port: int) -> int | None:
    """The status `/health` answers, or None while nothing answers."""
    try:
        with http_client() as client:
            return client.get(f"http://127.0.0.1:{port}/health").status_code
    except httpx.HTTPError:
        return None


def no_driver_warning(gpus: str) -> list[str]:
    """The warning lmeval prints where no NVIDIA driver answers (as on this CPU machine)."""
    from lmeval.gpus import inventory

    return [f"lmeval: warning: no NVIDIA driver answered; using GPUs {gpus} as given, unchecked"] \
        if inventory() is None else []


# ---------------------------------------------------------------- what lmeval showed


def score_rows(stdout: str) -> dict[str, list[str]]:
    """The rows of the results table as printed: dataset -> [metric, score (± its error), (invalid replies)]."""
    rows = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│|]", line)]
        cells = cells[1:-1] if len(cells) > 2 else []
        if len(cells) >= 3 and re.fullmatch(r"(?:\d+\.\d\d|-)(?: ± \d+\.\d\d)?", cells[2]):
            rows[cells[0]] = cells[1:]
    return rows


def shown_scores(stdout: str) -> dict[str, float]:
    """dataset -> the score the results table shows (without its error)."""
    return {dataset: float(row[1].split(" ± ")[0]) for dataset, row in score_rows(stdout).items()}
