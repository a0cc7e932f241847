"""Showing scores: after a run, and for `lmeval results` from a run folder.

Kept light (no pydantic, no httpx) so `lmeval results` answers fast.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path

from lmeval import outputs
from lmeval.answers import AnswerStats, cut_warnings
from lmeval.exceptions import UsageError

FORMATS = ("table", "json", "csv", "markdown")


def score_text(value: float | None, stderr: float | None = None) -> str:
    """`40.00`, or `40.00 ± 8.94` with its standard error."""
    if value is None:
        return "-"
    return f"{value:.2f}" if stderr is None else f"{value:.2f} ± {stderr:.2f}"


STDERR_NOTE = ("±: standard error over questions (a question's n answers count once, as their share right); "
               "none where the score is not such a mean or has fewer than two questions")


INVALID_COLUMN = "invalid judge replies"


def invalid_text(score: outputs.Score) -> str:
    """`2 of 40` for a judged dataset, empty for one scored by rule."""
    if score.judge_replies is None:
        return ""
    return f"{score.judge_invalid} of {score.judge_replies}"


def any_invalid(scores: list[outputs.Score]) -> bool:
    """Whether the judge gave any invalid reply: only then do the table, CSV and Markdown get
    the column (JSON always carries the counts)."""
    return any(score.judge_invalid for score in scores)


def invalid_warnings(scores: list[outputs.Score]) -> list[str]:
    return [f"{score.dataset}: {invalid_text(score)} judge replies were neither A (correct) nor B "
            f"(incorrect); OpenCompass counts them as wrong in {score.metric}"
            for score in scores if score.judge_invalid]


# What the answers say (lmeval.answers), as the table and Markdown show it, and as CSV columns.
ANSWER_COLUMNS = ("cut at limit", "empty", "prompt too long", "tokens mean / median / p95 / max", "tokens/s")
ANSWER_CSV = ("cut_share", "cut", "empty", "too_long", "tokens_mean", "tokens_median", "tokens_p95", "tokens_max",
              "tokens_per_second")


def answer_cells(stats: AnswerStats | None) -> list[str]:
    if stats is None:
        return [""] * len(ANSWER_COLUMNS)
    share = stats.cut_share
    tokens = " / ".join("-" if value is None else f"{value:g}" for value in (
        stats.tokens_mean, stats.tokens_median, stats.tokens_p95, stats.tokens_max))
    return [f"{share:.0%} ({stats.cut} of {stats.recorded})" if share is not None else "-", str(stats.empty),
            str(stats.too_long), tokens, "-" if stats.tokens_per_second is None else f"{stats.tokens_per_second:g}"]


def answer_csv(stats: AnswerStats | None) -> list[str]:
    values = stats.as_dict() if stats is not None else {}
    return ["" if values.get(name) is None else f"{values[name]:g}" for name in ANSWER_CSV]


def render_scores(model: str, scores: list[outputs.Score], fmt: str,
                  answers: dict[str, AnswerStats] | None = None) -> str:
    """SCORES in FMT, with what the ANSWERS of each row say where the run recorded it; the table
    is rendered by rich by the caller, the others are plain text."""
    extra, said = any_invalid(scores), bool(answers)
    answers = answers or {}
    rows = [(s.dataset, s.metric, score_text(s.value, s.stderr), *([invalid_text(s)] if extra else []),
             *(answer_cells(answers.get(s.dataset)) if said else [])) for s in scores]
    if fmt == "json":
        return json.dumps([{"dataset": s.dataset, "metric": s.metric, "model": model, "score": s.value,
                            "stderr": s.stderr, "judge_replies": s.judge_replies, "judge_invalid": s.judge_invalid,
                            **({"answers": answers[s.dataset].as_dict() if s.dataset in answers else None}
                               if said else {})}
                           for s in scores], indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["dataset", "metric", model, "stderr",
                         *(["invalid_judge_replies", "judge_replies"] if extra else []), *(ANSWER_CSV if said else [])])
        writer.writerows([(s.dataset, s.metric, score_text(s.value), score_text(s.stderr) if s.stderr is not None
                           else "", *([_count(s.judge_invalid), _count(s.judge_replies)] if extra else []),
                           *(answer_csv(answers.get(s.dataset)) if said else []))
                          for s in scores])
        return buffer.getvalue().rstrip("\n")
    head = f"| dataset | metric | {model} |" + (f" {INVALID_COLUMN} |" if extra else "") + \
        "".join(f" {column} |" for column in ANSWER_COLUMNS if said)
    lines = [head, "| --- | --- | ---: |" + (" ---: |" if extra else "") + " ---: |" * (len(ANSWER_COLUMNS) * said)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _count(value: int | None) -> str:
    return "" if value is None else str(value)


def print_scores(app, model: str, scores: list[outputs.Score], fmt: str = "table",
                 answers: dict[str, AnswerStats] | None = None) -> None:
    """SCORES in FMT on stdout, each row with what its ANSWERS say; under them, on stderr, a
    warning for each score that is only a lower bound (many answers cut at the limit)."""
    for warning in invalid_warnings(scores):
        app.warn(warning)
    shown = {score.dataset for score in scores}
    answers = {row: stats for row, stats in (answers or {}).items() if row in shown}
    if fmt != "table":
        app.out.print(render_scores(model, scores, fmt, answers), markup=False)
    else:
        app.out.print(score_table(model, scores, answers))
    for warning in cut_warnings(answers):
        app.warn(warning)


def score_table(model: str, scores: list[outputs.Score], answers: dict[str, AnswerStats]):
    from rich.table import Table

    extra = any_invalid(scores)
    table = Table(title=f"Scores of {model}", caption=STDERR_NOTE if any(s.stderr is not None for s in scores)
                  else None)
    table.add_column("dataset")
    table.add_column("metric")
    table.add_column(model, justify="right")
    if extra:
        table.add_column(INVALID_COLUMN, justify="right")
    # The table stays narrow: what was cut or refused, where anything was (the rest: --format).
    shown = [(column, position) for position, column in enumerate(ANSWER_COLUMNS[:3])
             if any(getattr(stats, ("cut", "empty", "too_long")[position]) for stats in answers.values())]
    for column, _ in shown:
        table.add_column(column, justify="right")
    for score in scores:
        cells = answer_cells(answers.get(score.dataset))
        table.add_row(score.dataset, score.metric, score_text(score.value, score.stderr),
                      *([invalid_text(score)] if extra else []), *(cells[position] for _, position in shown))
    return table


def recorded_answers(manifest: dict) -> dict[str, AnswerStats]:
    """What the run's answers say per summary row, as it recorded them (none for runs made
    before lmeval kept them)."""
    return {row: AnswerStats.from_dict(stats) for row, stats in (manifest.get("answers") or {}).items()
            if isinstance(stats, dict)}


def judged_scores(run_dir: Path, model: str, scores: list[outputs.Score], manifest: dict) -> list[outputs.Score]:
    """SCORES with the judge's reply counts and their standard errors: as the run recorded
    them, else counted from the judge's files of the datasets the manifest says are behind each
    row, and computed from the run's files (lmeval.stats; only for runs that lack them)."""
    recorded = {(entry.get("dataset"), entry.get("metric")): entry for entry in manifest.get("scores") or []}
    rows = manifest.get("judge_rows") or {}
    filled = []
    for score in scores:
        entry = recorded.get((score.dataset, score.metric), {})
        if entry.get("judge_replies") is not None:
            counts = outputs.JudgeReplies(entry["judge_replies"], entry.get("judge_invalid") or 0)
        else:
            counts = outputs.judge_replies(run_dir, model, rows.get(score.dataset, [score.dataset]))
        filled.append(replace(outputs.with_judge_replies(score, counts), stderr=entry.get("stderr")))
    if all(score.stderr is not None for score in filled):
        return filled  # a row without one may be a run recorded before lmeval computed them: look again
    from lmeval.stats import with_stderr

    return with_stderr(run_dir, manifest, filled)


def read_manifest(run_dir: Path) -> dict:
    """RUN_DIR's lmeval.json as plain data (no pydantic: commands that only read stay fast)."""
    try:
        manifest = json.loads((run_dir / "lmeval.json").read_text())
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("model_abbr"), str):
        raise UsageError(f"{run_dir} has no readable lmeval.json: not an lmeval run")
    return manifest


@dataclass(frozen=True)
class RunScores:
    folder: Path
    manifest: dict
    model: str
    scores: list[outputs.Score]  # the newest summary's rows, with the judge's reply counts


def run_scores(work_dir: Path, run: str) -> RunScores:
    """The scores of RUN (an id or `latest`) in WORK_DIR, as `lmeval results` shows them."""
    from lmeval.runs import find_run

    folder = find_run(work_dir, run)
    manifest = read_manifest(folder)
    model = manifest["model_abbr"]
    summary = outputs.latest_summary(folder)
    if summary is None:
        raise UsageError(f"run {folder.name} has no scores yet; evaluate it with `lmeval judge --reuse {folder.name}`")
    scores = judged_scores(folder, model, outputs.read_summary(summary, model), manifest)
    return RunScores(folder, manifest, model, scores)
