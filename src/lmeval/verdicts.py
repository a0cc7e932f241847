"""Whether a stage worked, decided from the files it left (OpenCompass exits 0 when its tasks
fail): which datasets have no predictions or no usable result, what OpenCompass said about
them, and the one message that tells the user what to run next."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lmeval import outputs, suites
from lmeval.exceptions import StageFailed
from lmeval.ledger import Ledger
from lmeval.ocrun import last_error
from lmeval.plan import EvalPlan
from lmeval.runs import move_aside
from lmeval.stagerun import StageRunner


def opencompass_said(plan: EvalPlan, stage: str, datasets: list[str], code: int | None) -> str:
    """` (OpenCompass exited with code 1: ImportError: ..., in LOG)`: its exit CODE, if not 0,
    and the last exception in the task logs of DATASETS or else in its own log; empty when
    there is neither."""
    logs = [*outputs.task_logs(plan.run_dir, stage, plan.model_abbr, datasets),
            plan.run_dir / "lmeval" / f"opencompass_{stage}.log"]
    said = next((f"{line}, in {log}" for log in logs if (line := last_error(log))), "")
    parts = [f"OpenCompass exited with code {code}"] * bool(code) + [said] * bool(said)
    return f" ({': '.join(parts)})" if parts else ""


def failed(ledger: Ledger, stage: str, error: StageFailed) -> StageFailed:
    """Record in the manifest that STAGE failed; return ERROR to raise."""
    ledger.stage_failed(stage, error.message)
    return error


def inference(plan: EvalPlan, runner: StageRunner, ledger: Ledger) -> tuple[StageFailed | None, list[str] | None]:
    """Why the inference of some datasets failed (OpenCompass goes on with the others, which are
    then scored), and the datasets the eval stage scores then; (None, None) when none failed.
    Raised at once when a server died or nothing was inferred."""
    missing = list(outputs.lacking(plan.run_dir, plan.model_abbr, "infer", plan.abbrs))
    if missing and runner.server_failure:
        raise failed(ledger, "infer", runner.server_failure)
    if not missing:
        return None, None
    error = StageFailed(
        f"inference failed for {', '.join(missing)}: no predictions written"
        f"{opencompass_said(plan, 'infer', missing, runner.opencompass_codes.get('infer'))}; see the log below, "
        f"then rerun the same command with --reuse {plan.run_id}: only what is missing is inferred",
        outputs.failure_report(plan.run_dir, "infer", plan.model_abbr, missing),
    )
    if len(missing) == len(plan.abbrs):
        raise failed(ledger, "infer", error)
    return error, [name for name in plan.abbrs if name not in missing]


def evaluation(plan: EvalPlan, runner: StageRunner, ledger: Ledger,
               names: list[str]) -> tuple[list[outputs.Score], StageFailed | None]:
    """The scores of the newest summary of the datasets NAMES, each row of a failed dataset
    shown as none; and why datasets failed (none of their rows counts), or None."""
    model = plan.model_abbr
    rows = suites.judged_rows(plan.datasets)
    ledger.manifest.judge_rows = rows  # saved with the stage's outcome, failed or not
    lacking = outputs.lacking(plan.run_dir, model, "eval", names)
    summary = outputs.latest_summary(plan.run_dir)
    scores = outputs.read_summary(summary, model) if summary else []
    scored = {score.dataset for score in scores if score.value is not None}
    expected = {row: members for row, members in suites.summary_rows(plan.datasets).items()
                if set(members) <= set(names)}
    lacking.update({row: "no score in the summary" for row, members in expected.items()
                    if row not in scored and not set(members) & set(lacking)})
    if lacking and runner.server_failure:
        raise failed(ledger, "eval", runner.server_failure)
    scores = [outputs.with_judge_replies(score, outputs.judge_replies(plan.run_dir, model, rows[score.dataset]))
              if score.dataset in rows else score for score in scores]
    broken = [row for row, members in expected.items() if row in lacking or set(members) & set(lacking)]
    scores = [replace(score, value=None) if score.dataset in broken else score for score in scores]
    if not lacking:
        return scores, None
    moved = move_results_aside(plan, [name for name in lacking if name in names])
    listing = "; ".join(f"{name} ({why})" for name, why in lacking.items())
    return scores, StageFailed(
        f"evaluation failed for {listing}"
        f"{opencompass_said(plan, 'eval', list(lacking), runner.opencompass_codes.get('eval'))}; "
        f"{moved}see the logs below, then retry with `lmeval judge --reuse {plan.run_id} -w {plan.work_dir}`",
        outputs.failure_report(plan.run_dir, "eval", model, list(lacking)),
    )


def move_results_aside(plan: EvalPlan, datasets: list[str]) -> str:
    """Move the results OpenCompass wrote for DATASETS, though they hold no score (a broken
    evaluator's), out of its way: else it would reuse them when judging again. What to say."""
    folder = Path("results") / plan.model_abbr
    written = [name for name in datasets if outputs.results_file(plan.run_dir, plan.model_abbr, name).is_file()]
    if not written:
        return ""
    patterns = [str(folder / f"{name}{suffix}") for name in written
                for suffix in (".json", "_replica*.json", "_llm_judge_replica*.json")]
    aside = move_aside(plan.run_dir, patterns)
    return f"their results were moved to {aside}; "
