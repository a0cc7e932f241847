"""The application object commands run against: output, what stopping left running, and the one
way out with an error."""

from __future__ import annotations

import copy
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console

from lmeval.exceptions import EXIT_INTERRUPTED, EXIT_STAGE_FAILED, LmevalError
from lmeval.signals import Cancel, interrupt_name, interrupts_handled, shielded

if TYPE_CHECKING:
    from lmeval.processes import Stopped


@dataclass(frozen=True)
class Leftover:
    """Something lmeval started and could not end (yet): a stop's deadline passed, or the user
    stopped the waiting."""

    what: str  # "pid 41 (disk-sleep)", "Slurm job 12 (COMPLETING)"
    of: str  # "target server"
    work_dir: Path  # where `lmeval cleanup -w` finds it


PIPE_WIDTH = 160  # rich's width for output to a file or pipe (logs, CI), unless COLUMNS says otherwise


def console(stderr: bool) -> Console:
    """A console on stdout or STDERR; off a terminal as wide as the chat suite's tables need
    (rich would take 80 columns and cut names like lcb_code_generation_repeat_6)."""
    stream = sys.stderr if stderr else sys.stdout
    sized = stream.isatty() or bool(os.environ.get("COLUMNS"))
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=None if sized else PIPE_WIDTH)


class Application:
    def __init__(self, debug: bool = False) -> None:
        self.debug = debug
        self.out = console(stderr=False)
        self.err = console(stderr=True)
        self.leftovers: list[Leftover] = []
        self.cancel = Cancel()
        self.prefix = ""  # whose lines these are, when several runs go at once

    def for_run(self, name: str) -> Application:
        """This application for one of several runs going at once (lmeval.sweep): the same
        output, leftovers and interrupt, its lines led by NAME."""
        run = copy.copy(self)
        run.prefix = f"{name}: "
        return run

    def checkpoint(self) -> None:
        """Raise the interrupt another thread of this command received, if one did."""
        self.cancel.check()

    def info(self, text: str) -> None:
        """A progress line on stderr, so stdout carries only results."""
        self._line(f"lmeval: {self.prefix}{text}")

    def warn(self, text: str) -> None:
        self._line(f"lmeval: warning: {self.prefix}{text}")

    def _line(self, text: str) -> None:
        # A Ctrl-C inside rich's print leaves the line buffered and printed twice: hold it off.
        with shielded():
            self.err.print(text, markup=False)

    def stopped(self, what: str, stopped: Stopped, work_dir: Path) -> None:
        """Say what a stop really ended, and keep what it could not for the last line."""
        if not stopped.left:
            self.info(f"stopped {what} ({stopped.summary})")
            return
        self.leftovers += [Leftover(left, what, work_dir) for left in stopped.left]
        self.warn(f"{what}: {stopped.summary}; still running: {', '.join(stopped.left)}")

    def leftover_text(self) -> str:
        """`still running: pid 12 (disk-sleep) of the target server; end them with ...`"""
        listing = ", ".join(f"{item.what} of the {item.of}" for item in self.leftovers)
        folders = " and ".join(dict.fromkeys(f"`lmeval cleanup -w {item.work_dir}`" for item in self.leftovers))
        return f"still running: {listing}; end them with {folders} once they can be killed"

    def abort(self, text: str, code: int, detail: str = "") -> NoReturn:
        self.err.print(f"lmeval: error: {text}", markup=False)
        if detail:
            self.err.print(detail, markup=False)
        raise typer.Exit(code)

    def run(self, command: Callable[..., int | None], *args, **kwargs) -> None:
        """Run COMMAND with Ctrl-C and SIGTERM counted (lmeval.signals) until lmeval's last line
        is out, mapping failures to exit codes. Everything lmeval and its children write is the
        owner's alone."""
        os.umask(0o077)
        with interrupts_handled(notify=self.info):
            code = self._exit_code(command, *args, **kwargs)
        if code:
            raise typer.Exit(code)

    def _exit_code(self, command: Callable[..., int | None], *args, **kwargs) -> int | None:
        try:
            code = command(self, *args, **kwargs)
        except LmevalError as error:
            if self.debug:
                traceback.print_exc(file=sys.stderr)
            message = f"{error.message}; {self.leftover_text()}" if self.leftovers else error.message
            self.abort(message, error.exit_code, error.detail if self.debug or error.exit_code != 2 else "")
        except KeyboardInterrupt as error:
            if self.debug:
                traceback.print_exc(file=sys.stderr)
            outcome = self.leftover_text() if self.leftovers else "every server lmeval started has been stopped"
            self.abort(f"interrupted by {interrupt_name(error)}; {outcome}", EXIT_INTERRUPTED)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as error:  # a bug: say so in one line, the traceback only with --debug
            if self.debug:
                raise
            self.abort(f"internal error: {type(error).__name__}: {error}; rerun with --debug for the traceback", 1)
        if self.leftovers:
            self.abort(f"the command finished, but {self.leftover_text()}", EXIT_STAGE_FAILED)
        return code
