"""The `lmeval` command line: thin Typer commands over the application object.

Heavy modules (httpx, pydantic, psutil) are imported inside the commands, so `lmeval --help`
stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    name="lmeval",
    help="Evaluate LLMs with LMDeploy servers and OpenCompass in one command.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

WORK_DIR = typer.Option(Path("outputs"), "-w", "--work-dir", help="Folder holding the runs.")
GRACE = typer.Option(10.0, "--grace", help="Seconds a server gets to exit after SIGTERM before it is killed.")


def _application(ctx: typer.Context):
    return ctx.obj


@app.callback()
def main_callback(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    from lmeval.app import Application

    ctx.obj = Application(debug=debug)


@app.command()
def serve(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="Model folder or hub id."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="GPU ids, like 0,1 (default: free GPUs)."),
    tp: Optional[int] = typer.Option(None, "--tp", help="Tensor parallel size (default: number of GPUs)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port (default: a free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    server_args: str = typer.Option("", "--server-args", help='Extra LMDeploy flags, e.g. "--session-len 65536".'),
    lmdeploy: Optional[str] = typer.Option(None, "--lmdeploy", help="lmdeploy executable [env LMEVAL_LMDEPLOY]."),
    work_dir: Path = WORK_DIR,
    ready_timeout: float = typer.Option(1800.0, "--ready-timeout", help="Seconds to wait for the model to load."),
    grace: float = GRACE,
) -> None:
    """Start one LMDeploy server on loopback with a fresh API key; Ctrl-C stops it."""
    from lmeval.commands.serve import serve as command

    _application(ctx).run(command, model=model, gpus=gpus, tp=tp, port=port, host=host,
                          server_args=server_args, lmdeploy=lmdeploy, work_dir=work_dir,
                          ready_timeout=ready_timeout, grace=grace)


@app.command()
def cleanup(ctx: typer.Context, work_dir: Path = WORK_DIR, grace: float = GRACE) -> None:
    """End every server process an lmeval that was killed outright left behind."""
    from lmeval.commands.cleanup import cleanup as command

    _application(ctx).run(command, work_dir=work_dir, grace=grace)


# Options shared by run, infer and judge; each command passes them on as one EvalOptions.
REUSE = typer.Option(None, "--reuse", help="Resume or reuse the run with this id (yyyymmdd_HHMMSS).")
REDO = typer.Option(False, "--redo", help="With --reuse: if the run was made with another model, datasets or "
                    "generation settings, move its outputs aside (into RUN/stale-<time>/) and infer again.")
LMDEPLOY_OPT = typer.Option(None, "--lmdeploy", help="lmdeploy executable [env LMEVAL_LMDEPLOY].")
OPENCOMPASS_OPT = typer.Option(None, "--opencompass", help="opencompass executable [env LMEVAL_OPENCOMPASS].")
READY_TIMEOUT = typer.Option(1800.0, "--ready-timeout", help="Seconds to wait for a model to load.")
DRY_RUN = typer.Option(False, "--dry-run", help="Write the configs and print the plan; start nothing.")
JUDGE_MODEL = typer.Option("opencompass/CompassVerifier-32B", "--judge-model", help="Judge model folder or hub id.")
JUDGE_GPUS = typer.Option(None, "--judge-gpus", help="GPU ids for the judge (default: free GPUs).")
JUDGE_TP = typer.Option(2, "--judge-tp", help="Tensor parallel size of the judge.")
JUDGE_REPLICAS = typer.Option(1, "--judge-replicas", help="Judge servers on disjoint GPU groups, behind a proxy.")
JUDGE_PORT = typer.Option(None, "--judge-port", help="Port of the judge (default: a free one).")
JUDGE_ARGS = typer.Option("", "--judge-server-args", help="Extra LMDeploy flags for the judge.")
JUDGER_SERVER = typer.Option(None, "--judger-server", help="Use this running judge server instead of starting one.")
JUDGER_KEY = typer.Option(None, "--judger-key", help="API key of --judger-server.")
HOST = typer.Option("127.0.0.1", "--host", help="Address the servers listen on.")


def _evaluate(ctx: typer.Context, stages: tuple[str, ...], **values) -> None:
    from lmeval.options import EvalOptions
    from lmeval.stages import evaluate

    options = {key: value for key, value in values.items() if value is not None}
    _application(ctx).run(lambda application: evaluate(application, EvalOptions(**options), stages))


def _target_command(stages: tuple[str, ...], doc: str):
    def command(
        ctx: typer.Context,
        model: str = typer.Argument(..., help="Model folder (or hub id) to evaluate."),
        task: Optional[str] = typer.Option(None, "--task", help="Suite to run, e.g. chat (see `lmeval tasks`)."),
        datasets: Optional[str] = typer.Option(None, "--datasets", help="Pick datasets of the suite: gpqa,ifeval."),
        dataset_files: Optional[list[Path]] = typer.Option(None, "--dataset", help="Your own .jsonl; repeatable."),
        name: Optional[str] = typer.Option(None, "--name", help="Model name in the results (default: folder name)."),
        work_dir: Path = WORK_DIR,
        reuse: Optional[str] = REUSE,
        redo: bool = REDO,
        gpus: Optional[str] = typer.Option(None, "--gpus", help="GPU ids for the model, like 0,1."),
        tp: Optional[int] = typer.Option(None, "--tp", help="Tensor parallel size (default: number of GPUs)."),
        replicas: int = typer.Option(1, "--replicas", help="Model servers on disjoint GPU groups of --tp, "
                                     "behind LMDeploy's proxy."),
        port: Optional[int] = typer.Option(None, "--port", help="Port of the model server (the proxy's with "
                                           "--replicas)."),
        host: str = HOST,
        server_args: str = typer.Option("", "--server-args", help="Extra LMDeploy flags for the model."),
        api_server: Optional[str] = typer.Option(None, "--api-server", help="Use this running model server."),
        api_key: Optional[str] = typer.Option(None, "--api-key", help="API key of --api-server."),
        judge_model: str = JUDGE_MODEL,
        judge_gpus: Optional[str] = JUDGE_GPUS,
        judge_tp: int = JUDGE_TP,
        judge_replicas: int = JUDGE_REPLICAS,
        judge_port: Optional[int] = JUDGE_PORT,
        judge_server_args: str = JUDGE_ARGS,
        judger_server: Optional[str] = JUDGER_SERVER,
        judger_key: Optional[str] = JUDGER_KEY,
        temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature (0.6)."),
        max_out_len: Optional[int] = typer.Option(None, "--max-out-len", help="Max new tokens (64000)."),
        max_seq_len: Optional[int] = typer.Option(None, "--max-seq-len", help="Max prompt+answer tokens (65536)."),
        lmdeploy: Optional[str] = LMDEPLOY_OPT,
        opencompass: Optional[str] = OPENCOMPASS_OPT,
        ready_timeout: float = READY_TIMEOUT,
        grace: float = GRACE,
        dry_run: bool = DRY_RUN,
    ) -> None:
        values = {key: value for key, value in locals().items() if key not in ("ctx", "stages")}
        values["dataset_files"] = tuple(dataset_files or ())
        _evaluate(ctx, stages, **values)

    command.__doc__ = doc
    return command


app.command("run")(_target_command(
    ("infer", "eval"), "Evaluate MODEL end to end: start servers, infer, judge, stop servers, show scores."))
app.command("infer")(_target_command(
    ("infer",), "Inference only; prints the run id to pass to `lmeval judge --reuse`."))


@app.command()
def judge(
    ctx: typer.Context,
    reuse: str = typer.Option(..., "--reuse", help="The run whose predictions to judge."),
    work_dir: Path = WORK_DIR,
    judge_model: str = JUDGE_MODEL,
    judge_gpus: Optional[str] = JUDGE_GPUS,
    judge_tp: int = JUDGE_TP,
    judge_replicas: int = JUDGE_REPLICAS,
    judge_port: Optional[int] = JUDGE_PORT,
    judge_server_args: str = JUDGE_ARGS,
    judger_server: Optional[str] = JUDGER_SERVER,
    judger_key: Optional[str] = JUDGER_KEY,
    host: str = HOST,
    lmdeploy: Optional[str] = LMDEPLOY_OPT,
    opencompass: Optional[str] = OPENCOMPASS_OPT,
    ready_timeout: float = READY_TIMEOUT,
    grace: float = GRACE,
    dry_run: bool = DRY_RUN,
) -> None:
    """Judged evaluation of an earlier run's predictions."""
    values = dict(locals())
    values.pop("ctx")
    _evaluate(ctx, ("eval",), **values)


@app.command()
def results(
    ctx: typer.Context,
    run: str = typer.Argument("latest", help="Run id, or latest."),
    work_dir: Path = WORK_DIR,
    fmt: str = typer.Option("table", "--format", help="table, json, csv or markdown."),
) -> None:
    """Show the scores of a run."""
    from lmeval.results import results as command

    _application(ctx).run(command, run=run, work_dir=work_dir, fmt=fmt)


@app.command()
def tasks(ctx: typer.Context) -> None:
    """List the task suites, their datasets, and which need the judge model."""
    from lmeval.commands.tasks import tasks as command

    _application(ctx).run(command)


def main() -> None:
    app()
