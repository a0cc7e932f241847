"""What an offline W&B run wrote, read back from its `run-ID.wandb` file with W&B's own record
definitions (wandb.proto): the file is W&B's transaction log, a 7-byte header (`:W&B`, magic,
version) then LevelDB's log format, 32 KiB blocks of chunks (crc32c, length, type: full, first,
middle, last), each whole record one `wandb_internal_pb2.Record`. W&B 0.31 has no Python reader
of its own: its core, in Go, reads the file when `wandb sync` uploads it."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7
CHUNK_HEAD = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    run_id: str = ""
    name: str = ""
    group: str = ""
    project: str = ""
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)  # each wandb.log call's values
    artifacts: dict[str, list[str]] = field(default_factory=dict)  # name -> its files


def records(path: Path) -> list[bytes]:
    raw = path.read_bytes()
    assert raw[:4] == b":W&B", f"{path} is not a W&B transaction log"
    found, pending, position = [], b"", HEADER
    while position + CHUNK_HEAD.size <= len(raw):
        left = BLOCK - position % BLOCK
        if left < CHUNK_HEAD.size:  # the block's trailer: zeros
            position += left
            continue
        _, length, kind = CHUNK_HEAD.unpack_from(raw, position)
        data = raw[position + CHUNK_HEAD.size:position + CHUNK_HEAD.size + length]
        position += CHUNK_HEAD.size + length
        if kind == FULL:
            found.append(data)
        elif kind == FIRST:
            pending = data
        elif kind == MIDDLE:
            pending += data
        elif kind == LAST:
            found.append(pending + data)
    return found


def read_offline_run(path: Path) -> OfflineRun:
    from wandb.proto import wandb_internal_pb2

    run = OfflineRun()
    for data in records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.name, run.group = record.run.run_id, record.run.display_name, record.run.run_group
            run.project = record.run.project
            run.config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            run.config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            run.history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                for item in record.history.item})
        elif kind == "artifact":
            run.artifacts[record.artifact.name] = [entry.path for entry in record.artifact.manifest.contents]
    return run


def offline_runs(wandb_dir: Path) -> list[OfflineRun]:
    """Every offline run under WANDB_DIR, oldest first."""
    return [read_offline_run(path) for path in sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))]
