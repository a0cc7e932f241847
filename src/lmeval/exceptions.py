"""Every failure a user can hit, each with the exit code it ends lmeval with.

The CLI turns any `LmevalError` into one line on stderr and its exit code; anything else is a
bug and keeps its traceback (shown with --debug). Ctrl-C and SIGTERM end lmeval with
EXIT_INTERRUPTED once everything it started is stopped (lmeval.signals, lmeval.app).
"""

from __future__ import annotations

EXIT_STAGE_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class LmevalError(Exception):
    """A failure explained to the user in one line (plus optional detail lines)."""

    exit_code = EXIT_STAGE_FAILED

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class UsageError(LmevalError):
    """Bad options or input, found before anything starts."""

    exit_code = EXIT_USAGE


class StageFailed(LmevalError):
    """Something went wrong while running: a server, OpenCompass, missing outputs."""

    exit_code = EXIT_STAGE_FAILED


class OpenCompassHung(StageFailed):
    """OpenCompass made no progress for --stall-timeout with nothing to wait for (lmeval.watchdog)."""


class ServerFailed(StageFailed):
    """A server exited, never became ready, or is not ours."""


class ServerDied(ServerFailed):
    """A server a stage talks to ended during the stage: lmeval may restart it (--restarts)."""

    def __init__(self, failure: ServerFailed, server: object, status: str, stalled: bool = False) -> None:
        super().__init__(failure.message, failure.detail)
        self.server = server  # the lmeval.launch.Server that ended
        self.status = status  # how: `exited with code -9 (SIGKILL)`, or how it stalled
        self.stalled = stalled  # alive but hung (lmeval.watchdog): lmeval stops it before a restart
