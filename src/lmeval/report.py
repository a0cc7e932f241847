"""`lmeval report`: one HTML page per run that opens from disk with no network: the run's
settings from its manifest, its scores and, per dataset, every sample (prompt, answer, the
model's reasoning, gold, outcome, the judge's reply) with filters.

The samples are embedded as JSON and rendered by the page's own script, a page of rows at a
time, so the page stays quick with 10,000 of them. Every text from the run reaches the page
escaped (jinja2's autoescape, `tojson`) and the script only ever sets `textContent`; the page's
Content-Security-Policy refuses any fetch, so a prediction holding HTML can neither run nor
call out.
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

from lmeval import __version__, outputs
from lmeval.exceptions import UsageError
from lmeval.files import write_private
from lmeval.results import INVALID_COLUMN, invalid_text, judged_scores, read_manifest, score_text
from lmeval.runlist import dataset_names
from lmeval.samples import CORRECT, INCORRECT, INVALID, UNSCORED, Sample, dataset_samples

OUTCOMES = (CORRECT, INCORRECT, INVALID, UNSCORED)
PAGE_ROWS = 200  # rows the page renders at first, and each time the user scrolls to the end of a table


@dataclass(frozen=True)
class DatasetPart:
    name: str
    samples: list[Sample] | None  # None: no predictions (see missing)
    missing: str = ""


@dataclass(frozen=True)
class RunReport:
    run_dir: Path
    manifest: dict
    model: str
    scores: list[outputs.Score] | None  # None: not evaluated yet
    datasets: list[DatasetPart]

    @property
    def missing(self) -> list[DatasetPart]:
        return [part for part in self.datasets if part.samples is None]


def read_run(run_dir: Path) -> RunReport:
    """Everything the page shows, read from RUN_DIR; a run without a manifest or without any
    predictions is refused."""
    manifest = read_manifest(run_dir)
    model = manifest["model_abbr"]
    names = dataset_names(manifest)
    if not names:
        raise UsageError(f"the manifest of run {run_dir.name} names no datasets: nothing to report")
    parts = []
    for name in names:
        if outputs.predictions_file(run_dir, model, name).is_file():
            parts.append(DatasetPart(name, dataset_samples(run_dir, model, name)))
        else:
            parts.append(DatasetPart(name, None, f"no predictions yet ({outputs.predictions_file(run_dir, model, name)})"))
    if all(part.samples is None for part in parts):
        raise UsageError(f"run {run_dir.name} has no predictions yet; infer them with "
                         f"`lmeval infer --reuse {run_dir.name}`")
    summary = outputs.latest_summary(run_dir)
    scores = None if summary is None else judged_scores(run_dir, model, outputs.read_summary(summary, model), manifest)
    return RunReport(run_dir, manifest, model, scores, parts)


# ---------------------------------------------------------------- what the settings tables show


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def time_text(timestamp: float | None) -> str:
    return "-" if timestamp is None else datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def value_text(value: Any) -> str:
    """A manifest value as one readable cell: lists joined, tables as compact JSON."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(value_text(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


def _run_rows(report: RunReport) -> list[tuple[str, str]]:
    """The run at a glance: what was evaluated, where, and how its stages went."""
    manifest = report.manifest
    inputs = manifest.get("inputs") or {}
    servers = manifest.get("servers") or {}
    stages = manifest.get("stages") or {}
    return [
        ("run", report.run_dir.name),
        ("model", report.model),
        ("model path", inputs.get("model") or (manifest.get("fingerprint_inputs") or {}).get("model") or "-"),
        ("task", inputs.get("task") or "-"),
        ("datasets", ", ".join(part.name for part in report.datasets)),
        ("judge model", servers["judge"].get("model", "-") if "judge" in servers else "none"),
        ("GPUs", ", ".join(f"{role} {value_text(server.get('gpus') or []) or '-'}" for role, server in servers.items())
         or "-"),
        ("stages", ", ".join(f"{name} {stage.get('status', '?')} ({duration_text(stage.get('seconds'))})"
                             for name, stage in stages.items()) or "-"),
        ("started", time_text(manifest.get("created"))),
        ("wall time", duration_text(manifest.get("wall_seconds"))),
    ]


def _more_rows(manifest: dict) -> list[tuple[str, str]]:
    """The command line (keys were redacted when it was recorded), servers that died and were
    started again, and outputs moved aside."""
    rows = [("command", shlex.join(manifest["command"]))] if manifest.get("command") else []
    rows += [("server restarted", f"{entry.get('role', '?')} during {entry.get('stage', '?')} at "
              f"{time_text(entry.get('at'))}: {entry.get('died', '')}") for entry in manifest.get("restarts") or []]
    return rows + [("outputs moved aside", value_text(entry)) for entry in manifest.get("stale") or []]


def _generation_rows(manifest: dict) -> list[tuple[str, str]]:
    generation = (manifest.get("inputs") or {}).get("generation") \
        or (manifest.get("fingerprint_inputs") or {}).get("generation") or {}
    return [(key, value_text(value)) for key, value in generation.items() if value is not None]


SERVER_COLUMNS = ("server", "model", "GPUs", "tp", "URL", "ready after", "command")


def _server_rows(manifest: dict) -> list[tuple[str, ...]]:
    rows = []
    for role, server in (manifest.get("servers") or {}).items():
        where = "already running (not started by lmeval)" if server.get("external") else server.get("command", "")
        if server.get("job_id"):
            where = f"Slurm job {server['job_id']} on {server.get('node') or '?'}: {where}"
        rows.append((role, server.get("model", "-"), value_text(server.get("gpus") or []) or "-",
                     str(server.get("tp") or "-"), server.get("url", "-"), duration_text(server.get("ready_seconds")),
                     where))
    return rows


STAGE_COLUMNS = ("stage", "status", "started", "duration", "of it OpenCompass", "message")


def _stage_rows(manifest: dict) -> list[tuple[str, ...]]:
    return [(name, stage.get("status", "?"), time_text(stage.get("started")), duration_text(stage.get("seconds")),
             duration_text(stage.get("opencompass_seconds")), stage.get("message") or "")
            for name, stage in (manifest.get("stages") or {}).items()]


# ---------------------------------------------------------------- the page


def _score_rows(scores: list[outputs.Score]) -> list[dict[str, str]]:
    return [{"dataset": score.dataset, "metric": score.metric, "score": score_text(score.value),
             "invalid": invalid_text(score)} for score in scores]


def _dataset_views(parts: list[DatasetPart]) -> list[dict[str, Any]]:
    views = []
    for number, part in enumerate(parts, 1):
        counts = Counter(sample.outcome for sample in part.samples or [])
        views.append({"name": part.name, "anchor": f"dataset-{number}", "missing": part.missing,
                      "total": len(part.samples or []),
                      "counts": [(outcome, counts[outcome]) for outcome in OUTCOMES if counts[outcome]],
                      "judged": any(sample.judge_reply is not None for sample in part.samples or [])})
    return views


def render_page(report: RunReport) -> str:
    """The page of REPORT as one HTML string: styles, script and data inline."""
    environment = jinja2.Environment(loader=jinja2.PackageLoader("lmeval", "templates"), autoescape=True,
                                     trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    environment.policies["json.dumps_kwargs"] = {"sort_keys": False}  # datasets and fields in the run's order
    template = environment.get_template("report.html.j2")
    return template.render(
        title=f"{report.model}, run {report.run_dir.name}",
        model=report.model,
        run_id=report.run_dir.name,
        version=__version__,
        made=datetime.now().strftime("%Y-%m-%d %H:%M"),
        scores=_score_rows(report.scores or []),
        invalid_column=INVALID_COLUMN,
        any_judged=any(score.judge_replies is not None for score in report.scores or []),
        run_rows=_run_rows(report),
        more_rows=_more_rows(report.manifest),
        generation_rows=_generation_rows(report.manifest),
        server_columns=SERVER_COLUMNS,
        server_rows=_server_rows(report.manifest),
        stage_columns=STAGE_COLUMNS,
        stage_rows=_stage_rows(report.manifest),
        versions=sorted((report.manifest.get("versions") or {}).items()),
        datasets=_dataset_views(report.datasets),
        samples={part.name: [vars(sample) for sample in part.samples]
                 for part in report.datasets if part.samples is not None},
        page_rows=PAGE_ROWS,
    )


def write_page(text: str, path: Path) -> Path:
    """Write the page to PATH (absolute, returned); a path that cannot be written is one line."""
    path = path.expanduser().absolute()
    if path.is_dir():
        raise UsageError(f"-o {path} is a folder; give the HTML file to write")
    try:
        write_private(path, text)
    except OSError as error:
        raise UsageError(f"cannot write {path} ({error.strerror or error}); pick another -o") from None
    return path
