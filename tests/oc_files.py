"""Run folders made by hand in OpenCompass 0.5.4's layout, for the fast tests of lmeval.samples,
lmeval.stats, `lmeval results`, `compare` and `report`: each dataset's questions with the outcome
of each of their n answers, written the way OpenCompass writes them (read in its source):

- predictions/MODEL/DATASET.json: n x questions entries, question q of run r at r * questions + q;
- a judged dataset (GenericLLMEvaluator): the judge's replies of run r in
  results/MODEL/DATASET_replica{r}.json, and results/MODEL/DATASET.json whose `details` hold one
  entry per question with a value per run (BaseEvaluator.evaluate's grouping);
- a rule (IFEval, LiveCodeBench): the same grouped details with `correct` per run;
- a cascade (GPQA): `rule_evaluation` per run, `llm_evaluation` only for the runs the rule missed,
  each naming its run as `dataset_replica_idx`, and the judge's replies of the misses of run r in
  results/MODEL/DATASET_llm_judge_replica{r}.json;
- a rule without details of its own (AccEvaluator): OpenCompass's own one entry per answer.

Every score is computed here from the outcomes, never read from what lmeval shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

MODEL = "m"
INVALID_REPLY = "I cannot judge this."


@dataclass(frozen=True)
class Asked:
    """A question and the outcome of each of its answers, run by run: True right, False wrong,
    None an invalid judge reply (counted as wrong)."""

    prompt: str
    gold: str
    right: tuple[bool | None, ...]

    @property
    def share(self) -> float:
        return mean(outcome is True for outcome in self.right)


def score(questions: list[Asked]) -> float:
    """The dataset's score in points: the mean over questions of their share of answers right."""
    return 100 * mean(question.share for question in questions)


def answer(question: Asked, run: int) -> str:
    return f"answer {run} to {question.prompt}"


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def _runs(questions: list[Asked]) -> int:
    runs = {len(question.right) for question in questions}
    assert len(runs) == 1, "every question of a dataset is asked as often"
    return runs.pop()


def write_predictions(run_dir: Path, dataset: str, questions: list[Asked]) -> None:
    runs = _runs(questions)
    _write(run_dir / "predictions" / MODEL / f"{dataset}.json", {
        str(run * len(questions) + index): {"origin_prompt": [{"role": "HUMAN", "prompt": question.prompt}],
                                            "prediction": answer(question, run), "gold": question.gold}
        for run in range(runs) for index, question in enumerate(questions)})


def _results(run_dir: Path, dataset: str, metric: str, questions: list[Asked], details) -> None:
    _write(run_dir / "results" / MODEL / f"{dataset}.json", {metric: score(questions), "details": details})


def write_judged(run_dir: Path, dataset: str, questions: list[Asked]) -> None:
    """A dataset the judge scored: its replies per run, and the grouped details."""
    write_predictions(run_dir, dataset, questions)
    runs = _runs(questions)

    def reply(outcome: bool | None) -> str:
        return INVALID_REPLY if outcome is None else "A" if outcome else "B"

    for run in range(runs):
        _write(run_dir / "results" / MODEL / f"{dataset}_replica{run}.json", {
            str(index): {"origin_prompt": [{"role": "HUMAN", "prompt": f"Grade: {answer(question, run)}"}],
                         "prediction": reply(question.right[run]), "gold": question.gold}
            for index, question in enumerate(questions)})
    _results(run_dir, dataset, "accuracy", questions, [
        {"example_abbr": f"{dataset}_{index}", "prediction": [reply(outcome) for outcome in question.right],
         "gold": [question.gold] * runs} for index, question in enumerate(questions)])


def write_ruled(run_dir: Path, dataset: str, questions: list[Asked], extra=lambda question, run: {}) -> None:
    """A dataset a rule scored, with the grouped details; EXTRA(question, run) adds fields of
    one answer (each becomes a list per run, as OpenCompass flattens them)."""
    write_predictions(run_dir, dataset, questions)
    details = []
    for index, question in enumerate(questions):
        entry = {"example_abbr": f"{dataset}_{index}", "correct": [bool(outcome) for outcome in question.right]}
        for run in range(len(question.right)):
            for key, value in extra(question, run).items():
                entry.setdefault(key, []).append(value)
        details.append(entry)
    _results(run_dir, dataset, "accuracy", questions, details)


def write_cascade(run_dir: Path, dataset: str, questions: list[Asked], rule_right: set[tuple[int, int]]) -> None:
    """A CascadeEvaluator's dataset: the rule gets the answers RULE_RIGHT ((question, run)) right
    and misses the others, which the judge scores."""
    write_predictions(run_dir, dataset, questions)
    runs = _runs(questions)
    misses: dict[int, list[str]] = {run: [] for run in range(runs)}
    details = []
    for index, question in enumerate(questions):
        entry = {"example_abbr": f"{dataset}_{index}", "rule_evaluation": [], "cascade_correct": []}
        for run, outcome in enumerate(question.right):
            by_rule = (index, run) in rule_right
            assert not by_rule or outcome, "the rule only finds right answers right"
            entry["rule_evaluation"].append({"correct": by_rule, "pred": question.gold if by_rule else "",
                                             "answer": question.gold, "evaluation_method": "rule"})
            if not by_rule:
                reply = INVALID_REPLY if outcome is None else "A" if outcome else "B"
                misses[run].append(reply)
                entry.setdefault("llm_evaluation", []).append({
                    "origin_prompt": [{"role": "HUMAN", "prompt": "Grade it"}], "prediction": reply,
                    "gold": question.gold, "dataset_replica_idx": run, "llm_correct": reply == "A"})
            entry["cascade_correct"].append(bool(outcome))
        details.append(entry)
    for run, replies in misses.items():
        if replies:
            _write(run_dir / "results" / MODEL / f"{dataset}_llm_judge_replica{run}.json", {
                str(index): {"prediction": reply, "gold": "?"} for index, reply in enumerate(replies)})
    _write(run_dir / "results" / MODEL / f"{dataset}.json", {"accuracy": score(questions), "details": details})


def write_flat(run_dir: Path, dataset: str, questions: list[Asked]) -> None:
    """A rule without details of its own (AccEvaluator): OpenCompass's one entry per answer."""
    write_predictions(run_dir, dataset, questions)
    details: dict = {"type": "GEN"}
    for run in range(_runs(questions)):
        for index, question in enumerate(questions):
            details[str(run * len(questions) + index)] = {
                "predictions": question.gold if question.right[run] else "wrong", "references": question.gold}
    _results(run_dir, dataset, "accuracy", questions, details)


def write_run(work_dir: Path, run_id: str, datasets: list[list[str]], rows: list[tuple[str, str, float | None]],
              recorded: list[dict] | None = None) -> Path:
    """The summary of ROWS (dataset, metric, score) and lmeval's manifest of a run of DATASETS
    (its `fingerprint_inputs` entries: ["suite", name] or ["file", name, kind, digest]), its
    recorded scores RECORDED (none: as a run recorded before lmeval kept them)."""
    run_dir = work_dir / run_id
    (run_dir / "summary").mkdir(parents=True, exist_ok=True)
    lines = ["dataset,version,metric,mode,m"] + [f"{name},abc,{metric},gen,{'-' if value is None else f'{value:.2f}'}"
                                                 for name, metric, value in rows]
    (run_dir / "summary" / "summary_20250101_120500.csv").write_text("\n".join(lines) + "\n")
    _write(run_dir / "lmeval.json", {
        "run_id": run_id, "model_abbr": MODEL, "inputs": {"model": "/models/m"},
        "fingerprint_inputs": {"datasets": datasets}, "stages": {"infer": {"status": "ok"}, "eval": {"status": "ok"}},
        "scores": recorded or []})
    return run_dir
