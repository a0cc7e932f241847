"""What a run's answers say beyond their text, per dataset: how many were cut at --max-out-len
(the server's finish reason `length`), came back empty, or had a prompt over the server's
session length, and how long they were (completion tokens, as the server counted them) and how
fast they came.

The model's class records one line per prompt in OpenCompass's inference task
(opencompass_plugin/lmeval_answers.py, RUN/lmeval/answers.jsonl); lmeval joins each line to
OpenCompass's prediction of the same prompt and text. A prediction without a line (a run made
before lmeval kept them, or a server that gave no usage) counts only where it can: its text.

A cut answer is scored wrong, so a dataset with many of them has a score that is only a lower
bound: what the model would score with room to finish is at least as high.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from lmeval import outputs
from lmeval.opencompass_plugin.lmeval_answers import PROMPT_TOO_LONG, key

LOG_NAME = "answers.jsonl"
CUT_WARNING_SHARE = 0.05  # from this share of cut answers on, a score is called a lower bound


def log_path(run_dir: Path) -> Path:
    return run_dir / "lmeval" / LOG_NAME


def read_log(run_dir: Path) -> dict[tuple[str, str], list[dict]]:
    """The log's lines by (prompt, answer) digest; a line cut short by a crash is skipped."""
    lines: dict[tuple[str, str], list[dict]] = {}
    try:
        text = log_path(run_dir).read_text(encoding="utf-8")
    except OSError:
        return lines
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("answer") is not None:
            lines.setdefault((record.get("prompt"), record["answer"]), []).append(record)
    return lines


@dataclass(frozen=True)
class Answer:
    """One prediction, with what its log line says (None where there is none)."""

    index: str  # its key in OpenCompass's predictions file
    empty: bool
    finish_reason: str | None = None
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    reasoning_tokens: int | None = None
    seconds: float | None = None
    tries: int | None = None
    max_out_len: int | None = None

    @property
    def cut(self) -> bool:
        return self.finish_reason == "length"

    @property
    def too_long(self) -> bool:
        return self.finish_reason == PROMPT_TOO_LONG


# The fields of Answer a log line gives (index and empty come from the prediction).
LOGGED = tuple(field.name for field in fields(Answer) if field.name not in ("index", "empty"))


def dataset_answers(run_dir: Path, model: str, dataset: str,
                    log: dict[tuple[str, str], list[dict]]) -> list[Answer]:
    """DATASET's predictions in OpenCompass's order, each joined to its line of LOG (taken from
    it: n answers to one prompt take n lines)."""
    try:
        predictions = json.loads(outputs.predictions_file(run_dir, model, dataset).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    answers = []
    for index, entry in sorted(predictions.items(), key=lambda item: int(item[0]) if item[0].isdigit() else 0):
        text = entry.get("prediction")
        text = text if isinstance(text, str) else ""
        lines = log.get((key(entry.get("origin_prompt")), key(text)))
        record = lines.pop() if lines else {}
        answers.append(Answer(index, not text.strip(), **{field: record.get(field) for field in LOGGED}))
    return answers


@dataclass(frozen=True)
class AnswerStats:
    """A dataset's (or a summary row's) answers, counted."""

    answers: int
    recorded: int  # of them with a log line: the cut and token figures are of these
    cut: int
    empty: int
    too_long: int
    tokens_mean: float | None
    tokens_median: float | None
    tokens_p95: int | None
    tokens_max: int | None
    tokens_per_second: float | None
    limit: int | None  # --max-out-len as the requests carried it

    @property
    def cut_share(self) -> float | None:
        return self.cut / self.recorded if self.recorded else None

    def as_dict(self) -> dict:
        return {**asdict(self), "cut_share": self.cut_share}

    @classmethod
    def from_dict(cls, data: dict) -> AnswerStats:
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})


def answer_stats(answers: list[Answer]) -> AnswerStats | None:
    if not answers:
        return None
    recorded = [answer for answer in answers if answer.finish_reason is not None]
    tokens = sorted(answer.completion_tokens for answer in recorded if answer.completion_tokens is not None)
    timed = [answer for answer in recorded if answer.completion_tokens is not None and answer.seconds]
    seconds = sum(answer.seconds for answer in timed)
    limits = {answer.max_out_len for answer in recorded if answer.max_out_len is not None}
    return AnswerStats(
        answers=len(answers), recorded=len(recorded), cut=sum(answer.cut for answer in recorded),
        empty=sum(answer.empty for answer in answers), too_long=sum(answer.too_long for answer in recorded),
        tokens_mean=round(statistics.fmean(tokens), 1) if tokens else None,
        tokens_median=statistics.median(tokens) if tokens else None,
        tokens_p95=tokens[math.ceil(0.95 * len(tokens)) - 1] if tokens else None,
        tokens_max=tokens[-1] if tokens else None,
        tokens_per_second=round(sum(answer.completion_tokens for answer in timed) / seconds, 1) if seconds else None,
        limit=max(limits) if limits else None)


def run_stats(run_dir: Path, model: str, rows: dict[str, list[str]]) -> dict[str, dict]:
    """Each summary row's answers counted over its datasets (ROWS: row -> datasets), for the
    manifest; rows whose datasets have no predictions are left out."""
    log = read_log(run_dir)
    per_dataset = {name: dataset_answers(run_dir, model, name, log)
                   for name in dict.fromkeys(name for members in rows.values() for name in members)}
    stats = {}
    for row, members in rows.items():
        counted = answer_stats([answer for name in members for answer in per_dataset[name]])
        if counted is not None:
            stats[row] = counted.as_dict()
    return stats


def cut_warnings(stats: dict[str, AnswerStats]) -> list[str]:
    """`aime2025: 23% of answers reached --max-out-len 64000; its score is a lower bound`, for
    each row with CUT_WARNING_SHARE or more of its answers cut."""
    return [f"{row}: {row_stats.cut_share:.0%} of answers reached --max-out-len {row_stats.limit}; "
            "its score is a lower bound"
            for row, row_stats in stats.items()
            if row_stats.cut_share is not None and row_stats.cut_share >= CUT_WARNING_SHARE]


def seed_retry(parent: Path, run_dir: Path, model: str, datasets: list[str]) -> dict[str, list[str]]:
    """Start RUN_DIR from PARENT's answers: for each of DATASETS, every answer PARENT's log does
    not record as cut goes into OpenCompass's tmp_ file of the dataset (OpenCompass resumes from
    it and asks only the prompts it lacks); PARENT's log comes along, for the answers kept.
    Returns, per dataset, the indices left to ask again."""
    log = read_log(parent)
    retried = {}
    for name in datasets:
        source = outputs.predictions_file(parent, model, name)
        try:
            entries = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not inferred there: inferred here in full
        cut = {answer.index for answer in dataset_answers(parent, model, name, log) if answer.cut}
        target = outputs.predictions_file(run_dir, model, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        kept = "".join(json.dumps({"idx": index, **entry}, ensure_ascii=False) + "\n"
                       for index, entry in entries.items() if index not in cut)
        (target.parent / f"tmp_{target.stem}.jsonl").write_text(kept, encoding="utf-8")
        retried[name] = sorted(cut, key=int)
    if log_path(parent).is_file():
        log_path(run_dir).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log_path(parent), log_path(run_dir))
    return retried
