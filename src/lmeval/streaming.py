"""Judging that streams behind inference. OpenCompass's one inference task goes through a run's
datasets one after the other and writes each dataset's predictions when that dataset is done;
while the next ones are inferred, an OpenCompass evaluation of the finished datasets alone,
in the same run folder, judges them. A run then takes about max(inference, judging) instead of
their sum. The eval stage that follows finds their results (OpenCompass skips a dataset that
has them), scores what is left and writes the summary of all of them.

Only when the judge has GPUs of its own, so it loads while the model infers. A judge that dies
meanwhile stops the streaming; the stage after inference says so, as before.
"""

from __future__ import annotations

import shlex
import time
from typing import TYPE_CHECKING

from lmeval import outputs
from lmeval.configgen import ServedModel
from lmeval.fleet import RunningSet
from lmeval.ocrun import OpenCompassRun
from lmeval.readiness import port_open

if TYPE_CHECKING:
    from lmeval.stages import Evaluation

POLL_SECONDS = 0.2


class StreamedJudging:
    """One OpenCompass evaluation at a time, of the datasets whose predictions are complete and
    that no evaluation had yet."""

    def __init__(self, evaluation: Evaluation, judge: RunningSet, served: ServedModel) -> None:
        self.evaluation = evaluation
        self.judge = judge
        self.served = served  # as OpenCompass reaches it; set again once it is ready
        self.ready = False
        self.running: OpenCompassRun | None = None
        self.batch: list[str] = []  # the datasets of the running evaluation
        self.handed: set[str] = set()  # datasets an evaluation had
        self.evaluations = 0
        self.stopped = False

    def poll(self) -> None:
        """Called while inference runs: once the judge is ready, judge what is complete."""
        if self.stopped:
            return
        if self.judge.first_exit():
            self.stop()  # the stage after inference names the judge and how it ended
            return
        if self.running is not None:
            if self.running.poll() is None:
                return
            self.finished()
        if not self.ready:
            if not all(port_open(*server.address) for server in self.judge.servers if server.address):
                return  # still loading: never wait for it while inference goes on
            self.served = self.evaluation.wait(self.judge, self.served)
            self.ready = True
        plan = self.evaluation.plan
        done = [name for name in plan.abbrs if name not in self.handed
                and outputs.predictions_file(plan.run_dir, plan.model_abbr, name).is_file()]
        if done:
            self.start(done)

    def start(self, datasets: list[str]) -> None:
        evaluation, plan = self.evaluation, self.evaluation.plan
        shared = evaluation.shared_judge
        if shared is not None and shared.served is not None:
            self.served = shared.served  # another run of the sweep restarted it: its key now
        self.handed.update(datasets)
        self.batch = datasets
        self.evaluations += 1
        config = evaluation.render("eval", plan.target, self.served, datasets,
                                   plan.run_dir / "lmeval" / "streamed_eval_config.py")
        self.running = evaluation.opencompass("eval", config, f"opencompass_eval_streamed{self.evaluations}.log")
        evaluation.app.info(f"eval of {', '.join(datasets)} while inference goes on: {shlex.join(self.running.argv)}")
        self.running.start()

    def finished(self) -> None:
        plan = self.evaluation.plan
        scored = [name for name in self.batch if not outputs.result_error(plan.run_dir, plan.model_abbr, name)]
        if scored:
            self.evaluation.app.info(f"scored {', '.join(scored)}")
        self.running, self.batch = None, []

    def drain(self) -> None:
        """After inference: let the running evaluation end (the eval stage must not judge its
        datasets a second time beside it), watching the judge."""
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
