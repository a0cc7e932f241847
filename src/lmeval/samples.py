"""One row per prompt of a run's dataset: what was asked, what the model answered (its reasoning
apart), the gold answer, the outcome and, for a judged dataset, the judge's raw reply.

OpenCompass keeps these in three places, each keyed by the prompt's index:
`predictions/MODEL/DATASET.json` (prompt, prediction, gold), `results/MODEL/DATASET.json`
(`details`: for a rule-scored dataset the extracted answer and the reference) and, for a judged
one, the judge's replies in `results/MODEL/DATASET_replicaK.json`. They are joined by index;
files that disagree on how many prompts there are are an error, never a silent misalignment.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmeval import outputs
from lmeval.exceptions import StageFailed

CORRECT, INCORRECT, INVALID = "correct", "incorrect", "invalid"
UNSCORED = "unscored"  # predicted, not evaluated yet
_THINKING = re.compile(r"\s*<think>(?P<reasoning>.*?)</think>\s*(?P<answer>.*)", re.DOTALL)


@dataclass(frozen=True)
class Sample:
    index: int
    prompt: str
    prediction: str  # the answer, without the reasoning
    reasoning: str | None  # what the model emitted between <think> and </think>
    gold: str
    outcome: str  # correct | incorrect | invalid (a judge reply neither A nor B) | unscored
    judge_reply: str | None


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise StageFailed(f"cannot read {path}: {error}") from None


def _by_index(entries: Any, path: Path) -> list[Any]:
    """ENTRIES ({"0": ..., "1": ...}, in any order, or a list) as a list in index order."""
    if isinstance(entries, list):
        return entries
    if not isinstance(entries, dict):
        raise StageFailed(f"{path} is not an OpenCompass file of samples")
    indexed = {int(key): value for key, value in entries.items() if key.isdigit()}
    if sorted(indexed) != list(range(len(indexed))):
        raise StageFailed(f"{path} does not hold samples 0..{len(indexed) - 1}")
    return [indexed[index] for index in range(len(indexed))]


def prompt_text(prompt: Any) -> str:
    """An `origin_prompt` as text: the turns' prompts (a chat's roles shown where it has several)."""
    if isinstance(prompt, str):
        return prompt
    turns = [turn for turn in prompt if isinstance(turn, dict)] if isinstance(prompt, list) else []
    if len(turns) == 1:
        return str(turns[0].get("prompt", ""))
    return "\n\n".join(f"[{turn.get('role', '?')}] {turn.get('prompt', '')}" for turn in turns)


def split_reasoning(prediction: str) -> tuple[str | None, str]:
    found = _THINKING.fullmatch(prediction)
    return (found["reasoning"].strip(), found["answer"]) if found else (None, prediction)


def _judge_replies(run_dir: Path, model: str, dataset: str) -> list[str] | None:
    files = outputs.judge_reply_files(run_dir, model, dataset)
    if not files:
        return None
    replies = []
    for path in files:
        for entry in _by_index(_read(path), path):
            reply = entry.get("prediction") if isinstance(entry, dict) else None
            replies.append(reply[0] if isinstance(reply, list) and reply else reply if isinstance(reply, str) else "")
    return replies


def _verdict(reply: str) -> str:
    """OpenCompass's rule: the first A or B in the reply decides."""
    found = outputs.verdict(reply)
    return {"A": CORRECT, "B": INCORRECT}.get(found, INVALID)


def _rule_outcomes(run_dir: Path, model: str, dataset: str) -> list[str] | None:
    path = outputs.results_file(run_dir, model, dataset)
    if not path.is_file():
        return None
    details = _read(path).get("details")
    if details is None:
        return None
    outcomes = []
    for entry in _by_index(details, path):
        if "is_correct" in entry or "correct" in entry:
            right = entry.get("is_correct", entry.get("correct"))
        else:
            right = entry.get("predictions") == entry.get("references")
        outcomes.append(CORRECT if right else INCORRECT)
    return outcomes


def dataset_samples(run_dir: Path, model: str, dataset: str) -> list[Sample]:
    """The samples of DATASET in RUN_DIR, in index order."""
    path = outputs.predictions_file(run_dir, model, dataset)
    if not path.is_file():
        raise StageFailed(f"run {run_dir.name} has no predictions of {dataset} ({path})")
    predictions = _by_index(_read(path), path)
    replies = _judge_replies(run_dir, model, dataset)
    outcomes = [_verdict(reply) for reply in replies] if replies is not None \
        else _rule_outcomes(run_dir, model, dataset)
    if outcomes is not None and len(outcomes) != len(predictions):
        source = "the judge's replies" if replies is not None else f"{outputs.results_file(run_dir, model, dataset)}"
        raise StageFailed(f"{dataset} of run {run_dir.name} has {len(predictions)} predictions but {len(outcomes)} "
                          f"outcomes in {source}: the files are of different runs; rerun its evaluation "
                          f"(lmeval judge --reuse {run_dir.name})")
    samples = []
    for index, entry in enumerate(predictions):
        reasoning, answer = split_reasoning(str(entry.get("prediction", "")))
        samples.append(Sample(index=index, prompt=prompt_text(entry.get("origin_prompt")), prediction=answer,
                              reasoning=reasoning, gold=str(entry.get("gold", "")),
                              outcome=outcomes[index] if outcomes is not None else UNSCORED,
                              judge_reply=replies[index] if replies is not None else None))
    return samples
