"""The command-line options several commands share, declared once. Their defaults live in
`lmeval.defaults`. Only typer and the standard library are imported here: `lmeval --help`
builds every command from these."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from lmeval import defaults
from lmeval.steps import STEP_FORMS

WorkDir = Annotated[Path, typer.Option("-w", "--work-dir", help="Folder holding the runs.")]
Grace = Annotated[float, typer.Option("--grace", help="Seconds a server gets to exit after SIGTERM before it is killed.")]
# Found by lmeval.tools: the option, else the environment variable, else PATH.
Lmdeploy = Annotated[Optional[str], typer.Option("--lmdeploy", help="lmdeploy executable [env LMEVAL_LMDEPLOY].")]
Opencompass = Annotated[Optional[str], typer.Option("--opencompass",
                                                    help="opencompass executable [env LMEVAL_OPENCOMPASS].")]
Restarts = Annotated[int, typer.Option("--restarts", help="Times each server lmeval started is restarted (same GPUs "
                                        "and port, fresh key) when it dies during a stage; the stage resumes and "
                                        "sends only the prompts not yet answered.")]
StallTimeout = Annotated[float, typer.Option("--stall-timeout", help="Seconds a server may look hung on end during "
                                             "a stage (/health 503 or silent, or its metrics showing requests running "
                                             "and no token generated) before it is stopped and restarted like one "
                                             "that died (--restarts). A long generation is never flagged.")]
Stream = Annotated[bool, typer.Option("--stream/--no-stream", help="When the judge has GPUs of its own: judge each "
                                      "dataset as soon as its predictions are complete, while the others are "
                                      "inferred.")]
ForkServer = Annotated[bool, typer.Option(
    "--fork-server", envvar=defaults.FORK_SERVER_ENV,
    help="Fork OpenCompass's processes and its tasks from one process that imported OpenCompass once, instead of "
         "starting each as a new Python (7-8 s of CPU each): for hosts with a few CPUs. The default, new "
         "processes, is OpenCompass's own way and never forks a process that runs threads.")]
ReadyTimeout = Annotated[float, typer.Option("--ready-timeout", help="Seconds a model may take to load.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Write the configs and print the plan; start nothing.")]
Host = Annotated[str, typer.Option("--host", help="Address the servers listen on.")]
Reuse = Annotated[Optional[str], typer.Option("--reuse", help="Resume or reuse the run with this id (yyyymmdd_HHMMSS).")]
Redo = Annotated[bool, typer.Option("--redo", help="With --reuse: if the run was made with another model, datasets or "
                                    "generation settings, move its outputs aside (into RUN/stale-<time>/) and infer again.")]
RetryTruncated = Annotated[bool, typer.Option(
    "--retry-truncated", help="With --reuse RUN and a --max-out-len above RUN's: a new run made from RUN, "
    "keeping every answer that finished under the old limit and asking again only those it cut. Exact, not an "
    "approximation: an answer that stopped before the old limit is distributed the same under any larger "
    "limit, since a limit acts only on the answers that reach it.")]
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="A data folder made by `lmeval data pull`: "
                                               "OpenCompass and the Hugging Face libraries read the suite from it, "
                                               "offline, once `lmeval data check` would pass for its datasets.")]

# What is evaluated, and how it is generated (defaults: LMDeploy's template)
Task = Annotated[Optional[str], typer.Option("--task", help="Suite to run, e.g. chat (see `lmeval tasks`).")]
DatasetNames = Annotated[Optional[str], typer.Option("--datasets", help="Pick datasets of the suite: gpqa,ifeval.")]
DatasetFiles = Annotated[Optional[list[Path]], typer.Option("--dataset", help="Your own .jsonl; repeatable.")]
Name = Annotated[Optional[str], typer.Option("--name", help="Model name in the results (default: folder name).")]
Temperature = Annotated[Optional[float], typer.Option("--temperature", help="Sampling temperature (0.6).")]
MaxOutLen = Annotated[Optional[int], typer.Option("--max-out-len", help="Max new tokens (64000).")]
MaxSeqLen = Annotated[Optional[int], typer.Option("--max-seq-len", help="Max prompt+answer tokens (65536).")]
TopP = Annotated[Optional[float], typer.Option("--top-p", help="Nucleus sampling (default: the server's).")]
TopK = Annotated[Optional[int], typer.Option("--top-k", help="Top-k sampling (default: the server's).")]
RepetitionPenalty = Annotated[Optional[float], typer.Option("--repetition-penalty",
                                                            help="Repetition penalty (default: the server's).")]
ExtraBody = Annotated[Optional[str], typer.Option("--extra-body", help='More request fields as a JSON object, e.g. '
                                                  '\'{"chat_template_kwargs": {"enable_thinking": true}}\'.')]

# The model server
Gpus = Annotated[Optional[str], typer.Option("--gpus", help="GPU ids for the model, like 0,1 (default: free GPUs).")]
Tp = Annotated[Optional[int], typer.Option("--tp", help="Tensor parallel size (default: number of GPUs).")]
Replicas = Annotated[int, typer.Option("--replicas", help="Model servers on disjoint GPU groups of --tp, "
                                       "behind LMDeploy's proxy.")]
Port = Annotated[Optional[int], typer.Option("--port", help="Port of the model server (the proxy's with --replicas; "
                                             "default: a free one).")]
ServerArgs = Annotated[str, typer.Option("--server-args", help='Extra LMDeploy flags for the model, e.g. '
                                         '"--session-len 65536".')]
ApiServer = Annotated[Optional[str], typer.Option("--api-server", help="Use this running model server.")]
ApiKey = Annotated[Optional[str], typer.Option("--api-key", envvar=defaults.API_KEY_ENV, show_default=False,
                                               help="API key of --api-server (better: the environment variable "
                                               "or --api-key-file, out of ps and shell history).")]
ApiKeyFile = Annotated[Optional[Path], typer.Option("--api-key-file", help="File whose first line is the key of "
                                                    "--api-server.")]

# Where servers run
class Launcher(str, Enum):
    local = "local"
    slurm = "slurm"


LauncherOption = Annotated[Launcher, typer.Option("--launcher", help="Where the servers run: local (GPUs of this "
                                                  "machine) or slurm (each server a Slurm job on a node of its own; "
                                                  "the work dir must be shared with the nodes).")]
Partition = Annotated[Optional[str], typer.Option("--partition", help="Slurm partition of the servers "
                                                  "(default: the cluster's default).")]
JudgePartition = Annotated[Optional[str], typer.Option("--judge-partition", help="Slurm partition of the judge "
                                                       "(default: --partition).")]
SlurmArgs = Annotated[str, typer.Option("--slurm-args", help='Extra sbatch flags for every server job, e.g. '
                                        '"--account a --qos q --time 4:00:00 --constraint h200".')]

# The judge server
JudgeModel = Annotated[str, typer.Option("--judge-model", help="Judge model folder or hub id.")]
JudgeGpus = Annotated[Optional[str], typer.Option("--judge-gpus", help="GPU ids for the judge (default: free GPUs).")]
JudgeTp = Annotated[int, typer.Option("--judge-tp", help="Tensor parallel size of the judge.")]
JudgeReplicas = Annotated[int, typer.Option("--judge-replicas", help="Judge servers on disjoint GPU groups, "
                                            "behind a proxy.")]
JudgePort = Annotated[Optional[int], typer.Option("--judge-port", help="Port of the judge (default: a free one).")]
JudgeServerArgs = Annotated[str, typer.Option("--judge-server-args", help="Extra LMDeploy flags for the judge.")]
JudgerServer = Annotated[Optional[str], typer.Option("--judger-server", help="Use this running judge server instead "
                                                     "of starting one: the judge's --api-server, named as in "
                                                     "LMDeploy's evaluation guide.")]
JudgerKey = Annotated[Optional[str], typer.Option("--judger-key", envvar=defaults.JUDGER_KEY_ENV, show_default=False,
                                                  help="API key of --judger-server, the judge's (better: the "
                                                  "environment variable or --judger-key-file).")]
JudgerKeyFile = Annotated[Optional[Path], typer.Option("--judger-key-file", help="File whose first line is the key "
                                                       "of --judger-server.")]

ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="A defaults file (TOML) for what a team sets "
                                                   "once; default: WORK_DIR/lmeval.toml if there is one. Options "
                                                   "given here win.")]

# Trackers (lmeval.tracking)
LogTo = Annotated[Optional[list[str]], typer.Option(
    "--log-to", metavar="mlflow|wandb", help="Also log the scores to MLflow or Weights & Biases (repeatable), "
    "configured by their usual variables (MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME; WANDB_PROJECT, "
    "WANDB_ENTITY, WANDB_MODE). Needs `pip install \"lmeval[mlflow]\"` or `\"lmeval[wandb]\"`. A tracker that "
    "fails costs nothing: the warning gives the `lmeval log` line that retries it.")]
Step = Annotated[Optional[int], typer.Option(
    "--step", min=0, metavar="N", help=f"The checkpoint's training step, where its scores go on the curve "
    f"(default: read from the model folder's name: {STEP_FORMS}).")]
LogRunId = Annotated[Optional[str], typer.Option(
    "--log-run-id", help="Log into this tracker run, e.g. the training run's own (MLflow run id, W&B run id).")]
LogGroup = Annotated[Optional[str], typer.Option(
    "--log-group", help="Log into the tracker run of this name, made on first use: every command naming it adds "
    "its checkpoints to one curve (default: a new tracker run per command; a sweep's checkpoints share it).")]

DEFAULT_WORK_DIR = Path(defaults.WORK_DIR)
