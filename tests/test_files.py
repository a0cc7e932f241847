"""lmeval's own files (configs with keys, server state, manifest): owner-only, and never seen
half-written by a reader such as `lmeval cleanup`."""

from __future__ import annotations

import os
import stat

import pytest

from lmeval.files import log_tail, write_private


def test_owner_only_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        write_private(tmp_path / "servers" / "target.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "servers").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "servers" / "target.json").stat().st_mode) == 0o600


def test_replaces_the_whole_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "lmeval.json"
    write_private(path, '{"a": "' + "x" * 10_000 + '"}')
    write_private(path, '{"b": 1}')
    assert path.read_text() == '{"b": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["lmeval.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "lmeval.json"
    write_private(path, "old")

    def no_space(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(OSError):
        write_private(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["lmeval.json"]


def test_log_tail_reads_the_last_lines_from_the_end(tmp_path):
    log = tmp_path / "server.log"
    log.write_bytes(b"".join(b"line %d " % i + b"x" * 300 + b"\n" for i in range(10_000)))
    assert log_tail(log, 3).splitlines() == [f"line {i} " + "x" * 300 for i in (9997, 9998, 9999)]
    log.write_text("only\nthree\nlines")  # no newline at the end
    assert log_tail(log, 20) == "only\nthree\nlines"


def test_log_tail_says_when_there_is_nothing_to_show(tmp_path):
    empty = tmp_path / "empty.log"
    empty.write_text("")
    assert log_tail(empty, 5) == "(the log is empty)"
    assert log_tail(tmp_path / "missing.log", 5) == f"(cannot read {tmp_path / 'missing.log'}: No such file or directory)"
