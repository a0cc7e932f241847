"""Load lmeval's OpenCompass configs the way OpenCompass 0.5.4 does, and print what it sees.

Run with the python of the OpenCompass venv (never lmeval's)::

    .venvs/opencompass/bin/python tests/oc_load_config.py --out REPORT.json [--build] [--tokenizer DIR] CONFIG...

For each CONFIG it follows the `opencompass CONFIG -m infer|eval` path up to the point where a
task would start, and reports every stage, so a test can check that values survive each:

- ``loaded``: `Config.fromfile(CONFIG, format_python_code=False)` + `try_fill_in_custom_cfgs`
  (`opencompass.utils.run.get_config_from_arg`);
- ``dumped``: `cfg.dump()` into the run's configs/ and `Config.fromfile()` again (cli/main.py);
- ``task``: the stage's partitioner and task class built, the first task's config dumped as the
  LocalRunner does and reloaded as the task process does (`Config.fromfile(param_file)`).

With ``--build`` it also builds, from the task's config, each user (CustomDataset) dataset, its
first prompt, its evaluator and a judge prompt, and builds the models (judge included) with
OpenAISDK itself; ``--tokenizer DIR`` first writes a tiny local tokenizer there for that.

With ``--values`` each CONFIG is instead a small file of plain assignments: its values are
reported as loaded and after OpenCompass's dump + reload.

Writes one JSON object to --out: {"grader_template": ..., "configs": [...]}.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

from mmengine.config import Config

MODEL_FIELDS = (
    "abbr", "type", "path", "key", "openai_api_base", "tokenizer_path", "temperature", "max_out_len",
    "max_seq_len", "mode", "retry", "max_workers", "batch_size", "query_per_second", "run_cfg",
    "pred_postprocessor", "meta_template", "verbose",
)  # fmt: skip


def type_name(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return f"{value.__module__}.{value.__qualname__}"


def plain(value):
    """JSON-able copy; classes and functions become their dotted names."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return type_name(value)


def judge_of(cfg) -> dict | None:
    if not cfg:
        return None
    return {key: plain(cfg.get(key)) for key in MODEL_FIELDS if key in cfg}


def summarize(cfg) -> dict:
    datasets = []
    for dataset in cfg.get("datasets", []):
        evaluator = dataset.get("eval_cfg", {}).get("evaluator", {})
        llm = evaluator.get("llm_evaluator") or {}
        datasets.append(dict(
            abbr=dataset.get("abbr"),
            type=type_name(dataset.get("type")),
            path=dataset.get("path"),
            reader_cfg=plain(dataset.get("reader_cfg")),
            evaluator=type_name(evaluator.get("type")),
            rule_evaluator=type_name((evaluator.get("rule_evaluator") or {}).get("type")),
            llm_evaluator=type_name(llm.get("type")),
            has_judge_cfg="judge_cfg" in evaluator,
            judge=judge_of(evaluator.get("judge_cfg")),
            llm_judge=judge_of(llm.get("judge_cfg")),
            dataset_cfg_path=(evaluator.get("dataset_cfg") or llm.get("dataset_cfg") or {}).get("path"),
            eval_pred_postprocessor=plain(dataset.get("eval_cfg", {}).get("pred_postprocessor")),
            dict_postprocessor=plain(evaluator.get("dict_postprocessor")),
            infer_prompt=plain(dataset.get("infer_cfg", {}).get("prompt_template")),
        ))
    out = dict(
        keys=sorted(cfg.keys()),
        models=[{key: plain(m.get(key)) for key in MODEL_FIELDS if key in m} for m in cfg.get("models", [])],
        datasets=datasets,
    )
    for stage in ("infer", "eval"):
        if stage in cfg:
            out[stage] = plain(cfg[stage])
    if "summarizer" in cfg:
        out["summarizer"] = plain(cfg["summarizer"])
    return out


def grader_template() -> str:
    """GRADER_TEMPLATE of aime2025_llmjudge_gen_5e9f4f.py, read from the installed package."""
    import opencompass

    path = Path(opencompass.__file__).parent / "configs/datasets/aime2025/aime2025_llmjudge_gen_5e9f4f.py"
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "GRADER_TEMPLATE":
            call = node.value  # """...""".strip()
            return call.func.value.value.strip()
    raise LookupError(f"no GRADER_TEMPLATE in {path}")


def make_tokenizer(folder: str) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "hello": 1}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]").save_pretrained(folder)


def is_user(dataset_cfg) -> bool:
    """A dataset from a user's file (lmeval writes their absolute paths); suite ones are relative."""
    return type_name(dataset_cfg["type"]).endswith("CustomDataset") and os.path.isabs(dataset_cfg["path"])


def build_checks(task_cfg) -> dict:
    from opencompass.registry import ICL_EVALUATORS, ICL_PROMPT_TEMPLATES, TEXT_POSTPROCESSORS
    from opencompass.utils import build_dataset_from_cfg, build_model_from_cfg

    out: dict = {"models": [], "datasets": {}}
    for model_cfg in task_cfg["models"]:
        model = build_model_from_cfg(model_cfg)
        out["models"].append(dict(
            type=type_name(type(model)), path=model.path, keys=model.keys, url=model.openai_api_base,
            tokenizer_path=model.tokenizer_path, tokenizer_type=model.tokenizer_type,
            max_workers=model.max_workers, temperature=model.temperature, retry=model.retry,
            max_seq_len=model.max_seq_len, mode=model.mode, qps=model.query_per_second,
        ))
    for dataset_cfg in task_cfg["datasets"][0]:
        if not is_user(dataset_cfg):
            continue
        dataset = build_dataset_from_cfg(dataset_cfg)
        entry = dict(dataset.test[0])
        output_column = dataset_cfg["reader_cfg"]["output_column"]
        infer_template = ICL_PROMPT_TEMPLATES.build(dataset_cfg["infer_cfg"]["prompt_template"])
        info = dict(
            columns=dataset.test.column_names,
            rows=len(dataset.test),
            first=entry,
            prompt=plain(list(infer_template.generate_item(entry, output_field=output_column))),
        )
        eval_cfg = copy.deepcopy(dataset_cfg["eval_cfg"])
        judge_cfg = eval_cfg["evaluator"].get("judge_cfg")
        if judge_cfg is None or judge_cfg:  # an empty judge_cfg (infer config) would read OC_JUDGE_* env
            evaluator = ICL_EVALUATORS.build(copy.deepcopy(eval_cfg["evaluator"]))
            info["evaluator"] = type_name(type(evaluator))
        if judge_cfg:
            judge_template = ICL_PROMPT_TEMPLATES.build(eval_cfg["evaluator"]["prompt_template"])
            item = dict(entry, prediction="PREDICTED", reference=entry[output_column])
            info["judge_prompt"] = plain(list(judge_template.generate_item(item, output_field="reference")))
            judge = build_model_from_cfg(judge_cfg)
            info["judge_model"] = dict(path=judge.path, keys=judge.keys, url=judge.openai_api_base,
                                       tokenizer_type=judge.tokenizer_type, max_workers=judge.max_workers,
                                       temperature=judge.temperature, mode=judge.mode)
        post = eval_cfg.get("pred_postprocessor")
        if post:
            post = dict(post)
            proc = post.pop("type")
            proc = TEXT_POSTPROCESSORS.get(proc) if isinstance(proc, str) else proc
            info["postprocessed"] = {text: proc(text, **post) for text in (
                "Thinking it over.\nANSWER: B", "The answer is (A).", "no idea")}
        out["datasets"][dataset_cfg["abbr"]] = info
    return out


YAPF_BUDGET = [1 << 30]  # task dumps still formatted with yapf (--yapf)


def follow(path: str, work: str, build: bool) -> dict:
    from opencompass.partitioners import NaivePartitioner  # noqa: F401 - registers
    from opencompass.registry import PARTITIONERS, TASKS
    from opencompass.utils.run import try_fill_in_custom_cfgs

    report: dict = {"path": path}
    cfg = Config.fromfile(path, format_python_code=False)
    cfg = try_fill_in_custom_cfgs(cfg)
    report["loaded"] = summarize(cfg)

    run_dir = os.path.join(work, "run")
    os.makedirs(os.path.join(run_dir, "configs"), exist_ok=True)
    cfg["work_dir"] = run_dir
    dumped = os.path.join(run_dir, "configs", "dumped.py")
    cfg.dump(dumped)
    cfg = Config.fromfile(dumped, format_python_code=False)
    report["dumped"] = summarize(cfg)

    stage = "infer" if "infer" in cfg else "eval"
    stage_cfg = cfg[stage]
    stage_cfg.partitioner["out_dir"] = os.path.join(run_dir, "predictions/" if stage == "infer" else "results/")
    tasks = PARTITIONERS.build(stage_cfg.partitioner)(cfg)
    report["tasks"] = [[d["abbr"] for d in task["datasets"][0]] for task in tasks]
    task_cfgs = []
    for index, task_dict in enumerate(tasks):
        task = TASKS.build(dict(cfg=task_dict, type=stage_cfg.runner.task.type))
        report.setdefault("task_class", type_name(type(task)))
        report.setdefault("task_num_gpus", []).append(task.num_gpus)
        if index and not any(is_user(d) for d in task_dict["datasets"][0]):
            continue  # dumping with yapf is slow: the first task and the user datasets' suffice
        param_file = os.path.join(work, f"params_{index}.py")
        # As LocalRunner does, formatting with yapf (format_python_code left on), while the budget
        # lasts: yapf takes ~2 s a task here and changes only the layout, never a literal.
        if YAPF_BUDGET[0] > 0:
            YAPF_BUDGET[0] -= 1
        else:
            object.__setattr__(task.cfg, "_format_python_code", False)  # Config.__setattr__ stores keys
        task.cfg.dump(param_file)
        task_cfgs.append(Config.fromfile(param_file))  # as the task process does
    # What the task processes see, those tasks together.
    merged = Config(dict(task_cfgs[0]), format_python_code=False)
    merged["datasets"] = [d for task_cfg in task_cfgs for d in task_cfg["datasets"][0]]
    report["task"] = summarize(merged)
    if build:
        built = [build_checks(task_cfg) for task_cfg in task_cfgs]
        report["built"] = dict(models=built[0]["models"],
                               datasets={k: v for b in built for k, v in b["datasets"].items()})
    return report


def values(path: str, work: str) -> dict:
    """Top-level values of a small config: as loaded, and after OpenCompass's dump + reload."""
    cfg = Config.fromfile(path, format_python_code=False)
    loaded = {k: plain(v) for k, v in cfg.items() if isinstance(v, (str, int, float, list, dict))}
    dumped = os.path.join(work, "dumped.py")
    cfg.dump(dumped)
    again = Config.fromfile(dumped, format_python_code=False)
    reloaded = {k: plain(v) for k, v in again.items() if isinstance(v, (str, int, float, list, dict))}
    return {"path": path, "loaded": loaded, "reloaded": reloaded}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("configs", nargs="*")
    parser.add_argument("--build", action="store_true")
    parser.add_argument("--values", action="store_true", help="small configs: report their top-level values")
    parser.add_argument("--tokenizer")
    parser.add_argument("--yapf", type=int, default=1 << 30,
                        help="format only the first N task dumps with yapf like LocalRunner (slow); default all")
    parser.add_argument("--out", required=True, help="where the JSON report goes (stdout carries logs)")
    args = parser.parse_args()
    YAPF_BUDGET[0] = args.yapf
    if args.tokenizer:
        make_tokenizer(args.tokenizer)
    result: dict = {"grader_template": grader_template(), "configs": []}
    for path in args.configs:
        with tempfile.TemporaryDirectory() as work:
            cwd = os.getcwd()
            os.chdir(work)  # OpenCompass writes into the current directory
            try:
                report = values(path, work) if args.values else follow(path, work, args.build)
                result["configs"].append(report)
            except Exception:  # noqa: BLE001 - every failure is the report
                result["configs"].append({"path": path, "error": traceback.format_exc()})
            finally:
                os.chdir(cwd)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
