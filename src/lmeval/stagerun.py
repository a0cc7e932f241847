"""One stage's OpenCompass, from its config to its outcome: render the config, run `opencompass
-m MODE -w WORKDIR -r RUN` while watching the servers of the endpoint it talks to, and when one
of them dies or stalls, stop OpenCompass, restart the server under the endpoint's budget and
resume the stage from what OpenCompass saved. An OpenCompass that hangs is started again once.
Whether the stage worked is decided from its files afterwards (lmeval.verdicts), never from
OpenCompass's exit code."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from lmeval import configgen, outputs
from lmeval.app import Application
from lmeval.configplan import ServedModel
from lmeval.endpoint import Endpoint
from lmeval.exceptions import OpenCompassHung, ServerDied, ServerFailed
from lmeval.files import write_private
from lmeval.forkserver import ForkServer
from lmeval.launch import Server, ServerSpec
from lmeval.ledger import Ledger
from lmeval.ocrun import OpenCompassRun
from lmeval.plan import EvalPlan
from lmeval.watchdog import HealthWatch, OpenCompassWatch, health_probe, metrics_probe, servers_idle

SUPERVISE_SECONDS = 0.2
PROGRESS_SECONDS = 5.0


class StageRunner:
    """The stages of one run. FORKS: the fork server its OpenCompass processes are forked from
    (--fork-server), else None."""

    def __init__(self, app: Application, plan: EvalPlan, ledger: Ledger, forks: ForkServer | None = None) -> None:
        self.app = app
        self.plan = plan
        self.ledger = ledger
        self.forks = forks
        # A watched server that died as OpenCompass was ending: the cause, if outputs are missing.
        self.server_failure: ServerFailed | None = None
        self.opencompass_codes: dict[str, int | None] = {}  # stage -> how OpenCompass exited
        self.hung_resumed: set[str] = set()  # stages OpenCompass hung in once, and started again

    # ------------------------------------------------------------ configs and processes

    def config_path(self, stage: str) -> Path:
        return self.plan.run_dir / "lmeval" / f"{stage}_config.py"

    def render(self, stage: str, target: ServedModel, judge: ServedModel | None, abbrs: list[str] | None = None,
               path: Path | None = None) -> Path:
        """Write STAGE's config (of the datasets ABBRS only, if given) to PATH, by default the stage's own."""
        path = path or self.config_path(stage)
        write_private(path, configgen.render_config(stage, self.plan.config_plan(target, judge, abbrs)))
        return path

    def opencompass(self, stage: str, config: Path, log_name: str = "") -> OpenCompassRun:
        """OpenCompass for STAGE on CONFIG, its output in RUN/lmeval/LOG_NAME (`opencompass_STAGE.log`)."""
        plan = self.plan
        return OpenCompassRun(plan.opencompass, config, stage, plan.work_dir, plan.run_id,
                              cwd=plan.run_dir / "lmeval" / "opencompass_cwd",
                              log_path=plan.run_dir / "lmeval" / (log_name or f"opencompass_{stage}.log"),
                              forks=self.forks)

    # ------------------------------------------------------------ a stage

    def run(self, stage: str, endpoint: Endpoint | None, abbrs: list[str] | None = None,
            meanwhile: Callable[[OpenCompassRun], None] = lambda oc: None) -> None:
        """Run OpenCompass for STAGE (of the datasets ABBRS, if given) against ENDPOINT (the
        target's for inference, the judge's for evaluation; None: none needed), until it ended
        with no server of the endpoint dead. MEANWHILE(its OpenCompass) is called as it runs
        (lmeval.streaming)."""
        self.ledger.stage_began(stage)
        while True:
            served = endpoint.served if endpoint else None
            target, judge = (served, None) if stage == "infer" else (self.plan.target, served)
            try:
                config = self.render(stage, target, judge, abbrs)
                self.run_opencompass(stage, config, endpoint.servers if endpoint else [], meanwhile)
                died = self.server_failure if outputs.lacking(self.plan.run_dir, self.plan.model_abbr, stage,
                                                               abbrs or self.plan.abbrs) else None
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
                return
            self.recover(stage, endpoint, died)

    def recover(self, stage: str, endpoint: Endpoint | None, died: ServerDied) -> ServedModel:
        """Restart the server that DIED while its endpoint's budget allows, and return how clients
        reach the endpoint now; else record STAGE failed and raise DIED."""
        served = endpoint.restart(self.app, died, stage, self.ledger.restarted) if endpoint else None
        if served is None:
            self.ledger.stage_failed(stage, died.message)
            raise died
        self.ledger.servers(endpoint)
        return served

    def run_opencompass(self, stage: str, config: Path, watched: list[Server],
                        meanwhile: Callable[[OpenCompassRun], None]) -> None:
        """One OpenCompass process for STAGE, stopped at once if a watched server dies or stalls."""
        self.ledger.opencompass_began(stage)
        self.server_failure = None
        oc = self.opencompass(stage, config)
        self.app.info(f"{stage}: {shlex.join(oc.argv)}")
        started = time.monotonic()
        stopped_by: BaseException | None = None
        try:
            oc.start()
            self.supervise(stage, oc, watched, meanwhile)
            self.opencompass_codes[stage] = oc.poll()
        except BaseException as error:
            self.app.stopped(oc.name, oc.stop(), self.plan.work_dir)
            # A dead server is recorded by run(): restarted, or the stage failed with its message.
            stopped_by = None if isinstance(error, ServerDied) else error
            raise
        finally:
            self.ledger.opencompass_ended(stage, time.monotonic() - started, stopped_by)

    def supervise(self, stage: str, oc: OpenCompassRun, watched: list[Server],
                  meanwhile: Callable[[OpenCompassRun], None]) -> None:
        last_progress = ""
        last_shown = time.monotonic()
        with httpx.Client() as client:
            watches = {server: HealthWatch(self.plan.stall_timeout, health_probe(server.url, client),
                                           metrics_probe(server.url, client, server.spec.api_key.get_secret_value()))
                       for server in watched if isinstance(server.spec, ServerSpec)}
            stuck = OpenCompassWatch(self.plan.stall_timeout, oc.cpu_seconds,
                                     lambda: outputs.progress_mark(self.plan.run_dir, self.plan.model_abbr),
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

    def resume_hint(self, stage: str) -> str:
        if stage == "infer":
            return (f"the answers so far are kept: rerun the same command with --reuse {self.plan.run_id} "
                    "to send only the rest")
        return f"rerun `lmeval judge --reuse {self.plan.run_id} -w {self.plan.work_dir}` to resume"

    def progress_line(self) -> str:
        parts = []
        for abbr in self.plan.abbrs:
            done, total = outputs.progress(self.plan.run_dir, self.plan.model_abbr, abbr)
            parts.append(f"{abbr} {done}/{total if total is not None else '?'}")
        return ", ".join(parts)
