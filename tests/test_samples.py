"""The per-sample table (lmeval.samples), read from the files the real OpenCompass wrote in the
crash/resume chain; every expected row is computed from the chain's rows and answer key."""

from __future__ import annotations

import json
import shutil

import pytest
from scenarios import INVALID_MARKER, MC_ROWS, QA_ROWS, judge_agrees

from lmeval.exceptions import StageFailed
from lmeval.samples import dataset_samples, split_reasoning

pytestmark = [pytest.mark.processes, pytest.mark.opencompass]

INVALID_REPLY = "I cannot judge this."  # the stand-in judge's reply to a row with the marker


def test_a_judged_dataset_has_a_row_per_prompt_with_the_judges_reply(chain):
    samples = dataset_samples(chain.run_dir, "demo-chat", "trivia")
    assert [(s.index, s.prompt, s.prediction, s.gold) for s in samples] == [
        (index, question, reply, gold) for index, (question, gold, reply) in enumerate(QA_ROWS)]
    expected = [("invalid", INVALID_REPLY) if reply == INVALID_MARKER
                else ("correct", "A") if judge_agrees(reply, gold) else ("incorrect", "B")
                for _, gold, reply in QA_ROWS]
    assert [(s.outcome, s.judge_reply) for s in samples] == expected
    assert all(s.reasoning is None for s in samples)


def test_a_rule_scored_dataset_is_scored_by_its_extracted_answers(chain):
    samples = dataset_samples(chain.run_dir, "demo-chat", "choices")
    assert [(s.prediction, s.gold, s.outcome, s.judge_reply) for s in samples] == [
        (f"The answer is {reply}.", gold, "correct" if reply == gold else "incorrect", None)
        for _, _, gold, reply in MC_ROWS]
    assert all(question in s.prompt for s, (question, *_) in zip(samples, MC_ROWS, strict=True))


def test_files_that_disagree_on_the_prompts_are_an_error_not_a_misaligned_table(chain, tmp_path):
    run_dir = tmp_path / chain.run_dir.name
    shutil.copytree(chain.run_dir, run_dir, symlinks=True)
    replies = run_dir / "results" / "demo-chat" / "trivia_replica0.json"
    entries = json.loads(replies.read_text())
    del entries[str(len(entries) - 1)]
    replies.write_text(json.dumps(entries))
    with pytest.raises(StageFailed) as error:
        dataset_samples(run_dir, "demo-chat", "trivia")
    assert error.value.message == (f"trivia of run {run_dir.name} has {len(QA_ROWS)} predictions but "
                                   f"{len(QA_ROWS) - 1} outcomes in the judge's replies: the files are of different "
                                   f"runs; rerun its evaluation (lmeval judge --reuse {run_dir.name})")


@pytest.mark.parametrize("prediction, split", [
    ("<think>2 and 2 make 4</think>\n\nThe answer is 4.", ("2 and 2 make 4", "The answer is 4.")),
    ("The answer is 4.", (None, "The answer is 4.")),
])
def test_a_models_reasoning_is_kept_apart_from_its_answer(prediction, split):
    assert split_reasoning(prediction) == split
