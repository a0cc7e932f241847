"""What `--dry-run` prints: the plan as the commands a real run would run (keys hidden), and the
configs it would give OpenCompass, written where the run would write them."""

from __future__ import annotations

import shlex

from lmeval.launch import command_line, redact
from lmeval.ocenv import PLUGIN_DIR
from lmeval.plan import EvalPlan
from lmeval.stagerun import StageRunner


def server_lines(plan: EvalPlan) -> list[str]:
    """Each server's command line, and where it would run."""
    lines = []
    for server_set in (plan.target_set, plan.judge_set):
        for spec in server_set.specs if server_set else ():
            argv = redact(command_line(plan.lmdeploy, spec), [spec.api_key.get_secret_value()])
            placement = server_set.placement if spec in server_set.replicas else None
            if placement is not None:
                where = f"partition {placement.partition}" if placement.partition else "the default partition"
                chosen_there = {"--server-name": "NODE_ADDRESS", "--server-port": "FREE_PORT"}
                argv = [chosen_there.get(previous, arg) for previous, arg in zip(["", *argv], argv)]
                lines.append(f"{spec.role} server (a Slurm job in {where}, gpu:{spec.tp}): {shlex.join(argv)}")
                continue
            gpus = ",".join(map(str, spec.gpus))
            lines.append(f"{spec.role} server (GPUs {gpus or 'none'}): CUDA_VISIBLE_DEVICES={gpus} {shlex.join(argv)}")
    return lines


def stage_lines(plan: EvalPlan, stages: tuple[str, ...], runner: StageRunner) -> list[str]:
    """Each stage's config (written now) and OpenCompass command."""
    lines = []
    for stage in stages:
        if stage == "eval" and plan.judge is None and not plan.datasets:
            continue
        config = runner.render(stage, plan.target, plan.judge if stage == "eval" else None)
        oc = runner.opencompass(stage, config)
        lines.append(f"{stage} config: {config}")
        lines.append(f"{stage}: (cd {oc.cwd} && PYTHONPATH={PLUGIN_DIR}${{PYTHONPATH:+:$PYTHONPATH}} "
                     f"{shlex.join(oc.argv)})")
    return lines
