"""A run's dataset as its questions, each with its answers: what was asked, what the model
answered (its reasoning apart), the gold answer, the outcome and how it was decided (the
judge's raw reply, a cascade's rule verdict, what IFEval's or LiveCodeBench's own checker found).

OpenCompass asks each question of a dataset n times (n is 1 unless the config repeats it: AIME
32 times, GPQA 4, LiveCodeBench 6) and keeps the answers run after run: the predictions file
holds n x questions entries, question q of run r at index r * questions + q. The outcomes come
from, by the dataset's evaluator:

    judge           results/MODEL/DATASET_replica{r}.json: run r's judge replies, question by question
    rule            results/MODEL/DATASET.json `details`: one entry per question whose fields hold a
                    value per run (BaseEvaluator.evaluate's grouping): `correct` or `is_correct`,
                    and what the checker found (IFEval's `refer`, LiveCodeBench's `final_metadata`)
    rule then judge (CascadeEvaluator, GPQA) the same `details`: `rule_evaluation` per run,
                    `llm_evaluation` only for the runs the rule missed (each names its run as
                    `dataset_replica_idx`), `cascade_correct` per run; the judge's replies of run r,
                    the misses only, in results/MODEL/DATASET_llm_judge_replica{r}.json
    rule, no details of its own (AccEvaluator) OpenCompass's one entry per answer, by index

Files that disagree on how many questions, runs or answers there are are an error, never a
silent misalignment.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmeval import outputs
from lmeval.exceptions import StageFailed

CORRECT, INCORRECT, INVALID = "correct", "incorrect", "invalid"
UNSCORED = "unscored"  # predicted, not evaluated yet
WRONG = (INCORRECT, INVALID)  # OpenCompass counts an invalid judge reply as wrong
_THINK_START, _THINK_END = "<think>", "</think>"
# The per-run verdicts of a rule, in the order BaseEvaluator.evaluate reads them.
_RULE_FIELDS = ("correct", "is_correct", "cascade_correct")


@dataclass(frozen=True)
class Sample:
    """One answer: a question asked in one of the dataset's runs."""

    index: int  # in the predictions file: run * questions + question
    run: int
    prompt: str
    prediction: str  # the answer, without the reasoning
    reasoning: str | None  # what the model emitted between <think> and </think>
    gold: str
    outcome: str  # correct | incorrect | invalid (a judge reply neither A nor B) | unscored
    judge_reply: str | None
    rule: str | None = None  # a cascade's rule verdict, which the judge's reply follows where it missed
    checks: str | None = None  # what the dataset's checker found: IFEval's instructions, LiveCodeBench's tests


@dataclass(frozen=True)
class Question:
    index: int
    answers: tuple[Sample, ...]  # one per run, in run order

    @property
    def prompt(self) -> str:
        return self.answers[0].prompt

    @property
    def gold(self) -> str:
        return self.answers[0].gold

    @property
    def correct(self) -> int:
        return sum(answer.outcome == CORRECT for answer in self.answers)

    @property
    def scored(self) -> bool:
        return all(answer.outcome != UNSCORED for answer in self.answers)

    @property
    def share(self) -> float:
        """Its outcome over the runs: the share of its answers right (1 correct, 0 otherwise)."""
        return self.correct / len(self.answers)


@dataclass(frozen=True)
class _Verdict:
    """How one answer was scored."""

    outcome: str = UNSCORED
    judge_reply: str | None = None
    rule: str | None = None
    checks: str | None = None


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
    """(the reasoning between a leading <think> and the first </think>, the answer after it);
    found by position, not a regex: a lazy match over long reasoning costs a report seconds."""
    text = prediction.lstrip()
    end = text.find(_THINK_END) if text.startswith(_THINK_START) else -1
    if end < 0:
        return None, prediction
    return text[len(_THINK_START):end].strip(), text[end + len(_THINK_END):].lstrip()


def _disagree(run_dir: Path, dataset: str, what: str) -> StageFailed:
    return StageFailed(f"{dataset} of run {run_dir.name} has {what}: the files are of different runs; rerun its "
                       f"evaluation (lmeval judge --reuse {run_dir.name})")


def _judge_verdict(reply: str) -> str:
    """OpenCompass's rule for a judge's reply: the first A or B in it decides."""
    return {"A": CORRECT, "B": INCORRECT}.get(outputs.verdict(reply), INVALID)


def _reply_text(entry: Any) -> str:
    reply = entry.get("prediction") if isinstance(entry, dict) else None
    return reply[0] if isinstance(reply, list) and reply else reply if isinstance(reply, str) else ""


def _runs_of(keys: list[tuple[str, str]]) -> int:
    """How many runs a dataset without grouped details was asked in: its questions repeat,
    run after run, with the shortest period that divides them."""
    total = len(keys)
    for period in range(1, total):
        if total % period == 0 and all(keys[index] == keys[index % period] for index in range(period, total)):
            return total // period
    return 1


def _grouped(details: Any) -> bool:
    """Whether DETAILS hold one entry per question with a value per run (BaseEvaluator.evaluate)."""
    return isinstance(details, list) and bool(details) and all(isinstance(entry, dict) for entry in details)


Disagreement = Callable[[str], StageFailed]  # what a dataset's files disagree on, as the error to raise


def _per_run(entry: dict, field: str, runs: int, fail: Disagreement) -> list:
    values = entry.get(field)
    if not isinstance(values, list) or len(values) != runs:
        raise fail(f"{runs} runs but {field} of {entry.get('example_abbr', 'a question')} holds "
                   f"{len(values) if isinstance(values, list) else 'no list'}")
    return values


def _judged(run_dir: Path, model: str, dataset: str, questions: int, runs: int) -> dict[int, _Verdict] | None:
    """The judge's verdicts by answer index, from its reply files; a run without one is unscored."""
    files = outputs.replica_files(run_dir, model, dataset, "")
    if not files:
        return None
    stray = [run for run in files if run >= runs]
    replies = {run: _by_index(_read(path), path) for run, path in sorted(files.items())}
    counts = sum(len(entries) for entries in replies.values())
    if stray or any(len(entries) != questions for entries in replies.values()):
        total = questions * runs
        raise _disagree(run_dir, dataset, f"{total} predictions but {counts} outcomes in the judge's replies"
                        if len(files) == runs and not stray else
                        f"{questions} questions in each of {runs} runs but judge replies of runs "
                        f"{', '.join(f'{run} ({len(entries)})' for run, entries in replies.items())}")
    verdicts = {}
    for run, entries in replies.items():
        for question, entry in enumerate(entries):
            reply = _reply_text(entry)
            verdicts[run * questions + question] = _Verdict(_judge_verdict(reply), reply)
    return verdicts


def _cascade(run_dir: Path, model: str, dataset: str, details: list[dict], runs: int,
             fail: Disagreement) -> dict[int, _Verdict]:
    """Each answer's rule verdict and, where the rule missed, the judge's reply (joined by the
    run each judge verdict names), checked against the judge's reply files. Right is what
    CascadeEvaluator counts: the rule's verdict or the judge's (its `cascade_correct`, which a
    run the rule got wholly right lacks)."""
    verdicts, judged = {}, Counter()
    questions = len(details)
    for question, entry in enumerate(details):
        rules = _per_run(entry, "rule_evaluation", runs, fail)
        by_run = {}
        for judge in entry.get("llm_evaluation") or []:
            run = judge.get("dataset_replica_idx") if isinstance(judge, dict) else None
            if not isinstance(run, int) or not 0 <= run < runs or run in by_run:
                raise fail(f"a judge verdict of {entry.get('example_abbr', 'a question')} for run {run}")
            by_run[run] = judge
            judged[run] += 1
        for run in range(runs):
            rule = rules[run] if isinstance(rules[run], dict) else {}
            reply = _reply_text(by_run[run]) if run in by_run else None
            right = rule.get("correct") or run in by_run and by_run[run].get("llm_correct")
            outcome = CORRECT if right else INVALID if reply is not None and outputs.verdict(reply) is None \
                else INCORRECT
            verdicts[run * questions + question] = _Verdict(outcome, reply, rule=_rule_text(rule))
    files = outputs.replica_files(run_dir, model, dataset, "_llm_judge")
    for run in sorted(set(judged) | set(files)):
        replies = len(_by_index(_read(files[run]), files[run])) if run in files else 0
        if replies != judged[run]:
            raise fail(f"{judged[run]} judge verdicts in run {run} in its details but {replies} judge replies "
                       f"in {files[run].name if run in files else 'no file'}")
    return verdicts


def _of_run(values: Any, run: int) -> Any:
    """A grouped details field's value for RUN (None where it holds none)."""
    return values[run] if isinstance(values, list) and len(values) > run else None


def _rule_text(rule: dict) -> str:
    found = f"extracted {rule.get('pred') or 'nothing'}, gold {rule.get('answer', '?')}"
    return f"right: {found}" if rule.get("correct") else f"missed: {found}; the judge decides"


def _instructions_text(entry: dict, run: int) -> str | None:
    """IFEval: each instruction with its arguments and, where the details say (lmeval's
    LmevalIFEvaluator keeps OpenCompass's per-instruction checks), which failed, strictly and
    loosely; else the strict and loose grade of the whole answer."""
    refer = _of_run(entry.get("refer"), run)
    if not isinstance(refer, dict) or not isinstance(refer.get("instruction_id_list"), list):
        return None
    kwargs = refer.get("kwargs") if isinstance(refer.get("kwargs"), list) else []
    named = []
    for position, instruction in enumerate(refer["instruction_id_list"]):
        arguments = kwargs[position] if position < len(kwargs) and isinstance(kwargs[position], dict) else {}
        shown = ", ".join(f"{key}={value}" for key, value in arguments.items() if value is not None)
        named.append(f"{instruction} ({shown})" if shown else str(instruction))
    strictly = _of_run(entry.get("follow_instruction_list"), run)
    if isinstance(strictly, list) and len(strictly) == len(named):
        loosely = _of_run(entry.get("follow_instruction_list_loose"), run)
        loosely = loosely if isinstance(loosely, list) and len(loosely) == len(named) else [False] * len(named)
        kinds = {"failed": [], "followed only loosely": [], "followed": []}
        for name, strict, loose in zip(named, strictly, loosely):
            kinds["followed" if strict else "followed only loosely" if loose else "failed"].append(name)
        return "\n".join(f"{kind}: {'; '.join(names)}" for kind, names in kinds.items() if names)

    def grade(field: str) -> str:
        return "every one followed" if _of_run(entry.get(field), run) else "not every one followed"

    return f"instructions: {'; '.join(named)}\nstrict: {grade('is_strict_correct')}; loose: {grade('is_loose_correct')}"


def _tests_text(entry: dict, run: int, right: bool) -> str | None:
    """LiveCodeBench: which test failed and how (its input, the output expected and given)."""
    results, metadata = entry.get("eval_result"), entry.get("final_metadata")
    if not isinstance(results, list) or not isinstance(metadata, list) or len(metadata) <= run:
        return None
    tests = results[run] if isinstance(results[run], list) else []
    if right:
        return f"passed every test ({len(tests)})"
    found = metadata[run]
    if isinstance(found, str):
        try:
            found = json.loads(found)
        except ValueError:
            found = {"error_message": found}
    found = found if isinstance(found, dict) else {}
    failed = next((number for number, result in enumerate(tests, 1) if result is not True), len(tests) or 1)
    how = found.get("error_message") or "failed"
    lines = [f"test {failed} failed: {how}" + (f": {found['error']}" if found.get("error") else "")]
    lines += [f"{label}: {str(found[key]).rstrip()}" for key, label in (("inputs", "input"), ("expected", "expected"),
                                                         ("output", "output")) if key in found]
    return "\n".join(lines)


def _ruled(details: list[dict], runs: int, fail: Disagreement) -> dict[int, _Verdict]:
    """Each answer's verdict from a rule's grouped details, with what its checker found."""
    verdicts = {}
    questions = len(details)
    for question, entry in enumerate(details):
        field = next((name for name in _RULE_FIELDS if name in entry), None)
        if field is None:
            continue
        rights = _per_run(entry, field, runs, fail)
        for run in range(runs):
            checks = _instructions_text(entry, run) or _tests_text(entry, run, bool(rights[run]))
            verdicts[run * questions + question] = _Verdict(CORRECT if rights[run] else INCORRECT, checks=checks)
    return verdicts


def _flat(entries: list, total: int, fail: Disagreement) -> dict[int, _Verdict]:
    """Verdicts from OpenCompass's own one entry per answer (an evaluator without details)."""
    if len(entries) != total:
        raise fail(f"{total} predictions but {len(entries)} outcomes in its results file")
    verdicts = {}
    for index, entry in enumerate(entries):
        if "is_correct" in entry or "correct" in entry:
            right = entry.get("is_correct", entry.get("correct"))
        else:
            right = entry.get("predictions") == entry.get("references")
        verdicts[index] = _Verdict(CORRECT if right else INCORRECT)
    return verdicts


def dataset_questions(run_dir: Path, model: str, dataset: str) -> list[Question]:
    """The questions of DATASET in RUN_DIR, in the dataset's order, each with its answers."""
    path = outputs.predictions_file(run_dir, model, dataset)
    if not path.is_file():
        raise StageFailed(f"run {run_dir.name} has no predictions of {dataset} ({path})")
    predictions = _by_index(_read(path), path)
    total = len(predictions)

    def fail(what: str) -> StageFailed:
        return _disagree(run_dir, dataset, what)

    results_path = outputs.results_file(run_dir, model, dataset)
    results = _read(results_path) if results_path.is_file() else {}
    details = results.get("details") if isinstance(results, dict) else None
    prompts = [prompt_text(entry.get("origin_prompt")) for entry in predictions]
    golds = [str(entry.get("gold", "")) for entry in predictions]
    if _grouped(details):
        if total % len(details):
            raise fail(f"{total} predictions but {len(details)} questions in {results_path.name}")
        runs = total // len(details)
    else:
        runs = _runs_of(list(zip(prompts, golds)))
    questions = total // runs

    if _grouped(details) and "rule_evaluation" in details[0]:
        verdicts = _cascade(run_dir, model, dataset, details, runs, fail)
    else:
        verdicts = _judged(run_dir, model, dataset, questions, runs)
        if verdicts is None and _grouped(details):
            verdicts = _ruled(details, runs, fail)
        elif verdicts is None and isinstance(details, dict):
            verdicts = _flat(_by_index(details, results_path), total, fail)
    verdicts = verdicts or {}

    answers = []
    for index, entry in enumerate(predictions):
        reasoning, answer = split_reasoning(str(entry.get("prediction", "")))
        verdict = verdicts.get(index, _Verdict())
        answers.append(Sample(index=index, run=index // questions, prompt=prompts[index], prediction=answer,
                              reasoning=reasoning, gold=golds[index], outcome=verdict.outcome,
                              judge_reply=verdict.judge_reply, rule=verdict.rule, checks=verdict.checks))
    return [Question(question, tuple(answers[run * questions + question] for run in range(runs)))
            for question in range(questions)]


def dataset_samples(run_dir: Path, model: str, dataset: str) -> list[Sample]:
    """Every answer of DATASET in RUN_DIR, in the predictions file's order (run after run)."""
    return sorted((answer for question in dataset_questions(run_dir, model, dataset) for answer in question.answers),
                  key=lambda answer: answer.index)
