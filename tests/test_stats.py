"""lmeval.stats: standard errors over questions (a question's n answers count once), for a
dataset and for a naive average of rows, filled into a run's scores from its files (made by hand
in OpenCompass's layout, tests/oc_files.py). Every expected value is computed here."""

from __future__ import annotations

import math
import statistics

import pytest
from oc_files import Asked, score, write_judged, write_ruled, write_run

from lmeval import outputs
from lmeval.stats import average_stderr, is_mean, mean_stderr, with_stderr

RUN = "20250101_120000"


def stderr_of(questions: list[Asked]) -> float | None:
    shares = [question.share for question in questions]
    return 100 * statistics.stdev(shares) / math.sqrt(len(shares)) if len(shares) > 1 else None


def test_the_standard_error_is_the_spread_of_question_outcomes_over_their_square_root():
    assert mean_stderr([1, 0, 1, 0]) == pytest.approx(100 * math.sqrt(1 / 3) / 2)
    assert mean_stderr([1.0, 0.5, 0.0]) == pytest.approx(100 * 0.5 / math.sqrt(3))
    assert mean_stderr([0.25, 0.25]) == 0
    assert mean_stderr([1.0]) is None  # one question: no spread to measure


def test_a_naive_average_adds_its_rows_errors_in_quadrature():
    assert average_stderr([3.0, 4.0]) == pytest.approx(2.5)
    assert average_stderr([3.0, None]) is None


def test_a_score_is_a_mean_of_outcomes_to_half_a_display_digit():
    assert is_mean(66.67, [1, 1, 0]) and is_mean(66.662, [1, 1, 0])
    assert not is_mean(66.66, [1, 1, 0]) and not is_mean(None, [1]) and not is_mean(50.0, [])


AIME = [Asked(f"aime {index}", str(index), tuple(run % (index + 1) == 0 for run in range(4))) for index in range(3)]
TRIVIA = [Asked("Capital of France?", "Paris", (True,)), Asked("Capital of Peru?", "Lima", (False,)),
          Asked("Capital of Chad?", "N'Djamena", (None,))]


def test_a_runs_scores_get_the_standard_error_of_each_mean_over_questions(tmp_path):
    run_dir = tmp_path / RUN
    write_judged(run_dir, "aime", AIME)
    write_judged(run_dir, "trivia", TRIVIA)
    write_ruled(run_dir, "lonely", [Asked("Only one", "1", (True, False))])
    rows = [("aime", "accuracy (4 runs average)", score(AIME)), ("trivia", "accuracy", score(TRIVIA)),
            ("trivia", "f1", 12.5), ("lonely", "accuracy", 50.0)]
    manifest = {"model_abbr": "m", "fingerprint_inputs": {"datasets": [["file", name, "qa", "0"] for name in
                                                                        ("aime", "trivia", "lonely")]}}
    write_run(tmp_path, RUN, manifest["fingerprint_inputs"]["datasets"], rows)
    scores = with_stderr(run_dir, manifest, [outputs.Score(name, metric, round(value, 2)) for name, metric, value in rows])
    assert [(s.dataset, s.metric, s.stderr) for s in scores] == [
        ("aime", "accuracy (4 runs average)", pytest.approx(stderr_of(AIME))),
        ("trivia", "accuracy", pytest.approx(stderr_of(TRIVIA))),
        ("trivia", "f1", None),  # not the mean of its question outcomes
        ("lonely", "accuracy", None)]  # one question


def test_groups_of_the_chat_suite_add_their_members_errors(tmp_path):
    """mmlu_pro averages its 14 categories, core_average the suite's six core rows."""
    from lmeval import suites

    run_dir = tmp_path / RUN
    suite = {item.name: item for item in suites.CHAT_SUITE}
    per_dataset = {}
    for number, abbr in enumerate(abbr for item in suites.CHAT_SUITE for abbr in item.abbrs):
        per_dataset[abbr] = [Asked(f"{abbr} {index}", "g", tuple((index + number + run) % 3 == 0 for run in range(2)))
                             for index in range(2 + number % 3)]
        write_judged(run_dir, abbr, per_dataset[abbr])
    categories = suite["mmlu_pro"].abbrs
    errors = {abbr: stderr_of(questions) for abbr, questions in per_dataset.items()}
    values = {abbr: score(questions) for abbr, questions in per_dataset.items()}
    errors["mmlu_pro"] = math.sqrt(sum(errors[abbr] ** 2 for abbr in categories)) / len(categories)
    values["mmlu_pro"] = statistics.fmean(values[abbr] for abbr in categories)
    core = ["aime2025_repeat_32", "GPQA_diamond_repeat_4", "IFEval", "lcb_code_generation_repeat_6", "mmlu_pro",
            "hle_llmjudge"]
    errors["core_average"] = math.sqrt(sum(errors[row] ** 2 for row in core)) / len(core)
    values["core_average"] = statistics.fmean(values[row] for row in core)
    rows = ["core_average", *core]
    datasets = [["suite", name] for name in suite]
    write_run(tmp_path, RUN, datasets, [(row, "accuracy", values[row]) for row in rows])
    manifest = {"model_abbr": "m", "fingerprint_inputs": {"datasets": datasets}}
    scores = with_stderr(run_dir, manifest, [outputs.Score(row, "m", round(values[row], 2)) for row in rows])
    assert {s.dataset: s.stderr for s in scores} == {row: pytest.approx(errors[row]) for row in rows}
    # A category with one question has no error, and neither have the averages over it.
    write_judged(run_dir, "mmlu_pro_law", per_dataset["mmlu_pro_law"][:1])
    values["mmlu_pro_law"] = score(per_dataset["mmlu_pro_law"][:1])
    values["mmlu_pro"] = statistics.fmean(values[abbr] for abbr in categories)
    values["core_average"] = statistics.fmean(values[row] for row in core)
    scores = with_stderr(run_dir, manifest, [outputs.Score(row, "m", round(values[row], 2)) for row in rows])
    assert {s.dataset: s.stderr for s in scores} == {row: None if row in ("mmlu_pro", "core_average") else
                                                     pytest.approx(errors[row]) for row in rows}
