"""The suites lmeval runs (`--task chat`: LMDeploy's academic suite, from OpenCompass's own dataset
configs), the user's files beside them, and what a choice of datasets implies: the names
OpenCompass gives their results, the summary's rows, whether a judge is needed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from pydantic import BaseModel, ConfigDict

from lmeval.datasets import UserDataset, load_user_dataset, shadowed_name
from lmeval.exceptions import UsageError


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
        for abbr in abbrs_of(item):
            other = shadowed_name(abbr, names_taken)
            if other is not None:
                raise UsageError(f"dataset name {abbr!r} would be mistaken for shards or judge files of "
                                 f"dataset {other!r} in OpenCompass's outputs; rename the file")
    if not chosen:
        raise UsageError("no datasets to evaluate: pick a suite or pass --dataset FILE.jsonl")
    return tuple(chosen)


def abbrs_of(item: DatasetRef) -> tuple[str, ...]:
    return item.abbrs if isinstance(item, SuiteDataset) else (item.name,)


def dataset_abbrs(datasets: Iterable[DatasetRef]) -> list[str]:
    """The dataset names OpenCompass's predictions and results will carry, in config order."""
    return [abbr for item in datasets for abbr in abbrs_of(item)]


def judged_rows(datasets: Iterable[DatasetRef]) -> dict[str, list[str]]:
    """Each summary row the judge scores, with the datasets whose judge replies are behind it:
    a dataset's own row, or a group's (mmlu_pro: its 14 datasets)."""
    rows: dict[str, list[str]] = {}
    for item in datasets:
        if not item.needs_judge:
            continue
        for abbr in abbrs_of(item):
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
