"""Runs lmeval did not make (an OpenCompass run folder made by hand, or by LMDeploy's
eval/eval.py): what `lmeval judge --reuse RUN` reads from them to judge them as its own.

OpenCompass dumps the config of every call into `RUN/configs/<time>_<pid>.py`, plain Python:
assignments of dicts, lists and literals, with every `type` written as a dotted name. lmeval
reads them as data (the `ast` of the file, never executing it), takes the model that has
predictions in `RUN/predictions/`, and the datasets those predictions are of: lmeval's suite
datasets by their names, and `CustomDataset` files by their paths.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmeval import configplan, suites
from lmeval.exceptions import UsageError

CUSTOM_DATASET = "opencompass.datasets.CustomDataset"


def literal(node: ast.AST) -> Any:
    """The value of NODE if it is data (literals, lists, tuples, dicts, `dict(...)` calls), with
    None in place of any part that is not (a name, a call): a dump's odd value never hides the
    rest of its model or dataset."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [literal(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        return {literal(key): literal(value) for key, value in zip(node.keys, node.values, strict=True) if key}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = literal(node.operand)
        return -value if isinstance(value, (int, float)) else None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {keyword.arg: literal(keyword.value) for keyword in node.keywords if keyword.arg}
    return None


def read_config(path: Path) -> dict[str, Any]:
    """The top-level assignments of a config dump, as data."""
    return {statement.targets[0].id: literal(statement.value)
            for statement in ast.parse(path.read_text(encoding="utf-8")).body
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name)}


def listed(config: dict[str, Any], name: str) -> list:
    """CONFIG's list NAME (`models`, `datasets`); empty where it has none."""
    value = config.get(name)
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class ForeignRun:
    """What a run folder lmeval did not make holds, in lmeval's terms."""

    config: Path  # the dump it was read from
    model_abbr: str
    model: str  # where the tokenizer is: the model dict's tokenizer_path, else its path
    task: str | None
    datasets: str | None  # the suite's datasets, as --datasets names them
    files: list[str]  # --dataset files
    generation: configplan.Generation


def _predicted(run_dir: Path) -> dict[str, set[str]]:
    """model abbr -> the dataset abbrs it has finished predictions of."""
    folder = run_dir / "predictions"
    found = {}
    for model in sorted(folder.iterdir()) if folder.is_dir() else ():
        names = {path.stem for path in model.glob("*.json") if not path.name.startswith("tmp_")}  # tmp_: unfinished
        if model.is_dir() and names:
            found[model.name] = names
    return found


def read_run(run_dir: Path) -> ForeignRun:
    """What RUN_DIR holds; UsageError saying what lmeval cannot judge there, and why."""
    predicted = _predicted(run_dir)
    if not predicted:
        raise UsageError(f"{run_dir} has no lmeval.json and no predictions: nothing to judge")
    if len(predicted) > 1:
        raise UsageError(f"{run_dir} holds predictions of {len(predicted)} models ({', '.join(predicted)}); "
                         "lmeval judges runs of one model")
    (model_abbr, names), = predicted.items()
    configs = []
    for path in sorted((run_dir / "configs").glob("*.py"), reverse=True):  # the newest first
        try:
            config = read_config(path)
        except (OSError, SyntaxError, UnicodeError):
            continue
        models = [m for m in listed(config, "models") if isinstance(m, dict) and m.get("abbr") == model_abbr]
        if models and listed(config, "datasets"):
            configs.append((path, config, models[0]))
    if not configs:
        raise UsageError(f"{run_dir}/configs holds no OpenCompass config of model {model_abbr}: "
                         "cannot tell what was inferred")
    path, config, model = configs[0]
    task, suite_names, files = _datasets(run_dir, path, config["datasets"], names)
    overrides = {key: model[key] for key in ("temperature", "max_out_len", "max_seq_len")
                 if isinstance(model.get(key), (int, float)) and not isinstance(model.get(key), bool)}
    generation = configplan.Generation(**{**configplan.TARGET_GENERATION.model_dump(), **overrides})
    return ForeignRun(path, model_abbr, str(model.get("tokenizer_path") or model.get("path") or model_abbr),
                      task, suite_names, files, generation)


def _datasets(run_dir: Path, path: Path, datasets: list, predicted: set[str]) -> tuple[str | None, str | None, list[str]]:
    """The suite (and which of its datasets) and the files behind the datasets PREDICTED."""
    files, left = [], set(predicted)
    for dataset in datasets:
        if not isinstance(dataset, dict) or dataset.get("abbr") not in left:
            continue
        if dataset.get("type") == CUSTOM_DATASET and str(dataset.get("path", "")).endswith(".jsonl"):
            file = Path(dataset["path"])
            if file.stem != dataset["abbr"]:
                raise UsageError(f"dataset {dataset['abbr']} of {run_dir} reads {file}, which lmeval would call "
                                 f"{file.stem}: judge it with OpenCompass itself, or rename the file to match")
            files.append(str(file))
            left.discard(dataset["abbr"])
    suite, picked = None, []
    for name, items in suites.SUITES.items():
        whole = [item for item in items if set(item.abbrs) <= left]
        if whole:
            suite, picked = name, whole
            left -= {abbr for item in whole for abbr in item.abbrs}
            break
    if left:
        raise UsageError(f"{run_dir} has predictions of {', '.join(sorted(left))}, which lmeval knows neither as a "
                         f"suite dataset (lmeval tasks) nor as a .jsonl file of CustomDataset (read from {path})")
    names = None
    if suite is not None and len(picked) < len(suites.SUITES[suite]):
        names = ",".join(item.name for item in picked)
    return suite, names, files
