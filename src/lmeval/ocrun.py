"""OpenCompass's processes as children lmeval supervises: the CLI for a stage, and the preflight
that checks OpenCompass's half of a run while the servers load. Each in its own session, its
output in a log, tagged like the servers so a stop or `lmeval cleanup` finds its task
processes too; forked by the command's fork server (lmeval.forkserver) when it has one."""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import psutil

from lmeval.exceptions import StageFailed
from lmeval.files import log_tail
from lmeval.forkserver import ForkedChild, ForkServer
from lmeval.ocenv import opencompass_env, venv_python
from lmeval.processes import (
    CHILD_UMASK,
    Stopped,
    live_process,
    owner_token,
    prepare_child,
    process_tree,
    tagged_env,
    terminate,
)

STOP_GRACE_SECONDS = 5.0
FIRST_REPLY_SECONDS = 120.0  # for the fork server to say it forked a process (its imports: 7-8 s of CPU)
_PREFLIGHT_RESULT = re.compile(r"^lmeval preflight: (ok|failed: .*)$", re.MULTILINE)
CLI_ENTRY = "opencompass.cli.main:main"


def opencompass_argv(executable: Path, config: Path, mode: str, work_dir: Path, run_id: str) -> list[str]:
    """Always `-r RUN`: the run folder is lmeval's choice, known before OpenCompass starts."""
    return [str(executable), str(config), "-m", mode, "-w", str(work_dir), "-r", run_id]


def sys_argv(argv: list[str]) -> list[str]:
    """The sys.argv of the Python that ARGV starts: `python -m MODULE ARGS...` gives
    [MODULE, ARGS...], a script `SCRIPT ARGS...` ARGV itself."""
    return argv[2:] if argv[1:2] == ["-m"] else argv


def is_cli_script(executable: Path) -> bool:
    """Whether EXECUTABLE is the `opencompass` script pip writes, which only calls CLI_ENTRY
    (a fork server of its venv can run that; not so a wrapper of the user's own)."""
    try:
        with open(executable, "rb") as handle:
            text = handle.read(4096)
    except OSError:
        return False
    return text.startswith(b"#!") and b"from opencompass.cli.main import main" in text


class OpenCompassProcess:
    """One process in OpenCompass's venv, started with ARGV in CWD, its output in LOG_PATH;
    forked by FORKS when given, as `sys.exit(ENTRY())` with the sys.argv ARGV would give it."""

    def __init__(self, argv: list[str], name: str, cwd: Path, log_path: Path, run_id: str,
                 forks: ForkServer | None = None, entry: str | None = None) -> None:
        self.argv = argv
        self.name = name
        self.cwd = cwd
        self.log_path = log_path
        self.run_id = run_id
        self.forks = forks if entry is not None else None
        self.entry = entry
        self.tag = f"opencompass-{uuid.uuid4().hex[:12]}"
        self.popen: subprocess.Popen | None = None
        self.forked: ForkedChild | None = None
        self.env: dict[str, str] = {}  # set when it starts; a fallback from the fork server starts with it too
        self.created = 0.0
        self.started: float | None = None  # monotonic, once started the usual way

    @property
    def began(self) -> float | None:
        """When it began to run (monotonic); a forked one once the server said it forked it
        (it waits for the server's imports first)."""
        return self.forked.began if self.forked is not None else self.started

    def start(self) -> None:
        # OpenCompass writes tmp/, icl_inference_output/ and a dataset size cache into its
        # current directory: give each run its own.
        self.cwd.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.env = opencompass_env(tagged_env(dict(os.environ), self.tag, owner_token(), self.run_id))
        if self.forks is not None:
            # Named as when started anew (`opencompass`, `python`), for ps, top and pgrep.
            self.forked = self.forks.launch(self.entry, sys_argv(self.argv), self.cwd, self.env, self.log_path,
                                            Path(self.argv[0]).name)
            if self.forked is not None:
                return
        self.start_anew()

    def start_anew(self) -> None:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                umask=CHILD_UMASK, preexec_fn=prepare_child,  # noqa: PLW1509 - one prctl call
            )
        self.started = time.monotonic()
        self.created = psutil.Process(self.popen.pid).create_time()

    def poll(self) -> int | None:
        if self.forked is not None:
            code = self.forked.poll()
            if code is None and self.forked.pid is None and time.monotonic() - self.forked.asked > FIRST_REPLY_SECONDS:
                # The fork server never forked it (stuck in its imports, or worse): a new process.
                self.forked.close()
                self.forked = None
                self.start_anew()
                return None
            return code
        return self.popen.poll() if self.popen else None

    def cpu_seconds(self) -> float:
        """CPU time its processes (it and its tasks) have used so far."""
        if self.forked is not None:
            leader = self.forked.process()
        else:
            leader = live_process(self.popen.pid, self.created) if self.popen else None
        total = 0.0
        for process in process_tree(leader) if leader else []:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def stop(self) -> Stopped:
        """End it and its task processes (found by tag even after it exited; a forked one's
        by its tree, and by the fork server if it had not forked it yet)."""
        if self.forked is not None:
            self.forked.poll()  # its pid, if the server said it by now
            leader = self.forked.process()
        else:
            leader = live_process(self.popen.pid, self.created) if self.popen else None
        stopped = terminate(leader, self.tag, STOP_GRACE_SECONDS, f"{self.name}'s processes")
        if self.forked is not None:
            self.forked.close()
        if self.popen is not None:
            self.popen.poll()
        return stopped


class OpenCompassRun(OpenCompassProcess):
    """`opencompass CONFIG -m MODE -w WORK_DIR -r RUN` for one stage."""

    def __init__(self, executable: Path, config: Path, mode: str, work_dir: Path, run_id: str,
                 cwd: Path, log_path: Path, forks: ForkServer | None = None) -> None:
        super().__init__(opencompass_argv(executable, config, mode, work_dir, run_id), f"OpenCompass {mode}",
                         cwd, log_path, run_id, forks, CLI_ENTRY if forks and is_cli_script(executable) else None)


class PreflightFailed(StageFailed):
    """OpenCompass's half of the run cannot work: found before any stage ran."""


class Preflight(OpenCompassProcess):
    """OpenCompass's half of a run, checked while the servers load (lmeval_preflight): its
    imports, the configs through its own loader, the local tokenizers."""

    def __init__(self, executable: Path, configs: list[Path], tokenizers: list[str], cwd: Path, log_path: Path,
                 run_id: str, forks: ForkServer | None = None) -> None:
        argv = [str(venv_python(executable)), "-m", "lmeval_preflight", *map(str, configs)]
        for tokenizer in tokenizers:
            argv += ["--tokenizer", tokenizer]
        super().__init__(argv, "OpenCompass's preflight", cwd, log_path, run_id, forks, "lmeval_preflight:main")
        self.stopped_early = False

    def stop(self) -> Stopped:
        self.stopped_early = self.poll() is None
        return super().stop()

    def failure(self) -> PreflightFailed | None:
        """Why the check failed, once it ended; None while it runs, when it passed, or when
        lmeval stopped it before it ended (the stage took over)."""
        code = self.poll()
        if code is None or self.stopped_early:
            return None
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            text = ""
        results = _PREFLIGHT_RESULT.findall(text)
        if code == 0 and results and results[-1] == "ok":
            return None
        said = results[-1].removeprefix("failed: ") if results else (
            last_error(self.log_path) or f"it exited with code {code} before it could say why")
        return PreflightFailed(f"OpenCompass cannot run this evaluation: {said} (found before any stage ran; "
                               f"see {self.log_path}); fix OpenCompass's venv (`lmeval setup`) or the inputs, "
                               "then rerun")

    def check(self) -> None:
        """Raise its failure, if it has failed by now."""
        failure = self.failure()
        if failure is not None:
            raise failure


ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)\b(?::.*)?$")


def last_error(log: Path, lines: int = 400) -> str | None:
    """The last exception line (`ImportError: pyarrow requires NumPy 2.0 or newer`) among the
    last LINES lines of LOG, or None."""
    found = [line.strip() for line in log_tail(log, lines).splitlines() if ERROR_LINE.match(line.strip())]
    return found[-1] if found else None
