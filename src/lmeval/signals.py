"""Ctrl-C and SIGTERM, counted for the whole command.

- The first interrupts lmeval: a KeyboardInterrupt (`Terminated` for SIGTERM), so every
  `finally` that stops servers runs. Inside `shielded()` it is held and raised when the
  shield ends, so it never cuts a stop, or a line being printed, short.
- Later ones never raise: lmeval is stopping what it started by then. While a stop waits
  (`wait`), each one is answered with what it waits for.
- The third gives up waiting: every wait still to come ends at once, after a moment for killed
  processes to go, and lmeval exits naming what is left (a process stuck in the GPU driver
  survives SIGKILL for as long as the driver holds it).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

GIVE_UP_AT = 3  # the Ctrl-C that stops the waiting
SETTLE_SECONDS = 0.2  # what a wait still grants killed processes once the user gave up
POLL_SECONDS = 0.01

Notify = Callable[[str], None]


class Terminated(KeyboardInterrupt):
    """SIGTERM reached lmeval. A KeyboardInterrupt, so cleanup paths treat both alike."""


@dataclass
class _Count:
    received: int = 0
    shields: int = 0  # depth of nested shielded() blocks
    held: int | None = None  # the first signal, while a shield holds it
    notice_due: bool = False  # a signal came that the running wait has not answered yet
    notify: Notify | None = None


_count = _Count()


class Cancel:
    """An interrupt handed on to the threads of one command (a sweep's runs going at once): the
    signal reaches one thread only; every other one raises it at its next `check`."""

    def __init__(self) -> None:
        self.interrupt: KeyboardInterrupt | None = None

    def set(self, interrupt: KeyboardInterrupt) -> None:
        self.interrupt = self.interrupt or interrupt

    def check(self) -> None:
        if self.interrupt is not None:
            raise type(self.interrupt)()


def interrupt_name(interrupt: KeyboardInterrupt) -> str:
    """`Ctrl-C` or `SIGTERM`: what the user did, in the words of lmeval's messages."""
    return "SIGTERM" if isinstance(interrupt, Terminated) else "Ctrl-C"


def _interrupt(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _on_signal(signum, frame):  # noqa: ARG001 - signal handler signature
    _count.received += 1
    if _count.received == 1 and not _count.shields:
        raise _interrupt(signum)
    if _count.received == 1:
        _count.held = signum  # raised when the shield ends, and the teardown that follows is the answer
    else:
        _count.notice_due = True  # the next poll of a wait answers it


@contextmanager
def interrupts_handled(notify: Notify) -> Iterator[None]:
    """For one command: SIGINT and SIGTERM are counted as this module says; NOTIFY prints the
    answers a wait gives them."""
    global _count
    _count = _Count(notify=notify)
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def gave_up() -> bool:
    """Whether the user pressed Ctrl-C often enough to stop every wait."""
    return _count.received >= GIVE_UP_AT


@contextmanager
def shielded() -> Iterator[None]:
    """Hold off the first Ctrl-C or SIGTERM until the block ends (nested blocks are one)."""
    _count.shields += 1
    try:
        yield
    finally:
        _count.shields -= 1
        if not _count.shields and _count.held is not None:
            held, _count.held = _count.held, None
            raise _interrupt(held)


def wait(done: Callable[[], bool], timeout: float, waiting_for: Callable[[], str], *,
         poll: float = POLL_SECONDS, clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> bool:
    """Poll DONE every POLL seconds until it is true (True) or TIMEOUT seconds have passed
    (False); once the user gave up, for SETTLE_SECONDS at most. A Ctrl-C meanwhile is answered
    with WAITING_FOR()."""
    start = clock()
    deadline = start + timeout
    while not done():
        now = clock()
        if gave_up():
            deadline = min(deadline, now + SETTLE_SECONDS)
        if now >= deadline:
            return False
        if _count.notice_due:
            _count.notice_due = False
            _answer(waiting_for(), now - start)
        sleep(min(poll, deadline - now))
    return True


def _answer(waiting_for: str, waited: float) -> None:
    if _count.notify is None:
        return
    left = GIVE_UP_AT - _count.received
    if left <= 0:
        _count.notify(f"stopped waiting for {waiting_for}")
        return
    again = "again" if left == 1 else "twice more"
    _count.notify(f"still stopping: waiting {waited:.0f} s so far for {waiting_for}; "
                  f"press Ctrl-C {again} to stop waiting and leave them to `lmeval cleanup`")
