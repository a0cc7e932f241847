"""What lmeval must show of the chat suite's runs in miniature (tests/chat_suite.py), computed
from an answer key alone: how many times each dataset's questions are asked, each question's
answers right, and each summary row's standard error over questions (Miller 2024: a question's
n answers count once, as their share right; a naive average adds its rows' errors in quadrature)."""

from __future__ import annotations

import math
import statistics

from chat_suite import Item, Key

# How many times the suite's OpenCompass configs ask each dataset's questions (the others once).
RUNS = {"aime2025_repeat_32": 32, "GPQA_diamond_repeat_4": 4, "lcb_code_generation_repeat_6": 6}
CATEGORY = "mmlu_pro_"


def runs(dataset: str) -> int:
    return RUNS.get(dataset, 1)


def right_answers(item: Item, dataset: str) -> int:
    """How many of the question's answers are right: its replies cycle, n a multiple of them."""
    assert runs(dataset) % len(item.replies) == 0
    return round(item.share * runs(dataset))


def stderr_of(shares: list[float]) -> float | None:
    return 100 * statistics.stdev(shares) / math.sqrt(len(shares)) if len(shares) > 1 else None


def summary_rows(key: Key) -> list[str]:
    """The rows of a run's summary: each dataset's own, the mmlu_pro group's and core_average
    (when the run holds the whole suite), not mmlu_pro's categories."""
    return [name for name in key.expected if not name.startswith(CATEGORY)]


def expected_errors(key: Key) -> dict[str, float | None]:
    """Each row's standard error, in points: none for one with fewer than two questions, nor for
    an average over such a row."""
    errors = {name: stderr_of([item.share for item in items]) for name, items in key.items.items()}

    def average(rows: list[str]) -> float | None:
        members = [errors[row] for row in rows]
        return None if None in members else math.sqrt(sum(error ** 2 for error in members)) / len(members)

    errors["mmlu_pro"] = average([name for name in key.items if name.startswith(CATEGORY)])
    if "core_average" in key.expected:
        errors["core_average"] = average([row for row in summary_rows(key) if row != "core_average"])
    return errors


def score_cell(key: Key, row: str) -> str:
    """The row's score as lmeval shows it: `40.00 ± 8.94`, or `40.00` without an error."""
    error = expected_errors(key)[row]
    return f"{key.expected[row]:.2f}" + ("" if error is None else f" ± {error:.2f}")
