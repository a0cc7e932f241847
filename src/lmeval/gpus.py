"""Which GPUs a server gets: the user's list checked against NVML, or free ones picked from it."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from lmeval.exceptions import StageFailed, UsageError

# A GPU with less than this much memory in use and no compute process counts as free.
BUSY_MEMORY_BYTES = 1 << 30


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_used: int
    processes: int

    @property
    def busy(self) -> bool:
        return self.processes > 0 or self.memory_used >= BUSY_MEMORY_BYTES


def inventory() -> list[Gpu] | None:
    """The machine's GPUs, or None where no NVIDIA driver answers (as on CPU-only machines).
    A driver that fails midway is a StageFailed: lmeval cannot tell which GPUs are free."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    gpus: list[Gpu] = []
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            processes = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
            gpus.append(Gpu(index, str(name), int(memory.used), len(processes)))
    except pynvml.NVMLError as error:  # a driver that answers, then fails (a GPU fallen off the bus)
        raise StageFailed(f"the NVIDIA driver failed while listing GPU {len(gpus)} ({error}); "
                          "check the GPUs with nvidia-smi") from None
    finally:
        pynvml.nvmlShutdown()
    return gpus


@functools.cache
def cached_inventory() -> list[Gpu] | None:
    """The inventory as first read by this lmeval: one NVML round per command."""
    return inventory()


def parse_gpu_list(text: str, option: str = "--gpus") -> list[int]:
    """'0,1' -> [0, 1]; anything else is a usage error naming the option."""
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"{option} takes GPU indices separated by commas, like 0,1; got {text!r}") from None
    if any(i < 0 for i in ids):
        raise UsageError(f"{option} takes GPU indices (0, 1, ...); got {text!r}")
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise UsageError(f"{option} lists GPU {duplicates[0]} twice; give each GPU once")
    return ids


def assign(
    requested: list[int] | None,
    count: int,
    gpus: list[Gpu] | None,
    option: str = "--gpus",
    need: tuple[str, str] = ("--tp", "--tp"),
    taken: frozenset[int] = frozenset(),
) -> tuple[list[int], str | None]:
    """Return COUNT GPU ids for a server and a warning, if any.

    NEED says what asks for COUNT GPUs and which options change it, for the message.
    REQUESTED ids are checked against the inventory (exist, not busy); without them, free GPUs
    are picked, skipping TAKEN ones (already given to another server of this run). Without an
    inventory, explicit ids are used as given with a warning, and none can be picked.
    """
    if requested is not None:
        if len(requested) != count:
            raise UsageError(
                f"{option} lists {len(requested)} GPU(s) but {need[0]} needs {count}; "
                f"list {count} GPUs or change {need[1]}"
            )
        if gpus is None:
            return requested, f"no NVIDIA driver answered; using GPUs {_ids(requested)} as given, unchecked"
        known = {gpu.index: gpu for gpu in gpus}
        unknown = [i for i in requested if i not in known]
        if unknown:
            raise UsageError(
                f"{option}: GPU {unknown[0]} does not exist; this machine has GPUs {_ids(sorted(known)) or 'none'}"
            )
        busy = [i for i in requested if known[i].busy]
        if busy:
            raise UsageError(
                f"{option}: GPU {busy[0]} is busy (another process uses it); pick free GPUs or stop that process"
            )
        return requested, None
    if gpus is None:
        raise UsageError(f"no NVIDIA driver answered, so lmeval cannot pick GPUs; pass {option} 0,1,...")
    free = [gpu.index for gpu in gpus if not gpu.busy and gpu.index not in taken]
    if len(free) < count:
        raise UsageError(
            f"{count} free GPU(s) needed but only {len(free)} are free ({_ids(free) or 'none'}); "
            f"free some or pass {option}"
        )
    return free[:count], None


def _ids(ids: list[int]) -> str:
    return ",".join(str(i) for i in ids)


# LMDeploy's default --max-batch-size by GPU name (lmdeploy.utils.get_max_batch_size, 0.18).
_MAX_BATCH_SIZE = {"a100": 384, "a800": 384, "h100": 1024, "h800": 1024, "l20y": 1024, "h200": 1024}
DEFAULT_MAX_BATCH_SIZE = 128


def max_batch_size_for(gpu_name: str) -> int:
    """What LMDeploy picks when --max-batch-size is not given, for a GPU of that name."""
    name = gpu_name.lower()
    return next((size for key, size in _MAX_BATCH_SIZE.items() if key in name), DEFAULT_MAX_BATCH_SIZE)


def default_max_batch_size(ids: list[int], gpus: list[Gpu] | None) -> int:
    """LMDeploy's default for the first of the GPU ids IDS, as NVML names it."""
    names = {gpu.index: gpu.name for gpu in gpus or []}
    return max_batch_size_for(names.get(ids[0], "") if ids else "")
