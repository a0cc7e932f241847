"""LMDeploy servers owned by lmeval: built from a spec (the command line a pure function of
it), started in a session of their own, checked ready, and stopped with every process they
spawned, found by the tag each carries (lmeval.processes).
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import psutil
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from lmeval import gpus as gpu_inventory
from lmeval import signals
from lmeval.exceptions import ServerFailed, UsageError
from lmeval.files import log_tail, write_private
from lmeval.processes import (
    Stopped,
    live_process,
    owner_token,
    CHILD_UMASK,
    prepare_child,
    process_tree,
    tagged_env,
    terminate,
)

REDACTED = "***"
LOG_TAIL_LINES = 20

# Flags lmeval sets itself; in --server-args they would silently fight lmeval's own.
OWNED_FLAGS = {
    "--server-name": "--host",
    "--server-port": "--port",
    "--tp": "--tp",
    "--api-keys": "the API key lmeval makes",
    "--model-name": "the served name lmeval sets",
    "--proxy-url": "--replicas",
}


class ListenerSpec(BaseModel):
    """What every LMDeploy process lmeval starts has: a role, an address, a key, its GPUs."""

    model_config = ConfigDict(frozen=True)

    role: str
    host: str = "127.0.0.1"
    port: int
    api_key: SecretStr
    gpus: tuple[int, ...] = ()

    @property
    def client_host(self) -> str:
        """Where clients reach it: a wildcard bind is reached through loopback."""
        return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)

    @property
    def url(self) -> str:
        return f"http://{_bracketed(self.client_host)}:{self.port}"


class ServerSpec(ListenerSpec):
    """Everything that defines one LMDeploy api_server; argv and environment derive from it."""

    model: str
    served_name: str
    tp: int
    extra_args: tuple[str, ...] = ()
    proxy_url: str | None = None


class ProxySpec(ListenerSpec):
    """`lmdeploy serve proxy` in front of data-parallel replicas; it uses no GPU."""

    routing_strategy: str = "min_expected_latency"


def new_api_key() -> SecretStr:
    return SecretStr("sk-lmeval-" + secrets.token_urlsafe(24))


def parse_server_args(text: str, option: str = "--server-args") -> tuple[str, ...]:
    """Split the user's extra LMDeploy flags, refusing bad quoting and flags lmeval owns."""
    try:
        args = tuple(shlex.split(text))
    except ValueError as error:
        raise UsageError(f"{option}: cannot split {text!r}: {error}") from None
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in OWNED_FLAGS:
            raise UsageError(f"{option} must not set {flag}: lmeval sets it; use {OWNED_FLAGS[flag]} instead")
    return args


def server_arg_value(args: Iterable[str], flag: str) -> str | None:
    """The value the user gave FLAG in extra args (`--flag V` or `--flag=V`), last one wins."""
    value = None
    args = list(args)
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def server_argv(lmdeploy: Path | str, spec: ServerSpec) -> list[str]:
    """The `lmdeploy serve api_server` command line for SPEC (flags of LMDeploy 0.18)."""
    argv = [
        str(lmdeploy), "serve", "api_server", spec.model,
        "--server-name", spec.host,
        "--server-port", str(spec.port),
        "--tp", str(spec.tp),
        "--model-name", spec.served_name,
    ]
    if spec.proxy_url:
        argv += ["--proxy-url", spec.proxy_url]
    # --api-keys takes any number of values: put it last before the user's flags.
    argv += ["--api-keys", spec.api_key.get_secret_value()]
    return argv + list(spec.extra_args)


def proxy_argv(lmdeploy: Path | str, spec: ProxySpec) -> list[str]:
    """`lmdeploy serve proxy`: replicas register with it through --proxy-url; no state file is
    reloaded from earlier runs (--disable-cache-status)."""
    return [
        str(lmdeploy), "serve", "proxy",
        "--server-name", spec.host,
        "--server-port", str(spec.port),
        "--routing-strategy", spec.routing_strategy,
        "--disable-cache-status",
        "--api-keys", spec.api_key.get_secret_value(),
    ]


def command_line(lmdeploy: Path | str, spec: ListenerSpec) -> list[str]:
    return proxy_argv(lmdeploy, spec) if isinstance(spec, ProxySpec) else server_argv(lmdeploy, spec)


def server_env(spec: ListenerSpec, base: dict[str, str], tag: str, owner: str, run_id: str = "") -> dict[str, str]:
    """The child's environment: GPUs through CUDA_VISIBLE_DEVICES, and the tags that find it later."""
    env = tagged_env(base, tag, owner, run_id)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in spec.gpus)
    return env


def redact(argv: Iterable[str], secret_values: Iterable[str]) -> list[str]:
    hidden = {value for value in secret_values if value}
    return [REDACTED if arg in hidden else arg for arg in argv]


# ---------------------------------------------------------------- ports


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_taken(host: str, port: int) -> str | None:
    """Why PORT on HOST cannot be bound now (LMDeploy would find out only after loading the
    whole model), or None when it is free."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as error:
            return error.strerror or str(error)
    return None


def check_port_free(host: str, port: int, option: str = "--port") -> None:
    """Refuse a taken port before anything starts."""
    reason = port_taken(host, port)
    if reason:
        raise UsageError(f"port {port} on {host} is taken ({reason}); pick another {option} or leave it out")


# ---------------------------------------------------------------- processes


class ServerState(BaseModel):
    """`{run}/servers/{role}.json`: what `lmeval cleanup` needs to find a server lmeval started,
    after the lmeval that started it was killed outright."""

    role: str
    pid: int | None  # None for a Slurm job (its processes run on a node)
    created: float  # the process's start time: tells a reused pid apart
    tag: str
    owner: str  # "pid:start time" of the lmeval that started it
    host: str
    port: int
    url: str
    gpus: list[int] = []
    log: str
    command: str  # redacted
    stopped: bool  # true once every process of it has ended
    launcher: str = "local"  # or "slurm": then the server runs in a job of this user's
    job_id: str = ""  # the Slurm job; empty while it is being submitted (its comment holds the tag)

    def save(self, path: Path) -> None:
        write_private(path, self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: Path) -> ServerState:
        """The state at PATH; UsageError naming the file when it cannot be read."""
        try:
            return cls.model_validate_json(path.read_bytes())
        except OSError as error:
            raise UsageError(f"cannot read server state {path} ({error.strerror or error})") from None
        except ValidationError as error:
            problem = error.errors()[0]
            if problem["type"] == "json_invalid":
                reason = f"not valid JSON: {problem['ctx'].get('error', problem['msg'])}"
            else:
                reason = f"not one lmeval wrote: {'.'.join(map(str, problem['loc']))}: {problem['msg']}"
            raise UsageError(f"server state {path} is {reason}") from None


def exit_text(code: int) -> str:
    """`exited with code 3`, or `was killed by SIGKILL` for a negative Popen return code."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def replica_capacity(spec: ServerSpec, gpu_name: str | None = None) -> int:
    """Requests one api_server runs at once: its --max-batch-size, given, or LMDeploy's default
    for its GPU (by GPU_NAME when known, else by what NVML says of its GPU ids)."""
    given = server_arg_value(spec.extra_args, "--max-batch-size")
    if given is not None:
        try:
            return max(1, int(given))
        except ValueError:
            raise UsageError(f"--max-batch-size in the server args must be a number, got {given!r}") from None
    if gpu_name is not None:
        return gpu_inventory.max_batch_size_for(gpu_name)
    return gpu_inventory.default_max_batch_size(list(spec.gpus), gpu_inventory.cached_inventory())


class Server:
    """One running LMDeploy process (api_server or proxy) on this machine and everything it
    spawned. Its state file (STATE True) lets `lmeval cleanup` find it after lmeval died."""

    job_id = ""  # not a Slurm job (lmeval.slurm_server.SlurmServer is)
    node = ""

    def __init__(self, spec: ListenerSpec, lmdeploy: Path, folder: Path, run_id: str = "",
                 state: bool = True) -> None:
        self.spec = spec
        self.argv = command_line(lmdeploy, spec)
        self.folder = folder
        self.log_path = folder / f"{spec.role}.log"
        self.state_path = folder / f"{spec.role}.json" if state else None
        self.run_id = run_id
        self.tag = f"{spec.role}-{uuid.uuid4().hex[:12]}"
        self.popen: subprocess.Popen | None = None
        self.created = 0.0

    @property
    def name(self) -> str:
        """How messages name it: `target server`."""
        return f"{self.spec.role} server"

    @property
    def command(self) -> str:
        """The command line with the key hidden: safe to print, log and store."""
        return shlex.join(redact(self.argv, [self.spec.api_key.get_secret_value()]))

    @property
    def url(self) -> str:
        return self.spec.url

    @property
    def address(self) -> tuple[str, int] | None:
        """Where to connect to it; None while that is not known yet."""
        return self.spec.client_host, self.spec.port

    @property
    def gpus(self) -> tuple[int, ...]:
        return self.spec.gpus

    def started_text(self) -> str:
        gpus = f"GPUs {_gpu_text(self.spec.gpus)}" if self.spec.gpus else "no GPU"
        return f"started {self.name} on {gpus}, port {self.spec.port}: {self.command}"

    def capacity(self) -> int:
        return replica_capacity(self.spec)

    def start(self, base_env: dict[str, str] | None = None) -> None:
        # Checked when planned; another program may have taken it since.
        reason = port_taken(self.spec.host, self.spec.port)
        if reason:
            raise ServerFailed(f"port {self.spec.port} on {self.spec.host} was taken after lmeval checked it "
                               f"({reason}); run again (with another port, if you gave one)")
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        env = server_env(self.spec, dict(os.environ if base_env is None else base_env),
                         self.tag, owner_token(), self.run_id)
        with open(self.log_path, "ab") as log:
            os.chmod(self.log_path, 0o600)
            self.popen = subprocess.Popen(
                self.argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, umask=CHILD_UMASK, preexec_fn=prepare_child,  # noqa: PLW1509 - one prctl call
            )
        self.created = psutil.Process(self.popen.pid).create_time()
        self.save_state(stopped=False)

    def save_state(self, stopped: bool) -> None:
        if self.state_path is None or self.popen is None:
            return
        ServerState(
            role=self.spec.role, pid=self.popen.pid if self.popen else None, created=self.created, tag=self.tag,
            owner=owner_token(), host=self.spec.host, port=self.spec.port, url=self.spec.url,
            gpus=list(self.spec.gpus), log=str(self.log_path), command=self.command, stopped=stopped,
        ).save(self.state_path)

    def exit_status(self) -> str | None:
        """How it ended (`exited with code 1`), or None while it runs."""
        code = None if self.popen is None else self.popen.poll()
        return None if code is None else exit_text(code)

    def failure(self, what: str) -> ServerFailed:
        """A ServerFailed naming the server, its log tail and how to reproduce it."""
        detail = (f"log {self.log_path}, last lines:\n{log_tail(self.log_path, LOG_TAIL_LINES)}\n"
                  f"reproduce with: {self.command}")
        return ServerFailed(f"{self.name} {what}; see {self.log_path}", detail)

    def check_alive(self) -> None:
        status = self.exit_status()
        if status is not None:
            raise self.failure(status)

    def owns_port(self) -> bool:
        """Whether what answers on its port is this server (not another program's)."""
        return bool(self.listening_pids())

    def listening_pids(self) -> set[int]:
        """PIDs in this server's process tree that listen on its port."""
        pids = set()
        for process in self._tree():
            try:
                connections = process.net_connections(kind="inet")
            except psutil.Error:
                continue
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.spec.port for c in connections):
                pids.add(process.pid)
        return pids

    def _leader(self) -> psutil.Process | None:
        if self.popen is None:
            return None
        return live_process(self.popen.pid, self.created)

    def _tree(self) -> list[psutil.Process]:
        leader = self._leader()
        return process_tree(leader) if leader else []

    def stop(self, grace: float = 10.0) -> Stopped:
        """End the server and every process it spawned, within deadlines. The tag finds them
        even if start() was cut short before it kept the Popen. Writes no file: see save_state."""
        stopped = terminate(self._leader(), self.tag, grace, f"the {self.name}")
        if self.popen is not None:
            self.popen.poll()  # reap the leader if it ended; never block on one that did not
        return stopped


class Placement(Protocol):
    """Where servers run other than here (lmeval.slurm_server.SlurmPlacement)."""

    proxy: bool  # each role's servers behind a proxy here, even one

    def server(self, spec: ServerSpec, group: ServerGroup) -> Server: ...


class StopReport(Protocol):
    """Where a stop's outcome goes (the Application): a line, and what is still running."""

    def info(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...

    def stopped(self, what: str, stopped: Stopped, work_dir: Path) -> None: ...


class ServerGroup:
    """The servers of one lmeval command. Leaving the block stops every one, whatever happened."""

    def __init__(self, lmdeploy: Path, folder: Path, report: StopReport, run_id: str = "",
                 grace: float = 10.0, state_files: bool = True,
                 starter: Callable[[Callable[[], None]], None] | None = None) -> None:
        self.lmdeploy = lmdeploy
        self.folder = folder
        self.run_id = run_id
        self.grace = grace
        self.report = report
        self.state_files = state_files  # off inside a Slurm job: the job's state is Slurm's
        self.servers: list[Server] = []
        # What runs a server's start. The parent-death signal (prepare_child) follows the thread
        # that forked: servers that outlive the thread asking for them (a sweep's judge, started
        # by one run's thread) are forked by a thread that lives as long as the group.
        self.starter = starter or (lambda start: start())

    @property
    def work_dir(self) -> Path:
        """Where `lmeval cleanup -w` finds these servers' state: WORK_DIR/RUN/servers/."""
        return self.folder.parent.parent

    def start(self, spec: ListenerSpec, placement: Placement | None = None) -> Server:
        """Start SPEC here, or submit it as a Slurm job where PLACEMENT says (lmeval.slurm_server)."""
        if placement is None:
            server = Server(spec, self.lmdeploy, self.folder, self.run_id, state=self.state_files)
        else:
            server = placement.server(spec, self)
        self.servers.append(server)
        self.starter(server.start)
        self.report.info(server.started_text())
        return server

    def stop(self, server: Server) -> None:
        """Stop SERVER and say what really ended; its state file records whether all did."""
        with signals.shielded():
            self.servers.remove(server)
            stopped = server.stop(self.grace)
            self.report.stopped(server.name, stopped, self.work_dir)
            server.save_state(stopped=not stopped.left)

    def __enter__(self) -> ServerGroup:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        """Stop every server, whatever stopping one of them raises. Then raise the first
        problem (an interrupt before others), unless an error is on its way out already: that
        one says what went wrong, and the problems of the stop are shown beside it."""
        problems: list[BaseException] = []
        for server in reversed(list(self.servers)):
            try:
                self.stop(server)
            except BaseException as problem:  # noqa: BLE001 - every server is stopped first
                problems.append(problem)
        if exc is None and problems:
            raise next((p for p in problems if isinstance(p, KeyboardInterrupt)), problems[0])
        for problem in problems:
            if not isinstance(problem, KeyboardInterrupt):
                self.report.warn(f"while stopping the servers: {type(problem).__name__}: {problem}")


def _gpu_text(gpus: Iterable[int]) -> str:
    return ",".join(str(gpu) for gpu in gpus)


def model_is_path(model: str) -> bool:
    """A model is a local folder unless it looks like a hub id (`org/name`) and no such folder exists."""
    if Path(model).expanduser().exists():
        return True
    return not re.fullmatch(r"[\w.-]+/[\w.-]+", model) or model.startswith(".")


def check_model(model: str, option: str = "MODEL") -> str:
    """Refuse a model path that does not exist before any server starts loading."""
    if model_is_path(model):
        path = Path(model).expanduser()
        if not path.exists():
            raise UsageError(f"{option}: model path {model} does not exist; give a model folder or a hub id like org/name")
        return str(path.absolute())
    return model


def served_name(model: str) -> str:
    """The name a server reports in /v1/models: a folder's name, or the hub id."""
    return Path(model).name if model_is_path(model) else model

