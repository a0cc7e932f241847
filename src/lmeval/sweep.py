"""Several models in one command (`lmeval run A B C`): each into a run of its own, one after the
other on the GPUs given, with the judge started once for all of them.

When the judge has GPUs of its own, it loads during the first model's inference and judges
each model's datasets as they are inferred (lmeval.streaming); when its GPUs are the models',
every model is inferred first and the judge then judges them all. A model whose run fails does
not stop the others; the command ends with the scores of every model side by side
(lmeval.compare) and exits 1 if one failed, naming the `--reuse` that resumes it.
"""

from __future__ import annotations

from lmeval.app import Application
from lmeval.exceptions import LmevalError, StageFailed, UsageError
from lmeval.launch import ServerGroup, check_model
from lmeval.options import EvalOptions
from lmeval.plan import EvalPlan, make_plan
from lmeval.stages import Evaluation, SharedJudge


def check_models(options: list[EvalOptions]) -> None:
    """What only a sweep refuses, before any run folder is claimed."""
    first = options[0]
    for given, option in (("--name", first.name), ("--reuse", first.reuse), ("--api-server", first.api_server)):
        if option:
            raise UsageError(f"{given} goes with one model; evaluate the models one by one to use it")
    models = [option.model for option in options]
    twice = sorted({model for model in models if models.count(model) > 1})
    if twice:
        raise UsageError(f"model {', '.join(twice)} is given twice; name each model once")
    for option in options:
        check_model(option.model)


def phases(plans: list[EvalPlan], stages: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The stages each run goes through, in turn over all runs: judging waits until every
    model is inferred when the judge needs the models' GPUs."""
    if "infer" in stages and "eval" in stages and any(plan.judge_set and plan.gpus_overlap for plan in plans):
        return [("infer",), ("eval",)]
    return [stages]


def evaluate_models(app: Application, options: list[EvalOptions], stages: tuple[str, ...]) -> int:
    check_models(options)
    models = [option.model for option in options]
    plans = [make_plan(option, stages, notify=app.warn) for option in options]
    first = plans[0]
    for plan in plans[1:]:  # one judge for all: the first run's
        plan.judge, plan.judge_set = first.judge, first.judge_set
    app.info("runs: " + ", ".join(f"{plan.model_abbr} {plan.run_id}" for plan in plans))
    failed: set[str] = set()  # run ids
    with ServerGroup(first.lmdeploy, first.run_dir / "servers", app, first.run_id, first.grace) as group:
        shared = SharedJudge(group) if first.judge_set is not None and "eval" in stages else None
        try:
            for phase in phases(plans, stages):
                for plan in plans:
                    if plan.run_id in failed:
                        continue
                    try:
                        Evaluation(app, plan, shared).execute(phase)
                    except LmevalError as error:
                        app.warn(f"{plan.model_abbr} (run {plan.run_id}) failed: {error.message}")
                        if error.detail:
                            app.err.print(error.detail, markup=False)
                        failed.add(plan.run_id)
        except KeyboardInterrupt:
            app.info("runs that finished keep their scores; resume the others with "
                     "`lmeval run MODEL --reuse RUN` (runs: "
                     + ", ".join(f"{plan.model_abbr} {plan.run_id}" for plan in plans) + ")")
            raise
    done = [plan for plan in plans if plan.run_id not in failed]
    if "eval" in stages and len(done) > 1:
        from lmeval.compare import compare, print_comparison

        print_comparison(app, compare(first.work_dir, [plan.run_id for plan in done]))
    if failed:
        command = "run" if "infer" in stages and "eval" in stages else "infer"
        listing = "; ".join(f"{plan.model_abbr} (run {plan.run_id}): `lmeval {command} {model} ... --reuse {plan.run_id}`"
                            for model, plan in zip(models, plans) if plan.run_id in failed)
        raise StageFailed(f"{len(failed)} of {len(plans)} models failed, their errors are above; resume each alone "
                          f"with its other options as before: {listing}")
    return 0
