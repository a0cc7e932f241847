"""SIGTERM handled like Ctrl-C, so every `finally` that stops servers runs for both."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM reached lmeval. A KeyboardInterrupt, so cleanup paths treat both alike."""


def _raise_terminated(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Terminated()


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_shield_depth = 0


@contextmanager
def shielded() -> Iterator[None]:
    """Hold off SIGINT and SIGTERM while a stop is in progress, so a second Ctrl-C
    cannot cut the teardown short and leave processes behind. Nested shields are one shield:
    the outermost delivers what arrived."""
    global _shield_depth
    if _shield_depth:
        _shield_depth += 1
        try:
            yield
        finally:
            _shield_depth -= 1
        return
    pending: list[int] = []
    handlers = {sig: signal.signal(sig, lambda s, f: pending.append(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    _shield_depth = 1
    try:
        yield
    finally:
        _shield_depth = 0
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if pending:
            raise Terminated() if pending[0] == signal.SIGTERM else KeyboardInterrupt()
