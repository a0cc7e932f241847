"""What the answers say (lmeval.answers), from an answer log and predictions written by hand the
way the model's class and OpenCompass write them: the join prompt by prompt, the counts, the
token statistics, and the lower-bound warning. The real runs are in test_answer_lengths.py."""

from __future__ import annotations

import json

from oc_files import MODEL, Asked, write_predictions
from lmeval import answers
from lmeval.opencompass_plugin.lmeval_answers import PROMPT_TOO_LONG, key
from lmeval.results import render_scores
from lmeval.outputs import Score

QUESTIONS = [Asked(f"question {i}", "x", (True, False)) for i in range(10)]  # 20 answers: 2 runs of 10


def log_line(question: Asked, run: int, finish: str, tokens: int | None, seconds: float = 2.0) -> dict:
    prompt = [{"role": "HUMAN", "prompt": question.prompt}]
    return {"prompt": key(prompt), "answer": key(f"answer {run} to {question.prompt}"), "finish_reason": finish,
            "prompt_tokens": 12, "completion_tokens": tokens, "reasoning_tokens": None, "seconds": seconds,
            "tries": 1, "max_out_len": 100}


def write_log(run_dir, lines: list[dict], cut_short: bool = False) -> None:
    path = answers.log_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(line) + "\n" for line in lines)
    path.write_text(text + ('{"prompt": "abc", "ans' if cut_short else ""))


def test_each_prediction_is_joined_to_its_own_line_and_counted(tmp_path):
    write_predictions(tmp_path, "set", QUESTIONS)
    # Run 0 of the first four questions was cut at 100 tokens; the others stopped at 10 * (i + 1).
    lines = [log_line(q, run, "length" if run == 0 and i < 4 else "stop", 100 if run == 0 and i < 4 else 10 * (i + 1))
             for i, q in enumerate(QUESTIONS) for run in (0, 1)]
    write_log(tmp_path, list(reversed(lines)), cut_short=True)  # in the order answers came, and a crash
    found = answers.dataset_answers(tmp_path, MODEL, "set", answers.read_log(tmp_path))
    assert len(found) == 20 and all(answer.finish_reason for answer in found)
    assert [answer.index for answer in found if answer.cut] == ["0", "1", "2", "3"]  # run 0 comes first
    stats = answers.answer_stats(found)
    tokens = sorted([100] * 4 + [10 * (i + 1) for i in range(4, 10)] + [10 * (i + 1) for i in range(10)])
    assert (stats.answers, stats.recorded, stats.cut, stats.empty, stats.too_long) == (20, 20, 4, 0, 0)
    assert stats.cut_share == 0.2
    assert stats.tokens_max == 100 and stats.tokens_p95 == tokens[18] and stats.tokens_median == (tokens[9] + tokens[10]) / 2
    assert stats.tokens_mean == round(sum(tokens) / 20, 1)
    assert stats.tokens_per_second == round(sum(tokens) / 40.0, 1)
    assert answers.cut_warnings({"set": stats}) == [
        "set: 20% of answers reached --max-out-len 100; its score is a lower bound"]


def test_a_prompt_too_long_and_an_empty_answer_are_told_apart(tmp_path):
    questions = QUESTIONS[:2]
    write_predictions(tmp_path, "set", questions)
    predictions = tmp_path / "predictions" / MODEL / "set.json"
    entries = json.loads(predictions.read_text())
    for index in ("0", "1"):
        entries[index]["prediction"] = ""
    predictions.write_text(json.dumps(entries))
    prompt = [{"role": "HUMAN", "prompt": "question 0"}]
    write_log(tmp_path, [{"prompt": key(prompt), "answer": key(""), "finish_reason": PROMPT_TOO_LONG,
                          "completion_tokens": None, "seconds": 0.1, "tries": 1, "max_out_len": 100}])
    stats = answers.answer_stats(answers.dataset_answers(tmp_path, MODEL, "set", answers.read_log(tmp_path)))
    assert (stats.answers, stats.recorded, stats.empty, stats.too_long, stats.cut) == (4, 1, 2, 1, 0)
    assert answers.cut_warnings({"set": stats}) == []


def test_a_run_without_a_log_counts_only_empty_answers(tmp_path):
    write_predictions(tmp_path, "set", QUESTIONS[:3])
    stats = answers.answer_stats(answers.dataset_answers(tmp_path, MODEL, "set", answers.read_log(tmp_path)))
    assert (stats.answers, stats.recorded, stats.cut_share, stats.tokens_max) == (6, 0, None, None)


def test_summary_rows_add_up_their_datasets_and_results_show_them(tmp_path):
    write_predictions(tmp_path, "a", QUESTIONS[:5])
    write_predictions(tmp_path, "b", QUESTIONS[5:])
    write_log(tmp_path, [log_line(q, run, "length" if i == 0 else "stop", 100 if i == 0 else 5)
                         for i, q in enumerate(QUESTIONS) for run in (0, 1)])
    stats = answers.run_stats(tmp_path, MODEL, {"a": ["a"], "b": ["b"], "group": ["a", "b"]})
    assert {row: (s["cut"], s["recorded"]) for row, s in stats.items()} == {"a": (2, 10), "b": (0, 10),
                                                                           "group": (2, 20)}
    shown = {row: answers.AnswerStats.from_dict(s) for row, s in stats.items()}
    csv = render_scores(MODEL, [Score("a", "accuracy", 50.0), Score("b", "accuracy", 50.0)], "csv", shown)
    assert csv.splitlines() == [
        "dataset,metric,m,stderr,cut_share,cut,empty,too_long,tokens_mean,tokens_median,tokens_p95,tokens_max,"
        "tokens_per_second",
        "a,accuracy,50.00,,0.2,2,0,0,24,5,100,100,12",
        "b,accuracy,50.00,,0,0,0,0,5,5,5,5,2.5"]
