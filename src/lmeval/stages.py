"""The two stages, inference and judged evaluation, and the runs built from them.

An evaluation holds one endpoint per role (lmeval.endpoint: the target's, the judge's, which a
sweep shares), starts their servers as late as possible and stops them as early as possible, and
always when the command ends, whatever ends it. Each stage is run by lmeval.stagerun and judged
from its files by lmeval.verdicts; the manifest has one writer, lmeval.ledger.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from lmeval import answers, dryrun, outputs, suites, verdicts
from lmeval.app import Application
from lmeval.configplan import ServedModel
from lmeval.endpoint import Endpoint
from lmeval.exceptions import ServerDied, StageFailed, UsageError
from lmeval.forkserver import ForkServer
from lmeval.launch import ServerGroup
from lmeval.ledger import Ledger
from lmeval.manifest import RunLock
from lmeval.ocenv import venv_python
from lmeval.ocrun import OpenCompassRun, Preflight, PreflightFailed
from lmeval.options import EvalOptions
from lmeval.plan import EvalPlan, make_plan
from lmeval.results import print_scores, recorded_answers
from lmeval.runs import move_aside
from lmeval.stagerun import StageRunner
from lmeval.stats import with_stderr
from lmeval.streaming import StreamedJudging

# What `--reuse RUN --redo` moves aside: everything that came from the old settings and that
# OpenCompass would otherwise reuse (predictions, results) or mix in (summaries, logs).
STALE_ENTRIES = ["predictions", "results", "summary", "infer_status", "logs", "lmeval/inputs",
                 "lmeval/infer_config.py", "lmeval/eval_config.py", "lmeval/streamed_eval_config.py",
                 "lmeval/opencompass_infer.log", "lmeval/opencompass_eval.log", "lmeval/opencompass_eval_streamed*.log"]


@contextmanager
def opencompass_forks(app: Application, plan: EvalPlan) -> Iterator[ForkServer | None]:
    """With --fork-server, a fork server in OpenCompass's venv for the block (None if it cannot
    start: OpenCompass's processes then start the usual way), stopped with whatever it forked at
    the end. Without, None."""
    if not plan.fork_server:
        yield None
        return
    forks = ForkServer(venv_python(plan.opencompass), plan.run_dir / "lmeval" / "forkserver.log", plan.run_id)
    try:
        started = forks.start()
        yield forks if started else None
    finally:
        stopped = forks.stop()
        if stopped.left:
            app.stopped("OpenCompass's fork server", stopped, plan.work_dir)


def judge_endpoint(plan: EvalPlan, group: ServerGroup | None = None) -> Endpoint | None:
    """The judge's endpoint, if the run's datasets need one; GROUP: the sweep's, for a judge its
    runs share."""
    if plan.judge is None:
        return None
    return Endpoint("judge", plan.judge_set, plan.judge, plan.restarts, plan.ready_timeout, group)


class Evaluation:
    """One lmeval command (`run`, `infer` or `judge`) over one run folder; in a sweep, one of
    its runs, with the JUDGE endpoint it shares."""

    def __init__(self, app: Application, plan: EvalPlan, judge: Endpoint | None = None,
                 gpus_free: threading.Event | None = None, forks: ForkServer | None = None) -> None:
        self.app = app
        self.plan = plan
        self.forks = forks  # the sweep's; else the run starts its own (--fork-server)
        self.shared = judge is not None  # the sweep's judge: the sweep stops it
        self.target = Endpoint("target", plan.target_set, plan.target, plan.restarts, plan.ready_timeout)
        self.judge = judge or judge_endpoint(plan)
        self.gpus_free = gpus_free  # in a sweep, set once the run's model servers left its GPUs
        self.ledger = Ledger(plan.manifest, plan.run_dir)
        self.runner = StageRunner(app, plan, self.ledger, forks)
        self.preflight: Preflight | None = None  # set when the stages start
        self.waited: set[str] = set()  # the roles whose endpoint this run waited for
        # The datasets the eval stage scores: those inferred, when the inference of others failed.
        self.scope: list[str] | None = None

    @property
    def abbrs(self) -> list[str]:
        return self.plan.abbrs if self.scope is None else self.scope

    # ------------------------------------------------------------ what streaming uses (lmeval.streaming.Judging)

    def render(self, stage: str, target: ServedModel, judge: ServedModel | None, abbrs: list[str] | None = None,
               path: Path | None = None) -> Path:
        return self.runner.render(stage, target, judge, abbrs, path)

    def opencompass(self, stage: str, config: Path, log_name: str = "") -> OpenCompassRun:
        return self.runner.opencompass(stage, config, log_name)

    def wait(self, endpoint: Endpoint) -> ServedModel:
        """Wait until ENDPOINT is ready (an OpenCompass preflight failing meanwhile stops the wait)."""
        try:
            return endpoint.wait_ready(self.app, meanwhile=self.preflight.check if self.preflight else lambda: None,
                                       first=endpoint.role not in self.waited)
        finally:
            self.waited.add(endpoint.role)
            self.ledger.servers(endpoint)

    # ------------------------------------------------------------ commands

    def execute(self, stages: tuple[str, ...]) -> int:
        plan = self.plan
        began = time.monotonic()
        with RunLock(plan.run_dir):  # a dry run too: it writes configs into the run folder
            if plan.dry_run:
                return self.dry_run(stages)
            self.prepare_folder()
            try:
                # The fork server imports OpenCompass while the servers load.
                with nullcontext(self.forks) if self.forks else opencompass_forks(self.app, plan) as forks, \
                        ServerGroup(plan.lmdeploy, plan.run_dir / "servers", self.app, plan.run_id,
                                    plan.grace) as group:
                    self.runner.forks = forks
                    self.ledger.save()
                    self.execute_stages(group, stages)
            finally:
                self.ledger.ended(time.monotonic() - began)
        return 0

    def prepare_folder(self) -> None:
        """Under the lock, before any server starts: move the outputs of other settings aside
        (`--redo`), and copy the dataset files into the run."""
        plan = self.plan
        if plan.redo_reason:
            previous = plan.run_dir / "lmeval.json"
            folder = move_aside(plan.run_dir, STALE_ENTRIES)
            if previous.is_file():
                shutil.copy2(previous, folder / "lmeval.json")
            self.ledger.moved_aside(folder)
            self.app.warn(f"run {plan.run_id} was {plan.redo_reason}: its outputs were moved to {folder}; "
                          "inferring again")
        aside = plan.run_dir / "lmeval" / f"incomplete-{time.strftime('%Y%m%d_%H%M%S')}"
        cut = outputs.set_aside_incomplete(plan.run_dir, plan.model_abbr, plan.abbrs, aside)
        if cut:
            self.app.warn(f"the predictions of {', '.join(cut)} were cut short by an earlier stop (the file does not "
                          f"parse, or OpenCompass's tmp_ file is still there): moved to {aside}; inferring "
                          f"{'it' if len(cut) == 1 else 'them'} again from the answers saved so far")
        self.copy_inputs()
        if plan.parent_dir is not None:
            self.start_from_parent()
        self.ledger.save()

    def start_from_parent(self) -> None:
        """`--retry-truncated`: the answers of the parent run that finished are this run's too."""
        plan, derived = self.plan, self.ledger.manifest.derived_from
        retried = answers.seed_retry(plan.parent_dir, plan.run_dir, plan.model_abbr, plan.abbrs)
        derived["retried"] = retried
        count = sum(len(indices) for indices in retried.values())
        self.app.info(f"run {plan.run_id} from run {derived['run']}: keeping its answers that finished under "
                      f"--max-out-len {derived['max_out_len']}, asking the {count} it cut again with "
                      f"{plan.generation.max_out_len}")

    def copy_inputs(self) -> None:
        """The user's dataset files into the run, each under a temporary name renamed into place:
        a copy cut short is never taken for the file."""
        for source, target in self.plan.copies:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            partial = target.with_name(f".{target.name}.partial")
            shutil.copyfile(source, partial)
            partial.replace(target)

    def execute_stages(self, group: ServerGroup, stages: tuple[str, ...]) -> None:
        """The stages, with OpenCompass's half of them checked while the servers load."""
        infer = "infer" in stages and not self.plan.predictions_complete()
        to_run = ("infer",) * infer + ("eval",) * ("eval" in stages)
        self.preflight = self.start_preflight(to_run)
        try:
            self.run_stages(group, stages, infer)
        except PreflightFailed as error:
            raise verdicts.failed(self.ledger, to_run[0], error) from None
        finally:
            self.stop_preflight()

    def stop_preflight(self) -> None:
        """Stop the preflight if it still runs; said only if that left something running."""
        if self.preflight.poll() is None and (stopped := self.preflight.stop()).left:
            self.app.stopped(self.preflight.name, stopped, self.plan.work_dir)

    def start_preflight(self, stages: tuple[str, ...]) -> Preflight:
        """Start OpenCompass's preflight on the configs of STAGES, written with the servers as
        planned (each stage writes its own again when it starts), and on the local tokenizers.
        It runs while the servers load; a failure stops them at once. Once they are ready, the
        stage itself does what it checks, so it is stopped then: it never delays a stage."""
        plan = self.plan
        configs = [self.render(stage, plan.target, plan.judge if stage == "eval" else None) for stage in stages]
        tokenizers = [plan.target.tokenizer_path] if "infer" in stages else []
        if "eval" in stages and plan.judge is not None:
            tokenizers.append(plan.judge.tokenizer_path)
        preflight = Preflight(plan.opencompass, configs, [t for t in dict.fromkeys(tokenizers) if Path(t).is_dir()],
                              cwd=plan.run_dir / "lmeval" / "opencompass_cwd",
                              log_path=plan.run_dir / "lmeval" / "preflight.log", run_id=plan.run_id,
                              forks=self.runner.forks)
        preflight.start()
        return preflight

    def start(self, group: ServerGroup, endpoint: Endpoint) -> None:
        endpoint.ensure_started(self.app, group)
        self.ledger.servers(endpoint)

    def run_stage(self, stage: str, endpoint: Endpoint | None, **how) -> None:
        """STAGE, once its servers are ready: the preflight's findings by then count, the stage
        itself does the rest of what the preflight checks."""
        self.preflight.check()
        self.stop_preflight()
        self.runner.run(stage, endpoint, **how)

    def run_stages(self, group: ServerGroup, stages: tuple[str, ...], infer: bool) -> None:
        plan = self.plan
        judging = "eval" in stages and self.judge is not None
        infer_failed = None
        if "infer" in stages and not infer:
            self.app.info("infer: every dataset already has predictions; skipping inference")
            self.ledger.stage_skipped("infer")
        if infer:
            # The judge loads during inference when it has GPUs of its own.
            infer_failed = self.infer(group, judge_early=judging and plan.judge_set is not None
                                      and not plan.gpus_overlap)
        if "eval" not in stages:
            if infer_failed:
                raise infer_failed
            if not self.shared:  # in a sweep, the judging follows
                self.app.out.print(f"{plan.run_id}", markup=False)
                self.app.info(f"inference done; judge it with: lmeval judge --reuse {plan.run_id} -w {plan.work_dir}")
            return
        if judging:
            self.start(group, self.judge)
            self.wait(self.judge)
        self.run_stage("eval", self.judge if judging else None, abbrs=self.scope)
        scores, eval_failed = verdicts.evaluation(plan, self.runner, self.ledger, self.abbrs)
        scores = with_stderr(plan.run_dir, self.ledger.manifest.model_dump(), scores)
        self.ledger.scored(scores)
        self.ledger.stage_ended("eval", eval_failed.message if eval_failed else "", model=plan.model_abbr,
                                datasets=plan.abbrs)
        if judging and not self.shared:
            self.judge.stop()
        if any(score.value is not None for score in scores):
            print_scores(self.app, plan.model_abbr, scores, answers=recorded_answers(self.ledger.manifest.model_dump()))
        failures = [failure for failure in (infer_failed, eval_failed) if failure]
        if failures:  # the datasets that worked are scored above
            raise StageFailed("; and ".join(failure.message for failure in failures),
                              "\n".join(failure.detail for failure in failures))
        self.app.info(f"every prompt, answer and judge reply: lmeval report {plan.run_id} -w {plan.work_dir}")

    def infer(self, group: ServerGroup, judge_early: bool) -> StageFailed | None:
        """The inference stage, the judge loading (JUDGE_EARLY) and judging what is inferred
        meanwhile; why some datasets failed, if they did."""
        plan = self.plan
        streamed = None
        try:
            self.start(group, self.target)
            if judge_early:
                self.start(group, self.judge)
            self.wait(self.target)
            streamed = StreamedJudging(self, self.judge) if judge_early and plan.stream else None
            self.run_stage("infer", self.target, meanwhile=streamed.poll if streamed else lambda oc: None)
            infer_failed, self.scope = verdicts.inference(plan, self.runner, self.ledger)
            self.ledger.answers_counted(answers.run_stats(plan.run_dir, plan.model_abbr,
                                                          suites.summary_rows(plan.datasets)))
            self.ledger.stage_ended("infer", infer_failed.message if infer_failed else "", model=plan.model_abbr,
                                    datasets=plan.abbrs)
            self.target.stop()  # on a failure the group's exit stops it, after the servers started later
            if self.gpus_free is not None:
                self.gpus_free.set()  # the next model of a sweep may load there while this one is judged
            if streamed:
                streamed.drain()
        finally:
            if streamed:
                streamed.stop()
        if judge_early and (exited := self.judge.first_exit()):
            server, status = exited
            resume = f"predictions are complete: continue with `lmeval judge --reuse {plan.run_id} -w {plan.work_dir}`"
            if not (streamed and streamed.ready):
                raise server.failure(f"{status} while loading; {resume}")
            # It died judging what was inferred: started again like a death during the eval stage.
            died = ServerDied(server.failure(f"{status} while judging the datasets inferred so far; {resume}"),
                              server, status)
            self.runner.recover("eval", self.judge, died)
        return infer_failed

    def dry_run(self, stages: tuple[str, ...]) -> int:
        plan = self.plan
        self.app.out.print(f"run {plan.run_id} in {plan.run_dir}", markup=False)
        if plan.redo_reason:  # a dry run moves nothing: say what a real one would do, and stop
            self.app.out.print(f"run {plan.run_id} was {plan.redo_reason}: --redo would move "
                               f"{', '.join(STALE_ENTRIES)} into {plan.run_id}/stale-<time>/ and infer again",
                               markup=False)
            return 0
        self.copy_inputs()
        for line in dryrun.server_lines(plan) + dryrun.stage_lines(plan, stages, self.runner):
            self.app.out.print(line, markup=False)
        self.ledger.stage_skipped("dry-run")
        return 0


def evaluate(app: Application, options: EvalOptions, stages: tuple[str, ...]) -> int:
    """The body of `lmeval run`, `lmeval infer` and `lmeval judge`."""
    plan = make_plan(options, stages, notify=app.warn)
    try:
        code = Evaluation(app, plan).execute(stages)
    except StageFailed:  # the datasets that worked are scored, and logged
        track(app, [plan])
        raise
    track(app, [plan])
    return code


def track(app: Application, plans: list[EvalPlan], name: str | None = None) -> None:
    """Log the runs of PLANS that have scores to the trackers asked for (--log-to), as points of
    one tracker run named NAME unless --log-run-id or --log-group name one (lmeval.tracking)."""
    first = plans[0]
    scored = [plan.run_id for plan in plans if plan.manifest.scores]
    if not first.log_to or first.dry_run or not scored:
        return
    from lmeval import tracking

    try:
        points = tracking.make_points(first.work_dir, scored)
    except UsageError as error:
        app.warn(f"not logged: {error.message}")
        return
    destination = tracking.Destination(first.log_run_id, first.log_group)
    tracking.log_runs(app, first.work_dir, points, first.log_to, destination, name=name)
