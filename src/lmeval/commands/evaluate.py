"""`lmeval run`, `lmeval infer` and `lmeval judge`: the options, handed to the stages as one
`EvalOptions` (lmeval.stages does the work)."""

from __future__ import annotations

from typing import Annotated

import typer

from lmeval import defaults
from lmeval.commands.options import (
    DEFAULT_WORK_DIR,
    ApiKey,
    ApiKeyFile,
    ApiServer,
    ConfigFile,
    DataDir,
    DatasetFiles,
    DatasetNames,
    DryRun,
    ExtraBody,
    ForkServer,
    Gpus,
    Grace,
    Host,
    JudgeGpus,
    JudgeModel,
    JudgePartition,
    JudgePort,
    JudgeReplicas,
    JudgerKey,
    JudgerKeyFile,
    JudgerServer,
    JudgeServerArgs,
    JudgeTp,
    Launcher,
    LauncherOption,
    Lmdeploy,
    LogGroup,
    LogRunId,
    LogTo,
    MaxOutLen,
    MaxSeqLen,
    Name,
    Opencompass,
    Partition,
    Port,
    ReadyTimeout,
    Redo,
    RepetitionPenalty,
    Replicas,
    Restarts,
    RetryTruncated,
    StallTimeout,
    Stream,
    Reuse,
    ServerArgs,
    SlurmArgs,
    Step,
    Task,
    Temperature,
    TopK,
    TopP,
    Tp,
    WorkDir,
)

Stages = tuple[str, ...]


def evaluate(ctx: typer.Context, stages: Stages, values: dict) -> None:
    """Run STAGES with the options VALUES, completed from the defaults file (None: not given,
    the default applies)."""
    from lmeval import defaults_file
    from lmeval.options import EvalOptions
    from lmeval.stages import evaluate as body

    def run(application) -> int:
        config = values.pop("config")
        values["launcher"] = values["launcher"].value
        models = values.pop("models", None) or [None]  # `judge` names no model
        given_options = defaults_file.given_options(ctx)
        merged, _ = defaults_file.apply(values, given_options, config)
        check_tracking(merged, given_options, stages)
        given = {key: value for key, value in merged.items() if value is not None}
        options = [EvalOptions(**given, **({"model": model} if model else {})) for model in models]
        if len(options) > 1:
            from lmeval.sweep import evaluate_models

            return evaluate_models(application, options, stages)
        return body(application, options[0], stages)

    ctx.obj.run(run)


def check_tracking(values: dict, given: set[str], stages: Stages) -> None:
    """The tracker options go with scores: refused where the command line gives them without,
    left unused where lmeval.toml sets them for every command."""
    from lmeval.exceptions import UsageError

    if "eval" not in stages:
        if "log_to" in given:
            raise UsageError("--log-to logs scores, which `lmeval infer` does not make; give it to `lmeval judge "
                             "--reuse RUN`, or log the run once judged with `lmeval log RUN --to TRACKER`")
        values["log_to"] = None
    for option in ("log_run_id", "log_group"):
        if option in given and not values.get("log_to"):
            raise UsageError(f"--{option.replace('_', '-')} names the tracker run of --log-to; give --log-to too")


def _target_command(stages: Stages, doc: str):
    def command(
        ctx: typer.Context,
        models: Annotated[list[str], typer.Argument(
            metavar="MODEL...", help="Model folder (or hub id) to evaluate. Several: each into a run of its own, "
            "with one judge for all. They go one after the other on --gpus, or side by side when --gpus holds several "
            "groups of --tp × --replicas GPUs (--gpus 0,1,2,3 --tp 2: two at a time, on 0,1 and 2,3); the next model "
            "loads as soon as the one before it is inferred, while that one is judged. A judge with GPUs of its own "
            "loads during the first model's inference and judges each dataset once inferred; a judge on the models' "
            "GPUs judges them all once every model is inferred.")],
        task: Task = None,
        datasets: DatasetNames = None,
        dataset_files: DatasetFiles = None,
        data_dir: DataDir = None,
        name: Name = None,
        work_dir: WorkDir = DEFAULT_WORK_DIR,
        reuse: Reuse = None,
        redo: Redo = False,
        retry_truncated: RetryTruncated = False,
        gpus: Gpus = None,
        tp: Tp = None,
        replicas: Replicas = defaults.REPLICAS,
        port: Port = None,
        host: Host = defaults.HOST,
        server_args: ServerArgs = "",
        launcher: LauncherOption = Launcher.local,
        partition: Partition = None,
        judge_partition: JudgePartition = None,
        slurm_args: SlurmArgs = "",
        api_server: ApiServer = None,
        api_key: ApiKey = None,
        api_key_file: ApiKeyFile = None,
        judge_model: JudgeModel = defaults.JUDGE_MODEL,
        judge_gpus: JudgeGpus = None,
        judge_tp: JudgeTp = defaults.JUDGE_TP,
        judge_replicas: JudgeReplicas = defaults.REPLICAS,
        judge_port: JudgePort = None,
        judge_server_args: JudgeServerArgs = "",
        judger_server: JudgerServer = None,
        judger_key: JudgerKey = None,
        judger_key_file: JudgerKeyFile = None,
        temperature: Temperature = None,
        max_out_len: MaxOutLen = None,
        max_seq_len: MaxSeqLen = None,
        top_p: TopP = None,
        top_k: TopK = None,
        repetition_penalty: RepetitionPenalty = None,
        extra_body: ExtraBody = None,
        lmdeploy: Lmdeploy = None,
        opencompass: Opencompass = None,
        ready_timeout: ReadyTimeout = defaults.READY_TIMEOUT,
        grace: Grace = defaults.GRACE,
        restarts: Restarts = defaults.RESTARTS,
        stall_timeout: StallTimeout = defaults.STALL_TIMEOUT,
        stream: Stream = True,
        fork_server: ForkServer = False,
        log_to: LogTo = None,
        step: Step = None,
        log_run_id: LogRunId = None,
        log_group: LogGroup = None,
        dry_run: DryRun = False,
        config: ConfigFile = None,
    ) -> None:
        values = {key: value for key, value in locals().items() if key != "ctx"}
        values["dataset_files"] = tuple(dataset_files or ())
        values["log_to"] = tuple(log_to) if log_to else None
        evaluate(ctx, stages, values)

    command.__doc__ = doc
    return command


run = _target_command(("infer", "eval"), "Evaluate MODEL end to end: start servers, infer, judge, stop servers, "
                      "show scores.")
infer = _target_command(("infer",), "Inference only; prints the run id to pass to `lmeval judge --reuse`.")


def judge(
    ctx: typer.Context,
    reuse: Annotated[str, typer.Option("--reuse", help="The run whose predictions to judge.")],
    work_dir: WorkDir = DEFAULT_WORK_DIR,
    data_dir: DataDir = None,
    judge_model: JudgeModel = defaults.JUDGE_MODEL,
    judge_gpus: JudgeGpus = None,
    judge_tp: JudgeTp = defaults.JUDGE_TP,
    judge_replicas: JudgeReplicas = defaults.REPLICAS,
    judge_port: JudgePort = None,
    judge_server_args: JudgeServerArgs = "",
    judger_server: JudgerServer = None,
    judger_key: JudgerKey = None,
    judger_key_file: JudgerKeyFile = None,
    host: Host = defaults.HOST,
    launcher: LauncherOption = Launcher.local,
    judge_partition: JudgePartition = None,
    partition: Partition = None,
    slurm_args: SlurmArgs = "",
    lmdeploy: Lmdeploy = None,
    opencompass: Opencompass = None,
    ready_timeout: ReadyTimeout = defaults.READY_TIMEOUT,
    grace: Grace = defaults.GRACE,
    restarts: Restarts = defaults.RESTARTS,
    stall_timeout: StallTimeout = defaults.STALL_TIMEOUT,
    fork_server: ForkServer = False,
    log_to: LogTo = None,
    step: Step = None,
    log_run_id: LogRunId = None,
    log_group: LogGroup = None,
    dry_run: DryRun = False,
    config: ConfigFile = None,
) -> None:
    """Judged evaluation of an earlier run's predictions."""
    values = {key: value for key, value in locals().items() if key != "ctx"}
    values["log_to"] = tuple(log_to) if log_to else None
    evaluate(ctx, ("eval",), values)
