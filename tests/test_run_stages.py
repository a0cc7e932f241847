"""What an evaluation does with its endpoints and stages (lmeval.stages.Evaluation.run_stages),
with fake endpoints and a fake stage runner that writes OpenCompass's files the way OpenCompass
writes them (tests/oc_files.py), no process: the order servers start, load, serve and stop in,
what the user is told, and what failed datasets do to the rest. The real runs are in
test_e2e.py, test_streaming.py, test_restarts.py and test_sweep.py."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import SecretStr
from rich.console import Console

from oc_files import MODEL, Asked, write_flat, write_judged, write_predictions
from toolkit import shown_scores
from lmeval.app import Application
from lmeval.configplan import ServedModel
from lmeval.datasets import load_user_dataset
from lmeval.exceptions import StageFailed
from lmeval.manifest import Manifest
from lmeval.stages import Evaluation

TRIVIA = [Asked("capital of France?", "Paris", (True,)), Asked("2+2?", "4", (False,)),
          Asked("largest ocean?", "Pacific", (True,)), Asked("red planet?", "Mars", (True,))]
CHOICES = [Asked("pick A", "A", (True,)), Asked("pick B", "B", (False,))]
QUESTIONS = {"trivia": TRIVIA, "choices": CHOICES}


@dataclass
class FakeEndpoint:
    """An lmeval.endpoint.Endpoint that logs what was asked of it."""

    role: str
    events: list[str]
    served: ServedModel
    running: bool = False

    def ensure_started(self, app, group) -> None:
        if not self.running:
            self.events.append(f"start {self.role}")
            self.running = True

    def wait_ready(self, app, meanwhile=lambda: None, first=False) -> ServedModel:
        meanwhile()
        self.events.append(f"ready {self.role}")
        return self.served

    def stop(self) -> None:
        self.events.append(f"stop {self.role}")
        self.running = False

    def first_exit(self) -> None:
        return None

    def records_copy(self) -> dict:
        return {}

    servers: list = field(default_factory=list)


@dataclass
class FakeRunner:
    """An lmeval.stagerun.StageRunner whose OpenCompass writes the predictions of every dataset
    but those in NO_PREDICTIONS, then their results and the summary."""

    run_dir: Path
    events: list[str]
    no_predictions: set[str] = field(default_factory=set)
    server_failure: None = None
    opencompass_codes: dict = field(default_factory=dict)
    forks: None = None

    def run(self, stage, endpoint, abbrs=None, meanwhile=lambda oc: None) -> None:
        names = abbrs or list(QUESTIONS)
        self.events.append(f"{stage} {','.join(names)} on {endpoint.role if endpoint else 'no server'}")
        if stage == "infer":
            for name in names:
                if name not in self.no_predictions:
                    write_predictions(self.run_dir, name, QUESTIONS[name])
            return
        rows = []
        for name in names:
            (write_judged if name == "trivia" else write_flat)(self.run_dir, name, QUESTIONS[name])
            right = [question.right[0] for question in QUESTIONS[name]]
            rows.append(f"{name},abc,accuracy,gen,{100 * sum(right) / len(right):.2f}")
        summary = self.run_dir / "summary" / "summary_20261208_000000.csv"
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text("\n".join([f"dataset,version,metric,mode,{MODEL}", *rows]) + "\n")

    def render(self, *args, **kwargs) -> Path:
        return self.run_dir / "config.py"


def served(role: str) -> ServedModel:
    return ServedModel(base_url=f"http://127.0.0.1:2333{role == 'judge'}", api_key=SecretStr(f"sk-{role}"),
                       served_name=role, tokenizer_path="/models/tok", in_flight=8)


@dataclass
class Run:
    evaluation: Evaluation
    events: list[str]
    out: io.StringIO
    err: io.StringIO

    def stages(self, *stages: str, infer: bool = True) -> None:
        self.evaluation.run_stages(None, stages, infer)

    @property
    def manifest(self) -> Manifest:
        return Manifest.load(self.evaluation.plan.run_dir)


def evaluation(tmp_path, *, judge_own_gpus: bool = True, shared_judge: bool = False,
               no_predictions: set[str] = frozenset()) -> Run:
    data = tmp_path / "data"
    data.mkdir(parents=True)
    (data / "trivia.jsonl").write_text("".join(f'{{"question": "{q.prompt}", "answer": "{q.gold}"}}\n' for q in TRIVIA))
    (data / "choices.jsonl").write_text("".join(
        f'{{"question": "{q.prompt}", "A": "a", "B": "b", "answer": "{q.gold}"}}\n' for q in CHOICES))
    run_dir = tmp_path / "out" / "20261208_000000"
    run_dir.mkdir(parents=True)
    judge_set = SimpleNamespace(gpus=(1,) if judge_own_gpus else (0,))
    plan = SimpleNamespace(
        run_dir=run_dir, work_dir=run_dir.parent, run_id=run_dir.name, model_abbr=MODEL,
        datasets=(load_user_dataset(data / "trivia.jsonl"), load_user_dataset(data / "choices.jsonl")),
        abbrs=list(QUESTIONS), manifest=Manifest(run_id=run_dir.name, model_abbr=MODEL),
        target=served("target"), judge=served("judge"), target_set=SimpleNamespace(gpus=(0,)), judge_set=judge_set,
        gpus_overlap=not judge_own_gpus, stream=False, restarts=1, ready_timeout=60.0)
    app = Application()
    out, err = io.StringIO(), io.StringIO()
    app.out, app.err = Console(file=out, width=200), Console(file=err, width=200)
    events: list[str] = []
    judge = FakeEndpoint("judge", events, plan.judge)
    made = Evaluation(app, plan, judge if shared_judge else None)
    made.target, made.judge = FakeEndpoint("target", events, plan.target), judge
    made.runner = FakeRunner(run_dir, events, set(no_predictions))
    made.preflight = SimpleNamespace(check=lambda: None, poll=lambda: 0, name="preflight")
    return Run(made, events, out, err)


def test_a_judge_with_gpus_of_its_own_loads_during_inference_and_each_server_stops_when_done(tmp_path):
    run = evaluation(tmp_path)
    run.stages("infer", "eval")
    assert run.events == ["start target", "start judge", "ready target", "infer trivia,choices on target",
                          "stop target", "ready judge", "eval trivia,choices on judge", "stop judge"]
    assert shown_scores(run.out.getvalue()) == {"trivia": 75.0, "choices": 50.0}
    assert run.manifest.stages["infer"].status == run.manifest.stages["eval"].status == "ok"
    assert {score["dataset"]: score["value"] for score in run.manifest.scores} == {"trivia": 75.0, "choices": 50.0}
    assert run.err.getvalue().splitlines()[-1] == (
        f"lmeval: every prompt, answer and judge reply: lmeval report {run.evaluation.plan.run_id} "
        f"-w {run.evaluation.plan.work_dir}")


def test_a_judge_on_the_models_gpus_starts_once_the_model_left_them(tmp_path):
    run = evaluation(tmp_path, judge_own_gpus=False)
    run.stages("infer", "eval")
    assert run.events == ["start target", "ready target", "infer trivia,choices on target", "stop target",
                          "start judge", "ready judge", "eval trivia,choices on judge", "stop judge"]


def test_inference_alone_prints_the_run_id_and_the_judge_command(tmp_path):
    run = evaluation(tmp_path)
    run.stages("infer")
    assert run.events == ["start target", "ready target", "infer trivia,choices on target", "stop target"]
    plan = run.evaluation.plan
    assert run.out.getvalue() == f"{plan.run_id}\n"
    assert run.err.getvalue().splitlines()[-1] == (
        f"lmeval: inference done; judge it with: lmeval judge --reuse {plan.run_id} -w {plan.work_dir}")


def test_predictions_already_complete_start_no_model_server(tmp_path):
    run = evaluation(tmp_path)
    run.stages("infer", "eval", infer=False)
    assert run.events == ["start judge", "ready judge", "eval trivia,choices on judge", "stop judge"]
    assert "infer: every dataset already has predictions; skipping inference" in run.err.getvalue()
    assert run.manifest.stages["infer"].status == "ok"


def test_a_dataset_without_predictions_fails_and_the_others_are_still_scored(tmp_path):
    run = evaluation(tmp_path, no_predictions={"trivia"})
    with pytest.raises(StageFailed) as failed:
        run.stages("infer", "eval")
    assert failed.value.message.startswith("inference failed for trivia: no predictions written; see the log below, "
                                           f"then rerun the same command with --reuse {run.evaluation.plan.run_id}")
    assert run.events[-2:] == ["eval choices on judge", "stop judge"]  # the eval stage scored what was inferred
    assert {score["dataset"]: score["value"] for score in run.manifest.scores} == {"choices": 50.0}
    assert run.manifest.stages["infer"].status == "failed" and run.manifest.stages["eval"].status == "ok"


def test_no_prediction_at_all_fails_before_any_judge_starts(tmp_path):
    run = evaluation(tmp_path, judge_own_gpus=False, no_predictions={"trivia", "choices"})
    with pytest.raises(StageFailed, match="^inference failed for trivia, choices"):
        run.stages("infer", "eval")
    assert "start judge" not in run.events


def test_a_sweeps_judge_is_left_running_for_the_other_runs(tmp_path):
    run = evaluation(tmp_path, shared_judge=True)
    run.stages("infer", "eval")
    assert "stop judge" not in run.events and run.events[-1] == "eval trivia,choices on judge"
    inferred_only = evaluation(tmp_path / "second", shared_judge=True)
    inferred_only.stages("infer")
    assert inferred_only.out.getvalue() == ""  # in a sweep the judging follows: no run id, no judge command
