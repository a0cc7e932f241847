"""Judging that streams behind inference. OpenCompass's one inference task goes through a run's
datasets one after the other and writes each dataset's predictions when that dataset is done;
while the next ones are inferred, an OpenCompass evaluation of the finished datasets alone,
in the same run folder, judges them. A run then takes about max(inference, judging) instead of
their sum. The eval stage that follows finds their results (OpenCompass skips a dataset that
has them), scores what is left and writes the summary of all of them.

Each evaluation costs an OpenCompass start-up before it judges anything (7-8 s of CPU started
anew, half a minute on 2 busy cores; a second or two forked with --fork-server). So a finished dataset is
only judged meanwhile when the inference still to come outlasts that start-up, and one still
starting once inference ended is stopped: the eval stage judges those datasets with the last
ones, one start-up sooner.

Only when the judge has GPUs of its own, so it loads while the model infers. A judge that dies
meanwhile stops the streaming; the stage after inference says so, as before.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lmeval import outputs
from lmeval.app import Application
from lmeval.configplan import ServedModel
from lmeval.endpoint import Endpoint
from lmeval.ocrun import OpenCompassProcess, OpenCompassRun
from lmeval.plan import EvalPlan
from lmeval.readiness import port_open

POLL_SECONDS = 0.2


class Judging(Protocol):
    """What streamed judging needs of the evaluation it runs beside (lmeval.stages.Evaluation)."""

    app: Application
    plan: EvalPlan

    def render(self, stage: str, target: ServedModel, judge: ServedModel | None, abbrs: list[str] | None = None,
               path: Path | None = None) -> Path: ...

    def opencompass(self, stage: str, config: Path, log_name: str = "") -> OpenCompassRun: ...

    def wait(self, endpoint: Endpoint) -> ServedModel: ...


@dataclass
class Pace:
    """How inference goes, from OpenCompass's counts: its start-up (from its start to its first
    answer), which an evaluation's start-up is about as long as, and its answers a second since.
    Its start is when its process began to run: a fork server may still import OpenCompass
    when inference is asked for, never when an evaluation is."""

    began: float
    first_answer: float | None = None
    answered_first: int = 0  # the answers seen at the first answer
    answered: int = 0
    seen: float = 0.0

    def observe(self, answered: int, now: float) -> None:
        if answered and self.first_answer is None:
            self.first_answer, self.answered_first = now, answered
        self.answered, self.seen = answered, now

    @property
    def start_up(self) -> float | None:
        return None if self.first_answer is None else self.first_answer - self.began

    def outlasts_start_up(self, left: int | None) -> bool:
        """Whether the LEFT answers still to come (None: not known, a dataset has not begun) take
        longer than a start-up; yes while that is not known, no when nothing is left."""
        if left == 0:
            return False
        if left is None or self.first_answer is None or self.seen <= self.first_answer:
            return True
        rate = (self.answered - self.answered_first) / (self.seen - self.first_answer)
        return left > rate * self.start_up

    def still_starting(self, since: float, now: float) -> bool:
        """Whether a process started at SINCE is likely still starting up at NOW."""
        return self.start_up is not None and now - since < self.start_up


class StreamedJudging:
    """One OpenCompass evaluation at a time, of the datasets whose predictions are complete and
    that no evaluation had yet."""

    def __init__(self, evaluation: Judging, judge: Endpoint, clock: Callable[[], float] = time.monotonic) -> None:
        self.evaluation = evaluation
        self.clock = clock
        self.pace = Pace(clock())  # made just before the inference starts
        self.judge = judge
        self.served = judge.served  # as the running evaluation reaches it; set again once it is ready
        self.ready = False
        self.running: OpenCompassRun | None = None
        self.running_since = 0.0
        self.batch: list[str] = []  # the datasets of the running evaluation
        self.deferred: set[str] = set()  # left to the eval stage: inference ends sooner than an evaluation starts
        self.handed: set[str] = set()  # datasets an evaluation had
        self.evaluations = 0
        self.stopped = False

    def poll(self, inference: OpenCompassProcess | None = None) -> None:
        """Called while INFERENCE runs: once the judge is ready, judge what is complete."""
        if self.stopped:
            return
        if inference is not None and inference.began is not None and self.pace.first_answer is None:
            self.pace.began = inference.began  # the first inference's (a restart's starts later)
        left = self.observe_inference()
        if self.judge.first_exit():
            self.stop()  # the stage after inference names the judge and how it ended
            return
        if self.running is not None:
            if self.judge_restarted():
                self.stop()  # its OpenCompass holds the old key: the eval stage judges its datasets
                return
            if self.running.poll() is None:
                return
            self.finished()
        if not self.ready:
            if not all(port_open(*server.address) for server in self.judge.servers if server.address):
                return  # still loading: never wait for it while inference goes on
            self.served = self.evaluation.wait(self.judge)
            self.ready = True
        plan = self.evaluation.plan
        done = [name for name in plan.abbrs if name not in self.handed
                and outputs.predictions_complete(outputs.predictions_file(plan.run_dir, plan.model_abbr, name))]
        if not done:
            return
        if self.pace.outlasts_start_up(left):
            self.start(done)
        elif not self.deferred.issuperset(done):
            self.deferred.update(done)
            self.evaluation.app.info(f"eval of {', '.join(done)} with the eval stage: inference ends sooner "
                                     "than an evaluation would start")

    def judge_restarted(self) -> bool:
        """Whether another run of the sweep restarted the shared judge (a fresh key) since the
        running evaluation started."""
        return self.judge.served.api_key != self.served.api_key

    def observe_inference(self) -> int | None:
        """Feed the pace with OpenCompass's counts; the answers still to come, None if a
        dataset has not begun."""
        plan = self.evaluation.plan
        answered, left = 0, 0
        for name in plan.abbrs:
            done, total = outputs.progress(plan.run_dir, plan.model_abbr, name)
            answered += done
            if outputs.predictions_complete(outputs.predictions_file(plan.run_dir, plan.model_abbr, name)):
                continue
            left = None if total is None or left is None else left + total - done
        self.pace.observe(answered, self.clock())
        return left

    def start(self, datasets: list[str]) -> None:
        evaluation, plan = self.evaluation, self.evaluation.plan
        self.served = self.judge.served  # another run of the sweep may have restarted it: its key now
        self.handed.update(datasets)
        self.batch = datasets
        self.evaluations += 1
        config = evaluation.render("eval", plan.target, self.served, datasets,
                                   plan.run_dir / "lmeval" / "streamed_eval_config.py")
        self.running = evaluation.opencompass("eval", config, f"opencompass_eval_streamed{self.evaluations}.log")
        evaluation.app.info(f"eval of {', '.join(datasets)} while inference goes on: {shlex.join(self.running.argv)}")
        self.running.start()
        self.running_since = self.clock()

    def finished(self) -> None:
        plan = self.evaluation.plan
        scored = [name for name in self.batch if not outputs.result_error(plan.run_dir, plan.model_abbr, name)]
        if scored:
            self.evaluation.app.info(f"scored {', '.join(scored)}")
        self.running, self.batch = None, []

    def drain(self) -> None:
        """After inference: let the running evaluation end (the eval stage must not judge its
        datasets a second time beside it), watching the judge; one still starting is stopped,
        the eval stage judges its datasets sooner."""
        if self.running is not None and self.running.poll() is None and \
                self.pace.still_starting(self.running_since, self.clock()):
            self.evaluation.app.info(f"eval of {', '.join(self.batch)} with the eval stage: it was still starting")
            self.stop()
            return
        while self.running is not None and self.running.poll() is None:
            if self.judge.first_exit():
                self.stop()
                return
            self.evaluation.app.checkpoint()
            time.sleep(POLL_SECONDS)
        if self.running is not None:
            self.finished()
        self.stopped = True

    def stop(self) -> None:
        """Stop the running evaluation, if any (its datasets are scored by the eval stage)."""
        if self.running is not None and self.running.poll() is None:
            self.evaluation.app.stopped(self.running.name, self.running.stop(), self.evaluation.plan.work_dir)
        self.running, self.batch, self.stopped = None, [], True
