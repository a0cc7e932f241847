"""Showing scores: after a run, and for `lmeval results` from a run folder.

Kept light (no pydantic, no httpx) so `lmeval results` answers fast.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from lmeval import outputs
from lmeval.exceptions import UsageError
from lmeval.runs import RUN_ID_PATTERN, check_run_id

FORMATS = ("table", "json", "csv", "markdown")


def score_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_scores(model: str, scores: list[outputs.Score], fmt: str) -> str:
    """SCORES in FMT; the table is rendered by rich by the caller, the others are plain text."""
    rows = [(s.dataset, s.metric, score_text(s.value)) for s in scores]
    if fmt == "json":
        return json.dumps([{"dataset": s.dataset, "metric": s.metric, "model": model, "score": s.value}
                           for s in scores], indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["dataset", "metric", model])
        writer.writerows(rows)
        return buffer.getvalue().rstrip("\n")
    lines = [f"| dataset | metric | {model} |", "| --- | --- | ---: |"]
    lines += [f"| {dataset} | {metric} | {score} |" for dataset, metric, score in rows]
    return "\n".join(lines)


def print_scores(app, model: str, scores: list[outputs.Score], fmt: str = "table") -> None:
    if fmt != "table":
        app.out.print(render_scores(model, scores, fmt), markup=False)
        return
    from rich.table import Table

    table = Table(title=f"Scores of {model}")
    table.add_column("dataset")
    table.add_column("metric")
    table.add_column(model, justify="right")
    for score in scores:
        table.add_row(score.dataset, score.metric, score_text(score.value))
    app.out.print(table)


def find_run(work_dir: Path, run: str) -> Path:
    """The folder of RUN (an id, or `latest`: the newest run that has lmeval's manifest)."""
    work_dir = work_dir.expanduser().absolute()
    if run == "latest":
        runs = sorted(p for p in work_dir.glob("*") if RUN_ID_PATTERN.fullmatch(p.name) and (p / "lmeval.json").is_file())
        if not runs:
            raise UsageError(f"no lmeval runs in {work_dir}; run `lmeval run` first or pass -w")
        return runs[-1]
    folder = work_dir / check_run_id(run)
    if not folder.is_dir():
        raise UsageError(f"run {run} does not exist in {work_dir}; check the id or pass -w")
    return folder


def results(app, *, run: str, work_dir: Path, fmt: str) -> int:
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    folder = find_run(work_dir, run)
    try:
        model = json.loads((folder / "lmeval.json").read_text())["model_abbr"]
    except (OSError, ValueError, KeyError):
        raise UsageError(f"{folder} has no readable lmeval.json: not an lmeval run") from None
    summary = outputs.latest_summary(folder)
    if summary is None:
        raise UsageError(f"run {folder.name} has no scores yet; evaluate it with `lmeval judge --reuse {folder.name}`")
    print_scores(app, model, outputs.read_summary(summary, model), fmt)
    return 0
