"""The restart policy of an endpoint (lmeval.endpoint), with fake servers and a fake group (no
process): who may be restarted, how often, with which key, and what a run that saw the same
death as another run does. The real restarts are in test_restarts.py and test_streaming.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from pydantic import SecretStr

from lmeval.configplan import ServedModel
from lmeval.endpoint import Endpoint
from lmeval.exceptions import ServerDied, ServerFailed
from lmeval.fleet import RunningSet, ServerSet
from lmeval.launch import ProxySpec, ServerSpec

KEY = SecretStr("sk-planned")


class FakeServer:
    job_id = ""
    node = ""

    def __init__(self, spec) -> None:
        self.spec = spec
        self.log_path = Path("/nonexistent/server.log")
        self.command = f"lmdeploy serve api_server {spec.role} (start {id(self)})"

    name = property(lambda self: f"{self.spec.role} server")
    url = property(lambda self: f"http://127.0.0.1:{self.spec.port}")
    gpus = property(lambda self: self.spec.gpus)

    def capacity(self) -> int:
        return 8

    def exit_status(self) -> None:
        return None


@dataclass
class FakeGroup:
    """lmeval.launch.ServerGroup: what was started and stopped, in order."""

    events: list[str] = field(default_factory=list)

    def start(self, spec, placement=None) -> FakeServer:
        self.events.append(f"start {spec.role}")
        return FakeServer(spec)

    def stop(self, server) -> None:
        self.events.append(f"stop {server.spec.role}")


def ready_at_once(running, timeout, on_ready, meanwhile) -> None:  # noqa: ARG001 - wait_set's signature
    """lmeval.fleet.wait_set with every server ready."""
    meanwhile()
    for server in running.replicas:
        on_ready(server)


def app() -> SimpleNamespace:
    lines: list[str] = []
    return SimpleNamespace(lines=lines, info=lines.append, warn=lambda text: lines.append(f"warning: {text}"),
                           checkpoint=lambda: None)


def replica(role: str, port: int) -> ServerSpec:
    return ServerSpec(role=role, port=port, api_key=KEY, model="/models/m", served_name="m", tp=1, gpus=(port % 10,))


def endpoint(replicas: int = 1, restarts: int = 1, placement=None) -> tuple[Endpoint, FakeGroup]:
    proxy = ProxySpec(role="target-proxy", port=23330, api_key=KEY) if replicas > 1 else None
    specs = tuple(replica("target" if replicas == 1 else f"target-{i}", 23331 + i) for i in range(replicas))
    served = ServedModel(base_url=f"http://127.0.0.1:{(proxy or specs[0]).port}", api_key=KEY, served_name="m",
                         tokenizer_path="/models/m", in_flight=1)
    group = FakeGroup()
    server_set = ServerSet("target", specs, proxy, placement)
    made = Endpoint("target", server_set, served, restarts, 60.0, group, waiter=ready_at_once)
    if proxy is None:
        made.ensure_started(app(), group)
    else:  # started as lmeval.fleet.start_set does, without waiting for a real proxy
        made.running = RunningSet(server_set, [group.start(spec) for spec in specs], group.start(proxy))
        made.record_started()
    made.wait_ready(app())
    return made, group


def death(server, status: str = "exited with code -9 (SIGKILL)", stalled: bool = False) -> ServerDied:
    return ServerDied(ServerFailed(f"{server.name} {status}"), server, status, stalled)


def test_a_server_that_dies_is_restarted_with_a_fresh_key_and_waited_for():
    made, group = endpoint()
    before = made.running.replicas[0]
    restarts, said = [], app()
    served = made.restart(said, death(before), "infer", restarts.append)
    assert group.events == ["start target", "stop target", "start target"]
    assert served is made.served and served.api_key.get_secret_value() != KEY.get_secret_value()
    assert served.in_flight == 12  # its 8 slots and half again, learnt when it was ready
    assert made.running.replicas[0] is not before
    assert [(r.role, r.stage, r.died, r.cause) for r in restarts] == [
        ("target", "infer", "exited with code -9 (SIGKILL)", "died")]
    assert said.lines[0] == ("warning: target server exited with code -9 (SIGKILL) during infer; restarting it "
                             "(restart 1 of 1), then resuming infer")
    record = made.records["target"]
    assert record.command == made.running.replicas[0].command and record.ready_seconds is not None


def test_the_budget_is_per_server_over_the_endpoints_life():
    made, group = endpoint(restarts=1)
    made.restart(app(), death(made.running.replicas[0]), "infer", lambda record: None)
    assert made.restart(app(), death(made.running.replicas[0]), "eval", lambda record: None) is None
    assert group.events.count("start target") == 2  # no third


def test_a_stalled_server_is_recorded_as_stalled():
    made, _ = endpoint()
    restarts = []
    made.restart(app(), death(made.running.replicas[0], "stalled (/health 503)", stalled=True), "infer",
                 restarts.append)
    assert [r.cause for r in restarts] == ["stalled"]


def test_a_replica_behind_a_proxy_keeps_the_key_clients_use():
    made, group = endpoint(replicas=2)
    served = made.restart(app(), death(made.running.replicas[1]), "infer", lambda record: None)
    assert served.api_key == KEY
    assert group.events[-2:] == ["stop target-1", "start target-1"]


def test_a_proxy_a_slurm_job_and_no_budget_are_never_restarted():
    made, group = endpoint(replicas=2)
    assert made.restart(app(), death(made.running.proxy), "infer", lambda record: None) is None
    slurm, slurm_group = endpoint(placement=SimpleNamespace(proxy=False))
    assert slurm.restart(app(), death(slurm.running.replicas[0]), "infer", lambda record: None) is None
    none_left, none_group = endpoint(restarts=0)
    assert none_left.restart(app(), death(none_left.running.replicas[0]), "infer", lambda record: None) is None
    # Nothing stopped, nothing started again.
    assert [len(group.events), len(slurm_group.events), len(none_group.events)] == [3, 1, 1]
    assert not any(event.startswith("stop") for event in group.events + slurm_group.events + none_group.events)


def test_runs_that_saw_the_same_death_restart_it_once_and_share_the_new_key():
    """A sweep's judge: every run judging on it sees it die; the first restarts it, the others
    only wait for that and go on with the key it gave."""
    made, group = endpoint(restarts=1)
    died = death(made.running.replicas[0])
    first_restarts, second_restarts = [], []
    first = made.restart(app(), died, "eval", first_restarts.append)
    second = made.restart(app(), died, "eval", second_restarts.append)
    assert first.api_key == second.api_key != KEY
    assert group.events.count("start target") == 2 and second_restarts == [] and len(first_restarts) == 1
    assert made.restarted == {"target": 1}


def test_a_server_the_user_runs_is_recorded_and_never_restarted():
    served = ServedModel(base_url="http://gpu-node:8000", api_key=KEY, served_name="theirs", tokenizer_path="/t",
                         in_flight=64)
    made = Endpoint("target", None, served, 3, 60.0)
    made.ensure_started(app(), FakeGroup())
    assert made.records["target"].external and made.records["target"].url == "http://gpu-node:8000"
    assert made.wait_ready(app()) is served and made.servers == [] and made.first_exit() is None
