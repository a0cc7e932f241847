"""One endpoint per role (the model under test, the judge): what its clients reach and what it
takes to keep it there. It owns its servers (one, replicas behind a proxy, Slurm jobs, or none:
a server the user runs, given by URL), how clients reach it now (a restart gives a fresh key;
readiness tells how many requests it holds), its restart budget and its lock.

A run's endpoints are its own; in a sweep the judge's is shared by every run: started by the
first run that needs it, restarted by the first run that sees it die (the others, which saw the
same death, wait for that restart and go on with the key it gave), stopped when the sweep ends.
Its records (lmeval.manifest.ServerRecord, one per process) are copied into the manifest of each
run that uses it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from lmeval import outputs
from lmeval.app import Application
from lmeval.configplan import ServedModel
from lmeval.exceptions import ServerDied
from lmeval.files import log_tail
from lmeval.fleet import RunningSet, ServerSet, start_set, stop_set, wait_set
from lmeval.launch import Server, ServerGroup, new_api_key
from lmeval.manifest import RestartRecord, ServerRecord
from lmeval.plan import in_flight

LOCK_STEP_SECONDS = 0.2


@contextmanager
def held(app: Application, lock: threading.Lock) -> Iterator[None]:
    """LOCK held for the block, waited for in steps so an interrupt of the command gets through."""
    while not lock.acquire(timeout=LOCK_STEP_SECONDS):
        app.checkpoint()
    try:
        yield
    finally:
        lock.release()


class Endpoint:
    """ROLE's endpoint: SERVER_SET started in GROUP, or in the group of the first run that needs
    it (None: the server the user runs, SERVED); each of its servers restarted at most RESTARTS
    times when it dies or stalls. WAITER waits until a set's servers are ready."""

    def __init__(self, role: str, server_set: ServerSet | None, served: ServedModel, restarts: int,
                 ready_timeout: float, group: ServerGroup | None = None, waiter: Callable[..., None] = wait_set) -> None:
        self.role = role
        self.server_set = server_set
        self.served = served  # as its clients reach it now
        self.restarts = restarts
        self.ready_timeout = ready_timeout
        self.running: RunningSet | None = None
        self.group = group  # where its servers run: set here for a sweep's judge, else by the first start
        self.restarted: dict[str, int] = {}  # server role -> restarts so far
        self.records: dict[str, ServerRecord] = {}
        self.lock = threading.Lock()  # held to start or restart it
        self.waiter = waiter  # lmeval.fleet.wait_set; a fake in the fast tests

    @property
    def started(self) -> bool:
        return self.running is not None or (self.server_set is None and bool(self.records))

    @property
    def servers(self) -> list[Server]:
        """The processes lmeval runs for it (none for a server the user runs): the ones to watch."""
        return self.running.servers if self.running else []

    def first_exit(self) -> tuple[Server, str] | None:
        return self.running.first_exit() if self.running else None

    def records_copy(self) -> dict[str, ServerRecord]:
        """Its records, for a run's manifest (a copy each: runs save theirs apart)."""
        return {role: record.model_copy() for role, record in self.records.items()}

    # ------------------------------------------------------------ start, wait, stop

    def ensure_started(self, app: Application, group: ServerGroup) -> None:
        """Start its servers in GROUP unless they run (or it is the user's server)."""
        with held(app, self.lock):
            if self.started:
                return
            if self.server_set is None:
                served = self.served
                self.records[self.role] = ServerRecord(role=self.role, model="", served_name=served.served_name,
                                                       url=served.base_url, external=True)
                return
            self.group = self.group or group
            self.running = start_set(self.group, self.server_set)
            self.record_started()

    def record_started(self) -> None:
        """One record per process (`target-0`, `target-proxy`, ...), and the endpoint's front under ROLE."""
        now = time.time()
        for server in self.running.servers:
            spec = server.spec
            self.records[spec.role] = ServerRecord(
                role=spec.role, model=getattr(spec, "model", ""), served_name=self.served.served_name, url=server.url,
                gpus=list(spec.gpus), tp=getattr(spec, "tp", 0), command=server.command, started=now,
                job_id=server.job_id)
        front = self.running.proxy or self.running.replicas[0]
        self.records[self.role] = self.records[front.spec.role].model_copy(
            update={"role": self.role, "url": self.served.base_url})

    def wait_ready(self, app: Application, meanwhile: Callable[[], None] = lambda: None,
                   first: bool = False) -> ServedModel:
        """Wait until its servers are ready (MEANWHILE called as it waits); how clients reach it
        then, with as many requests in flight as its servers hold (on Slurm only known now:
        each job reports its GPU). FIRST: the caller's first wait, said even if another run of
        a sweep waited already."""
        if self.running is None:
            return self.served
        loading = [server.spec.role for server in self.running.replicas
                   if first or self.records[server.spec.role].ready_seconds is None]
        if loading:  # not said again for a stage that only checks its servers are still up
            app.info(f"waiting for {', '.join(loading)} server(s) to load")
        began = time.time()

        def ready(server: Server) -> None:
            now = time.time()
            record = self.records[server.spec.role]
            if record.ready_seconds is not None:
                return  # ready before a replica of its set was restarted
            record.ready_seconds = round(now - (record.started or now), 3)
            record.waited_seconds = round(now - began, 3)
            record.url, record.node, record.gpus = server.url, server.node, list(server.gpus)
            app.info(f"{server.spec.role} server ready at {server.url}")

        def waiting() -> None:
            app.checkpoint()
            meanwhile()

        self.waiter(self.running, self.ready_timeout, on_ready=ready, meanwhile=waiting)
        self.served = self.served.model_copy(update={"in_flight": in_flight(self.running.capacity())})
        return self.served

    def stop(self) -> None:
        """Stop what of its servers the group still runs."""
        if self.running is not None and self.group is not None:
            stop_set(self.group, self.running)

    # ------------------------------------------------------------ restarts

    def can_restart(self, server: Server) -> bool:
        """A replica or a lone server here can start again where it was, while the budget
        allows. A proxy cannot: the replicas registered with the one that died. Nor can a
        Slurm job: one that ended was cancelled, out of time or lost its node, and a new one
        may wait in the queue for hours."""
        running = self.running
        return (running is not None and server is not running.proxy and running.spec.placement is None
                and self.restarted.get(server.spec.role, 0) < self.restarts)

    def restart(self, app: Application, died: ServerDied, stage: str,
                on_restart: Callable[[RestartRecord], None]) -> ServedModel | None:
        """Start the server that DIED again, on its GPUs and port, with a fresh key unless a proxy
        fronts it (clients' key is forwarded to every replica), and wait until it is ready; how
        clients reach the endpoint then. If another user of the endpoint restarted it since it
        died, only wait for that. None when it may not be restarted."""
        with held(app, self.lock):
            running = self.running
            if running is not None and died.server not in running.servers:
                return self.wait_ready(app)  # restarted by another run of the sweep
            if not self.can_restart(died.server):
                return None
            server = died.server
            count = self.restarted[server.spec.role] = self.restarted.get(server.spec.role, 0) + 1
            app.warn(f"{server.name} {died.status} during {stage}; restarting it "
                     f"(restart {count} of {self.restarts}), then resuming {stage}")
            on_restart(RestartRecord(role=server.spec.role, stage=stage, at=time.time(), died=died.status,
                                     log_tail=log_tail(server.log_path, outputs.LOG_TAIL_LINES),
                                     cause="stalled" if died.stalled else "died"))
            self.group.stop(server)
            spec = server.spec if running.proxy else server.spec.model_copy(update={"api_key": new_api_key()})
            again = self.group.start(spec, running.spec.placement)
            running.replicas[running.replicas.index(server)] = again
            for role in [spec.role] + [self.role] * (running.proxy is None and spec.role != self.role):
                self.records[role] = self.records[role].model_copy(update={
                    "command": again.command, "started": time.time(), "ready_seconds": None, "job_id": again.job_id})
            self.served = self.served.model_copy(update={"api_key": spec.api_key})
            return self.wait_ready(app)
