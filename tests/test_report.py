"""`lmeval report`: the page of the chain's judged run (written by the real OpenCompass) holds its
scores with their standard errors, settings and every sample with the outcome computed here from
the chain's rows, and fetches nothing; the page of the chat suite's run holds every dataset's
questions with their answers, k of n right as its key says; runs made by hand show what a run
without scores, a hostile prediction or bad input give. What the page's script does in a
browser is tests/test_report_browser.py's part."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from scenarios import INVALID_MARKER, MC_ROWS, QA_ROWS, judge_agrees
from typer.testing import CliRunner

from lmeval.cli import app
from toolkit import MODELS

INVALID_REPLY = "I cannot judge this."  # the stand-in judge's reply to a row with the marker
RUN_ID = "20250101_120000"


class Page(HTMLParser):
    """What a reader of the page gets: every tag with its attributes, the text of each table's
    rows (by the table's id), of each element with an id, and the embedded samples."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: dict[str, list[list[str]]] = {}  # table id -> its rows of cells (a header row too)
        self.texts: dict[str, str] = {}
        self.headed: set[str] = set()  # tables whose first row is their column heads
        self._table: list[list[str]] | None = None
        self._open_ids: list[tuple[str, str]] = []
        self._script: str | None = None
        self.samples_json = ""
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "table":
            self._table = self.tables.setdefault(attributes.get("id") or f"table-{len(self.tables)}", [])
        elif tag == "thead":
            self.headed.add(next(reversed(self.tables)))
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table:
            self._table[-1].append("")
        if tag == "script":
            self._script = attributes.get("id") or ""
        if attributes.get("id"):
            self._open_ids.append((tag, attributes["id"]))
            self.texts[attributes["id"]] = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        if tag == "script":
            self._script = None
        if self._open_ids and self._open_ids[-1][0] == tag:
            self._open_ids.pop()

    def handle_data(self, data):
        if self._script == "samples-data":
            self.samples_json += data
            return
        if self._table and self._table[-1] and data.strip():
            self._table[-1][-1] = words(f"{self._table[-1][-1]} {data}")
        for _, element_id in self._open_ids:
            self.texts[element_id] += data

    def table(self, table_id: str) -> dict[str, list[str]]:
        """The rows of a table by their first cell, its column heads left out."""
        rows = self.tables[table_id]
        return {row[0]: row[1:] for row in rows[1:] if row} if table_id in self.headed else \
            {row[0]: row[1:] for row in rows if row}

    @property
    def samples(self) -> dict[str, list[dict]]:
        return json.loads(self.samples_json)


def words(text: str) -> str:
    return " ".join(text.split())


def report(*args: str):
    return CliRunner().invoke(app, ["report", *args], env={"COLUMNS": "200"})


def external_references(page: Page) -> list[str]:
    """Whatever would make the browser fetch: a src or href that is not inline, a stylesheet or
    script from a file."""
    found = []
    for tag, attributes in page.tags:
        for name in ("src", "href"):
            value = (attributes.get(name) or "").strip()
            if value and not value.startswith(("#", "data:")):
                found.append(f"<{tag} {name}={value}>")
        if tag == "script" and "src" in attributes or tag == "link" and attributes.get("rel") != "icon":
            found.append(f"<{tag} {attributes}>")
    return found


def one_answer(index: int, prompt: str, gold: str, answer: dict) -> dict:
    """A question asked once, as the page holds it: its one answer, run 0 (the fields it lacks,
    such as a judge's reply, left out)."""
    return {"index": index, "prompt": prompt, "gold": gold, "correct": int(answer["outcome"] == "correct"),
            "answers": [{"index": index, "run": 0, **answer}]}


def trivia_outcome(reply: str, gold: str) -> str:
    return "invalid" if reply == INVALID_MARKER else "correct" if judge_agrees(reply, gold) else "incorrect"


def expected_trivia() -> list[dict]:
    """Each trivia sample as the page holds it, with what the model's class logged of its answer:
    it stopped, after as many tokens as the stand-in counts in its reply (words)."""
    return [one_answer(index, question, gold, {
        "prediction": reply, "outcome": trivia_outcome(reply, gold),
        "judge_reply": {"invalid": INVALID_REPLY, "correct": "A", "incorrect": "B"}[trivia_outcome(reply, gold)],
        "finish_reason": "stop", "tokens": len(reply.split())})
        for index, (question, gold, reply) in enumerate(QA_ROWS)]


def with_stderr(score: str, outcomes: list[bool]) -> str:
    """`60.00 ± 14.77`: the score and 100 x sd(outcomes) / sqrt(questions)."""
    return f"{score} ± {100 * statistics.stdev(map(int, outcomes)) / math.sqrt(len(outcomes)):.2f}"


def chain_cells(expected: dict[str, str]) -> dict[str, str]:
    return {"trivia": with_stderr(expected["trivia"], [trivia_outcome(reply, gold) == "correct"
                                                       for _, gold, reply in QA_ROWS]),
            "choices": with_stderr(expected["choices"], [reply == gold for _, _, gold, reply in MC_ROWS])}


@pytest.fixture(scope="module")
def chain_page(chain, tmp_path_factory) -> tuple[Path, Page, object]:
    path = tmp_path_factory.mktemp("report") / "chain.html"
    shown = report(chain.run_dir.name, "-w", str(chain.work_dir), "-o", str(path))
    assert shown.exit_code == 0, shown.output
    return path, Page(path.read_text(encoding="utf-8")), shown


@pytest.mark.processes
@pytest.mark.opencompass
def test_the_page_shows_the_scores_and_fetches_nothing(chain, chain_page):
    path, page, shown = chain_page
    assert shown.stdout.splitlines()[-1] == str(path)
    assert shown.stderr.splitlines() == [f"lmeval: reading run {chain.run_dir.name}",
                                         f"lmeval: wrote the report of {len(QA_ROWS) + len(MC_ROWS)} samples"]
    assert external_references(page) == []
    invalid = sum(reply == INVALID_MARKER for _, _, reply in QA_ROWS)
    expected = chain.scenario.expected
    cells = chain_cells(expected)
    assert page.table("scores") == {"trivia": ["accuracy", cells["trivia"], f"{invalid} of {len(QA_ROWS)}"],
                                    "choices": ["accuracy", cells["choices"], ""]}


@pytest.mark.processes
@pytest.mark.opencompass
def test_every_sample_is_in_the_page_with_its_outcome_and_judge_reply(chain, chain_page):
    _, page, _ = chain_page
    samples = page.samples
    assert list(samples) == ["trivia", "choices"]
    assert samples["trivia"] == expected_trivia()
    assert [(q["gold"], q["answers"][0]["prediction"], q["answers"][0]["outcome"], q["answers"][0].get("judge_reply"))
            for q in samples["choices"]] == [
        (gold, f"The answer is {reply}.", "correct" if reply == gold else "incorrect", None)
        for _, _, gold, reply in MC_ROWS]
    assert all("judge_reply" not in q["answers"][0] for q in samples["choices"])
    assert all(question in q["prompt"] for q, (question, *_) in zip(samples["choices"], MC_ROWS, strict=True))
    outcomes = [question["answers"][0]["outcome"] for question in expected_trivia()]
    cells = chain_cells(chain.scenario.expected)
    # Under each score, the histogram of answer lengths: all far below the chain's limit, none cut.
    lengths = "answer lengths, 0 to 64000 tokens; the dashed line: --max-out-len 64000, reached by 0 of {} answers"
    assert words(page.texts["dataset-1"]).startswith(
        f"trivia {len(QA_ROWS)} samples: {outcomes.count('correct')} correct, {outcomes.count('incorrect')} incorrect, "
        f"{outcomes.count('invalid')} invalid accuracy {cells['trivia']} {lengths.format(len(QA_ROWS))} wrong only "
        "invalid judge replies only")
    right = sum(reply == gold for _, _, gold, reply in MC_ROWS)
    assert words(page.texts["dataset-2"]).startswith(
        f"choices {len(MC_ROWS)} samples: {right} correct, {len(MC_ROWS) - right} incorrect "
        f"accuracy {cells['choices']} {lengths.format(len(MC_ROWS))} wrong only #")


@pytest.mark.processes
@pytest.mark.opencompass
def test_the_page_shows_the_runs_settings_and_no_key(chain, chain_page):
    _, page, _ = chain_page
    run = {key: values[0] for key, values in page.table("run-settings").items()}
    assert {key: run[key] for key in ("run", "model", "model path", "task", "datasets", "judge model", "GPUs")} == {
        "run": chain.run_dir.name, "model": "demo-chat", "model path": str(MODELS / "demo-chat"), "task": "-",
        "datasets": "trivia, choices", "judge model": str(MODELS / "demo-judge"), "GPUs": "target 0, judge 1"}
    assert run["stages"].startswith("infer ok (") and ", eval ok (" in run["stages"]
    generation = {key: values[0] for key, values in page.table("generation-settings").items()}
    assert (generation["temperature"], generation["max_out_len"]) == ("0.6", "64000")
    assert page.table("versions")["opencompass"] == ["0.5.4"]
    assert {stage: row[0] for stage, row in page.table("stages").items()} == {"infer": "ok", "eval": "ok"}
    assert list(page.table("servers")) == ["target", "judge"]
    keys = {step.watch.key for step in (chain.target_crash, chain.target_resume, chain.judge_crash, chain.judge_resume)}
    text = Path(chain_page[0]).read_text(encoding="utf-8")
    assert None not in keys and not [key for key in keys if key in text]
    assert "--api-keys '***'" in page.table("servers")["target"][-1]


@pytest.mark.processes
@pytest.mark.opencompass
def test_by_default_the_page_of_the_latest_run_goes_into_its_folder(chain, tmp_path):
    run_dir = tmp_path / RUN_ID
    shutil.copytree(chain.run_dir, run_dir, symlinks=True)
    shown = report("-w", str(tmp_path))
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == f"{run_dir / 'report.html'}\n"
    assert Page((run_dir / "report.html").read_text(encoding="utf-8")).samples["trivia"] == expected_trivia()


@pytest.mark.processes
@pytest.mark.opencompass
def test_a_run_whose_predictions_are_gone_is_one_line(chain, tmp_path):
    run_dir = tmp_path / RUN_ID
    shutil.copytree(chain.run_dir, run_dir, symlinks=True)
    shutil.rmtree(run_dir / "predictions")
    shown = report(RUN_ID, "-w", str(tmp_path))
    assert (shown.exit_code, shown.stderr.splitlines()[1:]) == (2, [
        f"lmeval: error: run {RUN_ID} has no predictions yet; infer them with `lmeval infer --reuse {RUN_ID}`"])
    assert not (run_dir / "report.html").exists()


# ---------------------------------------------------------------- runs made by hand (fast)

HOSTILE = '</script><script>document.title = "owned"</script><img src="https://example.com/x.png">'


def hand_made_run(work_dir: Path, predictions: dict[str, list[dict]], datasets: list[str]) -> Path:
    """A run folder as `lmeval infer` leaves it: a manifest naming DATASETS, and OpenCompass's
    predictions file of those in PREDICTIONS; nothing scored yet."""
    run_dir = work_dir / RUN_ID
    (run_dir / "predictions" / "m").mkdir(parents=True)
    (run_dir / "lmeval.json").write_text(json.dumps({
        "run_id": RUN_ID, "model_abbr": "m", "inputs": {"model": "/models/m", "generation": {"temperature": 0.1}},
        "fingerprint_inputs": {"datasets": [["file", name, "qa", "0" * 64] for name in datasets]},
        "stages": {"infer": {"status": "ok", "seconds": 3.5}}}))
    for name, entries in predictions.items():
        (run_dir / "predictions" / "m" / f"{name}.json").write_text(json.dumps({
            str(index): {"origin_prompt": [{"role": "HUMAN", "prompt": entry["prompt"]}], "prediction": entry["prediction"],
                         "gold": entry["gold"]} for index, entry in enumerate(entries)}))
    return run_dir


def test_a_run_not_scored_yet_shows_its_samples_unscored_and_the_missing_dataset(tmp_path):
    run_dir = hand_made_run(tmp_path, {"notes": [
        {"prompt": "Why?", "prediction": "<think>Let me see.</think>Because.", "gold": "B"},
        {"prompt": HOSTILE, "prediction": HOSTILE, "gold": HOSTILE}]}, ["notes", "later"])
    manifest = json.loads((run_dir / "lmeval.json").read_text())
    died_at = datetime(2025, 1, 1, 12, 5, 0).timestamp()
    manifest["restarts"] = [{"role": "target", "stage": "infer", "at": died_at, "died": "exited with code -9 (SIGKILL)",
                             "log_tail": "Killed"}]
    (run_dir / "lmeval.json").write_text(json.dumps(manifest))
    shown = report("-w", str(tmp_path), "-o", str(tmp_path / "page.html"))
    assert shown.exit_code == 0, shown.output
    later = tmp_path / RUN_ID / "predictions" / "m" / "later.json"
    assert f"lmeval: warning: later: no predictions yet ({later})" in shown.stderr.splitlines()
    page = Page((tmp_path / "page.html").read_text(encoding="utf-8"))
    assert page.samples == {"notes": [
        one_answer(0, "Why?", "B", {"prediction": "Because.", "reasoning": "Let me see.", "outcome": "unscored"}),
        one_answer(1, HOSTILE, HOSTILE, {"prediction": HOSTILE, "outcome": "unscored"})]}
    assert [tag for tag, _ in page.tags].count("script") == 2 and "img" not in [tag for tag, _ in page.tags]
    assert external_references(page) == []
    assert words(page.texts["no-scores"]) == f"No scores yet: evaluate it with lmeval judge --reuse {RUN_ID}."
    assert words(page.texts["dataset-1"]).startswith("notes 2 samples: 2 unscored wrong only #")
    assert words(page.texts["dataset-2"]) == f"later no predictions yet ({later})"
    assert page.table("more-settings") == {
        "server restarted": ["target during infer at 2025-01-01 12:05:00: exited with code -9 (SIGKILL)"]}


@pytest.mark.parametrize("make, args, error", [
    (lambda work: None, [], "no lmeval runs in {work}; run `lmeval run` first or pass -w"),
    (lambda work: None, ["20990101_000000"], "run 20990101_000000 does not exist in {work}; check the id or pass -w"),
    (lambda work: (work / RUN_ID).mkdir(), [RUN_ID], "{work}/" + RUN_ID + " has no readable lmeval.json: not an lmeval run"),
    (lambda work: hand_made_run(work, {}, ["notes"]), [],
     f"run {RUN_ID} has no predictions yet; infer them with `lmeval infer --reuse {RUN_ID}`"),
    (lambda work: hand_made_run(work, {"notes": [{"prompt": "p", "prediction": "a", "gold": "g"}]}, ["notes"]),
     ["-o", "{work}"], "-o {work} is a folder; give the HTML file to write"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, make, args, error):
    make(tmp_path)
    shown = report(*[arg.format(work=tmp_path) for arg in args], "-w", str(tmp_path))
    assert (shown.exit_code, shown.stdout) == (2, "")
    assert shown.stderr.splitlines()[-1] == f"lmeval: error: {error.format(work=tmp_path)}"
    assert [line for line in shown.stderr.splitlines() if "error" in line or "Traceback" in line] == [
        f"lmeval: error: {error.format(work=tmp_path)}"]


def test_open_shows_the_page_in_the_browser(tmp_path, monkeypatch):
    hand_made_run(tmp_path, {"notes": [{"prompt": "p", "prediction": "a", "gold": "g"}]}, ["notes"])
    opened = []
    monkeypatch.setattr("webbrowser.open", lambda address: opened.append(address) or True)
    shown = report("-w", str(tmp_path), "--open")
    assert shown.exit_code == 0, shown.output
    assert opened == [(tmp_path / RUN_ID / "report.html").as_uri()]
    monkeypatch.setattr("webbrowser.open", lambda address: False)
    shown = report("-w", str(tmp_path), "--open")
    assert (shown.exit_code, shown.stdout) == (0, f"{tmp_path / RUN_ID / 'report.html'}\n")
    assert f"lmeval: warning: found no browser to open it; open {opened[0]} yourself" in shown.stderr.splitlines()


# ---------------------------------------------------------------- the chat suite's run


@pytest.fixture(scope="module")
def chat_page(chat_runs, tmp_path_factory) -> tuple[Page, object]:
    path = tmp_path_factory.mktemp("chat-report") / "chat.html"
    shown = report(chat_runs.full_dir.name, "-w", str(chat_runs.work_dir), "-o", str(path))
    assert shown.exit_code == 0, shown.output
    return Page(path.read_text(encoding="utf-8")), shown


def answers_of(page: Page, dataset: str, item) -> list[dict]:
    """The answers the page holds of ITEM's question (found by its marker in the prompt)."""
    found = [question for question in page.samples[dataset] if item.marker in question["prompt"]]
    assert len(found) == 1, (dataset, item.marker)
    return found[0]["answers"]


@pytest.mark.processes
@pytest.mark.opencompass
def test_a_chat_runs_page_holds_every_dataset_as_questions_k_of_n_right(chat_runs, chat_page):
    from chat_expect import right_answers, runs, score_cell, summary_rows

    page, shown = chat_page
    key = chat_runs.suite.key
    assert list(page.samples) == list(key.items)
    for dataset, items in key.items.items():
        assert len(page.samples[dataset]) == len(items), dataset
        for item in items:
            answers = answers_of(page, dataset, item)
            assert sorted(answer["run"] for answer in answers) == list(range(runs(dataset))), dataset
            assert sum(answer["outcome"] == "correct" for answer in answers) == right_answers(item, dataset), item
    answered = sum(runs(dataset) * len(items) for dataset, items in key.items.items())
    asked = sum(len(items) for items in key.items.values())
    assert shown.stderr.splitlines()[-1] == f"lmeval: wrote the report of {answered} samples ({asked} questions)"
    assert {row: cells[1] for row, cells in page.table("scores").items()} == {
        row: score_cell(key, row) for row in summary_rows(key)}
    group = next(attributes["id"] for tag, attributes in page.tags if attributes.get("data-group") == "mmlu_pro")
    categories = [name for name in key.items if name.startswith("mmlu_pro_")]
    assert all(name in page.texts[group] for name in categories) and len(categories) == 14


@pytest.mark.processes
@pytest.mark.opencompass
def test_gpqa_shows_the_rules_verdict_then_the_judges_reply_where_it_missed(chat_runs, chat_page):
    from chat_suite import GPQA_RULE, gpqa_gold, judged_right
    from chat_expect import runs

    page, _ = chat_page
    dataset = "GPQA_diamond_repeat_4"
    for row, item in enumerate(chat_runs.suite.key.items[dataset], start=1):
        gold = gpqa_gold(row)
        expected = []
        for run in range(runs(dataset)):
            reply = item.replies[run % len(item.replies)]
            found = GPQA_RULE.search(reply)
            extracted = f"extracted {found.group(1) if found else 'nothing'}, gold {gold}"
            if found and found.group(1) == gold:
                expected.append((reply, f"right: {extracted}", None, "correct"))
            else:
                verdict = "A" if judged_right(reply, gold) else "B"
                expected.append((reply, f"missed: {extracted}; the judge decides", verdict,
                                 "correct" if verdict == "A" else "incorrect"))
        shown = [(a["prediction"], a["rule"], a.get("judge_reply"), a["outcome"]) for a in answers_of(page, dataset, item)]
        assert sorted(shown, key=str) == sorted(expected, key=str), item.marker


@pytest.mark.processes
@pytest.mark.opencompass
def test_ifeval_and_livecodebench_show_what_their_checkers_found(chat_runs, chat_page):
    from chat_suite import ADD_RIGHT, IFEVAL, LCB, RUNTIME_ERROR, SUM_RIGHT, SUM_WRONG, TIME_OUT, fenced
    from chat_expect import runs

    page, _ = chat_page
    key = chat_runs.suite.key
    for item, (_, instructions, _, _, _) in zip(key.items["IFEval"], IFEVAL, strict=True):
        [answer] = answers_of(page, "IFEval", item)
        [line] = answer["checks"].splitlines()  # each of the suite's prompts holds one instruction
        assert line.startswith("followed: " if item.right[0] else ("failed: ", "followed only loosely: "))
        assert instructions[0] in line, item.marker
    dataset = "lcb_code_generation_repeat_6"
    for item, (*_, tests, _, _) in zip(key.items[dataset], LCB, strict=True):
        passed = f"passed every test ({len(tests)})"
        how = {fenced(SUM_RIGHT): passed, fenced(ADD_RIGHT): passed, fenced(SUM_WRONG): "test 1 failed: Wrong Answer",
               fenced(RUNTIME_ERROR): "test 1 failed: Runtime Error: ZeroDivisionError('integer division or modulo "
                                      "by zero')",
               fenced(TIME_OUT): "test 1 failed: Time Limit Exceeded: TimeoutException()"}
        expected = sorted(how[item.replies[run % len(item.replies)]] for run in range(runs(dataset)))
        assert sorted(answer["checks"].splitlines()[0] for answer in answers_of(page, dataset, item)) == expected
