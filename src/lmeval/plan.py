"""From the user's options to server specs: every check that can fail runs here, before any
server starts loading."""

from __future__ import annotations

from lmeval import gpus as gpu_inventory
from lmeval.exceptions import UsageError
from lmeval.launch import (
    ServerSpec,
    check_model,
    check_port_free,
    free_port,
    new_api_key,
    parse_server_args,
    served_name,
)


def plan_server(
    role: str,
    *,
    model: str,
    gpus: str | None,
    tp: int | None,
    port: int | None,
    host: str,
    server_args: str,
    option_prefix: str = "",
    taken_gpus: frozenset[int] = frozenset(),
    inventory: list[gpu_inventory.Gpu] | None | bool = True,
) -> tuple[ServerSpec, str | None]:
    """Check one server's options and resolve GPUs, port and key. Returns the spec and a warning.

    OPTION_PREFIX names the options in messages (`--judge-` for the judge's). INVENTORY is the
    GPU list, None for none readable, or True to read it through NVML.
    """
    gpu_option, tp_option = f"--{option_prefix}gpus", f"--{option_prefix}tp"
    model_path = check_model(model)
    extra = parse_server_args(server_args, f"--{option_prefix}server-args")
    requested = gpu_inventory.parse_gpu_list(gpus, gpu_option) if gpus else None
    if tp is not None and tp < 1:
        raise UsageError(f"{tp_option} must be at least 1")
    count = tp or (len(requested) if requested else 1)
    gpus_found = gpu_inventory.inventory() if inventory is True else inventory
    ids, warning = gpu_inventory.assign(requested, count, gpus_found, gpu_option, tp_option, taken_gpus)
    if port is not None:
        check_port_free(host, port)
    spec = ServerSpec(
        role=role,
        model=model_path,
        served_name=served_name(model_path),
        gpus=tuple(ids),
        tp=count,
        host=host,
        port=port if port is not None else free_port(host),
        api_key=new_api_key(),
        extra_args=extra,
    )
    return spec, warning
