"""The one writer of a run's manifest (RUN/lmeval.json) while a command runs: each change is
saved at once (atomically), so a run cut short by a crash or a kill says how far it got."""

from __future__ import annotations

import time
from pathlib import Path

from lmeval import outputs
from lmeval.manifest import Manifest, RestartRecord, StageRecord
from lmeval.signals import interrupt_name


class Ledger:
    def __init__(self, manifest: Manifest, run_dir: Path) -> None:
        self.manifest = manifest
        self.run_dir = run_dir

    def save(self) -> None:
        self.manifest.save(self.run_dir)

    def stage(self, stage: str) -> StageRecord:
        return self.manifest.stage(stage)

    # ------------------------------------------------------------ stages

    def stage_began(self, stage: str) -> None:
        record = self.stage(stage)
        record.started, record.opencompass_seconds = time.time(), 0.0

    def opencompass_began(self, stage: str) -> None:
        record = self.stage(stage)
        record.status, record.message = "running", ""
        self.save()

    def opencompass_ended(self, stage: str, seconds: float, error: BaseException | None = None) -> None:
        """One OpenCompass process of STAGE ended after SECONDS; ERROR: what stopped it (an
        interrupt, a failure), if not its own end."""
        record = self.stage(stage)
        if isinstance(error, KeyboardInterrupt):
            record.status, record.message = "interrupted", f"interrupted by {interrupt_name(error)}"
        elif error is not None:
            record.status, record.message = "failed", getattr(error, "message", "") or type(error).__name__
        record.ended = time.time()
        record.opencompass_seconds = round((record.opencompass_seconds or 0) + seconds, 3)
        self.save()

    def stage_failed(self, stage: str, message: str) -> None:
        record = self.stage(stage)
        record.status, record.message, record.ended = "failed", message, time.time()
        self.save()

    def stage_skipped(self, stage: str) -> None:
        """STAGE had nothing to do (every dataset already has predictions)."""
        self.stage(stage).status = "ok"
        self.save()

    def stage_ended(self, stage: str, failed: str = "", *, model: str, datasets: list[str]) -> None:
        """STAGE ended: ok, or FAILED for some datasets (the others went on); and when each of
        DATASETS was inferred and scored: the times OpenCompass wrote its predictions and results."""
        record = self.stage(stage)
        record.status, record.message = ("failed", failed) if failed else ("ok", "")
        record.ended = time.time()
        if record.started:
            record.seconds = round(record.ended - record.started, 3)
        for name in datasets:
            times = self.manifest.dataset_times.setdefault(name, {})
            for event, path in (("inferred", outputs.predictions_file(self.run_dir, model, name)),
                                ("judged", outputs.results_file(self.run_dir, model, name))):
                if path.is_file():
                    times[event] = round(path.stat().st_mtime, 3)
        self.save()

    # ------------------------------------------------------------ servers, scores, the run

    def servers(self, endpoint) -> None:
        """ENDPOINT's server records (lmeval.endpoint), as they are now."""
        self.manifest.servers.update(endpoint.records_copy())
        self.save()

    def restarted(self, record: RestartRecord) -> None:
        self.manifest.restarts.append(record)
        self.save()

    def answers_counted(self, stats: dict[str, dict]) -> None:
        """What the answers say per summary row (lmeval.answers), once inference ended."""
        self.manifest.answers = stats
        self.save()

    def scored(self, scores: list) -> None:
        """The summary's rows (lmeval.outputs.Score), saved with the stage's outcome."""
        self.manifest.scores = [score.__dict__ for score in scores]

    def moved_aside(self, folder: Path) -> None:
        """The outputs of other settings went to FOLDER (`--redo`)."""
        entry = self.manifest.stale[-1] if self.manifest.stale else {}
        entry.update(moved_to=folder.name, at=time.time())
        self.manifest.stale[-1:] = [entry]

    def ended(self, wall_seconds: float) -> None:
        self.manifest.wall_seconds = round(wall_seconds, 3)
        self.save()
