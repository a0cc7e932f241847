"""`lmeval report`: one HTML page per run that opens from disk with no network: the run's
settings from its manifest, its scores with their standard errors and, per dataset, every
question with its answers (prompt, answer, the model's reasoning, gold, outcome, the judge's
reply, a cascade's rule verdict, what IFEval's or LiveCodeBench's checker found) with filters.
A dataset asked n times shows a row per question, `k of n` right, that opens to its answers;
a group of datasets (mmlu_pro) shows its datasets under it.

The questions are embedded as JSON and rendered by the page's own script, a page of rows at a
time, so the page stays quick with 10,000 of them. Every text from the run reaches the page
escaped (jinja2's autoescape, `tojson`) and the script only ever sets `textContent`; the page's
Content-Security-Policy refuses any fetch, so a prediction holding HTML can neither run nor
call out.
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from lmeval import __version__, answers, outputs, stats
from lmeval.exceptions import UsageError
from lmeval.files import write_private
from lmeval.results import INVALID_COLUMN, STDERR_NOTE, invalid_text, judged_scores, read_manifest, score_text
from lmeval.samples import CORRECT, INCORRECT, INVALID, UNSCORED, Question, Sample, dataset_questions

OUTCOMES = (CORRECT, INCORRECT, INVALID, UNSCORED)
PAGE_ROWS = 200  # rows the page renders at first, and each time the user scrolls to the end of a table


@dataclass(frozen=True)
class DatasetPart:
    name: str
    questions: list[Question] | None  # None: no predictions (see missing)
    missing: str = ""
    group: str | None = None  # the summary row of the group it is one of (mmlu_pro)
    said: dict[str, answers.Answer] | None = None  # by predictions index: what each answer's log line says

    @property
    def answers(self) -> list[Sample]:
        return [answer for question in self.questions or [] for answer in question.answers]

    @property
    def runs(self) -> int:
        """How many times each question was asked."""
        return len(self.questions[0].answers) if self.questions else 1


@dataclass(frozen=True)
class RunReport:
    run_dir: Path
    manifest: dict
    model: str
    scores: list[outputs.Score] | None  # None: not evaluated yet
    datasets: list[DatasetPart]

    @property
    def missing(self) -> list[DatasetPart]:
        return [part for part in self.datasets if part.questions is None]


def read_run(run_dir: Path) -> RunReport:
    """Everything the page shows, read from RUN_DIR; a run without a manifest or without any
    predictions is refused."""
    manifest = read_manifest(run_dir)
    model = manifest["model_abbr"]
    groups = stats.run_parts(manifest)
    if not groups:
        raise UsageError(f"the manifest of run {run_dir.name} names no datasets: nothing to report")
    parts = []
    log = answers.read_log(run_dir)
    for group in groups:
        for name in group.datasets:
            path = outputs.predictions_file(run_dir, model, name)
            within = group.row if group.is_group else None
            said = {answer.index: answer for answer in answers.dataset_answers(run_dir, model, name, log)}
            parts.append(DatasetPart(name, dataset_questions(run_dir, model, name), group=within, said=said)
                         if path.is_file() else DatasetPart(name, None, f"no predictions yet ({path})", within))
    if all(part.questions is None for part in parts):
        raise UsageError(f"run {run_dir.name} has no predictions yet; infer them with "
                         f"`lmeval infer --reuse {run_dir.name}`")
    summary = outputs.latest_summary(run_dir)
    scores = None if summary is None else judged_scores(run_dir, model, outputs.read_summary(summary, model), manifest)
    return RunReport(run_dir, manifest, model, scores, parts)


# ---------------------------------------------------------------- what the settings tables show


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def time_text(timestamp: float | None) -> str:
    return "-" if timestamp is None else datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def value_text(value: Any) -> str:
    """A manifest value as one readable cell: lists joined, tables as compact JSON."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(value_text(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


def _run_rows(report: RunReport) -> list[tuple[str, str]]:
    """The run at a glance: what was evaluated, where, and how its stages went."""
    manifest = report.manifest
    inputs = manifest.get("inputs") or {}
    servers = manifest.get("servers") or {}
    stages = manifest.get("stages") or {}
    return [
        ("run", report.run_dir.name),
        ("model", report.model),
        ("model path", inputs.get("model") or (manifest.get("fingerprint_inputs") or {}).get("model") or "-"),
        ("task", inputs.get("task") or "-"),
        ("datasets", ", ".join(part.name for part in report.datasets)),
        ("judge model", servers["judge"].get("model", "-") if "judge" in servers else "none"),
        ("GPUs", ", ".join(f"{role} {value_text(server.get('gpus') or []) or '-'}" for role, server in servers.items())
         or "-"),
        ("stages", ", ".join(f"{name} {stage.get('status', '?')} ({duration_text(stage.get('seconds'))})"
                             for name, stage in stages.items()) or "-"),
        ("started", time_text(manifest.get("created"))),
        ("wall time", duration_text(manifest.get("wall_seconds"))),
    ]


def _more_rows(manifest: dict) -> list[tuple[str, str]]:
    """The command line (keys were redacted when it was recorded), servers that died and were
    started again, and outputs moved aside."""
    rows = [("command", shlex.join(manifest["command"]))] if manifest.get("command") else []
    rows += [("server restarted", f"{entry.get('role', '?')} during {entry.get('stage', '?')} at "
              f"{time_text(entry.get('at'))}: {entry.get('died', '')}") for entry in manifest.get("restarts") or []]
    return rows + [("outputs moved aside", value_text(entry)) for entry in manifest.get("stale") or []]


def _generation_rows(manifest: dict) -> list[tuple[str, str]]:
    generation = (manifest.get("inputs") or {}).get("generation") \
        or (manifest.get("fingerprint_inputs") or {}).get("generation") or {}
    return [(key, value_text(value)) for key, value in generation.items() if value is not None]


SERVER_COLUMNS = ("server", "model", "GPUs", "tp", "URL", "ready after", "command")


def _server_rows(manifest: dict) -> list[tuple[str, ...]]:
    rows = []
    for role, server in (manifest.get("servers") or {}).items():
        where = "already running (not started by lmeval)" if server.get("external") else server.get("command", "")
        if server.get("job_id"):
            where = f"Slurm job {server['job_id']} on {server.get('node') or '?'}: {where}"
        rows.append((role, server.get("model", "-"), value_text(server.get("gpus") or []) or "-",
                     str(server.get("tp") or "-"), server.get("url", "-"), duration_text(server.get("ready_seconds")),
                     where))
    return rows


STAGE_COLUMNS = ("stage", "status", "started", "duration", "of it OpenCompass", "message")


def _stage_rows(manifest: dict) -> list[tuple[str, ...]]:
    return [(name, stage.get("status", "?"), time_text(stage.get("started")), duration_text(stage.get("seconds")),
             duration_text(stage.get("opencompass_seconds")), stage.get("message") or "")
            for name, stage in (manifest.get("stages") or {}).items()]


# ---------------------------------------------------------------- the page


def _score_rows(scores: list[outputs.Score]) -> list[dict[str, str]]:
    return [{"dataset": score.dataset, "metric": score.metric, "score": score_text(score.value, score.stderr),
             "invalid": invalid_text(score)} for score in scores]


def _tally(part: DatasetPart) -> str:
    """What a dataset holds, in words: its samples by outcome; for one asked n times, its
    questions by how often they were answered right too."""
    questions, runs = part.questions or [], part.runs
    counts = Counter(answer.outcome for answer in part.answers)
    outcomes = ", ".join(f"{counts[outcome]} {outcome}" for outcome in OUTCOMES if counts[outcome])
    if runs == 1:
        return f"{len(questions)} sample{'' if len(questions) == 1 else 's'}: {outcomes}"
    always = sum(question.correct == runs for question in questions)
    never = sum(question.scored and question.correct == 0 for question in questions)
    return (f"{len(questions)} questions, {runs} answers each: {always} always right, "
            f"{len(questions) - always - never} sometimes, {never} never; {runs * len(questions)} answers: {outcomes}")


def _score_line(score: outputs.Score | None) -> str:
    return "" if score is None else f"{score.metric} {score_text(score.value, score.stderr)}"


def _dataset_score(part: DatasetPart, scores: dict[str, outputs.Score]) -> str:
    """The dataset's score with its standard error: its summary row's, else (a dataset of a
    group) the mean of its questions' outcomes."""
    if part.name in scores:
        return _score_line(scores[part.name])
    shares = stats.outcomes(part.questions or [])
    return "" if shares is None else f"score {score_text(100 * sum(shares) / len(shares), stats.mean_stderr(shares))}"


ANSWER_FIELDS = ("index", "run", "prediction", "reasoning", "outcome", "judge_reply", "rule", "checks")


def _question_view(question: Question, said: dict[str, answers.Answer]) -> dict[str, Any]:
    """A question as the page's script reads it, each answer with its finish reason and tokens
    where its log line gives them (SAID); an answer's fields it lacks are left out (the page
    stays smaller)."""
    views = []
    for answer in question.answers:
        view = {field: getattr(answer, field) for field in ANSWER_FIELDS if getattr(answer, field) is not None}
        line = said.get(str(answer.index))
        if line is not None and line.finish_reason is not None:
            view["finish_reason"] = line.finish_reason
            if line.completion_tokens is not None:
                view["tokens"] = line.completion_tokens
        views.append(view)
    return {"index": question.index, "prompt": question.prompt, "gold": question.gold, "correct": question.correct,
            "answers": views}


HISTOGRAM_BINS = 20


def length_histogram(part: DatasetPart) -> dict[str, Any] | None:
    """The dataset's answer lengths (completion tokens) as an inline SVG bar chart from 0 to the
    longest answer or --max-out-len (as the requests carried it), whichever is more, the limit a
    dashed line; and its caption. None without token counts."""
    said = [line for line in (part.said or {}).values() if line.completion_tokens is not None]
    if not said:
        return None
    limit = max((line.max_out_len for line in said if line.max_out_len), default=None)
    top = max([line.completion_tokens for line in said] + [limit or 0]) or 1
    counts = Counter(min(HISTOGRAM_BINS - 1, line.completion_tokens * HISTOGRAM_BINS // top) for line in said)
    width, height, bar = 400, 60, 400 / HISTOGRAM_BINS
    tallest = max(counts.values())
    shapes = []
    for index, count in sorted(counts.items()):
        tall = height * count / tallest
        shapes.append(f'<rect x="{index * bar:.1f}" y="{height - tall:.1f}" width="{bar - 1:.1f}" height="{tall:.1f}"/>')
    if limit is not None:
        x = min(width - 1, width * limit / top)
        shapes.append(f'<line class="limit" x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height}"/>')
    cut = sum(line.cut for line in said)
    caption = f"answer lengths, 0 to {top} tokens" + ("" if limit is None else
                                                        f"; the dashed line: --max-out-len {limit}, reached by {cut} of "
                                                        f"{len(said)} answers")
    svg = Markup(f'<svg class="lengths" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
                 f'aria-label="{caption}">{"".join(shapes)}</svg>')
    return {"svg": svg, "caption": caption}


def _blocks(report: RunReport) -> list[dict[str, Any]]:
    """The page's sections: each dataset on its own, or a group's datasets under the group."""
    scores = {}
    for score in report.scores or []:
        scores.setdefault(score.dataset, score)
    blocks: list[dict[str, Any]] = []
    groups = 0
    for number, part in enumerate(report.datasets, 1):
        counts = Counter(answer.outcome for answer in part.answers)
        view = {"name": part.name, "anchor": f"dataset-{number}", "missing": part.missing, "tally": _tally(part),
                "score": _dataset_score(part, scores), "answers": len(part.answers), "runs": part.runs,
                "counts": [(outcome, counts[outcome]) for outcome in OUTCOMES if counts[outcome]],
                "judged": any(answer.judge_reply is not None for answer in part.answers),
                "cut": sum(line.cut for line in (part.said or {}).values()), "histogram": length_histogram(part)}
        if part.group is None:
            blocks.append({"group": None, "datasets": [view]})
        elif blocks and blocks[-1]["group"] == part.group:
            blocks[-1]["datasets"].append(view)
        else:
            groups += 1
            blocks.append({"group": part.group, "anchor": f"group-{groups}",
                           "score": _score_line(scores.get(part.group)), "datasets": [view]})
    return blocks


def _anchors(blocks: list[dict[str, Any]]) -> dict[str, str]:
    """Where each dataset and group is on the page, for the score table's links."""
    anchors = {view["name"]: view["anchor"] for block in blocks for view in block["datasets"]}
    anchors.update({block["group"]: block["anchor"] for block in blocks if block["group"]})
    return anchors


def render_page(report: RunReport) -> str:
    """The page of REPORT as one HTML string: styles, script and data inline."""
    environment = jinja2.Environment(loader=jinja2.PackageLoader("lmeval", "templates"), autoescape=True,
                                     trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    environment.policies["json.dumps_kwargs"] = {"sort_keys": False}  # datasets and fields in the run's order
    template = environment.get_template("report.html.j2")
    blocks = _blocks(report)
    return template.render(
        title=f"{report.model}, run {report.run_dir.name}",
        model=report.model,
        run_id=report.run_dir.name,
        version=__version__,
        made=datetime.now().strftime("%Y-%m-%d %H:%M"),
        scores=_score_rows(report.scores or []),
        stderr_note=STDERR_NOTE,
        invalid_column=INVALID_COLUMN,
        any_judged=any(score.judge_replies is not None for score in report.scores or []),
        run_rows=_run_rows(report),
        more_rows=_more_rows(report.manifest),
        generation_rows=_generation_rows(report.manifest),
        server_columns=SERVER_COLUMNS,
        server_rows=_server_rows(report.manifest),
        stage_columns=STAGE_COLUMNS,
        stage_rows=_stage_rows(report.manifest),
        versions=sorted((report.manifest.get("versions") or {}).items()),
        blocks=blocks,
        anchors=_anchors(blocks),
        datasets=len(report.datasets),
        samples={part.name: [_question_view(question, part.said or {}) for question in part.questions]
                 for part in report.datasets if part.questions is not None},
        page_rows=PAGE_ROWS,
    )


def write_page(text: str, path: Path) -> Path:
    """Write the page to PATH (absolute, returned); a path that cannot be written is one line."""
    path = path.expanduser().absolute()
    if path.is_dir():
        raise UsageError(f"-o {path} is a folder; give the HTML file to write")
    try:
        write_private(path, text)
    except OSError as error:
        raise UsageError(f"cannot write {path} ({error.strerror or error}); pick another -o") from None
    return path
