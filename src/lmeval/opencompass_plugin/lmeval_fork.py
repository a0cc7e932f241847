"""Runs inside OpenCompass's processes, never in lmeval's: a child forked from a process that
has already imported OpenCompass, instead of a new Python that imports it all again (7-8 s of
CPU each: torch, transformers, every dataset module). Used by lmeval_forkserver (the stages)
and LmevalLocalRunner (their tasks).

The child is otherwise what a new process would be: its output in a file of its own, an exit
code (an uncaught exception: its traceback there and 1), SIGTERM when the process that forked
it dies, and nothing of its parent's buffered output or held locks (fresh stdout and stderr,
the logging handlers pointed at them without touching the old streams, a fresh tqdm lock).
"""
import ctypes
import io
import logging
import os
import signal
import sys
import traceback

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


def fork_child(body, output, *, new_session, truncate=False, cwd=None, environ=None, name=None, close=()):
    """Fork; the child runs BODY() with its stdout and stderr going to the file OUTPUT and exits
    with its code. NEW_SESSION: the child leads a session of its own (as `start_new_session`).
    NAME: its process name (what `ps -o comm`, `top` and `pgrep` see). CLOSE: the parent's
    sockets the child must not hold. Returns the child's pid."""
    parent = os.getpid()
    for stream in (sys.stdout, sys.stderr):  # what the parent printed stays its own, not the child's
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    # SIGTERM held until the child has dropped the parent's handler (the fork server's).
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    pid = os.fork()
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return pid
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for item in close:
            item.close()
        if new_session:
            os.setsid()
        die_with_parent(parent)
        if name:
            prctl(PR_SET_NAME, name.encode()[:15])
        if cwd is not None:
            os.chdir(cwd)
        if environ is not None:
            os.environ.clear()
            os.environ.update(environ)
        redirect_output(output, truncate)
        code = exit_code(body)
    except BaseException:  # noqa: BLE001 - a child never returns into its parent's code
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def prctl(option, value):
    """Linux's prctl(2); False where there is none."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value)
    except OSError:
        return False
    return True


def die_with_parent(parent):
    """SIGTERM when the forking thread's process dies, as lmeval's own children get it."""
    if prctl(PR_SET_PDEATHSIG, signal.SIGTERM) and os.getppid() != parent:  # it died before the prctl
        os._exit(1)


def redirect_output(path, truncate):
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else os.O_APPEND)
    fd = os.open(path, flags, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    old = {id(sys.stdout): 1, id(sys.stderr): 2}
    # As a new Python's on a file: stdout block-buffered, stderr line-buffered.
    fresh = {number: io.TextIOWrapper(io.BufferedWriter(io.FileIO(number, "w", closefd=False)), encoding="utf-8",
                                      errors="backslashreplace" if number == 2 else "strict",
                                      line_buffering=number == 2)
             for number in (1, 2)}
    sys.stdout, sys.stderr = fresh[1], fresh[2]
    loggers = [logging.getLogger(), *(item for item in logging.Logger.manager.loggerDict.values()
                                      if isinstance(item, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in old:
                # Not setStream(): it flushes the old stream, whose lock another thread of the parent
                # (OpenCompass's runner logs from four) may have held at the fork; the child then
                # waited for it forever (seen: one eval task in six judgings of the chat suite).
                handler.stream = fresh[old[id(handler.stream)]]
    fresh_tqdm_lock()


def fresh_tqdm_lock():
    """A new thread lock for tqdm, for the same reason: the runner's progress bar may have held
    the old one at the fork. (Its multiprocessing lock is shared with the parent, which frees it.)"""
    std = sys.modules.get("tqdm.std")
    if std is not None:
        std.TqdmDefaultWriteLock.th_lock = std.TRLock()
        std.tqdm.set_lock(std.TqdmDefaultWriteLock())


def exit_code(body):
    """BODY()'s exit code, as the interpreter would make it."""
    try:
        body()
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print(done.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        return 1
    return 0

