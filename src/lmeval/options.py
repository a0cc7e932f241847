"""What the user asked `lmeval run`, `infer` or `judge` for, as one value."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr

DEFAULT_JUDGE_MODEL = "opencompass/CompassVerifier-32B"


class EvalOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str | None = None
    task: str | None = None
    datasets: str | None = None
    dataset_files: tuple[Path, ...] = ()
    name: str | None = None
    work_dir: Path = Path("outputs")
    reuse: str | None = None
    redo: bool = False  # with reuse: move outputs of other settings aside instead of refusing
    # the target server
    gpus: str | None = None
    tp: int | None = None
    replicas: int = 1
    port: int | None = None
    host: str = "127.0.0.1"
    server_args: str = ""
    api_server: str | None = None
    api_key: SecretStr | None = None
    # the judge server
    judge_model: str = DEFAULT_JUDGE_MODEL
    judge_gpus: str | None = None
    judge_tp: int = 2
    judge_replicas: int = 1
    judge_port: int | None = None
    judge_server_args: str = ""
    judger_server: str | None = None
    judger_key: SecretStr | None = None
    # generation overrides (None: LMDeploy's template)
    temperature: float | None = None
    max_out_len: int | None = None
    max_seq_len: int | None = None
    # tools and timing
    lmdeploy: str | None = None
    opencompass: str | None = None
    ready_timeout: float = 1800.0
    grace: float = 10.0
    dry_run: bool = False
