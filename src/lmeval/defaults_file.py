"""A team's defaults, set once: `lmeval.toml` in the work dir, or the file `--config` names.

TOML, read with the standard library, checked with pydantic: an unknown key is refused by its
name. What the command line (or an option's environment variable) gives wins; the file fills in
only what was left at its default. The same file serves every command: each takes the keys it
has options for.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from lmeval.exceptions import UsageError

FILE_NAME = "lmeval.toml"


class DefaultsFile(BaseModel):
    """Every key lmeval.toml takes; each is the option of the same name (`judge_gpus` is
    --judge-gpus)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # executables
    lmdeploy: str | None = None
    opencompass: str | None = None
    # the data folder runs read (lmeval data pull --dest), and the mirror a pull fetches from
    data_dir: str | None = None
    mirror: str | None = None
    # where the runs go (in a --config file only: a work dir's own file cannot move it)
    work_dir: str | None = None
    # servers
    gpus: str | None = None
    tp: int | None = None
    host: str | None = None
    server_args: str | None = None
    judge_model: str | None = None
    judge_gpus: str | None = None
    judge_tp: int | None = None
    judge_replicas: int | None = None
    judge_server_args: str | None = None
    launcher: Literal["local", "slurm"] | None = None
    partition: str | None = None
    judge_partition: str | None = None
    slurm_args: str | None = None
    ready_timeout: float | None = None
    grace: float | None = None
    restarts: int | None = None
    stall_timeout: float | None = None
    stream: bool | None = None
    fork_server: bool | None = None
    # trackers the scores are logged to (--log-to), and the tracker run they extend (--log-group)
    log_to: list[Literal["mlflow", "wandb"]] | None = None
    log_group: str | None = None
    # generation
    temperature: float | None = None
    max_out_len: int | None = None
    max_seq_len: int | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    extra_body: dict[str, Any] | None = None  # a TOML table; --extra-body takes the same as JSON


def find(config: Path | None, work_dir: Path) -> Path | None:
    """The defaults file of a command: --config FILE (which must exist), else WORK_DIR/lmeval.toml
    if there is one."""
    if config is not None:
        if not config.expanduser().is_file():
            raise UsageError(f"--config {config}: no such file")
        return config.expanduser().absolute()
    candidate = work_dir.expanduser() / FILE_NAME
    return candidate.absolute() if candidate.is_file() else None


def load(path: Path, named: bool) -> dict[str, Any]:
    """The keys PATH sets, checked; NAMED: given as --config (so it may set work_dir)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeError) as error:
        raise UsageError(f"{path} is not valid TOML: {error}") from None
    try:
        values = DefaultsFile.model_validate(data).model_dump(exclude_none=True)
    except ValidationError as error:
        problem = error.errors()[0]
        key = ".".join(str(part) for part in problem["loc"])
        if problem["type"] == "extra_forbidden":
            raise UsageError(f"{path}: unknown key {key!r}; it takes: {', '.join(DefaultsFile.model_fields)}") from None
        raise UsageError(f"{path}: {key}: {problem['msg']}") from None
    if "work_dir" in values and not named:
        raise UsageError(f"{path}: work_dir cannot be set in a work dir's own {FILE_NAME}; put it in a file "
                         "you pass with --config")
    if "extra_body" in values:
        values["extra_body"] = json.dumps(values["extra_body"])
    return values


def apply(values: dict[str, Any], given: set[str], config: Path | None) -> tuple[dict[str, Any], dict[str, str]]:
    """VALUES (a command's options) with what its defaults file sets for the options not in
    GIVEN; and where each option's value came from (`command line`, the file, `default`)."""
    path = find(config, Path(values.get("work_dir") or "outputs"))
    from_file = load(path, named=config is not None) if path else {}
    merged, sources = dict(values), {}
    for name in values:
        if name in given:
            sources[name] = "command line"
        elif name in from_file:
            merged[name] = from_file[name]
            sources[name] = str(path)
        else:
            sources[name] = "default"
    return merged, sources


def given_options(ctx) -> set[str]:
    """The options of the command ctx runs that the user gave (on the command line, or through
    an option's environment variable), as opposed to left at their defaults."""
    return {name for name in ctx.params
            if (source := ctx.get_parameter_source(name)) is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")}
