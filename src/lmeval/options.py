"""What the user asked `lmeval run`, `infer` or `judge` for, as one value."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr

from lmeval import defaults
from lmeval.exceptions import UsageError


class EvalOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str | None = None
    task: str | None = None
    datasets: str | None = None
    dataset_files: tuple[Path, ...] = ()
    data_dir: Path | None = None  # a data folder of lmeval data pull
    name: str | None = None
    work_dir: Path = Path(defaults.WORK_DIR)
    reuse: str | None = None
    redo: bool = False  # with reuse: move outputs of other settings aside instead of refusing
    retry_truncated: bool = False  # with reuse: a new run, re-asking only the answers cut at the old limit
    # the target server
    gpus: str | None = None
    tp: int | None = None
    replicas: int = defaults.REPLICAS
    port: int | None = None
    host: str = defaults.HOST
    server_args: str = ""
    api_server: str | None = None
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    # the judge server
    judge_model: str = defaults.JUDGE_MODEL
    judge_gpus: str | None = None
    judge_tp: int = defaults.JUDGE_TP
    judge_replicas: int = defaults.REPLICAS
    judge_port: int | None = None
    judge_server_args: str = ""
    judger_server: str | None = None
    judger_key: SecretStr | None = None
    judger_key_file: Path | None = None
    # generation overrides (None: LMDeploy's template)
    temperature: float | None = None
    max_out_len: int | None = None
    max_seq_len: int | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    extra_body: str | None = None  # a JSON object, checked by the plan
    # where the servers run
    launcher: str = defaults.LAUNCHER
    partition: str | None = None
    judge_partition: str | None = None
    slurm_args: str = ""
    # tools and timing
    lmdeploy: str | None = None
    opencompass: str | None = None
    ready_timeout: float = defaults.READY_TIMEOUT
    grace: float = defaults.GRACE
    restarts: int = defaults.RESTARTS
    stall_timeout: float = defaults.STALL_TIMEOUT
    stream: bool = True
    fork_server: bool = False
    dry_run: bool = False
    # trackers (lmeval.tracking)
    log_to: tuple[str, ...] = ()
    step: int | None = None
    log_run_id: str | None = None
    log_group: str | None = None

    def target_key(self) -> SecretStr | None:
        """The key of --api-server: from --api-key (or LMEVAL_API_KEY), or --api-key-file."""
        return given_key(self.api_key, self.api_key_file, "--api-key")

    def judge_key(self) -> SecretStr | None:
        """The key of --judger-server: from --judger-key (or LMEVAL_JUDGER_KEY), or --judger-key-file."""
        return given_key(self.judger_key, self.judger_key_file, "--judger-key")


def given_key(key: SecretStr | None, key_file: Path | None, option: str) -> SecretStr | None:
    """A key given as a value or in a file (its first line), never both. A file keeps the key
    out of `ps` and shell history, as the environment variable does."""
    if key_file is None:
        return key
    if key is not None:
        raise UsageError(f"{option} and {option}-file both give a key; give one")
    try:
        text = key_file.expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise UsageError(f"{option}-file {key_file}: cannot read it ({reason})") from None
    lines = text.splitlines()
    value = lines[0].strip() if lines else ""
    if not value:
        raise UsageError(f"{option}-file {key_file} is empty; put the key on its first line")
    return SecretStr(value)
