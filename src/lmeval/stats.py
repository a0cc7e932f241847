"""Standard errors of scores over questions (Miller 2024, "Adding Error Bars to Evals").

A question asked n times counts once: its outcome is the share of its n answers right (1
correct, 0 otherwise), and a dataset's score is the mean of its questions' outcomes. Its
standard error is 100 x sd(outcomes, ddof=1) / sqrt(questions). A row that is the naive average
of other rows (mmlu_pro of its categories, core_average of the suite's core metrics) gets
sqrt(sum of their squared errors) / their count. A score that is not such a mean (checked within
half a display digit), or one over fewer than two questions, has none.

Kept light (no pydantic, no numpy) for `lmeval results`; the suites' layout (lmeval.suites)
is imported only for runs of a suite.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from lmeval import outputs
from lmeval.exceptions import StageFailed
from lmeval.samples import Question, dataset_questions

# A score must be the mean of its question outcomes for their spread to say anything about it;
# half of a display digit is the slack (OpenCompass's summary rounds to two decimals).
SCORE_SLACK = 0.005


def mean_stderr(outcomes: Sequence[float]) -> float | None:
    """The standard error, in points, of the mean of OUTCOMES (each question's share right)."""
    if len(outcomes) < 2:
        return None
    return 100 * statistics.stdev(outcomes) / math.sqrt(len(outcomes))


def average_stderr(errors: Sequence[float | None]) -> float | None:
    """The standard error of a naive average of rows with ERRORS (independent questions)."""
    if not errors or any(error is None for error in errors):
        return None
    return math.sqrt(sum(error * error for error in errors)) / len(errors)


def shows(value: float | None, mean: float) -> bool:
    """Whether the score VALUE (points, as the summary rounds it) is MEAN (points)."""
    return value is not None and abs(mean - value) <= SCORE_SLACK


def is_mean(value: float | None, outcomes: Sequence[float]) -> bool:
    """Whether the score VALUE (points) is the mean of OUTCOMES, to the summary's rounding."""
    return bool(outcomes) and shows(value, 100 * statistics.fmean(outcomes))


def outcomes(questions: list[Question]) -> list[float] | None:
    """Each question's outcome, or None while any answer is unscored."""
    if not questions or not all(question.scored for question in questions):
        return None
    return [question.share for question in questions]


@dataclass(frozen=True)
class Part:
    """A dataset of a run as the user picked it: its summary row, and the datasets OpenCompass
    scored for it (several for a group such as mmlu_pro, its categories)."""

    row: str
    datasets: tuple[str, ...]

    @property
    def is_group(self) -> bool:
        return self.datasets != (self.row,)


def _suite_items(manifest: dict) -> list:
    """The suite datasets of the run (lmeval.suites's), in its order."""
    names = [entry[1] for entry in (manifest.get("fingerprint_inputs") or {}).get("datasets", [])
             if isinstance(entry, list) and len(entry) > 1 and entry[0] == "suite"]
    if not names:
        return []
    from lmeval import suites

    known = {item.name: item for suite in suites.SUITES.values() for item in suite}
    return [known[name] for name in names if name in known]


def run_parts(manifest: dict) -> list[Part]:
    """The run's datasets, in the order it ran them, from its manifest."""
    items = {item.name: item for item in _suite_items(manifest)}
    parts = []
    for entry in (manifest.get("fingerprint_inputs") or {}).get("datasets", []):
        if not isinstance(entry, list) or len(entry) < 2:
            continue
        item = items.get(entry[1]) if entry[0] == "suite" else None
        parts.append(Part(item.summary[0][0], item.abbrs) if item else Part(entry[1], (entry[1],)))
    return parts


def averaged_rows(manifest: dict) -> dict[str, list[str]]:
    """Each naive_average row of the run's summary, with the rows it averages."""
    from_items = _suite_items(manifest)
    rows = {part.row: list(part.datasets) for part in run_parts(manifest) if part.is_group}
    if from_items:
        from lmeval import suites

        for suite in suites.whole_suites(from_items):
            rows[suites.CORE_AVERAGE] = [item.core_metric[0] for item in suite]
    return rows


def _question_outcomes(run_dir: Path, model: str, dataset: str) -> list[float] | None:
    if not outputs.predictions_file(run_dir, model, dataset).is_file():
        return None
    try:
        return outcomes(dataset_questions(run_dir, model, dataset))
    except StageFailed:
        return None  # files that disagree: `lmeval report` and `compare` say so; no error bar here


def with_stderr(run_dir: Path, manifest: dict, scores: list[outputs.Score]) -> list[outputs.Score]:
    """SCORES (the summary's rows of the run in RUN_DIR) with the standard error of each that is
    a mean over questions, or a naive average of such rows, computed from the run's files."""
    model = manifest["model_abbr"]
    averaged = averaged_rows(manifest)
    found: dict[str, tuple[float, float | None] | None] = {}  # row -> (its mean from the outcomes, stderr)

    def row(name: str) -> tuple[float, float | None] | None:
        if name not in found:
            if name in averaged:
                members = [row(member) for member in averaged[name]]
                found[name] = None if any(member is None for member in members) else (
                    statistics.fmean(member[0] for member in members),
                    average_stderr([member[1] for member in members]))
            else:
                shares = _question_outcomes(run_dir, model, name)
                found[name] = (100 * statistics.fmean(shares), mean_stderr(shares)) if shares else None
        return found[name]

    filled = []
    for score in scores:
        mean = row(score.dataset)
        filled.append(replace(score, stderr=mean[1] if mean is not None and shows(score.value, mean[0]) else None))
    return filled
