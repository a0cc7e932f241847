"""A role's servers: one LMDeploy api_server, or N data-parallel replicas on disjoint GPU groups
behind LMDeploy's own `lmdeploy serve proxy`. Clients see one URL and one key either way."""

from __future__ import annotations

from dataclasses import dataclass

from lmeval import gpus as gpu_inventory
from lmeval.exceptions import UsageError
from lmeval.launch import (
    Placement,
    ProxySpec,
    Server,
    ServerGroup,
    ServerSpec,
    check_model,
    check_port_free,
    free_port,
    new_api_key,
    parse_server_args,
    replica_capacity,
    served_name,
)
from lmeval.readiness import register, wait_ready, wait_registered

PROXY_READY_SECONDS = 120.0


@dataclass(frozen=True)
class ServerSet:
    role: str
    replicas: tuple[ServerSpec, ...]
    proxy: ProxySpec | None = None
    placement: Placement | None = None  # where the replicas run when not here (Slurm)

    @property
    def front(self) -> ServerSpec | ProxySpec:
        """The process clients talk to."""
        return self.proxy or self.replicas[0]

    @property
    def specs(self) -> tuple[ServerSpec | ProxySpec, ...]:
        """Every process of the set, in start order: the proxy first, so replicas can register."""
        return ((self.proxy,) if self.proxy else ()) + self.replicas

    @property
    def ports(self) -> frozenset[int]:
        return frozenset(spec.port for spec in self.specs if spec.port)

    @property
    def gpus(self) -> tuple[int, ...]:
        return tuple(gpu for replica in self.replicas for gpu in replica.gpus)

    def capacity(self) -> int:
        """Requests the set runs at once, as planned: each replica's --max-batch-size (given, or
        LMDeploy's default for its GPU), summed."""
        return sum(replica_capacity(replica) for replica in self.replicas)


def plan_server_set(
    role: str,
    *,
    model: str,
    gpus: str | None,
    tp: int | None,
    replicas: int = 1,
    port: int | None,
    host: str,
    server_args: str,
    option_prefix: str = "",
    taken_gpus: frozenset[int] = frozenset(),
    avoid_ports: frozenset[int] = frozenset(),
    placement: Placement | None = None,
) -> tuple[ServerSet, str | None]:
    """Check one role's options and resolve GPUs, ports and key. Returns the set and a warning.

    OPTION_PREFIX names the options in messages (`judge-` for the judge's). With replicas, the
    GPUs are split in order into groups of TP, and --port is the proxy's (the one clients use).
    With a PLACEMENT (Slurm) each replica is a job that gets its GPUs from Slurm and picks its
    port on its node; the set has a proxy here when the placement asks for one.
    """
    gpu_option, tp_option = f"--{option_prefix}gpus", f"--{option_prefix}tp"
    replicas_option = f"--{option_prefix}replicas"
    model_path = check_model(model, f"--{option_prefix}model" if option_prefix else "MODEL")
    extra = parse_server_args(server_args, f"--{option_prefix}server-args")
    if tp is not None and tp < 1:
        raise UsageError(f"{tp_option} must be at least 1")
    if replicas < 1:
        raise UsageError(f"{replicas_option} must be at least 1")
    if placement is not None:
        if gpus:
            raise UsageError(f"{gpu_option} names GPUs of this machine; with --launcher slurm each server gets "
                             f"its GPUs from Slurm (--gres=gpu:TP on its node): leave {gpu_option} out")
        tp, ids, warning = tp or 1, [], None
    else:
        requested = gpu_inventory.parse_gpu_list(gpus, gpu_option) if gpus else None
        if tp is None:
            tp = len(requested) // replicas if requested and len(requested) % replicas == 0 else 1
        ids, warning = gpu_inventory.assign(requested, tp * replicas, gpu_inventory.cached_inventory(), gpu_option,
                                            (f"{tp_option} {tp}", tp_option) if replicas == 1 else
                                            (f"{tp_option} {tp} × {replicas_option} {replicas}",
                                             f"{tp_option} or {replicas_option}"),
                                            taken_gpus)
    if port is not None:
        if port in avoid_ports:
            raise UsageError(f"--{option_prefix}port {port} is already another server's; pick another")
        check_port_free(host, port, f"--{option_prefix}port")
    used = set(avoid_ports) | ({port} if port is not None else set())

    def fresh_port() -> int:
        while (candidate := free_port(host)) in used:
            pass
        used.add(candidate)
        return candidate

    key = new_api_key()  # one for all: the proxy forwards each client's header to the replicas
    proxy = None
    if replicas > 1 or (placement is not None and placement.proxy):
        proxy = ProxySpec(role=f"{role}-proxy", host=host, port=port if port is not None else fresh_port(),
                          api_key=key)

    def replica_port() -> int:
        if proxy is None and port is not None:
            return port
        return 0 if placement is not None else fresh_port()  # 0: the job picks one on its node

    specs = tuple(
        ServerSpec(
            role=role if proxy is None else f"{role}-{index}",  # ROLE itself names the set's front
            model=model_path,
            served_name=served_name(model_path),
            gpus=tuple(ids[index * tp:(index + 1) * tp]),
            tp=tp,
            host=host,
            port=replica_port(),
            api_key=key,
            extra_args=extra,
            # Jobs are registered by lmeval once healthy: a server registers itself only once,
            # at start, without retry (slurm.md).
            proxy_url=proxy.url if proxy and placement is None else None,
        )
        for index in range(replicas)
    )
    return ServerSet(role, specs, proxy, placement), warning


@dataclass
class RunningSet:
    spec: ServerSet
    replicas: list[Server]
    proxy: Server | None

    @property
    def servers(self) -> list[Server]:
        return ([self.proxy] if self.proxy else []) + self.replicas

    def first_exit(self) -> tuple[Server, str] | None:
        """A server of the set that has ended, with how it ended."""
        for server in self.servers:
            status = server.exit_status()
            if status is not None:
                return server, status
        return None

    def capacity(self) -> int:
        """Requests the running replicas run at once (on Slurm, known once each job reported
        its GPU)."""
        return sum(server.capacity() for server in self.replicas)


def start_set(group: ServerGroup, server_set: ServerSet) -> RunningSet:
    """Start the proxy (and wait until it answers, so replicas can register), then every replica
    at once: they load concurrently."""
    proxy = None
    if server_set.proxy is not None:
        proxy = group.start(server_set.proxy)
        wait_ready([proxy], PROXY_READY_SECONDS)
    replicas = [group.start(spec, server_set.placement) for spec in server_set.replicas]
    return RunningSet(server_set, replicas, proxy)


def wait_set(running: RunningSet, timeout: float, on_ready=lambda server: None, meanwhile=lambda: None) -> None:
    """Wait until every replica is ready and the proxy routes to each: replicas here registered
    themselves, lmeval registers the jobs as each gets ready."""
    def ready(server: Server) -> None:
        if running.proxy is not None and running.spec.placement is not None:
            register(running.proxy, server)
        on_ready(server)

    wait_ready(running.replicas, timeout, on_ready=ready, meanwhile=meanwhile)
    if running.proxy is not None:
        wait_registered(running.proxy, running.replicas)


def stop_set(group: ServerGroup, running: RunningSet) -> None:
    """Stop what of RUNNING the group still runs."""
    for server in reversed(running.servers):
        if server in group.servers:
            group.stop(server)
