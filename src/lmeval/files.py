"""Writing lmeval's own files (configs holding API keys, server state, the manifest) and reading
the ends of logs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TAIL_BLOCK_BYTES = 8192


def write_private(path: Path, text: str) -> None:
    """Write TEXT to PATH owner-only (never readable by others, even for a moment), durably and
    atomically: a reader, or a crash, sees the old file or the new one, never half of one.

    The temporary file has a unique name (`tempfile`), so two writers never share one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def log_tail(path: Path, lines: int) -> str:
    """The last LINES lines of the log at PATH, read from its end (a server log can hold
    gigabytes), or a note saying the log is empty or unreadable."""
    try:
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            data = b""
            position = end
            while position > 0 and data.count(b"\n") <= lines:
                step = min(TAIL_BLOCK_BYTES, position)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
    except OSError as error:
        return f"(cannot read {path}: {error.strerror or error})"
    text = "\n".join(data.decode(errors="replace").splitlines()[-lines:])
    return text or "(the log is empty)"
