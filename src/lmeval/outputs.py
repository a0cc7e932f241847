"""Reading an OpenCompass run folder. OpenCompass exits 0 when its tasks fail, so whether a
stage worked is decided here, from the files it leaves:

    {run}/predictions/{model}/{dataset}.json      written when a dataset's inference is complete
    {run}/predictions/{model}/tmp_{dataset}.jsonl answers so far, one per line, while it runs
    {run}/infer_status/{model}/{dataset}.json     {"status", "completed", "total"} of the concurrent task
    {run}/results/{model}/{dataset}.json          written when a dataset is scored
    {run}/results/{model}/{dataset}_replica{k}.json   the judge's raw replies for replica k
                                                  (`_llm_judge_replica{k}` under a cascade)
    {run}/logs/{infer|eval}/{model}/{dataset}.out a task's log (one inference task holds every
                                                  dataset: its log is named after the first)
    {run}/summary/summary_{call time}.csv         one per eval call; the newest counts
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from lmeval.files import log_tail

LOG_TAIL_LINES = 12


def predictions_file(run_dir: Path, model: str, dataset: str) -> Path:
    return run_dir / "predictions" / model / f"{dataset}.json"


def results_file(run_dir: Path, model: str, dataset: str) -> Path:
    return run_dir / "results" / model / f"{dataset}.json"


def task_log(run_dir: Path, stage: str, model: str, dataset: str) -> Path:
    return run_dir / "logs" / stage / model / f"{dataset}.out"


def progress(run_dir: Path, model: str, dataset: str) -> tuple[int, int | None]:
    """(answered, total) for DATASET as OpenCompass's inference reports it; total None if unknown."""
    try:
        status = json.loads((run_dir / "infer_status" / model / f"{dataset}.json").read_text())
        return int(status.get("completed") or 0), status.get("total")
    except (OSError, ValueError, TypeError):
        return 0, None


def progress_mark(run_dir: Path, model: str) -> int:
    """A count that grows with every answer saved and every file written for MODEL in the run
    (OpenCompass's inference counts, predictions, results)."""
    answered = sum(progress(run_dir, model, path.stem)[0] for path in (run_dir / "infer_status" / model).glob("*.json"))
    written = sum(1 for folder in ("predictions", "results") for _ in (run_dir / folder / model).glob("*.json"))
    return answered + written


def missing_predictions(run_dir: Path, model: str, datasets: list[str]) -> list[str]:
    """Those of DATASETS whose inference is not complete (predictions_complete)."""
    return [name for name in datasets if not predictions_complete(predictions_file(run_dir, model, name))]


_parsed: dict[Path, tuple[tuple[int, int], bool]] = {}  # path -> ((size, mtime), whether it parsed)


def predictions_complete(path: Path) -> bool:
    """Whether the predictions file PATH is whole. OpenCompass writes it with a plain open('w')
    once the dataset is inferred, then removes its tmp_ file (the answers so far): one that does
    not parse, or beside a tmp_ file, is one a kill cut short. Parsed once per version of it."""
    try:
        stat = path.stat()
    except OSError:
        return False
    if path.with_name(f"tmp_{path.stem}.jsonl").exists():
        return False
    version = (stat.st_size, stat.st_mtime_ns)
    if path not in _parsed or _parsed[path][0] != version:
        try:
            json.loads(path.read_bytes())
            _parsed[path] = (version, True)
        except (OSError, ValueError):
            _parsed[path] = (version, False)
    return _parsed[path][1]


def set_aside_incomplete(run_dir: Path, model: str, datasets: list[str], folder: Path) -> list[str]:
    """Move the predictions files of DATASETS that exist but are not whole into FOLDER, so that
    OpenCompass (which skips a dataset whose file exists) infers them again, resuming from its
    tmp_ file; the datasets moved."""
    moved = []
    for name in datasets:
        path = predictions_file(run_dir, model, name)
        if path.exists() and not predictions_complete(path):
            folder.mkdir(parents=True, exist_ok=True)
            path.rename(folder / path.name)
            moved.append(name)
    return moved


def result_error(run_dir: Path, model: str, dataset: str) -> str | None:
    """Why DATASET has no usable result, or None when it has one. A result a broken evaluator
    left (`implausible`) is none either."""
    path = results_file(run_dir, model, dataset)
    try:
        result = json.loads(path.read_text())
    except OSError:
        return "no results file"
    except ValueError:
        return "unreadable results file"
    if "error" in result:
        return str(result["error"])
    return implausible(result, judge_replies(run_dir, model, [dataset]))


def lacking(run_dir: Path, model: str, stage: str, datasets: list[str]) -> dict[str, str]:
    """The DATASETS that STAGE left without their outputs, and what is wrong with each
    (OpenCompass exits 0 either way): no predictions, or the error of their results."""
    if stage == "infer":
        return {name: "no predictions written" for name in missing_predictions(run_dir, model, datasets)}
    return {name: error for name in datasets if (error := result_error(run_dir, model, name))}


def _per_answer(details: object, field: str) -> list:
    """FIELD of every answer in a results file's `details`: OpenCompass 0.5.4 groups them by
    question, each field a list with one value per run (a dict of answers, for evaluators
    whose details the task wrote, has one value each)."""
    entries = details.values() if isinstance(details, dict) else details if isinstance(details, list) else []
    values = []
    for entry in entries:
        if isinstance(entry, dict) and field in entry:
            value = entry[field]
            values += value if isinstance(value, list) else [value]
    return values


def implausible(result: dict, replies: JudgeReplies | None) -> str | None:
    """Why a results file OpenCompass wrote holds no score though it holds a number: the
    signatures a broken evaluator leaves, each a plausible 0.00 (or worse) otherwise."""
    details = result.get("details")
    programs = _per_answer(details, "final_metadata")  # LiveCodeBench: one per program it ran
    built = [json.loads(text) if isinstance(text, str) and text.startswith("{") else text for text in programs]
    if built and all(isinstance(meta, dict) and meta.get("error_message") == "Compilation Error" for meta in built):
        return (f"every one of its {len(built)} programs is recorded as a compilation error "
                f"({built[0].get('error', 'no error given')}): OpenCompass's code runner is broken, not the model; "
                "run `lmeval setup` again (it installs the runner's pyext), then judge again")
    errors = _per_answer(details, "error")
    if errors and all(errors):
        return (f"OpenCompass's evaluator recorded an error for every one of its {len(errors)} answers "
                f"({str(errors[0])[:200]}); see its eval log")
    if replies is not None and replies.total and replies.invalid == replies.total:
        return (f"none of the judge's {replies.total} replies holds a verdict (A for correct, B for incorrect): "
                "the judge model does not answer in CompassVerifier's format; check --judge-model, then judge again")
    return None


INFER_FAILED = re.compile(r" - Infer failed with$")
DATASET_FINISHED = re.compile(r" - Finished dataset task \[[^\]]*/(?P<dataset>[^\]/]+)\]$")
LOG_RECORD = re.compile(r"\d\d/\d\d \d\d:\d\d:\d\d - OpenCompass - ")  # tqdm's bars may come first on its line


def inference_errors(log: Path) -> dict[str, str]:
    """Each dataset's traceback in the log of OpenCompass's concurrent inference task, which
    holds every dataset: a dataset's `Infer failed with` record comes before the `Finished
    dataset task [MODEL/DATASET]` record of its end (the traceback names no dataset)."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    errors: dict[str, str] = {}
    pending: list[str] = []  # tracebacks not yet claimed by a dataset's end
    for position, line in enumerate(lines):
        if INFER_FAILED.search(line):
            block = []
            for following in lines[position + 1:]:
                if LOG_RECORD.search(following):
                    break
                block.append(following)
            pending.append("\n".join(block[-LOG_TAIL_LINES:]))
        elif (finished := DATASET_FINISHED.search(line)) and pending:
            errors[finished["dataset"]] = pending.pop(0)
    return errors


def task_logs(run_dir: Path, stage: str, model: str, datasets: list[str]) -> list[Path]:
    """The task logs that cover DATASETS (the stage's every task log, where none is named so)."""
    logs = [task_log(run_dir, stage, model, name) for name in datasets]
    return [log for log in logs if log.is_file()] or sorted((run_dir / "logs" / stage / model).glob("*.out"))


def failure_report(run_dir: Path, stage: str, model: str, datasets: list[str]) -> str:
    """The tail of each task log that covers a failed dataset, for the user to see why: of an
    inference, the failed datasets' own tracebacks in the log they share, where found."""
    logs = task_logs(run_dir, stage, model, datasets)
    if not logs:
        return f"(OpenCompass wrote no task log under {run_dir / 'logs' / stage / model})"
    parts = []
    for log in logs:
        found = inference_errors(log) if stage == "infer" else {}
        own = [f"--- {dataset}, in {log}\n{found[dataset]}" for dataset in datasets if dataset in found]
        parts += own or [f"--- {log}\n{log_tail(log, LOG_TAIL_LINES)}"]
    return "\n".join(parts)


@dataclass(frozen=True)
class Score:
    dataset: str
    metric: str
    value: float | None  # None where OpenCompass wrote '-'
    # For datasets the judge scored: its replies, and those that were neither A (correct) nor
    # B (incorrect). OpenCompass counts the latter as wrong in the accuracy; lmeval shows them.
    judge_replies: int | None = None
    judge_invalid: int | None = None
    # Its standard error in points, over questions (a question asked n times counts once, with
    # the mean of its n outcomes); None where the score is not a share of questions answered right.
    stderr: float | None = None


# generic_llmjudge_postprocess (OpenCompass 0.5.4) grades by the first "A" or "B" anywhere in
# the judge's reply; a reply holding neither is "not attempted" and scored as wrong.
_VERDICT = re.compile(r"A|B")


def verdict(reply: object) -> str | None:
    """The judge's verdict in REPLY as OpenCompass reads it: "A" (correct), "B", or None."""
    found = _VERDICT.search(reply) if isinstance(reply, str) else None
    return found.group() if found else None


@dataclass(frozen=True)
class JudgeReplies:
    total: int
    invalid: int  # neither A (correct) nor B (incorrect)


JUDGE_INFIXES = ("", "_llm_judge")  # GenericLLMEvaluator's reply files; CascadeEvaluator's llm_evaluator's


def replica_files(run_dir: Path, model: str, dataset: str, infix: str) -> dict[int, Path]:
    """Run -> the judge's raw replies of that run (`DATASET{INFIX}_replica{run}.json`), in run
    order: one file per run, written when the judging of that run is complete (`tmp_*` files
    of an interrupted one are not counted)."""
    folder = results_file(run_dir, model, dataset).parent
    pattern = re.compile(rf"{re.escape(dataset)}{infix}_replica(\d+)\.json")
    found = [pattern.fullmatch(path.name) for path in folder.iterdir()] if folder.is_dir() else []
    return dict(sorted((int(match[1]), folder / match[0]) for match in found if match))


def judge_reply_files(run_dir: Path, model: str, dataset: str) -> list[Path]:
    """The judge's raw replies for DATASET, run by run, of whichever evaluator wrote them."""
    for infix in JUDGE_INFIXES:
        found = replica_files(run_dir, model, dataset, infix)
        if found:
            return list(found.values())
    return []


def judge_replies(run_dir: Path, model: str, datasets: list[str]) -> JudgeReplies | None:
    """How many judge replies the DATASETS behind one summary row got (a group row, such as
    mmlu_pro, sums its datasets) and how many were invalid; None if the judge gave none."""
    total = invalid = 0
    files = [path for dataset in datasets for path in judge_reply_files(run_dir, model, dataset)]
    if not files:
        return None
    for path in files:
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for entry in entries.values() if isinstance(entries, dict) else ():
            replies = entry.get("prediction") if isinstance(entry, dict) else None
            for reply in replies if isinstance(replies, list) else [replies]:
                total += 1
                if verdict(reply) is None:
                    invalid += 1
    return JudgeReplies(total, invalid)


def with_judge_replies(score: Score, counts: JudgeReplies | None) -> Score:
    if counts is None:
        return score
    return replace(score, judge_replies=counts.total, judge_invalid=counts.invalid)


def latest_summary(run_dir: Path) -> Path | None:
    summaries = sorted((run_dir / "summary").glob("summary_*.csv"))
    return summaries[-1] if summaries else None


def read_summary(path: Path, model: str) -> list[Score]:
    """The score rows of a summary CSV (`dataset,version,metric,mode,<model>...`) for MODEL."""
    scores = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if not row.get("dataset") or model not in row:
                continue
            try:
                value = float(row[model])
            except (TypeError, ValueError):
                value = None
            scores.append(Score(row["dataset"], row.get("metric", ""), value))
    return scores
