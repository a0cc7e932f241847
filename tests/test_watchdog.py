"""The stall watchdog's decision (lmeval.watchdog.HealthWatch) with a fake clock and a scripted
/health: fast, no server."""

from __future__ import annotations

from lmeval.watchdog import HealthWatch


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def watch_of(answers: list[bool], stall: float = 10.0) -> tuple[HealthWatch, Clock, list[float]]:
    """A watch whose probes answer ANSWERS in turn (True: healthy), and when each probe ran."""
    clock, asked = Clock(), []

    def probe() -> bool:
        asked.append(clock.now)
        return answers.pop(0)

    return HealthWatch(stall, probe, clock=clock, every=2.0), clock, asked


def test_a_server_unhealthy_on_end_for_the_timeout_is_stalled():
    watch, clock, asked = watch_of([True] + [False] * 10)
    seen = []
    for moment in range(0, 16):
        clock.now = float(moment)
        seen.append(watch.stalled_for())
    assert asked == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]  # at most every 2 s
    assert seen[:12] == [None] * 12  # unhealthy since 2 s: not yet 10 s
    assert seen[12:] == [10.0, 11.0, 12.0, 13.0]


def test_one_healthy_answer_starts_the_count_again():
    watch, clock, _ = watch_of([False, False, False, True, False, False, False, False, False, False, False])
    stalled = []
    for moment in range(0, 22, 2):
        clock.now = float(moment)
        stalled.append(watch.stalled_for())
    assert stalled == [None] * 9 + [10.0, 12.0]  # failing from 0 to 4, healthy at 6, failing from 8 on


def test_a_healthy_server_is_never_stalled():
    watch, clock, asked = watch_of([True] * 100)
    for moment in range(0, 200):
        clock.now = float(moment)
        assert watch.stalled_for() is None
    assert len(asked) == 100
