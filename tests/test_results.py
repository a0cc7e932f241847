"""`lmeval results` and `lmeval runs` on run folders made by hand in OpenCompass's layout
(tests/oc_files.py): every score with its standard error over questions, as the run recorded it
or, for a run recorded without them, computed from its files; expected values computed here."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics

import pytest
from oc_files import Asked, score, write_judged, write_ruled, write_run
from typer.testing import CliRunner

from lmeval.cli import app

RUN = "20250101_120000"
AIME = [Asked("aime 1", "24", (True,) * 4), Asked("aime 2", "12", (True, False, True, False)),
        Asked("aime 3", "36", (None,) * 4)]
IFEVAL = [Asked(f"ifeval {index}", "refer", (index % 2 == 0,)) for index in range(5)]


def stderr_of(questions: list[Asked]) -> float:
    return 100 * statistics.stdev([question.share for question in questions]) / math.sqrt(len(questions))


def cell(questions: list[Asked]) -> str:
    return f"{score(questions):.2f} ± {stderr_of(questions):.2f}"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})


def make_run(work_dir, recorded=None):
    run_dir = work_dir / RUN
    write_judged(run_dir, "aime2025_repeat_32", AIME)
    write_ruled(run_dir, "IFEval", IFEVAL)
    return write_run(work_dir, RUN, [["suite", "aime2025"], ["suite", "ifeval"]], [
        ("aime2025_repeat_32", "accuracy (32 runs average)", score(AIME)),
        ("IFEval", "Prompt-level-strict-accuracy", score(IFEVAL)), ("IFEval", "Inst-level-loose-accuracy", 77.0)],
        recorded)


def test_every_score_shows_its_standard_error_in_each_format(tmp_path):
    make_run(tmp_path)
    table = invoke("results", RUN, "-w", str(tmp_path))
    assert table.exit_code == 0, table.output
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in table.stdout.splitlines()
            if line.startswith("│ ")]
    assert rows == [["aime2025_repeat_32", "accuracy (32 runs average)", cell(AIME), "4 of 12"],
                    ["IFEval", "Prompt-level-strict-accuracy", cell(IFEVAL), ""],
                    ["IFEval", "Inst-level-loose-accuracy", "77.00", ""]]
    assert "±: standard error over questions (a question's n answers count once" in " ".join(table.stdout.split())
    markdown = invoke("results", RUN, "-w", str(tmp_path), "--format", "markdown")
    assert markdown.stdout.splitlines()[2:] == [
        f"| aime2025_repeat_32 | accuracy (32 runs average) | {cell(AIME)} | 4 of 12 |",
        f"| IFEval | Prompt-level-strict-accuracy | {cell(IFEVAL)} |  |",
        "| IFEval | Inst-level-loose-accuracy | 77.00 |  |"]
    lines = list(csv.DictReader(io.StringIO(invoke("results", RUN, "-w", str(tmp_path), "--format", "csv").stdout)))
    assert [(line["dataset"], line["m"], line["stderr"]) for line in lines] == [
        ("aime2025_repeat_32", f"{score(AIME):.2f}", f"{stderr_of(AIME):.2f}"),
        ("IFEval", f"{score(IFEVAL):.2f}", f"{stderr_of(IFEVAL):.2f}"), ("IFEval", "77.00", "")]
    shown = json.loads(invoke("results", RUN, "-w", str(tmp_path), "--format", "json").stdout)
    assert [(row["dataset"], row["score"], row["stderr"]) for row in shown] == [
        ("aime2025_repeat_32", round(score(AIME), 2), pytest.approx(stderr_of(AIME))),
        ("IFEval", round(score(IFEVAL), 2), pytest.approx(stderr_of(IFEVAL))), ("IFEval", 77.0, None)]


def test_the_errors_a_run_recorded_are_shown_as_recorded(tmp_path):
    """A run records its errors at the end of its eval stage: `lmeval results` shows those
    without reading the run's answers (here they differ from the files on purpose)."""
    make_run(tmp_path, [
        {"dataset": "aime2025_repeat_32", "metric": "accuracy (32 runs average)", "value": 50.0, "stderr": 1.25,
         "judge_replies": 12, "judge_invalid": 4},
        {"dataset": "IFEval", "metric": "Prompt-level-strict-accuracy", "value": 60.0, "stderr": 2.5},
        {"dataset": "IFEval", "metric": "Inst-level-loose-accuracy", "value": 77.0, "stderr": 3.75}])
    shown = json.loads(invoke("results", RUN, "-w", str(tmp_path), "--format", "json").stdout)
    assert [row["stderr"] for row in shown] == [1.25, 2.5, 3.75]


def test_runs_lists_a_chat_runs_scores(tmp_path):
    make_run(tmp_path, [{"dataset": "core_average", "metric": "naive_average", "value": 45.5},
                        {"dataset": "aime2025_repeat_32", "metric": "accuracy (32 runs average)", "value": score(AIME)},
                        {"dataset": "mmlu_pro", "metric": "naive_average", "value": 51.19}])
    shown = invoke("runs", "-w", str(tmp_path), "--format", "json")
    assert shown.exit_code == 0, shown.output
    row = json.loads(shown.stdout)[0]
    assert (row["datasets"], row["state"], row["scores"]) == (
        ["aime2025", "ifeval"], "judged", {"core_average": 45.5, "aime2025_repeat_32": score(AIME), "mmlu_pro": 51.19})
    table = invoke("runs", "-w", str(tmp_path))
    assert f"core_average 45.50, aime2025_repeat_32 {score(AIME):.2f}, mmlu_pro 51.19" in " ".join(table.stdout.split())


@pytest.mark.processes
@pytest.mark.opencompass
def test_results_of_a_chat_run_show_each_rows_standard_error(chat_runs):
    from chat_expect import score_cell, summary_rows

    key = chat_runs.suite.key
    shown = invoke("results", chat_runs.full_dir.name, "-w", str(chat_runs.work_dir))
    assert shown.exit_code == 0, shown.output
    rows = {cells[0]: cells[2] for cells in ([cell.strip() for cell in line.split("│")[1:-1]]
                                             for line in shown.stdout.splitlines() if line.startswith("│ "))}
    assert rows == {row: score_cell(key, row) for row in summary_rows(key)}
