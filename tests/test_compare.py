"""`lmeval compare` of runs whose answer keys differ in a known way: the chain's judged run and a
run of the same prompts with another key (and one dataset more); the two chat-suite runs
(tests/chat_suite.py), whose repeated datasets pair question by question; and runs made by hand
(tests/oc_files.py). Scores, standard errors, differences and intervals are computed here from
the rows and keys: the interval as the exact bootstrap distribution over questions
(enumerated), which the command's seeded resampling must meet."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
import xml.etree.ElementTree as ElementTree

import pytest
from exact_stats import exact_interval
from oc_files import Asked, write_judged, write_run
from PIL import Image
from typer.testing import CliRunner

from lmeval.cli import app
from scenarios import MC_ROWS, QA_ROWS, judge_agrees, write_scenario
from toolkit import MODELS, TOOLS, copy_run, lmeval_env


FIRST = "20250101_120000"  # a copy of the chain's run
# The second run: every trivia question answered right (the chain's got 8 of 12), and the first
# multiple-choice question answered wrong (the chain's got 4 of 5). `spare` repeats the
# multiple-choice questions as a dataset only the second run has.
SECOND_QA = [(question, gold, gold) for question, gold, _ in QA_ROWS]
SECOND_MC = [(question, options, gold, "A" if index == 0 else reply)
             for index, (question, options, gold, reply) in enumerate(MC_ROWS)]
assert SECOND_MC[0][2] != "A"


def stderr_of(outcomes: list[float]) -> float:
    """100 x sd(question outcomes, ddof=1) / sqrt(questions)."""
    return 100 * statistics.stdev(outcomes) / math.sqrt(len(outcomes))


def outcomes(qa_rows, mc_rows) -> dict[str, list[int]]:
    return {"trivia": [int(judge_agrees(reply, gold)) for _, gold, reply in qa_rows],
            "choices": [int(reply == gold) for _, _, gold, reply in mc_rows]}


@pytest.fixture(scope="module")
def compared(chain, tmp_path_factory):
    """A work dir with the chain's run (FIRST) and a fresh `lmeval run` of SECOND_QA/SECOND_MC."""
    from toolkit import Runner, only_run

    folder = tmp_path_factory.mktemp("compare")
    work_dir = folder / "out"
    data = folder / "data"
    qa, mc, key, _ = write_scenario(data, SECOND_QA, SECOND_MC)
    spare = data / "spare.jsonl"
    spare.write_text(mc.read_text())
    runner = Runner(folder)
    try:
        second = runner.run("run", str(MODELS / "demo-chat"), "--dataset", str(qa), "--dataset", str(mc),
                            "--dataset", str(spare), "--gpus", "0", "--judge-model", str(MODELS / "demo-judge"),
                            "--judge-gpus", "1", "--judge-tp", "1", "-w", str(work_dir), *TOOLS,
                            env=lmeval_env(STANDIN_ANSWER_KEY=str(key)), work_dir=work_dir, timeout=600)
    finally:
        runner.teardown()
    assert second.poll() == 0, second.transcript()
    second_id = only_run(work_dir).name
    copy_run(chain.run_dir, work_dir, FIRST, chain.run_dir)
    before, after = outcomes(QA_ROWS, MC_ROWS), outcomes(SECOND_QA, SECOND_MC)
    expected = {}
    for dataset in ("trivia", "choices"):
        steps = [b - a for a, b in zip(before[dataset], after[dataset])]
        low, high = exact_interval(steps)
        expected[dataset] = {"scores": (100 * sum(before[dataset]) / len(steps), 100 * sum(after[dataset]) / len(steps)),
                             "stderr": (stderr_of(before[dataset]), stderr_of(after[dataset])),
                             "delta": 100 * sum(steps) / len(steps), "low": low, "high": high,
                             "significant": not low <= 0 <= high, "questions": len(steps)}
    return work_dir, second_id, expected


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})


@pytest.mark.processes
@pytest.mark.opencompass
def test_the_scenario_has_one_significant_difference_and_one_not(compared):
    _, _, expected = compared
    assert expected["trivia"]["delta"] > 0 and expected["trivia"]["significant"]
    assert expected["choices"]["delta"] < 0 and not expected["choices"]["significant"]


@pytest.mark.processes
@pytest.mark.opencompass
def test_compare_gives_each_difference_and_its_interval(compared):
    work_dir, second, expected = compared
    shown = invoke("compare", FIRST, second, "-w", str(work_dir), "--format", "json")
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.stdout)
    assert report["runs"] == [{"run_id": FIRST, "model": "demo-chat"}, {"run_id": second, "model": "demo-chat"}]
    assert [row["dataset"] for row in report["datasets"]] == ["trivia", "choices"]
    for row in report["datasets"]:
        want = expected[row["dataset"]]
        # OpenCompass's summary rounds each score to two decimals; the differences come from the outcomes.
        assert row["scores"][FIRST] == pytest.approx(want["scores"][0], abs=0.005)
        assert row["scores"][second] == pytest.approx(want["scores"][1], abs=0.005)
        assert row["stderr"] == {FIRST: pytest.approx(want["stderr"][0]), second: pytest.approx(want["stderr"][1])}
        diff = row["differences"][second]
        assert (diff["delta"], diff["ci_low"], diff["ci_high"]) == pytest.approx(
            (want["delta"], want["low"], want["high"]), abs=1e-9)
        assert (diff["significant"], diff["questions"], diff["no_interval_because"]) == (want["significant"],
                                                                                         want["questions"], None)
    assert report["not_compared"] == {"spare": [second]}
    assert shown.stderr == f"lmeval: not compared: spare (only in {second})\n"


def text(value: float) -> str:
    return f"{value:+.2f}"


@pytest.mark.processes
@pytest.mark.opencompass
def test_compare_as_a_table_markdown_and_csv(compared):
    work_dir, second, expected = compared
    cells = {}
    for dataset, want in expected.items():
        mark = "" if want["significant"] else " not significant"
        cells[dataset] = [dataset, "accuracy", *(f"{value:.2f} ± {error:.2f}" for value, error in
                                                 zip(want["scores"], want["stderr"])),
                          f"{text(want['delta'])} [{text(want['low'])}, {text(want['high'])}]{mark}"]
    markdown = invoke("compare", FIRST, second, "-w", str(work_dir), "--format", "markdown")
    assert markdown.exit_code == 0, markdown.output
    assert markdown.stdout.splitlines() == [
        f"| dataset | metric | {FIRST} demo-chat | {second} demo-chat | Δ {second} vs {FIRST} |",
        "| --- | --- | ---: | ---: | ---: |",
        *("| " + " | ".join(cells[dataset]) + " |" for dataset in ("trivia", "choices"))]
    table = invoke("compare", FIRST, second, "-w", str(work_dir))
    assert table.exit_code == 0, table.output
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in table.stdout.splitlines()
            if line.startswith("│ ")]
    assert rows == [cells["trivia"], cells["choices"]]
    assert ("paired bootstrap over the questions both runs share, a question's n answers counting once as their "
            "share right (10,000 resamples, seed 0); ± standard error over questions") in " ".join(table.stdout.split())
    spread = invoke("compare", FIRST, second, "-w", str(work_dir), "--format", "csv")
    lines = list(csv.DictReader(io.StringIO(spread.stdout)))
    assert [(line["dataset"], line["run_id"], line["score"], line["stderr"], line["delta"], line["significant"])
            for line in lines] == [
        (dataset, run, f"{want['scores'][position]:.2f}", f"{want['stderr'][position]:.2f}",
         f"{want['delta']:.2f}" if position else "", str(want["significant"]).lower() if position else "")
        for dataset, want in expected.items() for position, run in enumerate((FIRST, second))]


@pytest.mark.processes
@pytest.mark.opencompass
def test_the_baseline_is_the_first_run_given(compared):
    work_dir, second, expected = compared
    shown = invoke("compare", second, FIRST, "-w", str(work_dir), "--format", "json")
    assert shown.exit_code == 0, shown.output
    deltas = {row["dataset"]: row["differences"][FIRST]["delta"] for row in json.loads(shown.stdout)["datasets"]}
    assert deltas == pytest.approx({dataset: -want["delta"] for dataset, want in expected.items()}, abs=1e-9)


def bar_box(element) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the path inside an SVG group."""
    path = next(child for child in element.iter() if child.tag.endswith("path"))
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", path.get("d"))]
    xs, ys = numbers[0::2], numbers[1::2]
    return min(xs), min(ys), max(xs), max(ys)


@pytest.mark.processes
@pytest.mark.opencompass
def test_plot_draws_the_scores_and_the_intervals(compared, tmp_path):
    work_dir, second, expected = compared
    png, svg = tmp_path / "comparison.png", tmp_path / "comparison.svg"
    for chart in (png, svg):
        shown = invoke("compare", FIRST, second, "-w", str(work_dir), "--plot", str(chart))
        assert shown.exit_code == 0, shown.output
        assert shown.stderr.endswith(f"lmeval: wrote the chart to {chart}\n")
    with Image.open(png) as image:
        assert (image.format, image.size) == ("PNG", (1000, 450))
        colours = {colour for _, colour in image.convert("RGB").getcolors(1_000_000)}
    assert {(0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)} <= colours  # the two runs' bars
    groups = {element.get("id"): element for element in ElementTree.parse(svg).iter()
              if element.get("id", "").count(":") == 2}
    heights = {name: bar_box(element)[3] - bar_box(element)[1] for name, element in groups.items()}
    # Within one axes, bar heights are in proportion to the values they stand for.
    unit = heights[f"score:trivia:{second}"] / expected["trivia"]["scores"][1]
    for dataset, want in expected.items():
        for run, value in zip((FIRST, second), want["scores"]):
            assert heights[f"score:{dataset}:{run}"] == pytest.approx(unit * value, rel=0.01)
    unit = heights[f"delta:trivia:{second}"] / abs(expected["trivia"]["delta"])
    for dataset, want in expected.items():
        assert heights[f"delta:{dataset}:{second}"] == pytest.approx(unit * abs(want["delta"]), rel=0.01)
        assert heights[f"ci:{dataset}:{second}"] == pytest.approx(unit * (want["high"] - want["low"]), rel=0.01)


@pytest.mark.processes
@pytest.mark.opencompass
@pytest.mark.parametrize(("args", "message"), [
    ([FIRST], "compare needs two runs or more: lmeval compare RUN RUN..."),
    ([FIRST, FIRST], f"run {FIRST} is given twice; name each run once"),
    ([FIRST, "20250101_999999"], "run 20250101_999999 does not exist in "),
    ([FIRST, "latest", "--format", "yaml"], "--format must be one of table, json, csv, markdown; got 'yaml'"),
    ([FIRST, "latest", "--plot", "chart.jpg"], "--plot chart.jpg: the file must end in .png or .svg"),
])
def test_bad_comparisons_are_one_line(compared, args, message):
    work_dir, _, _ = compared
    shown = invoke("compare", *args, "-w", str(work_dir))
    assert shown.exit_code == 2
    assert shown.stderr.startswith(f"lmeval: error: {message}")
    assert shown.stderr.count("\n") == 1


# ---------------------------------------------------------------- repeated datasets: questions, not answers

BEFORE = [Asked(f"Question {index}?", "g", right) for index, right in enumerate([
    (True,) * 4, (True, False, True, False), (False,) * 4, (True, False, False, False), (True,) * 4, (False,) * 4])]
AFTER = [Asked(question.prompt, "g", right) for question, right in zip(BEFORE, [
    (True,) * 4, (True,) * 4, (True, False, True, False), (False,) * 4, (True, True, True, False),
    (False, True, False, False)])]


def hand_made_pair(work_dir) -> tuple[str, str]:
    """Two runs of one dataset asked 4 times; the second writes its questions in another order."""
    ids = ("20250101_120000", "20250102_120000")
    for run_id, questions in zip(ids, (BEFORE, AFTER[::-1])):
        write_judged(work_dir / run_id, "aime", questions)
        share = 100 * statistics.fmean(question.share for question in questions)
        write_run(work_dir, run_id, [["file", "aime", "qa", "0"]], [("aime", "accuracy (4 runs average)", share)])
    return ids


def test_the_bootstrap_resamples_questions_not_their_answers(tmp_path):
    first, second = hand_made_pair(tmp_path)
    shown = invoke("compare", first, second, "-w", str(tmp_path), "--format", "json")
    assert shown.exit_code == 0, shown.output
    row = json.loads(shown.stdout)["datasets"][0]
    before, after = [q.share for q in BEFORE], [q.share for q in AFTER]
    steps = [b - a for a, b in zip(before, after)]
    low, high = exact_interval(steps)
    diff = row["differences"][second]
    assert (diff["delta"], diff["ci_low"], diff["ci_high"], diff["questions"]) == pytest.approx(
        (100 * statistics.fmean(steps), low, high, len(BEFORE)), abs=1e-9)
    assert row["stderr"] == {first: pytest.approx(stderr_of(before)), second: pytest.approx(stderr_of(after))}
    # Resampling the 24 answers as if independent would give a narrower interval.
    answers = [int(b is True) - int(a is True) for q, p in zip(BEFORE, AFTER) for a, b in zip(q.right, p.right)]
    naive_low, naive_high = exact_interval(answers)
    assert naive_high - naive_low < high - low


# ---------------------------------------------------------------- the chat suite's two runs

RUNS = {"aime2025_repeat_32": 32, "GPQA_diamond_repeat_4": 4, "IFEval": 1}  # the suite's configs ask them so


@pytest.mark.processes
@pytest.mark.opencompass
def test_compare_of_two_chat_runs_pairs_their_questions(chat_runs):
    first, later = chat_runs.full_dir.name, chat_runs.other_dir.name
    shown = invoke("compare", first, later, "-w", str(chat_runs.work_dir), "--format", "json")
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.stdout)
    assert [row["dataset"] for row in report["datasets"]] == list(RUNS)
    for row in report["datasets"]:
        before = {item.marker: item.share for item in chat_runs.suite.key.items[row["dataset"]]}
        after = {item.marker: item.share for item in chat_runs.suite.other.items[row["dataset"]]}
        steps = [after[marker] - before[marker] for marker in before]
        low, high = exact_interval(steps)
        assert row["scores"] == {first: pytest.approx(100 * statistics.fmean(before.values()), abs=0.005),
                                 later: pytest.approx(100 * statistics.fmean(after.values()), abs=0.005)}
        assert row["stderr"] == {first: pytest.approx(stderr_of(list(before.values()))),
                                 later: pytest.approx(stderr_of(list(after.values())))}
        diff = row["differences"][later]
        assert (diff["delta"], diff["ci_low"], diff["ci_high"]) == pytest.approx(
            (100 * statistics.fmean(steps), low, high), abs=1e-9), row["dataset"]
        assert (diff["questions"], diff["significant"], diff["no_interval_because"]) == (
            len(steps), not low <= 0 <= high, None)
    only_first = [name for name in chat_runs.suite.key.expected if name not in RUNS and not name.startswith("mmlu_pro_")]
    assert report["not_compared"] == {name: [first] for name in only_first}
