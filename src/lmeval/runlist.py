"""`lmeval runs`: every run of a work dir as its manifest and its lock show it. Kept light
(json and fcntl only), like `lmeval results`."""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from lmeval.runs import LOCK_NAME, RUN_ID_PATTERN, lock_pid


@dataclass(frozen=True)
class RunRow:
    run_id: str
    model: str
    datasets: list[str]
    state: str  # working (an lmeval holds the run now), interrupted, failed, inferred, judged, new, unreadable
    stages: dict[str, str]  # stage -> status as the manifest recorded it
    seconds: float | None
    scores: dict[str, float | None]  # dataset -> its main metric's value
    cut: dict[str, float]  # dataset -> the share of its answers cut at --max-out-len, where recorded


def lock_holder(run_dir: Path) -> str | None:
    """The pid of the lmeval working on RUN_DIR now, or None when no lmeval holds its lock."""
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return lock_pid(fd) or "?"
    except OSError:  # no flock on its file system: no lmeval can be holding it
        return None
    finally:
        os.close(fd)  # closing the file releases a lock taken just to look
    return None


def _state(stages: dict[str, str], holder: str | None) -> str:
    if holder is not None:
        return f"working (pid {holder})"
    statuses = set(stages.values())
    if statuses & {"running", "interrupted"}:
        return "interrupted"  # "running" with nobody holding the lock: its lmeval was killed
    if "failed" in statuses:
        return "failed"
    if stages.get("eval") == "ok":
        return "judged"
    return "inferred" if stages.get("infer") == "ok" else "new"


def dataset_names(manifest: dict) -> list[str]:
    """The datasets of a run, in the order it ran them, from its manifest."""
    return [entry[1] for entry in (manifest.get("fingerprint_inputs") or {}).get("datasets", [])
            if isinstance(entry, list) and len(entry) > 1]


def read_row(run_dir: Path) -> RunRow:
    holder = lock_holder(run_dir)
    try:
        manifest = json.loads((run_dir / "lmeval.json").read_text())
        stages = {name: record.get("status", "?") for name, record in manifest.get("stages", {}).items()}
    except (OSError, ValueError, AttributeError):
        return RunRow(run_dir.name, "?", [], "unreadable" if holder is None else f"working (pid {holder})", {}, None, {},
                      {})
    datasets = dataset_names(manifest)
    seconds = manifest.get("wall_seconds")
    if seconds is None:
        seconds = sum(record.get("seconds") or 0 for record in manifest.get("stages", {}).values()) or None
    scores = {}
    for score in manifest.get("scores", []):
        scores.setdefault(score.get("dataset", "?"), score.get("value"))  # the first metric is the main one
    cut = {row: counted["cut_share"] for row, counted in (manifest.get("answers") or {}).items()
           if isinstance(counted, dict) and counted.get("cut_share")}
    return RunRow(run_dir.name, manifest.get("model_abbr", "?"), datasets, _state(stages, holder), stages,
                  seconds, scores, cut)


def list_runs(work_dir: Path) -> list[RunRow]:
    """Every run folder in WORK_DIR, newest first (run ids sort by time)."""
    folders = [path for path in work_dir.iterdir() if RUN_ID_PATTERN.fullmatch(path.name) and path.is_dir()] \
        if work_dir.is_dir() else []
    return [read_row(folder) for folder in sorted(folders, reverse=True)]


def as_json(rows: list[RunRow]) -> str:
    return json.dumps([asdict(row) for row in rows], indent=2)
