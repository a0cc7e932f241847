"""`lmeval report`'s page in a real browser: Debian's headless chromium, driven by Selenium,
opens the chain's report from disk and a user's filters, search and clicks are checked against
what the chain's rows (tests/scenarios.py) say each sample is. A copy of the run with its trivia
samples repeated shows the lazy rendering. The chat suite's run (tests/chat_suite.py) shows every
dataset as questions, k of n right as its key says, each opening to its answers, and mmlu_pro's
categories under the group. Every chromium process ends with its test.

With LMEVAL_SCREENSHOT=PATH the screenshot (1280x900, the invalid judge reply expanded) is also
saved to PATH: that is how the README's screenshot is made."""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import struct
from pathlib import Path

import pytest
from browser import headless_chromium
from scenarios import INVALID_MARKER, MC_ROWS, QA_ROWS, judge_agrees
from typer.testing import CliRunner

from lmeval import answers, outputs
from lmeval.cli import app
from lmeval.opencompass_plugin.lmeval_answers import key

pytestmark = [pytest.mark.processes, pytest.mark.opencompass, pytest.mark.browser]

VIEWPORT = {"width": 1280, "height": 900}
INVALID_REPLY = "I cannot judge this."  # the stand-in judge's reply to a row with the marker
COPIES = 50  # of the trivia rows in the run that shows the lazy rendering
PAGE_ROWS = 200  # rows the page renders at once (lmeval.report.PAGE_ROWS, from a user's side)


def trivia_outcome(reply: str, gold: str) -> str:
    return "invalid" if reply == INVALID_MARKER else "correct" if judge_agrees(reply, gold) else "incorrect"


def judge_reply_of(reply: str, gold: str) -> str:
    return {"invalid": INVALID_REPLY, "correct": "A", "incorrect": "B"}[trivia_outcome(reply, gold)]


TRIVIA = [(index, trivia_outcome(reply, gold)) for index, (_, gold, reply) in enumerate(QA_ROWS)]
CHOICES = [(index, "correct" if reply == gold else "incorrect") for index, (_, _, gold, reply) in enumerate(MC_ROWS)]


def write_report(run_dir: Path, work_dir: Path, path: Path) -> Path:
    shown = CliRunner().invoke(app, ["report", run_dir.name, "-w", str(work_dir), "-o", str(path)])
    assert shown.exit_code == 0, shown.output
    return path


@pytest.fixture(scope="module")
def page(chain, tmp_path_factory) -> str:
    """The file:// address of the chain's report."""
    return write_report(chain.run_dir, chain.work_dir, tmp_path_factory.mktemp("report") / "report.html").as_uri()


@pytest.fixture(scope="module")
def long_page(chain, tmp_path_factory) -> str:
    """The report of a copy of the chain's run whose trivia rows (predictions, the judge's
    replies and the results' details, in OpenCompass's files) are repeated COPIES times."""
    work_dir = tmp_path_factory.mktemp("long")
    run_dir = work_dir / chain.run_dir.name
    shutil.copytree(chain.run_dir, run_dir, symlinks=True)
    replies = outputs.judge_reply_files(run_dir, "demo-chat", "trivia")
    assert len(replies) == 1, replies
    for path in (outputs.predictions_file(run_dir, "demo-chat", "trivia"), replies[0]):
        entries = json.loads(path.read_text())
        path.write_text(json.dumps({str(copy * len(entries) + int(index)): entry
                                    for copy in range(COPIES) for index, entry in entries.items()}))
    results = outputs.results_file(run_dir, "demo-chat", "trivia")
    scored = json.loads(results.read_text())
    results.write_text(json.dumps({**scored, "details": scored["details"] * COPIES}))
    return write_report(run_dir, work_dir, work_dir / "report.html").as_uri()


CUT = (1, 4)  # trivia samples made cut at the limit in cut_page
CUT_TOKENS = 64000


@pytest.fixture(scope="module")
def cut_page(chain, tmp_path_factory) -> str:
    """The report of a copy of the chain's run whose answer log (written by the model's class as
    it ran) says the trivia answers CUT reached the limit, as the server says it of a cut answer."""
    work_dir = tmp_path_factory.mktemp("cut")
    run_dir = work_dir / chain.run_dir.name
    shutil.copytree(chain.run_dir, run_dir, symlinks=True)
    predictions = json.loads(outputs.predictions_file(run_dir, "demo-chat", "trivia").read_text())
    cut = {(key(predictions[str(index)]["origin_prompt"]), key(predictions[str(index)]["prediction"]))
           for index in CUT}
    log = answers.log_path(run_dir)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert cut <= {(line["prompt"], line["answer"]) for line in lines}, "the model's class logged every answer"
    log.write_text("".join(json.dumps({**line, "finish_reason": "length", "completion_tokens": CUT_TOKENS}
                                      if (line["prompt"], line["answer"]) in cut else line) + "\n" for line in lines))
    return write_report(run_dir, work_dir, work_dir / "report.html").as_uri()


@pytest.fixture
def driver(tmp_path):
    """Headless chromium for one test; it and every process it started end with the test."""
    with headless_chromium(tmp_path / "chromium", VIEWPORT["width"], VIEWPORT["height"], console_log=True) as browser:
        yield browser


def open_page(driver, address: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(address)
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.documentElement.dataset.rendered"))


def section(driver, dataset: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'section[data-dataset="{dataset}"]')


def rows(driver, dataset: str) -> list[tuple[int, str]]:
    """The sample rows shown for DATASET, as (index, outcome badge)."""
    return [(int(index), outcome) for index, outcome in driver.execute_script(
        "return [...arguments[0].querySelectorAll('tr.sample')].map("
        "row => [row.dataset.index, row.querySelector('.badge').textContent])", section(driver, dataset))]


def count(driver, dataset: str) -> str:
    from selenium.webdriver.common.by import By

    return section(driver, dataset).find_element(By.CSS_SELECTOR, ".count").text


def wait_for(driver, what, expected):
    """WHAT(driver) once it equals EXPECTED (the page filters as the user types, a moment later)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, 5).until(lambda d: what(d) == expected)
    except TimeoutException:
        assert what(driver) == expected
    return expected


def click(driver, dataset: str, selector: str) -> None:
    from selenium.webdriver.common.by import By

    section(driver, dataset).find_element(By.CSS_SELECTOR, selector).click()


def sample_row(driver, dataset: str, index: int):
    from selenium.webdriver.common.by import By

    return section(driver, dataset).find_element(By.CSS_SELECTOR, f'tr.sample[data-index="{index}"]')


def detail(driver, dataset: str, index: int) -> dict[str, str]:
    """The fields of the expanded sample INDEX as shown: label -> text."""
    from selenium.webdriver.common.by import By

    shown = section(driver, dataset).find_element(By.CSS_SELECTOR, f'tr.detail[data-index="{index}"]')
    return {field.get_dom_attribute("data-field"): field.find_element(By.TAG_NAME, "pre").text
            for field in shown.find_elements(By.CSS_SELECTOR, ".field")}


def with_stderr(score: str, outcomes: list[str]) -> str:
    """`60.00 ± 14.77`: the score and 100 x sd(outcomes right) / sqrt(questions)."""
    right = [int(outcome == "correct") for outcome in outcomes]
    return f"{score} ± {100 * statistics.stdev(right) / math.sqrt(len(right)):.2f}"


def test_the_score_table_shows_the_expected_scores(driver, page, chain):
    from selenium.webdriver.common.by import By

    open_page(driver, page)
    shown = {row.find_elements(By.TAG_NAME, "td")[0].text: row.find_element(By.CSS_SELECTOR, ".score").text
             for row in driver.find_elements(By.CSS_SELECTOR, "#scores tbody tr")}
    expected = chain.scenario.expected
    assert shown == {"trivia": with_stderr(expected["trivia"], [outcome for _, outcome in TRIVIA]),
                     "choices": with_stderr(expected["choices"], [outcome for _, outcome in CHOICES])}
    assert (rows(driver, "trivia"), rows(driver, "choices")) == (TRIVIA, CHOICES)
    assert count(driver, "trivia") == f"showing {len(QA_ROWS)} of {len(QA_ROWS)} matching, {len(QA_ROWS)} in all"


def test_wrong_only_leaves_the_wrong_samples_and_invalid_only_the_invalid_judge_reply(driver, page):
    open_page(driver, page)
    wrong = [(index, outcome) for index, outcome in TRIVIA if outcome != "correct"]
    click(driver, "trivia", ".wrong-only")
    assert wait_for(driver, lambda d: rows(d, "trivia"), wrong)
    assert count(driver, "trivia") == f"showing {len(wrong)} of {len(wrong)} matching, {len(QA_ROWS)} in all"
    assert rows(driver, "choices") == CHOICES  # each dataset filters on its own
    click(driver, "choices", ".wrong-only")
    assert wait_for(driver, lambda d: rows(d, "choices"), [row for row in CHOICES if row[1] == "incorrect"])
    marlowe = [index for index, (_, _, reply) in enumerate(QA_ROWS) if reply == INVALID_MARKER]
    click(driver, "trivia", ".wrong-only")
    click(driver, "trivia", ".invalid-only")
    assert wait_for(driver, lambda d: rows(d, "trivia"), [(index, "invalid") for index in marlowe])
    assert count(driver, "trivia") == f"showing 1 of 1 matching, {len(QA_ROWS)} in all"
    click(driver, "trivia", ".invalid-only")
    assert wait_for(driver, lambda d: rows(d, "trivia"), TRIVIA)


@pytest.mark.parametrize("typed", ["LARGEST", "da vinci", "cannot judge", "saturn"])
def test_the_search_finds_the_text_in_prompt_prediction_gold_or_judge_reply(driver, page, typed):
    open_page(driver, page)
    from selenium.webdriver.common.by import By

    section(driver, "trivia").find_element(By.CSS_SELECTOR, ".search").send_keys(typed)
    expected = [(index, outcome) for index, outcome in TRIVIA
                if typed.casefold() in "\n".join([QA_ROWS[index][0], QA_ROWS[index][2], QA_ROWS[index][1],
                                                  judge_reply_of(QA_ROWS[index][2], QA_ROWS[index][1])]).casefold()]
    assert expected, f"{typed!r} must find something"
    assert wait_for(driver, lambda d: rows(d, "trivia"), expected)
    assert rows(driver, "choices") == CHOICES


@pytest.mark.parametrize("wanted", ["incorrect", "invalid"])
def test_clicking_a_sample_shows_its_prompt_prediction_gold_and_judge_reply(driver, page, wanted):
    from selenium.webdriver.common.by import By

    open_page(driver, page)
    index = next(index for index, outcome in TRIVIA if outcome == wanted)
    question, gold, reply = QA_ROWS[index]
    sample_row(driver, "trivia", index).click()
    assert detail(driver, "trivia", index) == {"prompt": question, "prediction": reply, "gold": gold,
                                               "judge_reply": judge_reply_of(reply, gold), "finish_reason": "stop",
                                               "tokens": str(len(reply.split()))}  # words: the stand-in's tokens
    sample_row(driver, "trivia", index).click()
    assert not section(driver, "trivia").find_elements(By.CSS_SELECTOR, "tr.detail")


def test_the_rows_are_rendered_a_page_at_a_time_as_the_user_scrolls(driver, long_page):
    from selenium.webdriver.common.by import By

    total = COPIES * len(QA_ROWS)
    wrong = COPIES * sum(outcome != "correct" for _, outcome in TRIVIA)
    open_page(driver, long_page)
    assert rows(driver, "trivia") == [(index, TRIVIA[index % len(QA_ROWS)][1]) for index in range(PAGE_ROWS)]
    assert count(driver, "trivia") == f"showing {PAGE_ROWS} of {total} matching, {total} in all"
    for shown in [*range(2 * PAGE_ROWS, total, PAGE_ROWS), total]:  # a page more each time the end comes in view
        driver.execute_script("arguments[0].querySelector('.more').scrollIntoView()", section(driver, "trivia"))
        assert wait_for(driver, lambda d: count(d, "trivia"), f"showing {shown} of {total} matching, {total} in all")
    assert rows(driver, "trivia") == [(index, TRIVIA[index % len(QA_ROWS)][1]) for index in range(total)]
    assert not section(driver, "trivia").find_element(By.CSS_SELECTOR, ".more").is_displayed()
    driver.execute_script("window.scrollTo(0, 0)")
    click(driver, "trivia", ".wrong-only")
    assert wait_for(driver, lambda d: count(d, "trivia"),
                    f"showing {min(PAGE_ROWS, wrong)} of {wrong} matching, {total} in all")


def test_cut_only_leaves_the_answers_cut_at_the_limit_under_a_histogram_of_lengths(driver, cut_page):
    from selenium.webdriver.common.by import By

    open_page(driver, cut_page)
    figure = section(driver, "trivia").find_element(By.CSS_SELECTOR, "figure.histogram")
    assert figure.find_element(By.TAG_NAME, "figcaption").text == (
        f"answer lengths, 0 to {CUT_TOKENS} tokens; the dashed line: --max-out-len 64000, reached by {len(CUT)} of "
        f"{len(TRIVIA)} answers")
    assert figure.find_element(By.CSS_SELECTOR, "svg.lengths line.limit").get_dom_attribute("x1") == "399.0"  # the end
    assert len(figure.find_elements(By.CSS_SELECTOR, "svg.lengths rect")) == 2  # the short answers, the cut ones
    assert section(driver, "choices").find_elements(By.CSS_SELECTOR, ".cut-only") == []  # nothing cut there
    click(driver, "trivia", ".cut-only")
    assert wait_for(driver, lambda d: rows(d, "trivia"), [TRIVIA[index] for index in CUT])
    sample_row(driver, "trivia", CUT[0]).click()
    shown = detail(driver, "trivia", CUT[0])
    assert (shown["finish_reason"], shown["tokens"]) == ("length", str(CUT_TOKENS))
    click(driver, "trivia", ".cut-only")
    assert wait_for(driver, lambda d: len(rows(d, "trivia")), len(TRIVIA))


def test_the_page_logs_no_error_and_its_screenshot_is_a_png(driver, page, tmp_path):
    open_page(driver, page)
    click(driver, "trivia", ".wrong-only")
    click(driver, "trivia", ".wrong-only")
    marlowe = next(index for index, outcome in TRIVIA if outcome == "invalid")
    sample_row(driver, "trivia", marlowe).click()
    driver.execute_script("window.scrollTo(0, 0)")
    assert [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")] == []
    screenshot = tmp_path / "report.png"
    assert driver.save_screenshot(str(screenshot))
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (VIEWPORT["width"], VIEWPORT["height"])
    if os.environ.get("LMEVAL_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["LMEVAL_SCREENSHOT"])


# ---------------------------------------------------------------- the chat suite's run


@pytest.fixture(scope="module")
def chat_page(chat_runs, tmp_path_factory) -> str:
    """The file:// address of the report of the chat suite's whole run."""
    return write_report(chat_runs.full_dir, chat_runs.work_dir, tmp_path_factory.mktemp("chat") / "chat.html").as_uri()


def expected_rows(dataset: str, items) -> list[tuple[int, str]]:
    """The rows of a dataset as the key says: `k of n` for one asked n times, else the outcome."""
    from chat_expect import right_answers, runs

    if runs(dataset) == 1:
        return [(index, "correct" if item.right[0] else "incorrect") for index, item in enumerate(items)]
    return [(index, f"{right_answers(item, dataset)} of {runs(dataset)}") for index, item in enumerate(items)]


def answer_rows(driver, dataset: str) -> list[tuple[int, str]]:
    """The answers shown of DATASET's open question, as (run, outcome badge)."""
    return [(int(run), outcome) for run, outcome in driver.execute_script(
        "return [...arguments[0].querySelectorAll('tr.answer')].map("
        "row => [row.dataset.run, row.querySelector('.badge').textContent])", section(driver, dataset))]


def test_a_chat_run_shows_every_dataset_as_questions_k_of_n_right(driver, chat_page, chat_runs):
    from selenium.webdriver.common.by import By

    from chat_expect import score_cell, summary_rows

    key = chat_runs.suite.key
    open_page(driver, chat_page)
    for dataset, items in key.items.items():
        assert rows(driver, dataset) == expected_rows(dataset, items), dataset
    shown = {row.find_elements(By.TAG_NAME, "td")[0].text: row.find_element(By.CSS_SELECTOR, ".score").text
             for row in driver.find_elements(By.CSS_SELECTOR, "#scores tbody tr")}
    assert shown == {row: score_cell(key, row) for row in summary_rows(key)}
    nested = driver.execute_script("return [...document.querySelectorAll("
                                   "'section[data-group=\"mmlu_pro\"] section.dataset')].map(s => s.dataset.dataset)")
    assert nested == [name for name in key.items if name.startswith("mmlu_pro_")]
    assert [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")] == []


def test_a_question_asked_n_times_opens_to_its_answers_and_each_answer_to_its_details(driver, chat_page, chat_runs):
    from chat_expect import right_answers

    aime, gpqa = "aime2025_repeat_32", "GPQA_diamond_repeat_4"
    items = chat_runs.suite.key.items
    open_page(driver, chat_page)
    sample_row(driver, aime, 1).click()
    shown = answer_rows(driver, aime)
    assert sorted(run for run, _ in shown) == list(range(32))
    assert sum(outcome == "correct" for _, outcome in shown) == right_answers(items[aime][1], aime)
    # GPQA's second question: the rule finds no letter, the judge finds the answer right.
    sample_row(driver, gpqa, 1).click()
    section(driver, gpqa).find_element("css selector", 'tr.answer[data-run="0"]').click()
    opened = section(driver, gpqa).find_element("css selector", 'tr.answer[data-run="0"] + tr.detail')
    fields = [field.get_dom_attribute("data-field") for field in opened.find_elements("css selector", ".field")]
    assert fields == ["prediction", "rule", "judge_reply", "finish_reason", "tokens"]
    assert opened.find_element("css selector", ".field.rule pre").text.startswith("missed: extracted nothing")
    assert opened.find_element("css selector", ".field.judge_reply pre").text == "A"


def test_wrong_only_leaves_the_questions_with_any_wrong_answer(driver, chat_page, chat_runs):
    from chat_expect import right_answers, runs

    open_page(driver, chat_page)
    for dataset in ("aime2025_repeat_32", "lcb_code_generation_repeat_6", "IFEval"):
        items = chat_runs.suite.key.items[dataset]
        click(driver, dataset, ".wrong-only")
        wrong = [row for row, item in zip(expected_rows(dataset, items), items)
                 if right_answers(item, dataset) < runs(dataset)]
        assert wait_for(driver, lambda d, name=dataset: rows(d, name), wrong)
    note = section(driver, "aime2025_repeat_32").find_element("css selector", ".filters .note").text
    assert note == "each question was asked 32 times: a question counts as wrong (or invalid) if any of its answers is"
