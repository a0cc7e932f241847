"""The sweep's scheduling with fake runs (no process): which run starts when, on which GPU group,
and how one run's interrupt or failure reaches the others. The real runs are in test_sweep.py."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from lmeval import sweep
from lmeval.app import Application
from lmeval.exceptions import StageFailed, UsageError
from lmeval.options import EvalOptions

WAIT = 10.0  # seconds a fake run waits for the test at most (a hang fails, never blocks)


@dataclass
class FakePlan:
    model_abbr: str
    run_id: str


@dataclass
class Script:
    """What the fake runs did, and the test's hand on them."""

    started: list[str] = field(default_factory=list)
    free_gpus: dict[str, threading.Event] = field(default_factory=dict)  # set by the test
    finish: dict[str, threading.Event] = field(default_factory=dict)
    behaviour: dict[str, str] = field(default_factory=dict)  # "interrupt", "fail", "wait-for-interrupt"
    interrupted: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fake_evaluation(self, app, plan, shared, gpus_free, forks):
        script = self

        class Fake:
            def execute(self, phase):
                with script.lock:
                    script.started.append(plan.model_abbr)
                behaviour = script.behaviour.get(plan.model_abbr, "")
                if behaviour == "interrupt":
                    raise KeyboardInterrupt
                if behaviour == "fail":
                    raise StageFailed(f"{plan.model_abbr} broke")
                if behaviour == "wait-for-interrupt":
                    try:
                        for _ in range(int(WAIT / 0.01)):
                            app.checkpoint()
                            threading.Event().wait(0.01)
                    except KeyboardInterrupt:
                        threading.Event().wait(1)  # stopping its servers takes a while
                        script.interrupted.append(plan.model_abbr)
                        raise
                    return 0
                assert script.free_gpus[plan.model_abbr].wait(WAIT)
                gpus_free.set()
                assert script.finish[plan.model_abbr].wait(WAIT)
                return 0

        return Fake()


@pytest.fixture
def script(monkeypatch):
    made = Script()
    monkeypatch.setattr(sweep, "Evaluation", made.fake_evaluation)
    return made


def plans(*names: str) -> list[FakePlan]:
    return [FakePlan(name, f"run-{name}") for name in names]


def wait_until(condition, what: str) -> None:
    for _ in range(int(WAIT / 0.01)):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"never happened: {what}")


def test_each_gpu_group_takes_its_models_in_order_once_the_one_before_freed_the_gpus(script):
    names = ("a", "b", "c", "d", "e")
    for name in names:
        script.free_gpus[name], script.finish[name] = threading.Event(), threading.Event()
    runs = sweep.Sweep(Application(), plans(*names), None, groups=2)  # a, c, e on group 0; b, d on 1
    raised: list[BaseException] = []

    def run_phase():
        try:
            runs.run_phase(("infer", "eval"))
        except BaseException as error:  # noqa: BLE001 - asserted below
            raised.append(error)

    phase = threading.Thread(target=run_phase)
    phase.start()
    wait_until(lambda: sorted(script.started) == ["a", "b"], "a and b start at once")
    script.free_gpus["a"].set()  # a is judged on; c may load meanwhile
    wait_until(lambda: "c" in script.started, "c starts once a freed group 0")
    assert "d" not in script.started  # b still holds group 1
    script.free_gpus["b"].set()  # b is judged on; d may load meanwhile
    wait_until(lambda: "d" in script.started, "d starts once b freed group 1")
    assert "e" not in script.started
    for name in names:
        script.free_gpus[name].set()
        script.finish[name].set()
    phase.join(WAIT)
    assert not phase.is_alive() and raised == []
    assert script.started.index("e") > script.started.index("c")
    assert runs.failed == set()


def test_an_interrupt_in_one_run_stops_the_others_and_is_raised_once_they_stopped(script):
    script.behaviour.update(a="interrupt", b="wait-for-interrupt")
    runs = sweep.Sweep(Application(), plans("a", "b", "c"), None, groups=2)
    with pytest.raises(KeyboardInterrupt):
        runs.run_phase(("infer", "eval"))
    assert script.interrupted == ["b"]  # raised only once b had stopped
    assert "c" not in script.started  # never started once the command was stopping


def test_a_failed_run_is_named_and_the_others_go_on(script, capsys):
    script.behaviour.update(a="fail")
    script.free_gpus["b"], script.finish["b"] = threading.Event(), threading.Event()
    script.free_gpus["b"].set()
    script.finish["b"].set()
    runs = sweep.Sweep(Application(), plans("a", "b"), None, groups=1)
    runs.run_phase(("infer", "eval"))
    assert runs.failed == {"run-a"}
    assert script.started == ["a", "b"]
    assert "lmeval: warning: a (run run-a) failed: a broke\n" in capsys.readouterr().err


@pytest.mark.parametrize(("gpus", "tp", "replicas", "groups"), [
    ("0,1,2,3", 1, 1, ["0", "1", "2"]),  # no more groups than models
    ("0,1,2,3", 2, 1, ["0,1", "2,3"]),
    ("0,1,2,3", 1, 2, ["0,1", "2,3"]),
    ("0,1,2,3", None, 1, ["0,1,2,3"]),  # --tp not given: every GPU is one model's
    ("0,1,2", 2, 1, ["0,1,2"]),  # not a multiple: checked as for one model
    (None, 1, 1, [None]),
])
def test_gpu_groups(gpus, tp, replicas, groups):
    option = EvalOptions(model="m", gpus=gpus, tp=tp, replicas=replicas)
    assert sweep.gpu_groups(option, 3) == groups


def test_a_port_of_models_going_at_once_is_refused():
    with pytest.raises(UsageError, match="--port 9000 would be the port of 2 models going at once"):
        sweep.gpu_groups(EvalOptions(model="m", gpus="0,1", tp=1, port=9000), 2)
