"""The two stages, inference and judged evaluation, and the runs built from them.

A stage is: render the config, run `opencompass -m MODE -w WORKDIR -r RUN` while watching the
servers it talks to, then decide from the files whether it worked (OpenCompass's exit code
says nothing). Servers are started as late as possible and stopped as early as possible, and
always stopped when the command ends, whatever ends it.
"""

from __future__ import annotations

import shlex
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

from lmeval import configgen, outputs, suites
from lmeval.app import Application
from lmeval.configplan import ServedModel
from lmeval.exceptions import OpenCompassHung, ServerDied, ServerFailed, StageFailed
from lmeval.files import log_tail, write_private
from lmeval.fleet import RunningSet, ServerSet, start_set, stop_set, wait_set
from lmeval.forkserver import ForkServer
from lmeval.launch import Server, ServerGroup, ServerSpec, command_line, new_api_key, redact
from lmeval.manifest import RestartRecord, RunLock, ServerRecord
from lmeval.ocenv import PLUGIN_DIR, venv_python
from lmeval.ocrun import OpenCompassRun, Preflight, PreflightFailed, last_error
from lmeval.options import EvalOptions
from lmeval.plan import EvalPlan, in_flight, make_plan
from lmeval.results import print_scores
from lmeval.runs import move_aside
from lmeval.signals import interrupt_name
from lmeval.stats import with_stderr
from lmeval.streaming import StreamedJudging
from lmeval.watchdog import HealthWatch, OpenCompassWatch, health_probe, metrics_probe, servers_idle

SUPERVISE_SECONDS = 0.2
PROGRESS_SECONDS = 5.0
# What `--reuse RUN --redo` moves aside: everything that came from the old settings and that
# OpenCompass would otherwise reuse (predictions, results) or mix in (summaries, logs).
STALE_ENTRIES = ["predictions", "results", "summary", "infer_status", "logs", "lmeval/inputs",
                 "lmeval/infer_config.py", "lmeval/eval_config.py", "lmeval/streamed_eval_config.py",
                 "lmeval/opencompass_infer.log", "lmeval/opencompass_eval.log", "lmeval/opencompass_eval_streamed*.log"]


@dataclass
class SharedJudge:
    """The judge of several runs (lmeval.sweep): started once, by the first run that needs it,
    in the sweep's own group, which stops it when the sweep ends. Runs going at once judge on it
    side by side; a death they all see is restarted by the first of them (under LOCK), and the
    others go on with what it started."""

    group: ServerGroup
    running: RunningSet | None = None
    served: ServedModel | None = None  # as its clients see it now (a restart changes its key)
    records: dict[str, ServerRecord] = field(default_factory=dict)  # its servers, for each run's manifest
    lock: threading.Lock = field(default_factory=threading.Lock)  # held to start or restart it

    def keep_records(self, manifest_servers: dict[str, ServerRecord]) -> None:
        self.records = {role: record.model_copy() for role, record in manifest_servers.items()
                        if role == "judge" or role.startswith("judge-")}

    def records_for_run(self) -> dict[str, ServerRecord]:
        """Its records, for one more run's manifest (a copy each: runs save theirs apart)."""
        return {role: record.model_copy() for role, record in self.records.items()}


@contextmanager
def opencompass_forks(app: Application, plan: EvalPlan) -> Iterator[ForkServer | None]:
    """A fork server in OpenCompass's venv for the block (None if it cannot start: OpenCompass's
    processes then start the usual way), stopped with whatever it forked at the end."""
    forks = ForkServer(venv_python(plan.opencompass), plan.run_dir / "lmeval" / "forkserver.log", plan.run_id)
    try:
        started = forks.start()
        yield forks if started else None
    finally:
        stopped = forks.stop()
        if stopped.left:
            app.stopped("OpenCompass's fork server", stopped, plan.work_dir)


@contextmanager
def held(app: Application, lock: threading.Lock) -> Iterator[None]:
    """LOCK held for the block, waited for in steps so an interrupt of the command gets through."""
    while not lock.acquire(timeout=SUPERVISE_SECONDS):
        app.checkpoint()
    try:
        yield
    finally:
        lock.release()


class Evaluation:
    """One lmeval command (`run`, `infer` or `judge`) over one run folder; in a sweep, one of
    its runs, with the judge it shares."""

    def __init__(self, app: Application, plan: EvalPlan, shared_judge: SharedJudge | None = None,
                 gpus_free: threading.Event | None = None, forks: ForkServer | None = None) -> None:
        self.app = app
        self.plan = plan
        self.forks = forks  # the sweep's; else the run starts its own
        self.shared_judge = shared_judge
        self.gpus_free = gpus_free  # in a sweep, set once the run's model servers left its GPUs
        self.manifest = plan.manifest
        self.run_dir = plan.run_dir
        # A watched server that died as OpenCompass was ending: the cause, if outputs are missing.
        self.server_failure: ServerFailed | None = None
        self.preflight: Preflight | None = None  # set when the stages start
        self.opencompass_codes: dict[str, int | None] = {}  # stage -> how OpenCompass exited
        self.restarted: dict[str, int] = {}  # role -> restarts so far
        self.hung_resumed: set[str] = set()  # stages OpenCompass hung in once, and started again
        # The datasets the eval stage scores: those inferred, when the inference of others failed.
        self.scope: list[str] | None = None

    @property
    def abbrs(self) -> list[str]:
        return self.plan.abbrs if self.scope is None else self.scope

    # ------------------------------------------------------------ plumbing

    def save(self) -> None:
        self.manifest.save(self.run_dir)

    def config_path(self, stage: str) -> Path:
        return self.run_dir / "lmeval" / f"{stage}_config.py"

    def render(self, stage: str, target: ServedModel, judge: ServedModel | None, abbrs: list[str] | None = None,
               path: Path | None = None) -> Path:
        """Write STAGE's config (of the datasets ABBRS only, if given) to PATH, by default the stage's own."""
        path = path or self.config_path(stage)
        write_private(path, configgen.render_config(stage, self.plan.config_plan(target, judge, abbrs)))
        return path

    def opencompass(self, stage: str, config: Path, log_name: str = "") -> OpenCompassRun:
        """OpenCompass for STAGE on CONFIG, its output in RUN/lmeval/LOG_NAME (`opencompass_STAGE.log`)."""
        return OpenCompassRun(self.plan.opencompass, config, stage, self.plan.work_dir, self.plan.run_id,
                              cwd=self.run_dir / "lmeval" / "opencompass_cwd",
                              log_path=self.run_dir / "lmeval" / (log_name or f"opencompass_{stage}.log"),
                              forks=self.forks)

    def record_external(self, role: str, served: ServedModel) -> None:
        """A server the user runs (--api-server / --judger-server)."""
        self.manifest.servers[role] = ServerRecord(role=role, model="", served_name=served.served_name,
                                                   url=served.base_url, external=True)
        self.save()

    def record_started(self, role: str, served: ServedModel, running: RunningSet) -> None:
        """One record per process (`target-0`, `target-proxy`, ...), and the role's front under ROLE."""
        now = time.time()
        for server in running.servers:
            spec = server.spec
            self.manifest.servers[spec.role] = ServerRecord(
                role=spec.role, model=getattr(spec, "model", ""), served_name=served.served_name, url=server.url,
                gpus=list(spec.gpus), tp=getattr(spec, "tp", 0), command=server.command, started=now,
                job_id=server.job_id)
        front = running.proxy or running.replicas[0]
        self.manifest.servers[role] = self.manifest.servers[front.spec.role].model_copy(
            update={"role": role, "url": served.base_url})
        self.save()

    # ------------------------------------------------------------ stages

    def run_stage(self, group: ServerGroup, stage: str, running: RunningSet | None, served: ServedModel,
                  meanwhile: Callable[[OpenCompassRun], None] = lambda oc: None) -> ServedModel:
        """Run OpenCompass for STAGE against RUNNING (SERVED, as its clients see it; returned as
        they see it at the end). A server of RUNNING that dies stops OpenCompass at once; it is
        started again up to --restarts times and OpenCompass resumes the stage from what it saved.
        MEANWHILE(its OpenCompass) is called as OpenCompass runs (lmeval.streaming)."""
        self.preflight.check()  # the servers are ready: what it found by now, or nothing
        self.stop_preflight()  # the stage itself does the rest of what it checks
        record = self.manifest.stage(stage)
        record.started, record.opencompass_seconds = time.time(), 0.0
        while True:
            target, judge = (served, None) if stage == "infer" else (self.plan.target, served)
            watched = running.servers if running else []
            try:
                config = self.render(stage, target, judge, self.scope if stage == "eval" else None)
                self.run_opencompass(stage, config, watched, meanwhile)
                died = self.server_failure if self.lacking_outputs(stage) else None
            except ServerDied as error:
                died = error
            except OpenCompassHung as error:
                if stage in self.hung_resumed:
                    error.message += f"; {self.resume_hint(stage)}"
                    raise
                self.hung_resumed.add(stage)
                self.app.warn(f"{error.message}; stopped it, and {stage} starts again once from what it saved")
                continue
            if died is None:
                return served
            served = self.recover(group, stage, running, died, served)

    def recover(self, group: ServerGroup, stage: str, running: RunningSet | None, died: ServerDied,
                served: ServedModel) -> ServedModel:
        """Start the server that DIED again while --restarts allows (per server, over the run),
        and return how its clients reach it now; else record STAGE failed and raise DIED."""
        role = died.server.spec.role
        if running is None or not self.can_restart(running, died.server) or \
                self.restarted.get(role, 0) >= self.plan.restarts:
            record = self.manifest.stage(stage)
            record.status, record.message, record.ended = "failed", died.message, time.time()
            self.save()
            raise died
        self.restarted[role] = self.restarted.get(role, 0) + 1
        if self.shared_judge is not None and running is self.shared_judge.running:
            return self.restart_shared(stage, running, died, self.restarted[role])
        return self.restart(group, stage, running, died, served, self.restarted[role])

    def restart_shared(self, stage: str, running: RunningSet, died: ServerDied, count: int) -> ServedModel:
        """Restart the sweep's judge, unless another run did since it died: then wait for that one."""
        shared = self.shared_judge
        with held(self.app, shared.lock):
            if died.server in running.replicas:
                shared.served = self.restart(shared.group, stage, running, died, shared.served or self.plan.judge,
                                             count)
                shared.keep_records(self.manifest.servers)
                return shared.served
        self.manifest.servers.update(shared.records_for_run())
        return self.wait(running, shared.served)

    def run_opencompass(self, stage: str, config: Path, watched: list[Server],
                        meanwhile: Callable[[OpenCompassRun], None]) -> None:
        """One OpenCompass process for STAGE, stopped at once if a watched server dies."""
        record = self.manifest.stage(stage)
        record.status, record.message = "running", ""
        self.server_failure = None
        self.save()
        oc = self.opencompass(stage, config)
        self.app.info(f"{stage}: {shlex.join(oc.argv)}")
        started = time.monotonic()
        try:
            oc.start()
            self.supervise(stage, oc, watched, meanwhile)
            self.opencompass_codes[stage] = oc.poll()
        except BaseException as error:
            self.app.stopped(oc.name, oc.stop(), self.plan.work_dir)
            if isinstance(error, ServerDied):
                raise  # run_stage restarts the server, or records the failure
            record.status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            record.message = (f"interrupted by {interrupt_name(error)}" if isinstance(error, KeyboardInterrupt)
                              else getattr(error, "message", "") or type(error).__name__)
            raise
        finally:
            record.ended = time.time()
            record.opencompass_seconds = round((record.opencompass_seconds or 0) + time.monotonic() - started, 3)
            self.save()

    def supervise(self, stage: str, oc: OpenCompassRun, watched: list[Server],
                  meanwhile: Callable[[OpenCompassRun], None]) -> None:
        last_progress = ""
        last_shown = time.monotonic()
        with httpx.Client() as client:
            watches = {server: HealthWatch(self.plan.stall_timeout, health_probe(server.url, client),
                                           metrics_probe(server.url, client, server.spec.api_key.get_secret_value()))
                       for server in watched if isinstance(server.spec, ServerSpec)}
            stuck = OpenCompassWatch(self.plan.stall_timeout, oc.cpu_seconds,
                                     lambda: outputs.progress_mark(self.run_dir, self.plan.model_abbr),
                                     lambda: servers_idle(list(watches.values())))
            while oc.poll() is None:
                failure = self.dead_server(stage, watched) or self.stalled_server(stage, watches)
                if failure:
                    raise failure
                # Watched once it runs: a fork server still importing OpenCompass has its own deadline.
                if oc.began is not None and (seconds := stuck.hung_for()) is not None:
                    raise OpenCompassHung(
                        f"OpenCompass made no progress for {seconds:.0f} s during {stage}: its processes used no CPU, "
                        f"no answer or result came and no server had a request; see {oc.log_path}")
                self.app.checkpoint()
                meanwhile(oc)
                if stage == "infer" and time.monotonic() - last_shown >= PROGRESS_SECONDS:
                    progress = self.progress_line()
                    if progress != last_progress:
                        self.app.info(f"infer: {progress}")
                        last_progress = progress
                    last_shown = time.monotonic()
                time.sleep(SUPERVISE_SECONDS)
        # OpenCompass may have given up on a dead server before the poll above saw it die.
        self.server_failure = self.dead_server(stage, watched)

    def stalled_server(self, stage: str, watches: dict[Server, HealthWatch]) -> ServerDied | None:
        """A watched server that has looked hung for --stall-timeout seconds (lmeval.watchdog):
        dead to the stage."""
        for server, watch in watches.items():
            stalled = watch.stalled_for()
            if stalled is not None:
                seconds, sign = stalled
                status = f"stalled ({sign} for {seconds:.0f} s: the engine makes no progress)"
                failure = server.failure(f"{status} during {stage}")
                failure.message += f"; {self.resume_hint(stage)}"
                return ServerDied(failure, server, status, stalled=True)
        return None

    def dead_server(self, stage: str, watched: list[Server]) -> ServerDied | None:
        for server in watched:
            status = server.exit_status()
            if status is not None:
                failure = server.failure(f"{status} during {stage}")
                failure.message += f"; {self.resume_hint(stage)}"
                return ServerDied(failure, server, status)
        return None

    def lacking_outputs(self, stage: str) -> dict[str, str]:
        """The datasets STAGE left without their outputs, and what is wrong with each
        (OpenCompass exits 0 either way): no predictions, or the error of their results."""
        model = self.plan.model_abbr
        names = self.plan.abbrs if stage == "infer" else self.abbrs
        if stage == "infer":
            return {name: "no predictions written" for name in outputs.missing_predictions(self.run_dir, model, names)}
        return {name: error for name in names if (error := outputs.result_error(self.run_dir, model, name))}

    @staticmethod
    def can_restart(running: RunningSet, server: Server) -> bool:
        """A replica or a lone server here can start again where it was. A proxy cannot: the
        replicas registered with the one that died. Nor can a Slurm job: one that ended was
        cancelled, out of time or lost its node, and a new one may wait in the queue for hours."""
        return server is not running.proxy and running.spec.placement is None

    def restart(self, group: ServerGroup, stage: str, running: RunningSet, died: ServerDied, served: ServedModel,
                count: int) -> ServedModel:
        """Start the server that DIED again on its GPUs and port, with a fresh key unless a proxy
        fronts it (clients' key is forwarded to every replica), and wait until it is ready."""
        server = died.server
        tail = log_tail(server.log_path, outputs.LOG_TAIL_LINES)
        self.app.warn(f"{server.name} {died.status} during {stage}; restarting it "
                      f"(restart {count} of {self.plan.restarts}), then resuming {stage}")
        self.manifest.restarts.append(RestartRecord(role=server.spec.role, stage=stage, at=time.time(),
                                                    died=died.status, log_tail=tail,
                                                    cause="stalled" if died.stalled else "died"))
        group.stop(server)
        spec = server.spec if running.proxy else server.spec.model_copy(update={"api_key": new_api_key()})
        again = group.start(spec, running.spec.placement)
        running.replicas[running.replicas.index(server)] = again
        roles = [spec.role] + [running.spec.role] * (running.proxy is None and spec.role != running.spec.role)
        for role in roles:
            self.manifest.servers[role] = self.manifest.servers[role].model_copy(update={
                "command": again.command, "started": time.time(), "ready_seconds": None, "job_id": again.job_id})
        self.save()
        return self.wait(running, served.model_copy(update={"api_key": spec.api_key}))

    def resume_hint(self, stage: str) -> str:
        if stage == "infer":
            return (f"the answers so far are kept: rerun the same command with --reuse {self.plan.run_id} "
                    "to send only the rest")
        return f"rerun `lmeval judge --reuse {self.plan.run_id} -w {self.plan.work_dir}` to resume"

    def progress_line(self) -> str:
        parts = []
        for abbr in self.plan.abbrs:
            done, total = outputs.progress(self.run_dir, self.plan.model_abbr, abbr)
            parts.append(f"{abbr} {done}/{total if total is not None else '?'}")
        return ", ".join(parts)

    def opencompass_said(self, stage: str, datasets: list[str]) -> str:
        """` (OpenCompass exited with code 1: ImportError: ..., in LOG)`: its exit code, if not 0,
        and the last exception in the task logs of DATASETS or else in its own log; empty when
        there is neither."""
        logs = [*outputs.task_logs(self.run_dir, stage, self.plan.model_abbr, datasets),
                self.run_dir / "lmeval" / f"opencompass_{stage}.log"]
        said = next((f"{line}, in {log}" for log in logs if (line := last_error(log))), "")
        code = self.opencompass_codes.get(stage)
        parts = [f"OpenCompass exited with code {code}"] * bool(code) + [said] * bool(said)
        return f" ({': '.join(parts)})" if parts else ""

    def stage_failed(self, stage: str, error: StageFailed) -> StageFailed:
        """Record in the manifest that STAGE failed (found from its outputs); return ERROR to raise."""
        record = self.manifest.stage(stage)
        record.status, record.message = "failed", error.message
        self.save()
        return error

    def check_predictions(self) -> StageFailed | None:
        """Why the inference of some datasets failed (OpenCompass goes on with the others, which
        are then scored), or None; raised at once when a server died or nothing was inferred."""
        missing = list(self.lacking_outputs("infer"))
        if missing and self.server_failure:
            raise self.stage_failed("infer", self.server_failure)
        if not missing:
            return None
        failed = StageFailed(
            f"inference failed for {', '.join(missing)}: no predictions written"
            f"{self.opencompass_said('infer', missing)}; see the log below, then rerun the same command with "
            f"--reuse {self.plan.run_id}: only what is missing is inferred",
            outputs.failure_report(self.run_dir, "infer", self.plan.model_abbr, missing),
        )
        if len(missing) == len(self.plan.abbrs):
            raise self.stage_failed("infer", failed)
        self.scope = [name for name in self.plan.abbrs if name not in missing]
        return failed

    def check_results(self) -> tuple[list[outputs.Score], StageFailed | None]:
        """The scores of the newest summary, each row of a failed dataset shown as none; and why
        datasets failed (none of their rows counts), or None."""
        names, model = self.abbrs, self.plan.model_abbr
        rows = suites.judged_rows(self.plan.datasets)
        self.manifest.judge_rows = rows  # saved with the stage's outcome, failed or not
        failed = self.lacking_outputs("eval")
        summary = outputs.latest_summary(self.run_dir)
        scores = outputs.read_summary(summary, model) if summary else []
        scored = {score.dataset for score in scores if score.value is not None}
        expected = {row: members for row, members in suites.summary_rows(self.plan.datasets).items()
                    if set(members) <= set(names)}
        failed.update({row: "no score in the summary" for row, members in expected.items()
                       if row not in scored and not set(members) & set(failed)})
        if failed and self.server_failure:
            raise self.stage_failed("eval", self.server_failure)
        scores = [outputs.with_judge_replies(score, outputs.judge_replies(self.run_dir, model, rows[score.dataset]))
                  if score.dataset in rows else score for score in scores]
        broken = [row for row, members in expected.items() if row in failed or set(members) & set(failed)]
        scores = [replace(score, value=None) if score.dataset in broken else score for score in scores]
        if not failed:
            return scores, None
        moved = self.move_results_aside([name for name in failed if name in names])
        listing = "; ".join(f"{name} ({why})" for name, why in failed.items())
        return scores, StageFailed(
            f"evaluation failed for {listing}{self.opencompass_said('eval', list(failed))}; "
            f"{moved}see the logs below, then retry with `lmeval judge --reuse {self.plan.run_id} -w {self.plan.work_dir}`",
            outputs.failure_report(self.run_dir, "eval", model, list(failed)),
        )

    def move_results_aside(self, datasets: list[str]) -> str:
        """Move the results OpenCompass wrote for DATASETS, though they hold no score (a broken
        evaluator's), out of its way: else it would reuse them when judging again. What to say."""
        folder = Path("results") / self.plan.model_abbr
        written = [name for name in datasets if outputs.results_file(self.run_dir, self.plan.model_abbr, name).is_file()]
        if not written:
            return ""
        patterns = [str(folder / f"{name}{suffix}") for name in written
                    for suffix in (".json", "_replica*.json", "_llm_judge_replica*.json")]
        aside = move_aside(self.run_dir, patterns)
        return f"their results were moved to {aside}; "

    # ------------------------------------------------------------ commands

    def execute(self, stages: tuple[str, ...]) -> int:
        plan = self.plan
        began = time.monotonic()
        with RunLock(self.run_dir):  # a dry run too: it writes configs into the run folder
            if plan.dry_run:
                return self.dry_run(stages)
            self.prepare_folder()
            try:
                # The fork server imports OpenCompass while the servers load.
                with nullcontext(self.forks) if self.forks else opencompass_forks(self.app, plan) as self.forks, \
                        ServerGroup(plan.lmdeploy, self.run_dir / "servers", self.app, plan.run_id,
                                    plan.grace) as group:
                    self.save()
                    self.execute_stages(group, stages)
            finally:
                self.manifest.wall_seconds = round(time.monotonic() - began, 3)
                self.save()
        return 0

    def prepare_folder(self) -> None:
        """Under the lock, before any server starts: move the outputs of other settings aside
        (`--redo`), and copy the dataset files into the run."""
        plan = self.plan
        if plan.redo_reason:
            previous = self.run_dir / "lmeval.json"
            folder = move_aside(self.run_dir, STALE_ENTRIES)
            if previous.is_file():
                shutil.copy2(previous, folder / "lmeval.json")
            entry = self.manifest.stale[-1] if self.manifest.stale else {}
            entry.update(moved_to=folder.name, at=time.time())
            self.manifest.stale[-1:] = [entry]
            self.app.warn(f"run {plan.run_id} was {plan.redo_reason}: its outputs were moved to {folder}; "
                          "inferring again")
        aside = self.run_dir / "lmeval" / f"incomplete-{time.strftime('%Y%m%d_%H%M%S')}"
        cut = outputs.set_aside_incomplete(self.run_dir, plan.model_abbr, plan.abbrs, aside)
        if cut:
            self.app.warn(f"the predictions of {', '.join(cut)} were cut short by an earlier stop (the file does not "
                          f"parse, or OpenCompass's tmp_ file is still there): moved to {aside}; inferring "
                          f"{'it' if len(cut) == 1 else 'them'} again from the answers saved so far")
        self.copy_inputs()
        self.save()

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
            raise self.stage_failed(to_run[0], error) from None
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
                              cwd=self.run_dir / "lmeval" / "opencompass_cwd",
                              log_path=self.run_dir / "lmeval" / "preflight.log", run_id=plan.run_id,
                              forks=self.forks)
        preflight.start()
        return preflight

    def run_stages(self, group: ServerGroup, stages: tuple[str, ...], infer: bool) -> None:
        plan = self.plan
        judge_wanted = "eval" in stages and plan.judge is not None
        target = judge = judge_now = infer_failed = None  # judge_now: the judge as its clients reach it, once restarted
        if "infer" in stages and not infer:
            self.app.info("infer: every dataset already has predictions; skipping inference")
            self.manifest.stage("infer").status = "ok"
        if infer:
            streamed = None
            try:
                target = self.start_set(group, "target", plan.target_set, plan.target)
                # The judge loads during inference when it has GPUs of its own.
                if judge_wanted and plan.judge_set and not plan.gpus_overlap:
                    judge = self.start_judge(group)
                served = self.wait(target, plan.target) if target else plan.target
                streamed = StreamedJudging(self, judge, self.judge_served()) if judge and plan.stream else None
                self.run_stage(group, "infer", target, served, meanwhile=streamed.poll if streamed else lambda oc: None)
                infer_failed = self.check_predictions()
                self.finish_stage("infer", infer_failed)
                # On a failure the group's exit stops them, after the servers started later.
                if target:
                    stop_set(group, target)
                if self.gpus_free is not None:
                    self.gpus_free.set()  # the next model of a sweep may load there while this one is judged
                if streamed:
                    streamed.drain()
            finally:
                if streamed:
                    streamed.stop()
            if streamed and streamed.ready and self.shared_judge is not None:
                self.shared_judge.served = streamed.served
            if judge and (exited := judge.first_exit()):
                server, status = exited
                resume = f"predictions are complete: continue with `lmeval judge --reuse {plan.run_id} -w {plan.work_dir}`"
                if not (streamed and streamed.ready):
                    raise server.failure(f"{status} while loading; {resume}")
                # It died judging what was inferred: started again like a death during the eval stage.
                died = ServerDied(server.failure(f"{status} while judging the datasets inferred so far; {resume}"),
                                  server, status)
                judge_now = self.recover(group, "eval", judge, died, streamed.served)
        if "eval" not in stages:
            if infer_failed:
                raise infer_failed
            if self.shared_judge is None:  # in a sweep, the judging follows
                self.app.out.print(f"{plan.run_id}", markup=False)
                self.app.info(f"inference done; judge it with: lmeval judge --reuse {plan.run_id} -w {plan.work_dir}")
            return
        if judge_wanted and judge is None:
            judge = self.start_judge(group)
        shared = self.shared_judge
        judge_served = judge_now or self.judge_served()
        judge_served = self.wait(judge, judge_served) if judge and not judge_now else judge_served
        self.run_stage(group if shared is None else shared.group, "eval", judge, judge_served)
        scores, eval_failed = self.check_results()
        scores = with_stderr(self.run_dir, self.manifest.model_dump(), scores)
        self.manifest.scores = [score.__dict__ for score in scores]
        self.finish_stage("eval", eval_failed)
        if judge and shared is None:
            stop_set(group, judge)
        if any(score.value is not None for score in scores):
            print_scores(self.app, self.plan.model_abbr, scores)
        failures = [failure for failure in (infer_failed, eval_failed) if failure]
        if failures:  # the datasets that worked are scored above
            raise StageFailed("; and ".join(failure.message for failure in failures),
                              "\n".join(failure.detail for failure in failures))
        self.app.info(f"every prompt, answer and judge reply: lmeval report {plan.run_id} -w {plan.work_dir}")

    def judge_served(self) -> ServedModel | None:
        """The judge as OpenCompass reaches it: a sweep's shared judge may have a newer key."""
        shared = self.shared_judge
        return self.plan.judge if shared is None or shared.served is None else shared.served

    def start_judge(self, group: ServerGroup) -> RunningSet | None:
        """The judge's servers: started in GROUP, or in a sweep the ones its runs share (started
        by the first run that needs them)."""
        plan, shared = self.plan, self.shared_judge
        if shared is None:
            return self.start_set(group, "judge", plan.judge_set, plan.judge)
        with held(self.app, shared.lock):
            if shared.running is None:
                shared.running = self.start_set(shared.group, "judge", plan.judge_set, plan.judge)
                shared.keep_records(self.manifest.servers)
                return shared.running
        self.manifest.servers.update(shared.records_for_run())
        self.save()
        return shared.running

    def start_set(self, group: ServerGroup, role: str, server_set: ServerSet | None,
                  served: ServedModel) -> RunningSet | None:
        if server_set is None:
            self.record_external(role, served)
            return None
        running = start_set(group, server_set)
        self.record_started(role, served, running)
        return running

    def wait(self, running: RunningSet, served: ServedModel) -> ServedModel:
        """Wait until RUNNING is ready; SERVED with as many requests in flight as its servers
        hold (on Slurm only known now: each job reports its GPU)."""
        loading = [server.spec.role for server in running.replicas
                   if self.manifest.servers[server.spec.role].ready_seconds is None]
        if loading:  # not said again for a stage that only checks its servers are still up
            self.app.info(f"waiting for {', '.join(loading)} server(s) to load")
        began = time.time()

        def ready(server: Server) -> None:
            now = time.time()
            record = self.manifest.servers[server.spec.role]
            if record.ready_seconds is not None:
                return  # ready before a replica of its set was restarted
            record.ready_seconds = round(now - (record.started or now), 3)
            record.waited_seconds = round(now - began, 3)
            record.url, record.node, record.gpus = server.url, server.node, list(server.gpus)
            self.app.info(f"{server.spec.role} server ready at {server.url}")

        def meanwhile() -> None:
            self.app.checkpoint()
            self.preflight.check()

        wait_set(running, self.plan.ready_timeout, on_ready=ready, meanwhile=meanwhile)
        self.save()
        return served.model_copy(update={"in_flight": in_flight(running.capacity())})

    def finish_stage(self, stage: str, failed: StageFailed | None = None) -> None:
        """Record STAGE ended: ok, or FAILED for some datasets (the others went on)."""
        record = self.manifest.stage(stage)
        record.status, record.message = ("failed", failed.message) if failed else ("ok", "")
        record.ended = time.time()
        if record.started:
            record.seconds = round(record.ended - record.started, 3)
        self.record_dataset_times()
        self.save()

    def record_dataset_times(self) -> None:
        """When each dataset's inference and its scoring (judged or by rule) ended: the times
        OpenCompass wrote its predictions and its results."""
        plan = self.plan
        for name in plan.abbrs:
            times = self.manifest.dataset_times.setdefault(name, {})
            for event, path in (("inferred", outputs.predictions_file(self.run_dir, plan.model_abbr, name)),
                                ("judged", outputs.results_file(self.run_dir, plan.model_abbr, name))):
                if path.is_file():
                    times[event] = round(path.stat().st_mtime, 3)

    def dry_run(self, stages: tuple[str, ...]) -> int:
        plan = self.plan
        self.app.out.print(f"run {plan.run_id} in {self.run_dir}", markup=False)
        if plan.redo_reason:  # a dry run moves nothing: say what a real one would do, and stop
            self.app.out.print(f"run {plan.run_id} was {plan.redo_reason}: --redo would move "
                               f"{', '.join(STALE_ENTRIES)} into {plan.run_id}/stale-<time>/ and infer again",
                               markup=False)
            return 0
        self.copy_inputs()
        for server_set in (plan.target_set, plan.judge_set):
            for spec in server_set.specs if server_set else ():
                argv = redact(command_line(plan.lmdeploy, spec), [spec.api_key.get_secret_value()])
                placement = server_set.placement if spec in server_set.replicas else None
                if placement is not None:
                    where = f"partition {placement.partition}" if placement.partition else "the default partition"
                    chosen_there = {"--server-name": "NODE_ADDRESS", "--server-port": "FREE_PORT"}
                    argv = [chosen_there.get(previous, arg) for previous, arg in zip(["", *argv], argv)]
                    self.app.out.print(f"{spec.role} server (a Slurm job in {where}, gpu:{spec.tp}): "
                                       f"{shlex.join(argv)}", markup=False)
                    continue
                gpus = ",".join(map(str, spec.gpus))
                self.app.out.print(f"{spec.role} server (GPUs {gpus or 'none'}): "
                                   f"CUDA_VISIBLE_DEVICES={gpus} {shlex.join(argv)}", markup=False)
        for stage in stages:
            if stage == "eval" and plan.judge is None and not plan.datasets:
                continue
            config = self.render(stage, plan.target, plan.judge if stage == "eval" else None)
            oc = self.opencompass(stage, config)
            self.app.out.print(f"{stage} config: {config}", markup=False)
            self.app.out.print(f"{stage}: (cd {oc.cwd} && PYTHONPATH={PLUGIN_DIR}${{PYTHONPATH:+:$PYTHONPATH}} "
                               f"{shlex.join(oc.argv)})", markup=False)
        self.manifest.stage("dry-run").status = "ok"
        self.save()
        return 0


def evaluate(app: Application, options: EvalOptions, stages: tuple[str, ...]) -> int:
    """The body of `lmeval run`, `lmeval infer` and `lmeval judge`."""
    plan = make_plan(options, stages, notify=app.warn)
    return Evaluation(app, plan).execute(stages)

