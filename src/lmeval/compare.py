"""Comparing runs: their scores side by side, and for each run after the first its difference to
the first with a 95% confidence interval, so a user can tell a better checkpoint from noise.

The interval comes from a paired bootstrap over the questions both runs answered, clustered
(Miller 2024, "Adding Error Bars to Evals"): a question asked n times counts once, its outcome
the share of its n answers right (1 correct, 0 otherwise), so the 32 answers to one AIME problem
are one draw, not 32. Questions are matched by prompt text (all n answers to a question share
it), so runs of the same dataset pair up whatever order OpenCompass wrote them in; the
per-question differences of the outcomes are resampled with replacement BOOTSTRAP_RESAMPLES times
from a fixed seed, and the interval is the 2.5th to 97.5th percentile of the resampled mean
difference. A difference whose interval holds 0 is not significant. Each run's score shows its
standard error over questions (lmeval.stats).

Drawing the resamples as multinomial counts over the distinct differences is the same
distribution as resampling the questions one by one, in milliseconds for 10,000 questions.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lmeval import outputs, stats
from lmeval.exceptions import UsageError
from lmeval.results import RunScores, recorded_answers, run_scores, score_text
from lmeval.samples import dataset_questions

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
FORMATS = ("table", "json", "csv", "markdown")
METHOD = (f"{CONFIDENCE:.0%} confidence interval of each difference from a paired bootstrap over the questions "
          f"both runs share, a question's n answers counting once as their share right ({BOOTSTRAP_RESAMPLES:,} "
          f"resamples, seed {BOOTSTRAP_SEED}); ± standard error over questions")


@dataclass(frozen=True)
class Difference:
    """A later run's score minus the first run's, in the score's points."""

    delta: float | None
    low: float | None  # the interval; None where the outcomes cannot give one (see `why`)
    high: float | None
    questions: int  # questions the interval is over (both runs answered them)
    why: str | None = None  # why there is no interval

    @property
    def significant(self) -> bool | None:
        if self.low is None or self.high is None:
            return None
        return not self.low <= 0 <= self.high


@dataclass(frozen=True)
class Row:
    dataset: str
    metric: str
    scores: list[float | None]  # per run, in the order given
    errors: list[float | None]  # each score's standard error over questions
    differences: list[Difference]  # per run after the first
    cut: list[float | None]  # per run, the share of its answers cut at --max-out-len (lmeval.answers)


@dataclass(frozen=True)
class Comparison:
    runs: list[RunScores]
    rows: list[Row]
    not_compared: dict[str, list[str]]  # dataset some runs lack -> the runs that have it

    @property
    def cut_known(self) -> bool:
        """Whether any run had answers cut at its limit: only then are the cut shares shown."""
        return any(share for row in self.rows for share in row.cut)


def main_scores(run: RunScores) -> dict[str, outputs.Score]:
    """Each dataset's main score: the first metric OpenCompass's summary gives it."""
    scores: dict[str, outputs.Score] = {}
    for score in run.scores:
        scores.setdefault(score.dataset, score)
    return scores


def question_outcomes(run: RunScores, dataset: str) -> dict[tuple[str, int], float] | str:
    """Each question's outcome (the share of its answers right) of DATASET in RUN, keyed by its
    prompt and which asking of that prompt it is (a dataset may hold a prompt twice); or why
    there are none."""
    if not outputs.predictions_file(run.folder, run.model, dataset).is_file():
        return f"run {run.folder.name} has no per-question outcomes of {dataset} (a group of datasets?)"
    questions = dataset_questions(run.folder, run.model, dataset)
    shares = stats.outcomes(questions)
    if shares is None:
        return f"run {run.folder.name} has not scored {dataset}'s answers"
    if not stats.is_mean(main_scores(run)[dataset].value, shares):
        return f"{dataset}'s score is not the mean of its questions' shares of answers right"
    seen: Counter[str] = Counter()
    keyed = {}
    for question, share in zip(questions, shares):
        seen[question.prompt] += 1
        keyed[(question.prompt, seen[question.prompt])] = share
    return keyed


def paired_outcomes(first: RunScores, later: RunScores, dataset: str) -> tuple[list[float], list[float]] | str:
    """The outcomes of the questions of DATASET both runs answered, in pairs; or why there are none."""
    keyed = []
    for run in (first, later):
        found = question_outcomes(run, dataset)
        if isinstance(found, str):
            return found
        keyed.append(found)
    shared = [key for key in keyed[0] if key in keyed[1]]
    if not shared:
        return f"runs {first.folder.name} and {later.folder.name} share no question of {dataset}"
    return [keyed[0][key] for key in shared], [keyed[1][key] for key in shared]


def bootstrap_interval(differences: list[float]) -> tuple[float, float]:
    """The percentile interval of the mean of DIFFERENCES over seeded resamples."""
    import numpy

    values, counts = numpy.unique(numpy.asarray(differences), return_counts=True)
    rng = numpy.random.default_rng(BOOTSTRAP_SEED)
    draws = rng.multinomial(len(differences), counts / counts.sum(), size=BOOTSTRAP_RESAMPLES)
    means = draws @ values / len(differences)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = numpy.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def difference(first: RunScores, later: RunScores, dataset: str) -> Difference:
    base, other = main_scores(first)[dataset].value, main_scores(later)[dataset].value
    plain = None if base is None or other is None else other - base
    paired = paired_outcomes(first, later, dataset)
    if isinstance(paired, str):
        return Difference(plain, None, None, 0, paired)
    before, after = paired
    steps = [b - a for a, b in zip(before, after)]
    low, high = bootstrap_interval(steps)
    return Difference(100 * sum(steps) / len(steps), 100 * low, 100 * high, len(steps))


def compare(work_dir: Path, run_ids: list[str]) -> Comparison:
    """Compare the runs RUN_IDS of WORK_DIR on the datasets every one of them scored."""
    if len(run_ids) < 2:
        raise UsageError("compare needs two runs or more: lmeval compare RUN RUN...")
    runs = [run_scores(work_dir, run_id) for run_id in run_ids]
    names = [run.folder.name for run in runs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UsageError(f"run {', '.join(twice)} is given twice; name each run once")
    per_run = [main_scores(run) for run in runs]
    shared = [name for name in per_run[0] if all(name in scores for scores in per_run)]
    if not shared:
        raise UsageError(f"runs {', '.join(names)} have no dataset in common; compare runs of the same datasets")
    everywhere = dict.fromkeys(name for scores in per_run for name in scores)
    not_compared = {name: [run.folder.name for run, scores in zip(runs, per_run) if name in scores]
                    for name in everywhere if name not in shared}
    answers = [recorded_answers(run.manifest) for run in runs]
    rows = [Row(name, per_run[0][name].metric, [scores[name].value for scores in per_run],
                [scores[name].stderr for scores in per_run], [difference(runs[0], run, name) for run in runs[1:]],
                [counted[name].cut_share if name in counted else None for counted in answers])
            for name in shared]
    return Comparison(runs, rows, not_compared)


def signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def difference_text(diff: Difference) -> str:
    """`+33.33 [+8.33, +58.33]`, with `not significant` where the interval holds 0."""
    if diff.low is None:
        return signed(diff.delta)
    text = f"{signed(diff.delta)} [{signed(diff.low)}, {signed(diff.high)}]"
    return text if diff.significant else f"{text} not significant"


def notes(comparison: Comparison) -> list[str]:
    """What the table does not say by itself: datasets left out, and intervals missing."""
    lines = [f"not compared: {name} (only in {', '.join(runs)})" for name, runs in comparison.not_compared.items()]
    for row in comparison.rows:
        for run, diff in zip(comparison.runs[1:], row.differences):
            if diff.why:
                lines.append(f"{row.dataset}: no interval for {run.folder.name}: {diff.why}")
    return lines


def headers(comparison: Comparison) -> list[str]:
    first = comparison.runs[0].folder.name
    return (["dataset", "metric"] + [f"{run.folder.name} {run.model}" for run in comparison.runs]
            + [f"Δ {run.folder.name} vs {first}" for run in comparison.runs[1:]]
            + [f"cut {run.folder.name}" for run in comparison.runs if comparison.cut_known])


def cut_text(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def cells(row: Row, cut_known: bool = False) -> list[str]:
    return [row.dataset, row.metric, *map(score_text, row.scores, row.errors), *map(difference_text, row.differences),
            *(map(cut_text, row.cut) if cut_known else [])]


def print_comparison(app, comparison: Comparison, fmt: str = "table") -> None:
    """COMPARISON in FMT on stdout, what it leaves out on stderr."""
    from rich.table import Table

    for note in notes(comparison):
        app.info(note)
    if fmt != "table":
        text = {"json": as_json, "csv": as_csv, "markdown": as_markdown}[fmt](comparison)
        app.out.print(text, markup=False, soft_wrap=True)
        return
    table = Table(title="Comparison", caption=f"Δ: {METHOD}; not significant: the interval holds 0")
    for position, header in enumerate(headers(comparison)):
        table.add_column(header, justify="left" if position < 2 else "right")
    for row in comparison.rows:
        table.add_row(*cells(row, comparison.cut_known))
    app.out.print(table)


def as_json(comparison: Comparison) -> str:
    runs = comparison.runs
    return json.dumps({
        "method": METHOD,
        "runs": [{"run_id": run.folder.name, "model": run.model} for run in runs],
        "datasets": [{
            "dataset": row.dataset, "metric": row.metric,
            "scores": {run.folder.name: value for run, value in zip(runs, row.scores)},
            "stderr": {run.folder.name: error for run, error in zip(runs, row.errors)},
            "differences": {run.folder.name: {"delta": diff.delta, "ci_low": diff.low, "ci_high": diff.high,
                                              "significant": diff.significant, "questions": diff.questions,
                                              "no_interval_because": diff.why}
                            for run, diff in zip(runs[1:], row.differences)},
            "cut_share": {run.folder.name: share for run, share in zip(runs, row.cut)},
        } for row in comparison.rows],
        "not_compared": comparison.not_compared,
    }, indent=2, ensure_ascii=False)


def as_csv(comparison: Comparison) -> str:
    """One line per dataset and run: its score and, after the first run, its difference."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["dataset", "metric", "run_id", "model", "score", "stderr", "delta", "ci_low", "ci_high",
                     "significant", "questions", *(["cut_share"] if comparison.cut_known else [])])
    for row in comparison.rows:
        for position, (run, value, error, share) in enumerate(zip(comparison.runs, row.scores, row.errors, row.cut)):
            diff = row.differences[position - 1] if position else None
            writer.writerow([row.dataset, row.metric, run.folder.name, run.model, score_text(value), _number(error),
                             *(("", "", "", "", "") if diff is None else (
                                 _number(diff.delta), _number(diff.low), _number(diff.high),
                                 "" if diff.significant is None else str(diff.significant).lower(),
                                 diff.questions or "")),
                             *([] if not comparison.cut_known else ["" if share is None else f"{share:g}"])])
    return buffer.getvalue().rstrip("\n")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def as_markdown(comparison: Comparison) -> str:
    head = headers(comparison)
    lines = ["| " + " | ".join(head) + " |", "| --- | --- |" + " ---: |" * (len(head) - 2)]
    lines += ["| " + " | ".join(cells(row, comparison.cut_known)) + " |" for row in comparison.rows]
    return "\n".join(lines)
