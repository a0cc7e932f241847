"""OpenCompass config files, written as Python source. lmeval never imports OpenCompass: it writes
one config per stage and runs `opencompass CONFIG -m infer|eval -w WORK_DIR -r RUN`.

What the configs reproduce is LMDeploy's own template (`eval/config.py` in the LMDeploy
repository): the same six datasets, `OpenAISDK` models, a judge set into every evaluator that
asks for one. What they change, and why (all checked against OpenCompass 0.5.4's sources):

- Inference runs as ONE `OpenICLInferConcurrentTask` holding every dataset. That task streams
  requests under a single semaphore of the model's `max_workers` (set to `in_flight`), shared by
  all its datasets, and starts the next dataset before the last one drains. So exactly
  `in_flight` requests are outstanding from start to end. The rate limit (`query_per_second`)
  is not consulted at all while that semaphore exists; it is set high anyway. A dataset that
  fails is marked failed and the others go on. One task per dataset would give each its own
  semaphore (in_flight times the datasets running) and pay OpenCompass's ~8 s start-up per
  dataset. `NaivePartitioner` also never reads the `.cache/dataset_size.json` that
  `NumWorkerPartitioner` trusts blindly.
- Evaluation runs one `OpenICLEvalTask` per dataset (`NaivePartitioner(n=1)`): that task stops
  at the first dataset that fails (missing predictions, judge down), so grouping datasets
  would leave the rest unscored. `eval_workers` of them run at once. The judge model in each
  gets `in_flight // min(eval_workers, judged datasets)` threads, fed from batches four times
  that size (a plain `GenInferencer`: each batch waits for its last answer), so the judge sees
  at most `in_flight` requests, and exactly that while that many judged datasets are scored.
- Tasks run under `LmevalLocalRunner` (same plugin): forked from the OpenCompass process, which
  has already imported what they import, instead of each a new Python (7-8 s of CPU first).
- Models and judge are `LmevalOpenAISDK` (lmeval/opencompass_plugin/, on OpenCompass's
  PYTHONPATH): OpenAISDK with an HTTP client per request thread (one shared httpcore pool
  slows down with the square of its idle connections, and the client falls far below the
  server's slots) and the garbage collector frozen after start-up (a full collection over
  torch's objects stops every request thread for 0.3-0.4 s).
- Every model and the judge get `tokenizer_path` (a local folder): `OpenAISDK` loads a tokenizer
  when built and otherwise downloads one, which is fatal offline.

Every string taken from outside (names, paths, URLs, the key) is written by `py_str`, which
escapes everything but plain printable ASCII and never writes `{`, `}`, quotes or
backslashes literally. The config thus holds no `{` at all, so mmengine's `{{ ... }}`
substitutions (run on the raw text of non-lazy configs) can never fire, and no input can end
a literal early. OpenCompass itself, though, dumps the loaded config with `repr()` and reloads
it with that substitution on, for the run and again for every task: a string holding `{{`
would be rewritten there, so such strings are refused (UsageError) instead.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from lmeval.datasets import UserDataset, load_user_dataset, shadowed_name
from lmeval.exceptions import UsageError

__all__ = [
    "CHAT_SUITE", "CORE_AVERAGE", "DatasetRef", "GRADER_TEMPLATE", "Generation", "JUDGE_GENERATION",
    "ConfigPlan", "SUITES", "ServedModel", "Stage", "SuiteDataset", "TARGET_GENERATION", "TaskRow",
    "UserDataset", "check_plan", "dataset_abbrs", "judge_threads", "judged_rows", "needs_judge", "py_str", "render_config",
    "resolve_datasets", "select_suite", "summary_rows", "task_rows",
]

Stage = Literal["infer", "eval"]

# --------------------------------------------------------------------------------------------
# Suites


class SuiteDataset(BaseModel):
    """One dataset config shipped with OpenCompass, imported by module and variable name."""

    model_config = ConfigDict(frozen=True)

    name: str  # the short name users pass in --datasets
    module: str
    variable: str
    is_list: bool  # a list of dataset dicts, or a single dict
    needs_judge: bool
    evaluator: str  # what scores it, for `lmeval tasks`
    abbrs: tuple[str, ...]  # the names OpenCompass gives its results, in order
    summary: tuple[tuple[str, str], ...]  # (dataset or group, metric) rows of the summary
    summary_groups: tuple[tuple[str, str], ...] = ()  # (module, variable) of groups it needs
    core_metric: tuple[str, str]  # its entry in the suite's core_average
    # What its loader reads (OpenCompass's DATASETS_MAPPING 'local' paths, or the GPQA loader's
    # folder and file), relative to COMPASS_DATA_CACHE; or the Hugging Face dataset it loads.
    data: tuple[str, ...] = ()
    hf_dataset: str | None = None
    needs: tuple[str, ...] = ()  # what its evaluator needs in OpenCompass's venv (lmeval_preflight's checks)
    evaluator_class: str = ""  # its evaluator's class in OpenCompass, where lmeval swaps in a subclass


MMLU_PRO_CATEGORIES = (
    "math", "physics", "chemistry", "law", "engineering", "other", "economics", "health",
    "psychology", "business", "biology", "philosophy", "computer science", "history",
)  # fmt: skip

_DATASETS = "opencompass.configs.datasets."

CHAT_SUITE: tuple[SuiteDataset, ...] = (
    SuiteDataset(
        name="aime2025",
        module=_DATASETS + "aime2025.aime2025_llmjudge_academic",
        variable="aime2025_datasets",
        is_list=True,
        needs_judge=True,
        evaluator="GenericLLMEvaluator (judge), 32 runs",
        abbrs=("aime2025_repeat_32",),
        summary=(("aime2025_repeat_32", "accuracy (32 runs average)"),),
        core_metric=("aime2025_repeat_32", "accuracy (32 runs average)"),
        data=("data/aime2025/aime2025.jsonl",),
    ),
    SuiteDataset(
        name="gpqa",
        module=_DATASETS + "gpqa.gpqa_cascade_eval_academic",
        variable="gpqa_datasets",
        is_list=True,
        needs_judge=True,
        evaluator="CascadeEvaluator: rule (AccEvaluator), then the judge on misses, 4 runs",
        abbrs=("GPQA_diamond_repeat_4",),
        summary=(("GPQA_diamond_repeat_4", "accuracy (4 runs average)"),),
        core_metric=("GPQA_diamond_repeat_4", "accuracy (4 runs average)"),
        data=("data/gpqa/gpqa_diamond.csv",),
    ),
    SuiteDataset(
        name="ifeval",
        module=_DATASETS + "IFEval.IFEval_gen_353ae7",
        variable="ifeval_datasets",
        is_list=True,
        needs_judge=False,
        evaluator="IFEvaluator (rule)",
        abbrs=("IFEval",),
        summary=(("IFEval", "Prompt-level-strict-accuracy"),),
        core_metric=("IFEval", "Prompt-level-strict-accuracy"),
        data=("data/ifeval/input_data.jsonl",),
        needs=("langdetect", "punkt_tab"),
        evaluator_class="IFEvaluator",
    ),
    SuiteDataset(
        name="code",
        module=_DATASETS + "livecodebench.livecodebench_v6_academic",
        variable="LCBCodeGeneration_dataset",
        is_list=False,
        needs_judge=False,
        evaluator="LCBCodeGenerationEvaluator (runs the code), 6 runs",
        abbrs=("lcb_code_generation_repeat_6",),
        summary=(("lcb_code_generation_repeat_6", "pass@1 (6 runs average)"),),
        core_metric=("lcb_code_generation_repeat_6", "pass@1 (6 runs average)"),
        data=("data/code_generation_lite",),
        needs=("code runner",),
    ),
    SuiteDataset(
        name="mmlu_pro",
        module=_DATASETS + "mmlu_pro.mmlu_pro_0shot_nocot_genericllmeval_gen_08c1de",
        variable="mmlu_pro_datasets",
        is_list=True,
        needs_judge=True,
        evaluator="GenericLLMEvaluator (judge), 14 categories",
        abbrs=tuple("mmlu_pro_" + category.replace(" ", "_") for category in MMLU_PRO_CATEGORIES),
        summary=(("mmlu_pro", "naive_average"),),
        summary_groups=(("opencompass.configs.summarizers.groups.mmlu_pro", "mmlu_pro_summary_groups"),),
        core_metric=("mmlu_pro", "naive_average"),
        data=("data/mmlu_pro",),
    ),
    SuiteDataset(
        name="hle",
        module=_DATASETS + "HLE.hle_llmverify_academic",
        variable="hle_datasets",
        is_list=True,
        needs_judge=True,
        evaluator="GenericLLMEvaluator (judge)",
        abbrs=("hle_llmjudge",),
        summary=(("hle_llmjudge", "accuracy"),),
        core_metric=("hle_llmjudge", "accuracy"),
        hf_dataset="cais/hle",
    ),
)

SUITES: dict[str, tuple[SuiteDataset, ...]] = {"chat": CHAT_SUITE}
CORE_AVERAGE = "core_average"  # the summary group averaging a whole suite, as LMDeploy's template


@dataclass(frozen=True)
class TaskRow:
    """One line of `lmeval tasks`."""

    suite: str
    dataset: str
    needs_judge: bool
    evaluator: str
    results: tuple[str, ...]  # names in OpenCompass's results


def task_rows() -> list[TaskRow]:
    """Every suite dataset, for `lmeval tasks`."""
    return [
        TaskRow(suite, item.name, item.needs_judge, item.evaluator, item.abbrs)
        for suite, items in SUITES.items()
        for item in items
    ]


DatasetRef = Union[SuiteDataset, UserDataset]


def select_suite(suite: str, names: str | Sequence[str] | None = None) -> tuple[SuiteDataset, ...]:
    """The suite's datasets, or those NAMES (`"gpqa,ifeval"` or a list) pick, in suite order."""
    if suite not in SUITES:
        raise UsageError(f"unknown task {suite!r}; --task takes one of: {', '.join(SUITES)} (see lmeval tasks)")
    items = SUITES[suite]
    if names is None:
        return items
    wanted = [part.strip() for part in (names.split(",") if isinstance(names, str) else names)]
    if not wanted or any(not part for part in wanted):
        raise UsageError(f"--datasets needs comma-separated names from the {suite} suite: "
                         f"{', '.join(item.name for item in items)}")
    known = {item.name for item in items}
    for part in wanted:
        if part not in known:
            raise UsageError(f"unknown dataset {part!r} in --datasets; the {suite} suite has: "
                             f"{', '.join(item.name for item in items)}")
    return tuple(item for item in items if item.name in wanted)


def resolve_datasets(
    suite: str | None,
    names: str | Sequence[str] | None = None,
    files: Iterable[str | Path] = (),
) -> tuple[DatasetRef, ...]:
    """What one run evaluates: the suite (or the NAMES picked from it) and the user's files.

    SUITE None means files only. Each file is checked in full (`load_user_dataset`). Names in
    OpenCompass's results must not collide: two files with one stem, a file named like a suite
    dataset or summary group, or one whose files OpenCompass would mix up with another's.
    """
    if suite is None and names is not None:
        raise UsageError("--datasets picks from a suite; name the suite too")
    chosen: list[DatasetRef] = list(select_suite(suite, names)) if suite is not None else []
    taken: dict[str, str] = {}
    for item in chosen:
        for abbr in item.abbrs:
            taken[abbr] = f"the {item.name} dataset of the {suite} suite"
        for group, _metric in item.summary:
            taken.setdefault(group, f"the {item.name} summary of the {suite} suite")
    if suite is not None and len(chosen) == len(SUITES[suite]):
        taken[CORE_AVERAGE] = f"the {suite} suite's average"
    for file in files:
        user = load_user_dataset(file)
        if user.name in taken:
            raise UsageError(f"dataset name {user.name!r} of {user.path} is already used by {taken[user.name]}; "
                             "rename the file")
        taken[user.name] = user.path
        chosen.append(user)
    names_taken = set(taken)
    for item in chosen:
        for abbr in _abbrs(item):
            other = shadowed_name(abbr, names_taken)
            if other is not None:
                raise UsageError(f"dataset name {abbr!r} would be mistaken for shards or judge files of "
                                 f"dataset {other!r} in OpenCompass's outputs; rename the file")
    if not chosen:
        raise UsageError("no datasets to evaluate: pick a suite or pass --dataset FILE.jsonl")
    return tuple(chosen)


def _abbrs(item: DatasetRef) -> tuple[str, ...]:
    return item.abbrs if isinstance(item, SuiteDataset) else (item.name,)


def dataset_abbrs(datasets: Iterable[DatasetRef]) -> list[str]:
    """The dataset names OpenCompass's predictions and results will carry, in config order."""
    return [abbr for item in datasets for abbr in _abbrs(item)]


def judged_rows(datasets: Iterable[DatasetRef]) -> dict[str, list[str]]:
    """Each summary row the judge scores, with the datasets whose judge replies are behind it:
    a dataset's own row, or a group's (mmlu_pro: its 14 datasets)."""
    rows: dict[str, list[str]] = {}
    for item in datasets:
        if not item.needs_judge:
            continue
        for abbr in _abbrs(item):
            rows[abbr] = [abbr]
        if isinstance(item, SuiteDataset):
            for group, _metric in item.summary:
                if group not in item.abbrs:
                    rows[group] = list(item.abbrs)
    return rows


def whole_suites(datasets: Iterable[DatasetRef]) -> list[tuple[SuiteDataset, ...]]:
    """The suites all of whose datasets are among DATASETS: those get a core_average row."""
    chosen = set(item for item in datasets if isinstance(item, SuiteDataset))
    return [suite for suite in SUITES.values() if suite and chosen >= set(suite)]


def summary_rows(datasets: Iterable[DatasetRef]) -> dict[str, list[str]]:
    """Each row the summary must hold, with the datasets whose results it is made of: a
    dataset's own row, a group's (mmlu_pro: its 14 datasets), and core_average when the whole
    suite is evaluated."""
    datasets = list(datasets)
    rows = {CORE_AVERAGE: dataset_abbrs(suite) for suite in whole_suites(datasets)}
    for item in datasets:
        if isinstance(item, SuiteDataset):
            rows.update({group: list(item.abbrs) for group, _metric in item.summary})
        else:
            rows[item.name] = [item.name]
    return rows


def needs_judge(datasets: Iterable[DatasetRef]) -> bool:
    """Whether any of DATASETS is scored by the judge model (else no judge server is needed)."""
    return any(item.needs_judge for item in datasets)


# --------------------------------------------------------------------------------------------
# The plan


class Generation(BaseModel):
    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    temperature: float = Field(ge=0)
    max_out_len: int = Field(ge=1)
    max_seq_len: int = Field(ge=1)
    mode: Literal["none", "front", "mid", "rear"]  # how OpenAISDK cuts an over-long prompt
    retry: int = Field(default=10, ge=1)
    # Sampling LMDeploy's server takes beyond OpenAI's (None: the server's default), and any
    # other fields of the request body (e.g. chat_template_kwargs for reasoning models).
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0)
    extra_body: dict[str, Any] | None = None

    def request_body(self) -> dict[str, Any] | None:
        """What OpenAISDK adds to every request's JSON body (its `extra_body`)."""
        body = {key: value for key in ("top_p", "top_k", "repetition_penalty")
                if (value := getattr(self, key)) is not None}
        body.update(self.extra_body or {})
        return body or None


# LMDeploy's template: the model under test, and CompassVerifier as the judge.
TARGET_GENERATION = Generation(temperature=0.6, max_out_len=64000, max_seq_len=65536, mode="none", retry=10)
JUDGE_GENERATION = Generation(temperature=0.001, max_out_len=8192, max_seq_len=65536, mode="mid", retry=10)

# OpenAISDK (0.5.4) switches to OpenAI's reasoning-model request (no temperature, sends
# max_completion_tokens) when any of these is a substring of the served model name.
OPENAI_REASONING_MARKERS = ("o1", "o3", "o4", "gpt-5")


class ServedModel(BaseModel):
    """A model behind an OpenAI-compatible server (LMDeploy api_server or proxy)."""

    model_config = ConfigDict(frozen=True)

    base_url: str  # e.g. http://127.0.0.1:23333, without /v1
    api_key: SecretStr
    served_name: str  # what /v1/models reports; sent as `model` in every request
    tokenizer_path: str  # local model folder OpenAISDK loads its tokenizer from
    in_flight: int = Field(ge=1)  # requests to keep outstanding

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/]", value):
            raise ValueError(f"base_url must start with http:// or https://, got {value!r}")
        if value.rstrip("/").endswith("/v1"):
            raise ValueError(f"base_url must not end in /v1 (it is added): {value!r}")
        return value

    @field_validator("served_name", "tokenizer_path")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @property
    def api_base(self) -> str:
        return self.base_url.rstrip("/") + "/v1"


class ConfigPlan(BaseModel):
    """Everything both configs of one run derive from."""

    model_config = ConfigDict(frozen=True)

    datasets: tuple[DatasetRef, ...] = Field(min_length=1)
    model_abbr: str  # the model's name in OpenCompass's outputs: predictions/{model_abbr}/...
    target: ServedModel
    generation: Generation = TARGET_GENERATION
    judge: ServedModel | None = None  # needed by the eval stage when needs_judge(datasets)
    judge_generation: Generation = JUDGE_GENERATION
    eval_workers: int = Field(default=4, ge=1)  # eval tasks (datasets) scored at once
    # Only these of the datasets' names (a streamed evaluation's, or the datasets inferred when
    # others failed); None: all of them. A group is then cut to its members among them.
    only: tuple[str, ...] | None = None

    @property
    def abbrs(self) -> list[str]:
        """The names of the datasets the configs hold, in config order."""
        return [abbr for abbr in dataset_abbrs(self.datasets) if self.only is None or abbr in self.only]

    def selected(self, item: DatasetRef) -> tuple[str, ...]:
        return tuple(abbr for abbr in _abbrs(item) if self.only is None or abbr in self.only)

    @property
    def whole(self) -> list[DatasetRef]:
        """The datasets held with all their members (only they get their summary rows)."""
        return [item for item in self.datasets if self.selected(item) == _abbrs(item)]

    @property
    def judged(self) -> list[str]:
        """The names of the datasets held that the judge scores."""
        return [abbr for item in self.datasets if item.needs_judge for abbr in self.selected(item)]


def check_plan(plan: ConfigPlan) -> None:
    """Refuse, as UsageError, what OpenCompass would silently mangle. `render_config` calls it."""
    model_abbr = plan.model_abbr
    if model_abbr in ("", ".", "..") or "/" in model_abbr or "\0" in model_abbr:
        raise UsageError(f"model name {model_abbr!r} must be usable as a folder name "
                         "(OpenCompass writes predictions/NAME/): no '/', not empty, '.' or '..'")
    strings: list[tuple[str, str]] = [("model name", model_abbr)]
    for role, served in (("model", plan.target), ("judge", plan.judge)):
        if served is None:
            continue
        strings += [
            (f"{role} URL", served.base_url),
            (f"{role} served name", served.served_name),
            (f"{role} tokenizer path", served.tokenizer_path),
            (f"{role} API key", served.api_key.get_secret_value()),
        ]
        marker = next((m for m in OPENAI_REASONING_MARKERS if m in served.served_name), None)
        if marker is not None:
            raise UsageError(
                f"{role} served name {served.served_name!r} contains {marker!r}: OpenCompass 0.5.4 then "
                "treats it as an OpenAI reasoning model (drops the temperature, sends "
                "max_completion_tokens); serve it under another name"
            )
    for item in plan.datasets:
        if isinstance(item, UserDataset):
            strings += [("dataset file", item.path), ("dataset name", item.name)]
    strings += [("--extra-body", text) for text in _strings_in(plan.generation.extra_body)]
    for what, value in strings:
        if "{{" in value:
            shown = "(hidden)" if what.endswith("API key") else repr(value)
            raise UsageError(
                f"{what} {shown} contains '{{{{': OpenCompass re-reads its config through mmengine, "
                "which rewrites '{{ ... }}' in it; rename it"
            )


def _strings_in(value: Any) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in (key, *_strings_in(item))]
    if isinstance(value, list):
        return [text for item in value for text in _strings_in(item)]
    return []


# --------------------------------------------------------------------------------------------
# Writing Python


_LITERAL = frozenset(chr(code) for code in range(0x20, 0x7F)) - set("'\\{}")


def py_str(value: str) -> str:
    """A single-quoted Python literal for VALUE, exact for any str (lone surrogates included).

    Only printable ASCII other than quote, backslash and braces is written as itself; all else
    as \\xNN, \\uNNNN or \\UNNNNNNNN. No newline, no quote that ends it, no `{` ever appears.
    """
    out = ["'"]
    for char in value:
        if char in _LITERAL:
            out.append(char)
            continue
        code = ord(char)
        if code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append("'")
    return "".join(out)


@dataclass(frozen=True)
class Code:
    """Python written as is: a name the config imports or defines."""

    text: str


INDENT = "    "


def py_value(value: Any, level: int = 0) -> str:
    """Python source for VALUE: dict (written `dict(key=...)`, or `dict([(key, ...)])` for keys
    that are no identifiers), list, str, int, float, bool, None and Code. Multi-line strings are
    split into adjacent literals."""
    pad, inner = INDENT * level, INDENT * (level + 1)
    if isinstance(value, Code):
        return value.text
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, (int, float)):
        text = repr(value)
        if text in ("inf", "-inf", "nan"):
            raise ValueError(f"not a finite number: {value}")
        return text
    if isinstance(value, str):
        lines = value.splitlines(keepends=True)
        if len(lines) <= 1:
            return py_str(value)
        return "(\n" + "".join(f"{inner}{py_str(line)}\n" for line in lines) + pad + ")"
    if isinstance(value, dict):
        if not value:
            return "dict()"
        if not all(isinstance(key, str) for key in value):
            raise ValueError(f"dict keys must be strings: {list(value)!r}")
        if all(key.isidentifier() and not keyword.iskeyword(key) for key in value):
            items = "".join(f"{inner}{key}={py_value(item, level + 1)},\n" for key, item in value.items())
            return "dict(\n" + items + pad + ")"
        # Keys that are no identifiers (a request body's "top-k"): pairs, still without a brace.
        pairs = "".join(f"{inner}({py_str(key)}, {py_value(item, level + 1)}),\n" for key, item in value.items())
        return "dict([\n" + pairs + pad + "])"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        items = "".join(f"{inner}{py_value(item, level + 1)},\n" for item in value)
        return "[\n" + items + pad + "]"
    raise TypeError(f"cannot write {type(value).__name__} into a config")


# --------------------------------------------------------------------------------------------
# Prompts (user datasets)

JUDGE_SYSTEM_PROMPT = "You are a helpful assistant who evaluates the correctness and quality of models' outputs."

# OpenCompass's CompassVerifier-style grading prompt, word for word as in
# opencompass/configs/datasets/aime2025/aime2025_llmjudge_gen_5e9f4f.py (0.5.4). The judge's
# first A or B is the verdict (generic_llmjudge_postprocess).
GRADER_TEMPLATE = """
    Please as a grading expert, judge whether the final answers given by the candidates below are consistent with the standard answers, that is, whether the candidates answered correctly. 
    
    Here are some evaluation criteria:
    1. Please refer to the given standard answer. You don't need to re-generate the answer to the question because the standard answer has been given. You only need to judge whether the candidate's answer is consistent with the standard answer according to the form of the question. Don't try to answer the original question. You can assume that the standard answer is definitely correct.
    2. Because the candidate's answer may be different from the standard answer in the form of expression, before making a judgment, please understand the question and the standard answer first, and then judge whether the candidate's answer is correct, but be careful not to try to answer the original question.
    3. Some answers may contain multiple items, such as multiple-choice questions, multiple-select questions, fill-in-the-blank questions, etc. As long as the answer is the same as the standard answer, it is enough. For multiple-select questions and multiple-blank fill-in-the-blank questions, the candidate needs to answer all the corresponding options or blanks correctly to be considered correct.
    4. Some answers may be expressed in different ways, such as some answers may be a mathematical expression, some answers may be a textual description, as long as the meaning expressed is the same. And some formulas are expressed in different ways, but they are equivalent and correct.
    5. If the prediction is given with \\boxed{}, please ignore the \\boxed{} and only judge whether the candidate's answer is consistent with the standard answer.

    Please judge whether the following answers are consistent with the standard answer based on the above criteria. Grade the predicted answer of this new question as one of:
    A: CORRECT 
    B: INCORRECT
    Just return the letters "A" or "B", with no text around it.

    Here is your task. Simply reply with either CORRECT, INCORRECT. Don't apologize or correct yourself if there was a mistake; we are just trying to grade the answer.


    <Original Question Begin>: \n{question}\n<Original Question End>\n\n
    <Gold Target Begin>: \n{answer}\n<Gold Target End>\n\n
    <Predicted Answer Begin>: \n{prediction}\n<Predicted End>\n\n
    
    Judging the correctness of candidates' answers:
""".strip()  # noqa: W291, W293, E501 - OpenCompass's wording, trailing spaces included


def mc_prompt(options: Sequence[str]) -> str:
    """The question and its options, asking for the letter on a last line `ANSWER: X` (the wording
    of OpenCompass's GPQA prompt)."""
    letters = "".join(options)
    head = ("Answer the following multiple choice question. The last line of your response should be of "
            f"the following format: 'ANSWER: $LETTER' (without quotes) where LETTER is one of {letters}.")
    lines = [head, "", "{question}", ""] + [f"{letter}) {{{letter}}}" for letter in options]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Rendering

META_TEMPLATE = Code("__meta_template")
# OpenAISDK with an HTTP client per request thread and the garbage collector frozen once built
# (lmeval/opencompass_plugin/; lmeval puts that folder on OpenCompass's PYTHONPATH).
MODEL_MODULE, MODEL_CLASS = "lmeval_opencompass", "LmevalOpenAISDK"
# LocalRunner with each task forked from the OpenCompass process instead of a new Python.
RUNNER_CLASS = "LmevalLocalRunner"
JUDGE_BATCH_FACTOR = 4  # judge prompts per batch, in units of its threads (see the module doc)
# OpenCompass's evaluators lmeval's plugin subclasses, for details they leave out.
EVALUATORS_WITH_DETAILS = {"IFEvaluator": "LmevalIFEvaluator"}
MIN_QUERY_PER_SECOND = 1000


def _query_per_second(in_flight: int) -> int:
    """High enough never to be what limits: OpenAISDK's token bucket allows bursts of this size."""
    return max(in_flight, MIN_QUERY_PER_SECOND)


class _Imports:
    """The names a config imports, collected while it is written (sorted when printed)."""

    def __init__(self) -> None:
        self.names: dict[str, set[str]] = {}

    def use(self, module: str, name: str) -> Code:
        self.names.setdefault(module, set()).add(name)
        return Code(name)

    def text(self) -> str:
        lines = (f"from {module} import {', '.join(sorted(names))}\n" for module, names in sorted(self.names.items()))
        return "".join(lines)


def _model(plan: ConfigPlan, imports: _Imports) -> dict[str, Any]:
    target, gen = plan.target, plan.generation
    return dict(
        abbr=plan.model_abbr,
        type=imports.use(MODEL_MODULE, MODEL_CLASS),
        path=target.served_name,
        key=target.api_key.get_secret_value(),
        openai_api_base=target.api_base,
        tokenizer_path=target.tokenizer_path,
        meta_template=META_TEMPLATE,
        temperature=gen.temperature,
        max_out_len=gen.max_out_len,
        max_seq_len=gen.max_seq_len,
        mode=gen.mode,
        retry=gen.retry,
        extra_body=gen.request_body(),
        # OpenICLInferConcurrentTask: max_workers is the one semaphore over all datasets.
        max_workers=target.in_flight,
        batch_size=target.in_flight,
        query_per_second=_query_per_second(target.in_flight),
        pred_postprocessor=dict(
            type=imports.use("opencompass.utils.text_postprocessors", "extract_non_reasoning_content")
        ),
        run_cfg=dict(num_gpus=0),
        verbose=False,
    )


def judge_threads(plan: ConfigPlan) -> int:
    """The judge's threads per eval task: in_flight shared by the judged tasks that can run at once
    (eval_workers of them at most), so together they never exceed in_flight."""
    if plan.judge is None:
        raise ValueError("judge_threads needs a plan with a judge")
    return max(1, plan.judge.in_flight // max(1, min(plan.eval_workers, len(plan.judged))))


def _judge(plan: ConfigPlan, imports: _Imports) -> dict[str, Any]:
    judge, gen = plan.judge, plan.judge_generation
    threads = judge_threads(plan)
    return dict(
        abbr="judge",
        type=imports.use(MODEL_MODULE, MODEL_CLASS),
        path=judge.served_name,
        key=judge.api_key.get_secret_value(),
        openai_api_base=judge.api_base,
        tokenizer_path=judge.tokenizer_path,
        meta_template=META_TEMPLATE,
        temperature=gen.temperature,
        max_out_len=gen.max_out_len,
        max_seq_len=gen.max_seq_len,
        mode=gen.mode,
        retry=gen.retry,
        # GenericLLMEvaluator runs a plain GenInferencer: batches of batch_size prompts, each
        # answered by max_workers threads, every request taking a query_per_second token.
        max_workers=threads,
        batch_size=threads * JUDGE_BATCH_FACTOR,
        query_per_second=_query_per_second(judge.in_flight),
        run_cfg=dict(num_gpus=0),
        verbose=False,
    )


def _prompt_template(imports: _Imports, prompt: str, system: str | None = None) -> dict[str, Any]:
    template: dict[str, Any] = {}
    if system is not None:
        template["begin"] = [dict(role="SYSTEM", fallback_role="HUMAN", prompt=system)]
    template["round"] = [dict(role="HUMAN", prompt=prompt)]
    return dict(
        type=imports.use("opencompass.openicl.icl_prompt_template", "PromptTemplate"),
        template=template,
    )


def _user_dataset(item: UserDataset, imports: _Imports) -> dict[str, Any]:
    custom = imports.use("opencompass.datasets", "CustomDataset")
    if item.kind == "qa":
        input_columns = ["question"]
        prompt = "{question}"
    else:
        input_columns = ["question", *item.options]
        prompt = mc_prompt(item.options)

    def reader_cfg() -> dict[str, Any]:
        return dict(input_columns=list(input_columns), output_column="answer")

    infer_cfg = dict(
        prompt_template=_prompt_template(imports, prompt),
        retriever=dict(type=imports.use("opencompass.openicl.icl_retriever", "ZeroRetriever")),
        inferencer=dict(type=imports.use("opencompass.openicl.icl_inferencer", "GenInferencer")),
    )
    if item.kind == "qa":
        eval_cfg: dict[str, Any] = dict(
            evaluator=dict(
                type=imports.use("opencompass.evaluator", "GenericLLMEvaluator"),
                prompt_template=_prompt_template(imports, GRADER_TEMPLATE, system=JUDGE_SYSTEM_PROMPT),
                dataset_cfg=dict(type=custom, path=item.path, reader_cfg=reader_cfg()),
                judge_cfg=dict(),  # filled with the judge in the eval config
                dict_postprocessor=dict(type=imports.use("opencompass.datasets", "generic_llmjudge_postprocess")),
            ),
            pred_role="BOT",
        )
    else:
        eval_cfg = dict(
            evaluator=dict(type=imports.use("opencompass.openicl.icl_evaluator", "AccEvaluator")),
            pred_postprocessor=dict(
                type=imports.use("opencompass.utils.text_postprocessors", "first_option_postprocess"),
                options="".join(item.options),
            ),
        )
    return dict(
        abbr=item.name,
        type=custom,
        path=item.path,
        reader_cfg=reader_cfg(),
        infer_cfg=infer_cfg,
        eval_cfg=eval_cfg,
    )


def _suite_var(item: SuiteDataset) -> str:
    return f"__suite_{item.name}"


def _summarizer(plan: ConfigPlan, group_vars: list[str]) -> dict[str, Any]:
    rows: list[Any] = []
    groups: list[Any] = [Code(f"*{var}") for var in group_vars]
    for suite in whole_suites(plan.whole):
        groups.append(dict(name=CORE_AVERAGE, subsets=[list(item.core_metric) for item in suite]))
        rows.append([CORE_AVERAGE, "naive_average"])
    for item in plan.whole:
        if isinstance(item, SuiteDataset):
            rows += [list(row) for row in item.summary]
        else:
            rows.append([item.name, "accuracy"])
    return dict(dataset_abbrs=rows, summary_groups=groups)


def render_config(stage: Stage, plan: ConfigPlan) -> str:
    """The OpenCompass config for STAGE ('infer' or 'eval') of PLAN, as Python source.

    Pure: same plan, same bytes. Raises UsageError for names OpenCompass would mangle.
    """
    if stage not in ("infer", "eval"):
        raise ValueError(f"stage must be 'infer' or 'eval', not {stage!r}")
    check_plan(plan)
    if stage == "eval" and plan.judge is None and plan.judged:
        raise ValueError(f"the eval stage needs a judge for {', '.join(plan.judged)}")
    imports = _Imports()
    bases: list[tuple[str, str, str]] = []  # (module, variable, alias) read through read_base()
    entries: list[Any] = []
    group_bases: list[tuple[str, str, str]] = []
    group_vars: list[str] = []
    for item in plan.datasets:
        selected = plan.selected(item)
        if not selected:
            continue
        if isinstance(item, SuiteDataset):
            alias = _suite_var(item)
            bases.append((item.module, item.variable, alias))
            if not item.is_list:
                entries.append(Code(alias))
            elif selected == item.abbrs:
                entries.append(Code(f"*{alias}"))
            else:  # some members of a group: the others are not in this config
                entries.append(Code(f"*[__dataset for __dataset in {alias} if __dataset['abbr'] in "
                                    f"{py_value(list(selected), 1)}]"))
            if stage == "eval":
                for module, variable in item.summary_groups:
                    group_alias = f"__groups_{variable}"
                    if group_alias not in group_vars:
                        group_bases.append((module, variable, group_alias))
                        group_vars.append(group_alias)
        else:
            entries.append(_user_dataset(item, imports))

    bases += group_bases
    models = [_model(plan, imports)]
    judge = _judge(plan, imports) if stage == "eval" and plan.judged else None
    naive = imports.use("opencompass.partitioners", "NaivePartitioner")
    local = imports.use(MODEL_MODULE, RUNNER_CLASS)
    if stage == "infer":
        # One task for all datasets: they share the model's single in_flight semaphore.
        stage_cfg = dict(
            partitioner=dict(type=naive, n=len(plan.abbrs)),
            runner=dict(
                type=local,
                max_num_workers=1,
                task=dict(type=imports.use("opencompass.tasks", "OpenICLInferConcurrentTask")),
            ),
        )
    else:
        # One task per dataset, so one dataset's failure cannot stop the others' scoring.
        stage_cfg = dict(
            partitioner=dict(type=naive, n=1),
            runner=dict(
                type=local,
                max_num_workers=plan.eval_workers,
                task=dict(type=imports.use("opencompass.tasks", "OpenICLEvalTask")),
            ),
        )

    parts = [
        f"# OpenCompass config for the {stage} stage, written by lmeval; rewritten on every run.\n",
        f"# opencompass THIS_FILE -m {stage} -w WORK_DIR -r RUN\n",
        "from mmengine.config import read_base\n",
    ]
    body: list[str] = []
    if bases:
        body.append("\nwith read_base():\n")
        body += [f"{INDENT}from {module} import {variable} as {alias}\n" for module, variable, alias in bases]
    body.append("\n__meta_template = " + py_value(
        dict(round=[dict(role="HUMAN", api_role="HUMAN"), dict(role="BOT", api_role="BOT", generate=True)])
    ) + "\n")
    body.append("\nmodels = " + py_value(models) + "\n")
    body.append("\ndatasets = " + py_value(entries) + "\n")
    if judge is not None:
        body.append("\n__judge = " + py_value(judge) + "\n")
        body.append(
            "\n# The judge goes into every evaluator that has a judge_cfg, cascades' llm_evaluator included.\n"
            "for __dataset in datasets:\n"
            "    __evaluator = __dataset['eval_cfg']['evaluator']\n"
            "    if 'judge_cfg' in __evaluator:\n"
            "        __evaluator['judge_cfg'] = __judge\n"
            "    if 'llm_evaluator' in __evaluator and 'judge_cfg' in __evaluator['llm_evaluator']:\n"
            "        __evaluator['llm_evaluator']['judge_cfg'] = __judge\n"
        )
    swapped = [(name, ours) for name, ours in EVALUATORS_WITH_DETAILS.items()
               if any(isinstance(item, SuiteDataset) and item.evaluator_class == name for item in plan.whole)]
    if stage == "eval" and swapped:
        body.append("\n# lmeval's subclasses where OpenCompass's evaluator keeps less than lmeval's report shows "
                    "(the scores are OpenCompass's).\nfor __dataset in datasets:\n")
        for name, ours in swapped:
            # While the config is read, the type is mmengine's lazy import of the class: its str is the name.
            body.append(f"    if str(__dataset['eval_cfg']['evaluator']['type']) == {py_str(name)}:\n"
                        f"        __dataset['eval_cfg']['evaluator']['type'] = {imports.use(MODEL_MODULE, ours).text}\n")
    if stage == "eval":
        body.append("\nsummarizer = " + py_value(_summarizer(plan, group_vars)) + "\n")
    body.append(f"\n{stage} = " + py_value(stage_cfg) + "\n")
    text = "".join(parts) + imports.text() + "".join(body)
    # No brace anywhere: mmengine's raw-text `{{ }}` substitutions have nothing to match.
    if "{" in text or "}" in text:
        raise ValueError("a config must hold no braces: py_str escapes every one, so this is a bug")
    return text
