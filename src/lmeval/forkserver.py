"""One process in OpenCompass's venv that imports OpenCompass once and forks every OpenCompass
process of an lmeval command from itself (opencompass_plugin/lmeval_forkserver.py is the other
end).

Each OpenCompass process otherwise pays its imports anew: 7-8 s of CPU (torch, transformers,
every dataset module), half a minute on 2 busy cores. An lmeval command starts several: the
preflight, each stage, each streamed evaluation, and in a sweep all of them for every model. A
fork of a process that holds them takes milliseconds. The child is otherwise what a new
`opencompass ...` would be: its own session, folder, environment (with its own tag) and log,
and its exit code, which the server sends on the connection that asked for it. That connection
is the child's lifeline: once it is closed the server kills the child, so a child lmeval let go
of never runs on.

Started by the thread that lives as long as the command (a child gets SIGTERM when the thread
that started it ends), stopped when the command ends, with every child it forked (they carry
its tag, and die with it). When it cannot be started, or died, processes start the usual way.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psutil

from lmeval.ocenv import opencompass_env
from lmeval.processes import CHILD_UMASK, Stopped, live_process, owner_token, prepare_child, tagged_env, terminate

LISTEN_WAIT_SECONDS = 10.0  # for its socket, which it binds before importing anything
STOP_GRACE_SECONDS = 5.0


class ForkedChild:
    """A process the fork server started for lmeval: its pid once the server said it, its exit
    code once it ended."""

    def __init__(self, connection: socket.socket) -> None:
        self.connection: socket.socket | None = connection
        self.pid: int | None = None
        self.created = 0.0
        self.began: float | None = None  # monotonic, when lmeval learnt it was forked
        self.asked = time.monotonic()  # when lmeval asked for it
        self.code: int | None = None
        self.received = b""

    def poll(self) -> int | None:
        while self.code is None and self.connection is not None:
            try:
                data = self.connection.recv(1 << 12)
            except BlockingIOError:
                return None
            except OSError:
                data = b""
            if not data:  # the server died, and its children with it
                self.code = 1
                self.close()
                break
            self.received += data
            *lines, self.received = self.received.split(b"\n")
            for line in lines:
                self.read(json.loads(line))
        return self.code

    def read(self, message: dict) -> None:
        if "pid" in message:
            self.pid, self.began = message["pid"], time.monotonic()
            try:
                self.created = psutil.Process(self.pid).create_time()
            except psutil.Error:
                self.created = 0.0
        if "exit" in message:
            self.code = message["exit"]
            self.close()

    def process(self) -> psutil.Process | None:
        return live_process(self.pid, self.created) if self.pid is not None else None

    def close(self) -> None:
        """Let go of it: the server kills it if it still runs."""
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class ForkServer:
    """`python -m lmeval_forkserver SOCKET` in the venv of PYTHON, its output in LOG_PATH."""

    def __init__(self, python: Path, log_path: Path, run_id: str) -> None:
        self.python = python
        self.log_path = log_path
        self.run_id = run_id
        self.tag = f"forkserver-{uuid.uuid4().hex[:12]}"
        self.folder: Path | None = None
        self.popen: subprocess.Popen | None = None
        self.created = 0.0

    @property
    def socket_path(self) -> Path:
        return self.folder / "socket"

    def start(self) -> bool:
        """Start it and wait until it listens; False (nothing left running) if it cannot."""
        # A folder of the user's own (0700): nobody else may ask it to run anything.
        self.folder = Path(tempfile.mkdtemp(prefix="lmeval-forks-"))
        env = opencompass_env(tagged_env(dict(os.environ), self.tag, owner_token(), self.run_id))
        self.log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            with open(self.log_path, "ab") as log:
                self.popen = subprocess.Popen(
                    [str(self.python), "-m", "lmeval_forkserver", str(self.socket_path)], cwd=self.folder, env=env,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    umask=CHILD_UMASK, preexec_fn=prepare_child,  # noqa: PLW1509 - one prctl call
                )
        except OSError:
            self.stop()
            return False
        self.created = psutil.Process(self.popen.pid).create_time()
        deadline = time.monotonic() + LISTEN_WAIT_SECONDS
        while not self.socket_path.exists():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.stop()
                return False
            time.sleep(0.01)
        return True

    def launch(self, entry: str, argv: list[str], cwd: Path, env: dict[str, str], log_path: Path,
               name: str) -> ForkedChild | None:
        """Ask for a child running `sys.exit(ENTRY())` (`module:function`) with sys.argv ARGV,
        named NAME; None if the server is gone (start it the usual way then). Returns at once:
        the server forks it once its imports are done."""
        if self.popen is None or self.popen.poll() is not None:
            return None
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        request = {"entry": entry, "argv": argv, "cwd": str(cwd), "env": env, "log": str(log_path), "name": name}
        try:
            connection.connect(str(self.socket_path))
            connection.sendall((json.dumps(request) + "\n").encode())
        except OSError:
            connection.close()
            return None
        connection.setblocking(False)
        return ForkedChild(connection)

    def stop(self) -> Stopped:
        """Stop it and whatever it forked that still runs."""
        stopped = Stopped(ended=0, left=())
        if self.popen is not None:
            leader = live_process(self.popen.pid, self.created)
            stopped = terminate(leader, self.tag, STOP_GRACE_SECONDS, "OpenCompass's fork server")
            self.popen.poll()
            self.popen = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        return stopped
