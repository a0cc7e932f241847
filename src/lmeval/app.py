"""The application object commands run against: output, and the one way out with an error."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

import typer
from rich.console import Console

from lmeval.exceptions import EXIT_INTERRUPTED, LmevalError
from lmeval.signals import Terminated, shielded, terminate_as_interrupt


class Application:
    def __init__(self, debug: bool = False) -> None:
        self.debug = debug
        self.out = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def info(self, text: str) -> None:
        """A progress line on stderr, so stdout carries only results."""
        self._line(f"lmeval: {text}")

    def warn(self, text: str) -> None:
        self._line(f"lmeval: warning: {text}")

    def _line(self, text: str) -> None:
        # A Ctrl-C inside rich's print leaves the line buffered and printed twice: hold it off.
        with shielded():
            self.err.print(text, markup=False)

    def abort(self, text: str, code: int, detail: str = "") -> NoReturn:
        self.err.print(f"lmeval: error: {text}", markup=False)
        if detail:
            self.err.print(detail, markup=False)
        raise typer.Exit(code)

    def run(self, command: Callable[..., int | None], *args, **kwargs) -> None:
        """Run COMMAND with SIGTERM treated as Ctrl-C, mapping failures to exit codes."""
        try:
            with terminate_as_interrupt():
                code = command(self, *args, **kwargs)
        except LmevalError as error:
            if self.debug:
                traceback.print_exc(file=sys.stderr)
            self.abort(error.message, error.exit_code, error.detail if self.debug or error.exit_code != 2 else "")
        except KeyboardInterrupt as error:
            if self.debug:
                traceback.print_exc(file=sys.stderr)
            signal_name = "SIGTERM" if isinstance(error, Terminated) else "Ctrl-C"
            self.abort(f"interrupted by {signal_name}; every server lmeval started has been stopped",
                       EXIT_INTERRUPTED)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as error:  # a bug: say so in one line, the traceback only with --debug
            if self.debug:
                raise
            self.abort(f"internal error: {type(error).__name__}: {error}; rerun with --debug for the traceback", 1)
        if code:
            raise typer.Exit(code)
