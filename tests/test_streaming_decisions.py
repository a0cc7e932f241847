"""What streaming decides, on a fake clock with fake OpenCompass runs (the real ones are in
test_streaming.py): a finished dataset is judged while inference goes on only if the inference
still to come outlasts an evaluation's start-up (OpenCompass's own start until its first
answer); one still starting when inference ends is stopped; one holding a key the shared judge
no longer takes is stopped."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from lmeval.processes import Stopped
from lmeval.streaming import Pace, StreamedJudging


def started_after_30_s_then_2_answers_a_second() -> Pace:
    pace = Pace(began=0.0)
    pace.observe(0, 10.0)
    pace.observe(1, 30.0)  # the first answer: 30 s of start-up
    pace.observe(21, 40.0)  # 20 more in 10 s
    return pace


def test_the_answers_still_to_come_are_weighed_against_the_start_up():
    pace = started_after_30_s_then_2_answers_a_second()
    assert pace.start_up == 30.0
    assert pace.outlasts_start_up(61)  # 30.5 s of inference still to come
    assert not pace.outlasts_start_up(59)  # 29.5 s: the eval stage would start as soon


def test_a_dataset_not_begun_yet_means_more_to_come():
    assert started_after_30_s_then_2_answers_a_second().outlasts_start_up(None)


def test_nothing_left_to_infer_never_pays():
    pace = Pace(began=0.0)
    pace.observe(20, 25.0)  # every answer at once: no rate
    assert not pace.outlasts_start_up(0)


def test_nothing_is_held_back_before_the_pace_is_known():
    pace = Pace(began=0.0)
    pace.observe(0, 25.0)
    assert pace.start_up is None
    assert pace.outlasts_start_up(1)
    assert not pace.still_starting(since=20.0, now=21.0)
    pace.observe(3, 30.0)  # the first answers, at one moment: no rate yet
    assert pace.outlasts_start_up(1)


def test_an_evaluation_younger_than_the_start_up_is_still_starting():
    pace = started_after_30_s_then_2_answers_a_second()
    assert pace.still_starting(since=100.0, now=129.0)
    assert not pace.still_starting(since=100.0, now=131.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeEvaluationRun:
    name = "OpenCompass eval"
    argv = ["opencompass", "streamed_eval_config.py", "-m", "eval"]

    def __init__(self) -> None:
        self.code: int | None = None
        self.polls = 0

    def start(self) -> None:
        pass

    def poll(self) -> int | None:
        self.polls += 1
        assert self.polls < 20, "polled on and on: nothing ends this evaluation"  # fail, never hang
        return self.code

    def stop(self) -> Stopped:
        self.code = -15
        return Stopped(3)


@dataclass
class FakeEvaluation:
    """What StreamedJudging uses of lmeval.stages.Evaluation; it keeps what it was asked."""

    run_dir: Path
    lines: list[str] = field(default_factory=list)
    runs: list[tuple[list[str], FakeEvaluationRun]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.plan = SimpleNamespace(run_dir=self.run_dir, model_abbr="m", abbrs=["first", "second"], target=None,
                                    work_dir=self.run_dir.parent)
        self.app = SimpleNamespace(info=self.lines.append, checkpoint=lambda: None,
                                   stopped=lambda what, stopped, work_dir: self.lines.append(f"stopped {what}"))

    def wait(self, judge):
        return judge.served

    def render(self, stage, target, judge, datasets, path):
        self.datasets = datasets
        return path

    def opencompass(self, stage, config, log_name):
        run = FakeEvaluationRun()
        self.runs.append((self.datasets, run))
        return run

    def inferred(self, name: str, completed: int, total: int) -> None:
        """OpenCompass's counts for NAME; its predictions once all are answered."""
        status = self.run_dir / "infer_status" / "m" / f"{name}.json"
        status.parent.mkdir(parents=True, exist_ok=True)
        status.write_text(json.dumps({"status": "running", "completed": completed, "total": total}))
        if completed == total:
            predictions = self.run_dir / "predictions" / "m" / f"{name}.json"
            predictions.parent.mkdir(parents=True, exist_ok=True)
            predictions.write_text("{}")


def judge_endpoint() -> SimpleNamespace:
    """What StreamedJudging uses of the judge's lmeval.endpoint.Endpoint: ready, never ending."""
    return SimpleNamespace(first_exit=lambda: None, servers=[], served=SimpleNamespace(api_key="key-1"))


def streaming(tmp_path, judge=None, second: int = 100) -> tuple[FakeEvaluation, StreamedJudging, Clock]:
    """OpenCompass answers first after 30 s, then 2 answers a second; FIRST (40) is done at 50 s,
    with SECOND - 2 answers still to come (100: 49 s of inference, more than the start-up)."""
    evaluation, clock = FakeEvaluation(tmp_path / "run"), Clock()
    streamed = StreamedJudging(evaluation, judge or judge_endpoint(), clock=clock)
    total_second = second
    for now, first, second in ((10, 0, None), (30, 1, None), (50, 40, 2)):
        clock.now = now
        evaluation.inferred("first", first, 40)
        if second is not None:
            evaluation.inferred("second", second, total_second)
        streamed.poll()
    return evaluation, streamed, clock


def test_a_finished_dataset_is_judged_while_more_than_a_start_up_of_inference_is_left(tmp_path):
    evaluation, _, _ = streaming(tmp_path)
    assert [datasets for datasets, _ in evaluation.runs] == [["first"]]


def test_a_finished_dataset_waits_for_the_eval_stage_when_inference_ends_sooner(tmp_path):
    evaluation, streamed, clock = streaming(tmp_path, second=50)  # 48 answers to come: 24 s
    assert evaluation.runs == []
    assert evaluation.lines == ["eval of first with the eval stage: inference ends sooner than an evaluation "
                                "would start"]
    clock.now = 51
    streamed.poll()
    assert len(evaluation.lines) == 1  # said once


def test_an_evaluation_still_starting_when_inference_ends_is_left_to_the_eval_stage(tmp_path):
    evaluation, streamed, clock = streaming(tmp_path)
    [(_, run)] = evaluation.runs
    clock.now = 75  # inference ended 25 s into the evaluation's 30 s start-up
    streamed.drain()
    assert run.code == -15
    assert evaluation.lines == ["eval of first while inference goes on: opencompass streamed_eval_config.py -m eval",
                                "eval of first with the eval stage: it was still starting",
                                "stopped OpenCompass eval"]


def test_an_evaluation_past_its_start_up_is_let_end(tmp_path):
    evaluation, streamed, clock = streaming(tmp_path)
    [(_, run)] = evaluation.runs
    clock.now = 81
    run.code = 0  # it ends as drain waits
    streamed.drain()
    assert evaluation.lines[-1] == "eval of first while inference goes on: opencompass streamed_eval_config.py -m eval"
    assert streamed.stopped


def test_an_evaluation_holding_the_key_of_a_judge_another_run_restarted_is_stopped(tmp_path):
    shared = judge_endpoint()
    evaluation, streamed, clock = streaming(tmp_path, shared)
    [(_, run)] = evaluation.runs
    shared.served = SimpleNamespace(api_key="key-2")  # another run of the sweep restarted it
    clock.now = 52
    streamed.poll()
    assert run.code == -15
    assert evaluation.lines[-1] == "stopped OpenCompass eval"
    assert streamed.stopped  # the eval stage judges first, with the new key


def test_the_start_up_counts_from_when_the_inference_process_began(tmp_path):
    """Asked for at 0 s, the inference process began at 25 s (the fork server was importing
    OpenCompass), its first answer at 30 s: a start-up of 5 s, so with 24 s of inference left
    (second: 48 answers to come) first is judged meanwhile."""
    evaluation, clock = FakeEvaluation(tmp_path / "run"), Clock()
    streamed = StreamedJudging(evaluation, judge_endpoint(), clock=clock)
    inference = SimpleNamespace(began=None)
    for now, began, first, second in ((10, None, 0, None), (26, 25.0, 0, None), (30, 25.0, 1, None),
                                      (50, 25.0, 40, 2)):
        clock.now, inference.began = now, began
        evaluation.inferred("first", first, 40)
        if second is not None:
            evaluation.inferred("second", second, 50)
        streamed.poll(inference)
    assert streamed.pace.start_up == 5.0
    assert [datasets for datasets, _ in evaluation.runs] == [["first"]]
