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


@contextmanager
def shielded() -> Iterator[None]:
    """Hold off SIGINT and SIGTERM while a stop is in progress, so a second Ctrl-C
    cannot cut the teardown short and leave processes behind."""
    pending: list[int] = []
    handlers = {sig: signal.signal(sig, lambda s, f: pending.append(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if pending:
            raise Terminated() if pending[0] == signal.SIGTERM else KeyboardInterrupt()
