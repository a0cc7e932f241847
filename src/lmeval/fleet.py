"""A role's servers: one LMDeploy api_server, or N data-parallel replicas on disjoint GPU groups
behind LMDeploy's own `lmdeploy serve proxy`. Clients see one URL and one key either way."""

from __future__ import annotations

from dataclasses import dataclass

from lmeval import gpus as gpu_inventory
from lmeval.exceptions import UsageError
from lmeval.launch import (
    ProxySpec,
    Server,
    ServerGroup,
    ServerSpec,
    check_model,
    check_port_free,
    free_port,
    new_api_key,
    parse_server_args,
    served_name,
    server_arg_value,
)
from lmeval.readiness import wait_ready, wait_registered

PROXY_READY_SECONDS = 120.0


@dataclass(frozen=True)
class ServerSet:
    role: str
    replicas: tuple[ServerSpec, ...]
    proxy: ProxySpec | None = None

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
        return frozenset(spec.port for spec in self.specs)

    @property
    def gpus(self) -> tuple[int, ...]:
        return tuple(gpu for replica in self.replicas for gpu in replica.gpus)

    def capacity(self) -> int:
        """Requests the set runs at once: each replica's --max-batch-size (given, or LMDeploy's
        default for its GPU), summed."""
        first = self.replicas[0]
        given = server_arg_value(first.extra_args, "--max-batch-size")
        if given is None:
            per_replica = gpu_inventory.default_max_batch_size(list(first.gpus), gpu_inventory.cached_inventory())
        else:
            try:
                per_replica = max(1, int(given))
            except ValueError:
                raise UsageError(f"--max-batch-size in the server args must be a number, got {given!r}") from None
        return per_replica * len(self.replicas)


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
) -> tuple[ServerSet, str | None]:
    """Check one role's options and resolve GPUs, ports and key. Returns the set and a warning.

    OPTION_PREFIX names the options in messages (`judge-` for the judge's). With replicas, the
    GPUs are split in order into groups of TP, and --port is the proxy's (the one clients use).
    """
    gpu_option, tp_option = f"--{option_prefix}gpus", f"--{option_prefix}tp"
    replicas_option = f"--{option_prefix}replicas"
    model_path = check_model(model, f"--{option_prefix}model" if option_prefix else "MODEL")
    extra = parse_server_args(server_args, f"--{option_prefix}server-args")
    requested = gpu_inventory.parse_gpu_list(gpus, gpu_option) if gpus else None
    if tp is not None and tp < 1:
        raise UsageError(f"{tp_option} must be at least 1")
    if replicas < 1:
        raise UsageError(f"{replicas_option} must be at least 1")
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
    if replicas > 1:
        proxy = ProxySpec(role=f"{role}-proxy", host=host, port=port if port is not None else fresh_port(),
                          api_key=key)
    specs = tuple(
        ServerSpec(
            role=role if replicas == 1 else f"{role}-{index}",
            model=model_path,
            served_name=served_name(model_path),
            gpus=tuple(ids[index * tp:(index + 1) * tp]),
            tp=tp,
            host=host,
            port=port if replicas == 1 and port is not None else fresh_port(),
            api_key=key,
            extra_args=extra,
            proxy_url=proxy.url if proxy else None,
        )
        for index in range(replicas)
    )
    return ServerSet(role, specs, proxy), warning


@dataclass
class RunningSet:
    spec: ServerSet
    replicas: list[Server]
    proxy: Server | None

    @property
    def servers(self) -> list[Server]:
        return ([self.proxy] if self.proxy else []) + self.replicas


    def first_exit(self) -> tuple[Server, int] | None:
        """A server of the set that has exited, with its code."""
        for server in self.servers:
            code = server.exit_code()
            if code is not None:
                return server, code
        return None


def start_set(group: ServerGroup, server_set: ServerSet) -> RunningSet:
    """Start the proxy (and wait until it answers, so replicas can register), then every replica
    at once: they load concurrently."""
    proxy = None
    if server_set.proxy is not None:
        proxy = group.start(server_set.proxy)
        wait_ready([proxy], PROXY_READY_SECONDS)
    replicas = [group.start(spec) for spec in server_set.replicas]
    return RunningSet(server_set, replicas, proxy)


def wait_set(running: RunningSet, timeout: float, on_ready=lambda server: None) -> None:
    wait_ready(running.replicas, timeout, on_ready=on_ready)
    if running.proxy is not None:
        wait_registered(running.proxy, running.replicas)


def stop_set(group: ServerGroup, running: RunningSet) -> None:
    for server in reversed(running.servers):
        group.stop(server)
