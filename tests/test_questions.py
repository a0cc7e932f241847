"""lmeval.samples on run folders made by hand in OpenCompass's layout (tests/oc_files.py): a
dataset's answers grouped into questions, run by run, for each way OpenCompass scores them (the
judge, a rule, a cascade of both, a rule without details), and files that disagree refused."""

from __future__ import annotations

import json

import pytest
from oc_files import (INVALID_REPLY, MODEL, Asked, answer, write_cascade, write_flat, write_judged, write_predictions,
                      write_ruled)

from lmeval.exceptions import StageFailed
from lmeval.samples import dataset_questions, dataset_samples

THREE_RUNS = [Asked("What is 2 + 2?", "4", (True, True, True)),
              Asked("What is 7 x 8?", "56", (True, False, None)),
              Asked("What is 9 - 10?", "-1", (False, False, False))]


def outcome(right: bool | None) -> str:
    return "invalid" if right is None else "correct" if right else "incorrect"


def test_a_judged_dataset_asked_three_times_is_a_question_per_prompt_with_its_three_answers(tmp_path):
    write_judged(tmp_path, "aime", THREE_RUNS)
    questions = dataset_questions(tmp_path, MODEL, "aime")
    assert [(q.index, q.prompt, q.gold, q.correct, q.share) for q in questions] == [
        (index, asked.prompt, asked.gold, sum(r is True for r in asked.right), asked.share)
        for index, asked in enumerate(THREE_RUNS)]
    for index, (question, asked) in enumerate(zip(questions, THREE_RUNS, strict=True)):
        assert [(a.index, a.run, a.prediction, a.outcome, a.judge_reply) for a in question.answers] == [
            (run * len(THREE_RUNS) + index, run, answer(asked, run), outcome(right),
             INVALID_REPLY if right is None else "A" if right else "B") for run, right in enumerate(asked.right)]
    # The answers in the predictions file's order: run after run.
    assert [(s.run, s.prompt) for s in dataset_samples(tmp_path, MODEL, "aime")] == [
        (run, asked.prompt) for run in range(3) for asked in THREE_RUNS]


def test_judge_files_are_read_in_run_order_past_ten_runs(tmp_path):
    """replica10 sorts before replica2 by name; run 10's replies must still be run 10's."""
    asked = [Asked("Q?", "1", tuple(run == 10 for run in range(12))), Asked("R?", "2", (True,) * 12)]
    write_judged(tmp_path, "aime", asked)
    first = dataset_questions(tmp_path, MODEL, "aime")[0]
    assert [a.run for a in first.answers if a.outcome == "correct"] == [10]


def test_a_cascade_joins_the_judges_reply_to_the_answer_the_rule_missed(tmp_path):
    questions = [Asked("Q1", "A", (True, True, True, True)), Asked("Q2", "C", (True, False, None, True)),
                 Asked("Q3", "B", (False, True, False, False))]
    rule_right = {(0, 0), (0, 1), (0, 2), (0, 3), (1, 3), (2, 1)}  # every other answer goes to the judge
    write_cascade(tmp_path, "gpqa", questions, rule_right)
    shown = dataset_questions(tmp_path, MODEL, "gpqa")
    assert [q.correct for q in shown] == [4, 2, 1]
    second = shown[1].answers
    assert [(a.outcome, a.rule, a.judge_reply) for a in second] == [
        ("correct", "missed: extracted nothing, gold C; the judge decides", "A"),
        ("incorrect", "missed: extracted nothing, gold C; the judge decides", "B"),
        ("invalid", "missed: extracted nothing, gold C; the judge decides", INVALID_REPLY),
        ("correct", "right: extracted C, gold C", None)]
    assert [(a.outcome, a.judge_reply) for a in shown[2].answers] == [
        ("incorrect", "B"), ("correct", None), ("incorrect", "B"), ("incorrect", "B")]


def test_a_cascade_whose_judge_files_hold_other_misses_is_an_error(tmp_path):
    questions = [Asked("Q1", "A", (True, False)), Asked("Q2", "B", (False, False))]
    write_cascade(tmp_path, "gpqa", questions, {(0, 0)})
    path = tmp_path / "results" / MODEL / "gpqa_llm_judge_replica1.json"
    path.write_text(json.dumps({"0": {"prediction": "B"}}))  # run 1 had two misses
    with pytest.raises(StageFailed) as error:
        dataset_questions(tmp_path, MODEL, "gpqa")
    assert error.value.message == (
        f"gpqa of run {tmp_path.name} has 2 judge verdicts in run 1 in its details but 1 judge replies in "
        f"gpqa_llm_judge_replica1.json: the files are of different runs; rerun its evaluation "
        f"(lmeval judge --reuse {tmp_path.name})")


def test_ifeval_names_its_instructions_and_which_failed_where_the_details_say(tmp_path):
    asked = [Asked("Write in French, in under 3 sentences.", "refer", (False,))]
    refer = {"instruction_id_list": ["language:response_language", "length_constraints:number_sentences"],
             "kwargs": [{"language": "fr"}, {"num_sentences": 3, "relation": "less than"}]}
    write_ruled(tmp_path, "IFEval", asked, lambda question, run: {
        "refer": refer, "is_strict_correct": False, "is_loose_correct": True})
    checks = dataset_questions(tmp_path, MODEL, "IFEval")[0].answers[0].checks
    assert checks == ("instructions: language:response_language (language=fr); length_constraints:number_sentences "
                      "(num_sentences=3, relation=less than)\n"
                      "strict: not every one followed; loose: every one followed")
    write_ruled(tmp_path, "IFEval", asked, lambda question, run: {
        "refer": refer, "follow_instruction_list": [True, False], "follow_instruction_list_loose": [True, False]})
    assert dataset_questions(tmp_path, MODEL, "IFEval")[0].answers[0].checks == (
        "failed: length_constraints:number_sentences (num_sentences=3, relation=less than)\n"
        "followed: language:response_language (language=fr)")
    write_ruled(tmp_path, "IFEval", asked, lambda question, run: {
        "refer": refer, "follow_instruction_list": [False, False], "follow_instruction_list_loose": [True, False]})
    assert dataset_questions(tmp_path, MODEL, "IFEval")[0].answers[0].checks == (
        "failed: length_constraints:number_sentences (num_sentences=3, relation=less than)\n"
        "followed only loosely: language:response_language (language=fr)")


def test_livecodebench_says_which_test_failed_and_how(tmp_path):
    asked = [Asked("Print a + b.", "lcb1", (True, False, False))]
    metadata = ["{}", json.dumps({"output": "-1\n", "expected": "3\n", "inputs": "1 2\n", "error_code": -2,
                                  "error_message": "Wrong Answer"}),
                json.dumps({"error": "ZeroDivisionError('integer division or modulo by zero')", "error_code": -4,
                            "error_message": "Runtime Error", "inputs": "5 7\n", "expected": "12\n"})]
    results = [[True, True], [True, False], [-1]]
    write_ruled(tmp_path, "lcb", asked, lambda question, run: {"eval_result": results[run],
                                                                "final_metadata": metadata[run]})
    assert [a.checks for a in dataset_questions(tmp_path, MODEL, "lcb")[0].answers] == [
        "passed every test (2)",
        "test 2 failed: Wrong Answer\ninput: 1 2\nexpected: 3\noutput: -1",
        "test 1 failed: Runtime Error: ZeroDivisionError('integer division or modulo by zero')\ninput: 5 7\n"
        "expected: 12"]


def test_a_rule_without_details_of_its_own_is_read_answer_by_answer(tmp_path):
    asked = [Asked("Pick B", "B", (True, False)), Asked("Pick C", "C", (False, False))]
    write_flat(tmp_path, "choices", asked)
    shown = dataset_questions(tmp_path, MODEL, "choices")
    assert [[a.outcome for a in q.answers] for q in shown] == [["correct", "incorrect"], ["incorrect", "incorrect"]]


def test_a_repeated_dataset_not_scored_yet_is_grouped_by_its_repeating_prompts(tmp_path):
    write_predictions(tmp_path, "aime", THREE_RUNS)
    shown = dataset_questions(tmp_path, MODEL, "aime")
    assert [(q.prompt, len(q.answers), q.scored) for q in shown] == [(a.prompt, 3, False) for a in THREE_RUNS]
    assert {a.outcome for q in shown for a in q.answers} == {"unscored"}


@pytest.mark.parametrize("break_files, message", [
    (lambda folder: (folder / "aime_replica1.json").write_text(json.dumps({"0": {"prediction": "A"}})),
     "9 predictions but 7 outcomes in the judge's replies"),
    (lambda folder: (folder / "aime_replica3.json").write_text(json.dumps({"0": {"prediction": "A"}})),
     "3 questions in each of 3 runs but judge replies of runs 0 (3), 1 (3), 2 (3), 3 (1)"),
    (lambda folder: (folder / "aime.json").write_text(json.dumps({"details": [{"correct": [True]}] * 2})),
     "9 predictions but 2 questions in aime.json"),
])
def test_files_that_disagree_are_an_error_not_a_misaligned_table(tmp_path, break_files, message):
    write_judged(tmp_path, "aime", THREE_RUNS)
    break_files(tmp_path / "results" / MODEL)
    with pytest.raises(StageFailed) as error:
        dataset_questions(tmp_path, MODEL, "aime")
    assert error.value.message == (f"aime of run {tmp_path.name} has {message}: the files are of different runs; "
                                   f"rerun its evaluation (lmeval judge --reuse {tmp_path.name})")


def test_details_whose_runs_disagree_with_the_predictions_are_an_error(tmp_path):
    write_ruled(tmp_path, "lcb", [Asked("Q", "g", (True, False))])
    path = tmp_path / "results" / MODEL / "lcb.json"
    results = json.loads(path.read_text())
    results["details"][0]["correct"] = [True, False, True]
    path.write_text(json.dumps(results))
    with pytest.raises(StageFailed) as error:
        dataset_questions(tmp_path, MODEL, "lcb")
    assert "has 2 runs but correct of lcb_0 holds 3: the files are of different runs" in error.value.message
