"""Stopping, without real servers: the signal policy (lmeval.signals) with a fake clock and
signals sent to this process, ServerGroup with fake servers, and what the Application says
about what a stop left running."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import typer

from lmeval import signals
from lmeval.app import Application
from lmeval.launch import ServerGroup
from lmeval.processes import Stopped


class FakeClock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self.at: dict[float, object] = {}  # moment -> action run when time passes it

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        for moment in sorted(self.at):
            if moment <= self.now:
                self.at.pop(moment)()


def ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture
def notices():
    said: list[str] = []
    with signals.interrupts_handled(notify=said.append):
        yield said


def test_wait_ends_when_done_or_at_the_deadline(notices):
    clock = FakeClock()
    polls = iter([False, False, True])
    assert signals.wait(lambda: next(polls), 5, lambda: "x", clock=clock, sleep=clock.sleep) is True
    assert clock.now == pytest.approx(100.02)
    assert signals.wait(lambda: False, 5, lambda: "x", clock=clock, sleep=clock.sleep) is False
    assert clock.now == pytest.approx(105.02)
    assert notices == []


def test_first_ctrl_c_interrupts_and_later_ones_are_answered_then_end_the_waiting(notices):
    clock = FakeClock()
    with pytest.raises(KeyboardInterrupt):
        ctrl_c()
    clock.at[101.0] = ctrl_c  # the second: answered with what the wait waits for
    clock.at[102.0] = ctrl_c  # the third: the wait gives up, leaving the killed a moment
    assert signals.wait(lambda: False, 30, lambda: "the target server (pid 7)", clock=clock,
                        sleep=clock.sleep) is False
    assert clock.now == pytest.approx(102.0 + signals.SETTLE_SECONDS, abs=0.02)
    assert notices == [
        "still stopping: waiting 1 s so far for the target server (pid 7); press Ctrl-C again to stop waiting "
        "and leave them to `lmeval cleanup`",
        "stopped waiting for the target server (pid 7)",
    ]
    assert signals.gave_up()
    # Every later wait grants the settling moment only.
    start = clock.now
    assert signals.wait(lambda: False, 30, lambda: "y", clock=clock, sleep=clock.sleep) is False
    assert clock.now - start == pytest.approx(signals.SETTLE_SECONDS, abs=0.02)


def test_a_shield_holds_the_first_ctrl_c_until_it_ends(notices):
    clock = FakeClock()
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with signals.shielded():
            clock.at[100.5] = ctrl_c
            with signals.shielded():  # nested shields are one
                assert signals.wait(lambda: False, 1, lambda: "the judge server", clock=clock,
                                    sleep=clock.sleep) is False
            reached.append("the end of the outer shield")
    assert reached == ["the end of the outer shield"]
    assert notices == []  # the interrupt itself is the answer to the first Ctrl-C


@pytest.mark.usefixtures("notices")
def test_sigterm_is_an_interrupt_named_sigterm():
    with pytest.raises(signals.Terminated) as caught:
        os.kill(os.getpid(), signal.SIGTERM)
    assert signals.interrupt_name(caught.value) == "SIGTERM"


class FakeServer:
    def __init__(self, role: str, log: list[str], left: tuple = (), fail_save: bool = False) -> None:
        self.role, self.log, self.left, self.fail_save = role, log, left, fail_save
        self.popen = object()

    @property
    def name(self) -> str:
        return f"{self.role} server"

    def stop(self, grace: float) -> Stopped:
        self.log.append(f"stop {self.role} {grace:g}")
        return Stopped(ended=2, left=self.left)

    def save_state(self, stopped: bool) -> None:
        if self.fail_save:
            raise OSError(28, "No space left on device")
        self.log.append(f"saved {self.role} stopped={stopped}")


class Report:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, text: str) -> None:
        self.lines.append(text)

    def warn(self, text: str) -> None:
        self.lines.append(f"warning: {text}")

    def stopped(self, what: str, stopped: Stopped, work_dir: Path) -> None:
        self.lines.append(f"{what}: {stopped.ended} ended, left {list(stopped.left)} ({work_dir})")


def group_of(*servers: FakeServer) -> tuple[ServerGroup, Report]:
    report = Report()
    group = ServerGroup(Path("/bin/lmdeploy"), Path("/w/RUN/servers"), report, grace=3)
    group.servers.extend(servers)
    return group, report


def test_every_server_is_stopped_whatever_one_raises_then_the_error():
    log: list[str] = []
    group, report = group_of(FakeServer("target", log), FakeServer("judge", log, fail_save=True),
                             FakeServer("judge-proxy", log))
    with pytest.raises(OSError, match="No space left"):
        with group:
            pass
    assert log == ["stop judge-proxy 3", "saved judge-proxy stopped=True", "stop judge 3", "stop target 3",
                   "saved target stopped=True"]
    assert group.servers == []
    assert report.lines == ["judge-proxy server: 2 ended, left [] (/w)", "judge server: 2 ended, left [] (/w)",
                            "target server: 2 ended, left [] (/w)"]


def test_an_error_on_its_way_out_wins_and_the_stop_problem_is_shown():
    log: list[str] = []
    group, report = group_of(FakeServer("target", log, fail_save=True))
    with pytest.raises(RuntimeError, match="the stage failed"):
        with group:
            raise RuntimeError("the stage failed")
    assert report.lines[-1] == "warning: while stopping the servers: OSError: [Errno 28] No space left on device"


def test_a_server_left_running_is_recorded_as_not_stopped():
    log: list[str] = []
    group, report = group_of(FakeServer("target", log, left=("pid 41 (disk-sleep)",)))
    with group:
        pass
    assert log == ["stop target 3", "saved target stopped=False"]
    assert report.lines == ["target server: 2 ended, left ['pid 41 (disk-sleep)'] (/w)"]


def run_app(command, capsys) -> tuple[int, list[str]]:
    app = Application()
    with pytest.raises(typer.Exit) as exited:
        app.run(command)
        raise typer.Exit(0)
    return exited.value.exit_code, capsys.readouterr().err.splitlines()


def test_the_last_line_names_what_is_still_running(capsys):
    def interrupted(app: Application) -> int:
        app.stopped("judge server", Stopped(ended=3), Path("/w"))
        app.stopped("target server", Stopped(ended=2, left=("pid 41 (disk-sleep)", "pid 42 (running)")), Path("/w"))
        raise KeyboardInterrupt

    code, lines = run_app(interrupted, capsys)
    assert code == 130
    assert lines == [
        "lmeval: stopped judge server (3 processes ended)",
        "lmeval: warning: target server: 2 processes ended; still running: pid 41 (disk-sleep), pid 42 (running)",
        "lmeval: error: interrupted by Ctrl-C; still running: pid 41 (disk-sleep) of the target server, pid 42 "
        "(running) of the target server; end them with `lmeval cleanup -w /w` once they can be killed",
    ]


def test_all_stopped_is_said_only_when_true(capsys):
    def interrupted(app: Application) -> int:
        app.stopped("target server", Stopped(ended=2), Path("/w"))
        raise signals.Terminated

    assert run_app(interrupted, capsys) == (130, [
        "lmeval: stopped target server (2 processes ended)",
        "lmeval: error: interrupted by SIGTERM; every server lmeval started has been stopped",
    ])


def test_a_finished_command_that_left_a_process_fails(capsys):
    def finished(app: Application) -> int:
        app.stopped("target server", Stopped(ended=1, left=("pid 41 (disk-sleep)",)), Path("/w"))
        return 0

    code, lines = run_app(finished, capsys)
    assert code == 1
    assert lines[-1] == ("lmeval: error: the command finished, but still running: pid 41 (disk-sleep) of the target "
                         "server; end them with `lmeval cleanup -w /w` once they can be killed")
