"""A data folder made by `lmeval data pull` for machines without network: everything the suite's
datasets read at run time, and a manifest that proves it whole.

    DIR/compass/            a COMPASS_DATA_CACHE: OpenCompass's archives, extracted (data/gpqa/...)
    DIR/hf/                 a Hugging Face datasets cache (HF_DATASETS_CACHE): HLE as
                            `load_dataset('cais/hle')` leaves it
    DIR/lmeval-data.json    each dataset's files (relative to DIR) with size and sha256, where
                            they came from, and the OpenCompass version that fetched them

A dataset is in the manifest only once all its files are in place, and the manifest is
replaced whole (a temporary file renamed over it), so a pull cut short leaves the dataset
missing, never a half-written file that passes. Files a run adds (the datasets library's
caches and locks) are not the dataset's and are not checked.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from lmeval.exceptions import UsageError

MANIFEST_NAME = "lmeval-data.json"
COMPASS = "compass"
HUGGING_FACE = "hf"
CHUNK = 1 << 20
HASH_THREADS = 8  # hashlib releases the GIL: a node's cores and a parallel file system's readers


class FileRecord(BaseModel):
    size: int
    sha256: str


class DatasetRecord(BaseModel):
    source: str  # the archive's URL, or the Hugging Face dataset (and endpoint)
    md5: str | None = None  # the archive's, as OpenCompass's table has it
    opencompass: str  # the version whose download code and table fetched it
    files: dict[str, FileRecord]  # path relative to the data folder -> what it must be


class DataManifest(BaseModel):
    datasets: dict[str, DatasetRecord] = {}

    @classmethod
    def load(cls, folder: Path) -> DataManifest:
        path = folder / MANIFEST_NAME
        if not path.is_file():
            return cls()
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise UsageError(f"{path} cannot be read ({type(error).__name__}); pull the data again with "
                             f"`lmeval data pull --dest {folder}`") from None

    def save(self, folder: Path) -> None:
        path = folder / MANIFEST_NAME
        partial = path.with_name(f".{MANIFEST_NAME}.partial")
        partial.write_text(self.model_dump_json(indent=1), encoding="utf-8")
        os.replace(partial, path)

    def selection_hash(self, names: Iterable[str]) -> str:
        """What a run's scores depend on in this folder: the files (paths and sha256) of NAMES,
        so that pulling another dataset later leaves runs of these datasets as they were."""
        chosen = {name: {path: record.sha256 for path, record in self.datasets[name].files.items()}
                  for name in sorted(names) if name in self.datasets}
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class DataState:
    """One dataset in a data folder: present, missing or corrupt, and why."""

    dataset: str
    status: str  # present | missing | corrupt
    detail: str  # the files it has, or the file that is missing or wrong


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def record_files(folder: Path, paths: Iterable[Path]) -> dict[str, FileRecord]:
    """Size and sha256 of each of PATHS (under FOLDER), keyed by its path relative to FOLDER."""
    paths = sorted(paths)
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        digests = list(pool.map(sha256_of, paths))
    return {path.relative_to(folder).as_posix(): FileRecord(size=path.stat().st_size, sha256=digest)
            for path, digest in zip(paths, digests, strict=True)}


def files_under(root: Path) -> list[Path]:
    """The files of a dataset's folder, without the locks the Hugging Face libraries leave."""
    return [path for path in root.rglob("*") if path.is_file() and not path.name.endswith(".lock")]


def verify(folder: Path, manifest: DataManifest, names: Iterable[str]) -> list[DataState]:
    """Each of NAMES in FOLDER, every file checked against the manifest (size, then sha256)."""
    names = list(names)
    wanted = [(name, relative, record) for name in names if name in manifest.datasets
              for relative, record in manifest.datasets[name].files.items()]

    def problem(item) -> str | None:
        _, relative, record = item
        path = folder / relative
        if not path.is_file():
            return f"missing: {path}"
        if (size := path.stat().st_size) != record.size:
            return f"corrupt: {path} has {size} bytes, not {record.size}"
        if sha256_of(path) != record.sha256:
            return f"corrupt: {path} does not have the sha256 the manifest records"
        return None

    with ThreadPoolExecutor(HASH_THREADS) as pool:
        problems = list(pool.map(problem, wanted))
    states = []
    for name in names:
        if name not in manifest.datasets:
            states.append(DataState(name, "missing", f"not pulled into {folder}"))
            continue
        found = [text for (owner, _, _), text in zip(wanted, problems, strict=True) if owner == name and text]
        if found:
            status, _, detail = found[0].partition(": ")
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            states.append(DataState(name, status, detail + more))
        else:
            states.append(DataState(name, "present", f"{describe_files(manifest.datasets[name].files)}, sha256 verified"))
    return states


def describe_files(files: dict[str, FileRecord]) -> str:
    """`2 files, 6.9 KiB`"""
    size = human_size(sum(record.size for record in files.values()))
    return f"{len(files)} file{'' if len(files) == 1 else 's'}, {size}"


def human_size(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def run_env(folder: Path) -> dict[str, str]:
    """What points OpenCompass (and the Hugging Face libraries it calls) at FOLDER, offline:
    nothing is downloaded during a run that uses a data folder."""
    return {"COMPASS_DATA_CACHE": str(folder / COMPASS), "HF_DATASETS_CACHE": str(folder / HUGGING_FACE),
            "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
