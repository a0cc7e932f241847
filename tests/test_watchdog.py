"""The stall watchdog's decision (lmeval.watchdog.HealthWatch) with a fake clock, a scripted
/health and scripted metrics; and its reading of Prometheus text as LMDeploy serves it: fast,
no server."""

from __future__ import annotations

from lmeval.watchdog import HealthWatch, Load, OpenCompassWatch, parse_load

HEALTH = "its /health failed"
METRICS = "its metrics show requests running and no token generated"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def watch_of(answers: list[bool], loads: list[Load | None] | None = None,
             stall: float = 10.0) -> tuple[HealthWatch, Clock, list[float]]:
    """A watch whose probes answer ANSWERS in turn (True: healthy) and whose metrics say LOADS
    (none: no metrics), and when each probe ran."""
    clock, asked = Clock(), []

    def probe() -> bool:
        asked.append(clock.now)
        return answers.pop(0)

    def load() -> Load | None:
        return loads.pop(0) if loads is not None else None

    return HealthWatch(stall, probe, load, clock=clock, every=2.0), clock, asked


def over(watch: HealthWatch, clock: Clock, moments) -> list:
    seen = []
    for moment in moments:
        clock.now = float(moment)
        seen.append(watch.stalled_for())
    return seen


def test_a_probe_comes_at_least_twice_per_timeout():
    watch, clock, asked = watch_of([True] * 10, stall=1.0)
    over(watch, clock, [0, 0.25, 0.5, 0.75, 1.0])
    assert asked == [0.0, 0.5, 1.0]


def test_a_server_unhealthy_on_end_for_the_timeout_is_stalled():
    watch, clock, asked = watch_of([True] + [False] * 10)
    seen = over(watch, clock, range(0, 16))
    assert asked == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]  # at most every 2 s
    assert seen[:12] == [None] * 12  # unhealthy since 2 s: not yet 10 s
    assert seen[12:] == [(10.0, HEALTH), (10.0, HEALTH), (12.0, HEALTH), (12.0, HEALTH)]  # as the last probe saw


def test_one_healthy_answer_starts_the_count_again():
    watch, clock, _ = watch_of([False, False, False, True, False, False, False, False, False, False, False])
    seen = over(watch, clock, range(0, 22, 2))
    assert seen == [None] * 9 + [(10.0, HEALTH), (12.0, HEALTH)]  # failing from 0 to 4, healthy at 6, from 8 on


def test_a_healthy_server_is_never_stalled():
    watch, clock, asked = watch_of([True] * 100)
    assert over(watch, clock, range(0, 200)) == [None] * 200
    assert len(asked) == 100


def test_requests_running_and_no_token_for_the_timeout_is_stalled_though_healthy():
    loads = [Load(2, 100), Load(2, 140), Load(2, 180)] + [Load(2, 180)] * 8  # tokens stop at 4 s
    watch, clock, _ = watch_of([True] * 11, loads)
    seen = over(watch, clock, range(0, 22, 2))
    assert seen == [None] * 7 + [(10.0, METRICS), (12.0, METRICS), (14.0, METRICS), (16.0, METRICS)]


def test_a_long_generation_or_an_idle_server_is_never_stalled():
    steady = [Load(1, 10 * step) for step in range(100)]  # one answer, tokens always coming
    watch, clock, _ = watch_of([True] * 100, steady)
    assert over(watch, clock, range(0, 200, 2)) == [None] * 100
    # nothing to do for 100 s, then a batch whose first tokens take 8 s (a long prefill), then come
    idle = [Load(0, 500)] * 50 + [Load(3, 500)] * 4 + [Load(3, 520 + 20 * step) for step in range(46)]
    watch, clock, _ = watch_of([True] * 100, idle)
    assert over(watch, clock, range(0, 200, 2)) == [None] * 100  # the idle time does not count


def test_lmdeploys_metrics_are_read_summed_over_labels():
    text = """# HELP lmdeploy:num_requests_running Number of requests running.
# TYPE lmdeploy:num_requests_running gauge
lmdeploy:num_requests_running{model_name="Qwen3 8B",engine="0"} 3.0
lmdeploy:num_requests_running{model_name="Qwen3 8B",engine="1"} 2.0
lmdeploy:num_requests_waiting{model_name="Qwen3 8B"} 1.0
# TYPE lmdeploy:generation_tokens_total counter
lmdeploy:generation_tokens_total{model_name="Qwen3 8B"} 123456.0
lmdeploy:generation_tokens_created{model_name="Qwen3 8B"} 1.7e9
process_cpu_seconds_total 12.5
"""
    assert parse_load(text) == Load(requests=6.0, tokens=123456.0)
    assert parse_load("process_cpu_seconds_total 12.5\n") is None  # metrics, but not LMDeploy's


def oc_watch(cpu: list[float], progress: list[int], idle: list[bool | None], stall: float = 10.0):
    clock = Clock()
    watch = OpenCompassWatch(stall, lambda: cpu.pop(0), lambda: progress.pop(0), lambda: idle.pop(0), clock=clock,
                             every=2.0)
    return watch, clock


def hung(watch, clock, moments) -> list:
    seen = []
    for moment in moments:
        clock.now = float(moment)
        seen.append(watch.hung_for())
    return seen


def test_opencompass_with_no_cpu_no_progress_and_idle_servers_hangs():
    watch, clock = oc_watch([5.0, 5.01] + [5.02] * 9, [3] * 11, [True] * 11)
    assert hung(watch, clock, range(0, 22, 2)) == [None] * 5 + [10.0, 12.0, 14.0, 16.0, 18.0, 20.0]  # nothing since 0


def test_opencompass_working_or_waiting_on_a_server_never_hangs():
    cpu_moving = [float(step) for step in range(11)]
    watch, clock = oc_watch(cpu_moving, [3] * 11, [True] * 11)
    assert hung(watch, clock, range(0, 22, 2)) == [None] * 11
    answers_coming = list(range(11))
    watch, clock = oc_watch([5.0] * 11, answers_coming, [True] * 11)
    assert hung(watch, clock, range(0, 22, 2)) == [None] * 11
    for load in (False, None):  # a server working on its requests (a long generation), or no metrics
        watch, clock = oc_watch([5.0] * 11, [3] * 11, [load] * 11)
        assert hung(watch, clock, range(0, 22, 2)) == [None] * 11
