"""Scores where training runs are watched: each lmeval run a point of a tracker run, at its
training step (lmeval.steps), in MLflow or Weights & Biases.

Which tracker run the points go to:
- `--log-run-id ID`: that run (the training run's own), its other metrics untouched;
- `--log-group NAME`: the run of that name, made on first use and appended to by every later
  command that names it, so checkpoints evaluated week after week extend one curve;
- otherwise a new run per command: a sweep's checkpoints land in one, as one curve.

Per point: the settings and versions as params (the same for every point of a tracker run:
a point made with other settings is said, its params left as they were), each summary row's
metrics, standard errors and share of answers cut as metrics at the step, and the manifest and
the `lmeval report` page as artifacts under the run id. Everything is prefixed `lmeval/`, apart
from a training run's own.

Each tracker is configured the way its users already do it: MLFLOW_TRACKING_URI,
MLFLOW_EXPERIMENT_NAME (or _ID); WANDB_PROJECT, WANDB_ENTITY, WANDB_MODE=offline, WANDB_DIR.
The libraries are extras (`lmeval[mlflow]`, `lmeval[wandb]`), imported here only. A tracker that
fails never costs the evaluation: the failure is one warning with the `lmeval log` line that
retries it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmeval.exceptions import UsageError
from lmeval.manifest import Manifest, RunLock
from lmeval.results import RunScores, recorded_answers, run_scores
from lmeval.steps import run_step

TRACKERS = {"mlflow": "MLflow", "wandb": "W&B"}
LIBRARIES = {"mlflow": "mlflow", "wandb": "wandb"}  # the module each tracker needs
PREFIX = "lmeval/"
# MLflow retries a refused connection for about four minutes by default; the evaluation is over
# by then, so a tracker that is down is said within seconds. The user's own settings win.
MLFLOW_QUICK_FAILURE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
_UNSAFE_KEY = re.compile(r"[^\w\-./ ]")


@dataclass(frozen=True)
class Destination:
    """The tracker run the points go to (see the module's docstring)."""

    run_id: str | None = None  # --log-run-id
    group: str | None = None  # --log-group

    def options(self) -> str:
        """The options that name it again, for a retry line."""
        return "".join(f" {option} '{value}'" for option, value in (("--log-run-id", self.run_id),
                                                                    ("--log-group", self.group)) if value)


@dataclass(frozen=True)
class Point:
    """One lmeval run, as a point of a tracker run."""

    run_id: str
    folder: Path
    model: str  # the folder (or hub id) evaluated
    step: int
    params: dict[str, str]
    metrics: dict[str, float]


@dataclass(frozen=True)
class Logged:
    tracker: str
    run_id: str
    url: str  # or, offline, where its files are


def check_trackers(trackers: tuple[str, ...] | list[str]) -> None:
    """Refuse, before an evaluation of hours, a tracker lmeval does not know or whose library is
    missing."""
    for tracker in trackers:
        if tracker not in TRACKERS:
            raise UsageError(f"--log-to {tracker}: lmeval logs to {' or '.join(TRACKERS)}")
        if importlib.util.find_spec(LIBRARIES[tracker]) is None:
            raise UsageError(f"--log-to {tracker}: the {LIBRARIES[tracker]} library is not installed; "
                             f"install it with `pip install \"lmeval[{tracker}]\"` beside lmeval")


def metric_key(*parts: str) -> str:
    """`lmeval/DATASET/METRIC`, with what MLflow refuses in a key (`@`, `(`...) as `_`."""
    return PREFIX + "/".join(_UNSAFE_KEY.sub("_", part) for part in parts)


def run_params(manifest: dict) -> dict[str, str]:
    """The settings a run's scores depend on, and the versions that made them."""
    inputs = manifest.get("inputs") or {}
    datasets = (manifest.get("fingerprint_inputs") or {}).get("datasets") or []
    params = {"task": inputs.get("task") or "files", "datasets": ",".join(str(entry[1]) for entry in datasets)}
    params |= {key: value for key, value in (inputs.get("generation") or {}).items() if value is not None}
    judge = (manifest.get("servers") or {}).get("judge")
    if judge:
        params["judge_model"] = judge.get("model", "")
    params |= {f"version/{tool}": version for tool, version in (manifest.get("versions") or {}).items()}
    return {PREFIX + key: str(value)[:500] for key, value in params.items()}


def run_metrics(run: RunScores) -> dict[str, float]:
    """Each summary row's metrics, their standard errors over questions, and its share of
    answers cut at --max-out-len where it was recorded."""
    metrics: dict[str, float] = {}
    for score in run.scores:
        if score.value is not None:
            metrics[metric_key(score.dataset, score.metric)] = score.value
        if score.stderr is not None:
            metrics[metric_key(score.dataset, f"{score.metric}_stderr")] = score.stderr
    for row, counted in recorded_answers(run.manifest).items():
        if counted.cut_share is not None:
            metrics[metric_key(row, "cut_share")] = counted.cut_share
    return metrics


def make_point(work_dir: Path, run: str, step: int | None = None) -> Point:
    """RUN of WORK_DIR as a point at STEP (default: the run's own, else 0)."""
    scored = run_scores(work_dir, run)
    manifest = scored.manifest
    found = step if step is not None else run_step(manifest)
    model = (manifest.get("inputs") or {}).get("model") or scored.model
    return Point(scored.folder.name, scored.folder, model, found or 0, run_params(manifest), run_metrics(scored))


@contextlib.contextmanager
def artifacts(points: list[Point]) -> Iterator[dict[str, list[Path]]]:
    """Each point's files to keep, by run id: its manifest and its `lmeval report` page, made
    once in a temporary folder for every tracker."""
    from lmeval.report import read_run, render_page, write_page

    with tempfile.TemporaryDirectory(prefix="lmeval-report-") as folder:
        yield {point.run_id: [point.folder / "lmeval.json",
                              write_page(render_page(read_run(point.folder)), Path(folder) / point.run_id / "report.html")]
               for point in points}


def new_params(logged: dict[str, str], points: list[Point], warn) -> dict[str, str]:
    """The params POINTS add to a tracker run that already has LOGGED. The first value of a
    setting stays; a point made with another one is said."""
    params = dict(logged)
    for point in points:
        changed = [f"{key.removeprefix(PREFIX)} {value}, not {params[key]}" for key, value in point.params.items()
                   if params.get(key, value) != value and not key.startswith(PREFIX + "version/")]
        if changed:
            warn(f"run {point.run_id} was made with {'; '.join(changed)}: its point is not comparable with the "
                 "others of the tracker run, whose params keep the first values")
        params = point.params | params
    return {key: value for key, value in params.items() if key not in logged}


def group_run_id(group: str) -> str:
    """The W&B run id of --log-group GROUP: readable, and the same for the same name."""
    slug = re.sub(r"[^a-z0-9]+", "-", group.lower()).strip("-")[:40]
    return f"lmeval-{slug}-{hashlib.sha256(group.encode()).hexdigest()[:8]}"


def log_to_mlflow(points: list[Point], files: dict[str, list[Path]], destination: Destination, name: str,
                  warn) -> Logged:
    for variable, value in MLFLOW_QUICK_FAILURE.items():
        os.environ.setdefault(variable, value)
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient()
    made = destination.run_id is None
    if destination.run_id:
        run = client.get_run(destination.run_id)
    else:
        experiment = _mlflow_experiment(client)
        quote = "'" if "'" not in (destination.group or "") else '"'  # MLflow's filters take either
        found = client.search_runs([experiment], f"tags.`lmeval.group` = {quote}{destination.group}{quote}",
                                   max_results=1) if destination.group else []
        made = not found
        run = found[0] if found else client.create_run(
            experiment, run_name=destination.group or name,
            tags={"lmeval.group": destination.group} if destination.group else {})
    run_id, experiment_id = run.info.run_id, run.info.experiment_id
    params = new_params(dict(run.data.params), points, warn)
    if len(points) == 1 and made and not destination.group:  # the tracker run is this one run's
        params |= {PREFIX + "model": points[0].model, PREFIX + "run_id": points[0].run_id}
    client.log_batch(run_id, params=[Param(key, value) for key, value in params.items()])
    for point in points:
        at = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(key, value, at, point.step) for key, value in point.metrics.items()])
        for path in files[point.run_id]:
            client.log_artifact(run_id, str(path), f"lmeval/{point.run_id}")
    if made:
        with contextlib.redirect_stdout(io.StringIO()):  # MLflow prints its own "View run" lines
            client.set_terminated(run_id)
    uri = mlflow.get_tracking_uri()
    url = (f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}" if uri.startswith(("http:", "https:"))
           else f"run {run_id} in {uri}")
    return Logged("mlflow", run_id, url)


def _mlflow_experiment(client) -> str:
    """MLFLOW_EXPERIMENT_ID, else MLFLOW_EXPERIMENT_NAME (made if missing), else MLflow's Default."""
    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return os.environ["MLFLOW_EXPERIMENT_ID"]
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if not name:
        return "0"
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


def log_to_wandb(points: list[Point], files: dict[str, list[Path]], destination: Destination, name: str,
                 warn) -> Logged:
    import wandb

    how = {"id": destination.run_id, "resume": "allow"} if destination.run_id else (
        {"id": group_run_id(destination.group), "resume": "allow", "name": destination.group,
         "group": destination.group} if destination.group else {"name": name})
    run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "lmeval", job_type="lmeval",
                     settings=wandb.Settings(silent=True, console="off"), **how)
    try:
        run.config.update(new_params(dict(run.config), points, warn))
        run.define_metric(PREFIX + "step")
        run.define_metric(PREFIX + "*", step_metric=PREFIX + "step")
        for point in sorted(points, key=lambda point: point.step):
            run.log({PREFIX + "step": point.step, **point.metrics})
            artifact = wandb.Artifact(f"lmeval-{point.run_id}", type="lmeval-run",
                                      metadata={"step": point.step, "model": point.model})
            for path in files[point.run_id]:
                artifact.add_file(str(path))
            run.log_artifact(artifact)  # add_file copied the files: the folder may go
        url = (f"offline run {run.id} in {Path(run.dir).parent} (upload it with `wandb sync`)" if run.offline
               else run.url)
        return Logged("wandb", run.id, url)
    finally:
        run.finish()


LOGGERS = {"mlflow": log_to_mlflow, "wandb": log_to_wandb}


def record(point: Point, logged: Logged) -> None:
    """Add LOGGED to the run's manifest (under its lock: no command is working on it)."""
    with RunLock(point.folder):
        manifest = Manifest.load(point.folder)
        manifest.tracking.append({"to": logged.tracker, "run_id": logged.run_id, "url": logged.url,
                                  "step": point.step, "at": time.time()})
        manifest.save(point.folder)


def make_points(work_dir: Path, run_ids: list[str], step: int | None = None) -> list[Point]:
    """The runs RUN_IDS of WORK_DIR as points; a run without scores is refused."""
    if step is not None and len(run_ids) > 1:
        raise UsageError("--step goes with one run; several take each its own step")
    return [make_point(work_dir, run_id, step) for run_id in run_ids]


def log_runs(app, work_dir: Path, points: list[Point], trackers: tuple[str, ...] | list[str],
             destination: Destination = Destination(), name: str | None = None) -> bool:
    """Log POINTS (runs of WORK_DIR) to each tracker as points of one tracker run; whether all
    went. A failure is a warning naming the `lmeval log` line that retries it; never an error."""
    run_ids = [point.run_id for point in points]
    steps = [point.step for point in points]
    if len(set(steps)) < len(steps):
        app.warn(f"runs {', '.join(run_ids)} share a step ({', '.join(map(str, steps))}): their points overlap; "
                 "name each checkpoint's folder by its step or give --step")
    with contextlib.ExitStack() as stack:
        try:
            files = stack.enter_context(artifacts(points))
        except Exception as error:  # noqa: BLE001 - as a tracker's failure: the evaluation stands
            app.warn(f"could not make the report pages to log ({failure_reason(error)}); the scores are kept in the "
                     f"run; retry with: {retry_line(work_dir, run_ids, trackers, destination)}")
            return False
        return all([log_to(app, tracker, points, files, destination, name or run_ids[0], work_dir)
                    for tracker in trackers])


def log_to(app, tracker: str, points: list[Point], files: dict[str, list[Path]], destination: Destination,
           name: str, work_dir: Path) -> bool:
    """Log POINTS to TRACKER and record it in their manifests; whether it went."""
    run_ids = [point.run_id for point in points]
    steps = [point.step for point in points]
    try:
        logged = LOGGERS[tracker](points, files, destination, name, app.warn)
        for point in points:
            record(point, logged)
    except Exception as error:  # noqa: BLE001 - whatever the library raised, the evaluation stands
        app.warn(f"could not log to {TRACKERS[tracker]} ({failure_reason(error)}); the scores are kept in the "
                 f"run; retry with: {retry_line(work_dir, run_ids, [tracker], destination)}")
        return False
    at = f"step {steps[0]}" if len(points) == 1 else f"steps {', '.join(map(str, sorted(steps)))}"
    app.info(f"logged {len(points)} run{'s' if len(points) > 1 else ''} to {TRACKERS[tracker]} at {at}: "
             f"{logged.url}")
    return True


def retry_line(work_dir: Path, run_ids: list[str], trackers, destination: Destination) -> str:
    """The `lmeval log` line that logs RUN_IDS to TRACKERS again, where they were meant to go."""
    to = "".join(f" --to {tracker}" for tracker in trackers)
    return f"lmeval log {' '.join(run_ids)} -w {work_dir}{to}{destination.options()}"


def failure_reason(error: BaseException) -> str:
    """What failed, short: `http://127.0.0.1:5000: Connection refused` for a tracker that is
    down, else the first line of the library's message."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    system = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if system:
        where = re.search(r"https?://[^\s/]+", text)
        return f"{where.group(0) + ': ' if where else ''}{system.group(1).strip()}"
    line = text.splitlines()[0]
    return line if len(line) <= 200 else line[:199] + "…"
