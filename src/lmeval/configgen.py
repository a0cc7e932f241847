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
- Tasks run under OpenCompass's `LocalRunner`, each a new Python; with `--fork-server` under
  `LmevalLocalRunner` (same plugin), forked from the OpenCompass process, which has already
  imported what they import (a new Python spends 7-8 s of CPU on that first).
- Models and judge are `LmevalOpenAISDK` (lmeval/opencompass_plugin/, on OpenCompass's
  PYTHONPATH): OpenAISDK whose requests are all sent and read by one asyncio event loop per
  task process, each on an idle client of its own (one shared httpcore pool slows down with the
  square of its idle connections), while OpenCompass's `max_workers` request threads only wait
  on futures: at 1,536 threads each on its own socket, a GIL held a while (a full collection)
  left answers waking more threads than 2 cores could serve, and a 15 s hold took 147 s. And
  the garbage collector frozen after start-up (a full collection over torch's objects holds
  the GIL for 0.3-0.4 s).
- Every model and the judge get `tokenizer_path` (a local folder): `OpenAISDK` loads a tokenizer
  when built and otherwise downloads one, which is fatal offline.

Every string taken from outside is written by `py_str` (lmeval.pyliteral); one holding `{{`,
which OpenCompass's own reload of the config would rewrite, is refused (lmeval.configplan).
"""

from __future__ import annotations

from typing import Any, Literal

from lmeval.configplan import ConfigPlan, check_plan
from lmeval.datasets import UserDataset
from lmeval.prompts import GRADER_TEMPLATE, JUDGE_SYSTEM_PROMPT, mc_prompt
from lmeval.pyliteral import INDENT, Code, py_str, py_value
from lmeval.suites import CORE_AVERAGE, SuiteDataset, whole_suites

Stage = Literal["infer", "eval"]

# --------------------------------------------------------------------------------------------
# Rendering

META_TEMPLATE = Code("__meta_template")
# OpenAISDK whose requests go through one event loop per task process, and the garbage collector
# frozen once built
# (lmeval/opencompass_plugin/; lmeval puts that folder on OpenCompass's PYTHONPATH).
MODEL_MODULE, MODEL_CLASS = "lmeval_opencompass", "LmevalOpenAISDK"
# LocalRunner with each task forked from the OpenCompass process instead of a new Python.
FORKING_RUNNER_CLASS = "LmevalLocalRunner"
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
        # Each answer's finish reason, tokens, time and tries (lmeval_answers; read by lmeval.answers).
        **({"answers_log": plan.answers_log} if plan.answers_log else {}),
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
    local = (imports.use(MODEL_MODULE, FORKING_RUNNER_CLASS) if plan.forked_tasks
             else imports.use("opencompass.runners", "LocalRunner"))
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
