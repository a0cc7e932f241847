"""What a config is made of: the generation settings, a served model as its clients reach it,
and the plan of one config (datasets, target, judge), checked for what OpenCompass would
mangle before anything starts."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from lmeval.datasets import UserDataset
from lmeval.exceptions import UsageError
from lmeval.suites import DatasetRef, abbrs_of, dataset_abbrs


class Generation(BaseModel):
    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    temperature: float = Field(ge=0)
    max_out_len: int = Field(ge=1)
    max_seq_len: int = Field(ge=1)
    mode: Literal["none", "front", "mid", "rear"]  # how OpenAISDK cuts an over-long prompt
    retry: int = Field(default=10, ge=1)
    # Sampling LMDeploy's server takes beyond OpenAI's (None: the server's default), and any
    # other fields of the request body (e.g. chat_template_kwargs for reasoning models).
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0)
    extra_body: dict[str, Any] | None = None

    def request_body(self) -> dict[str, Any] | None:
        """What OpenAISDK adds to every request's JSON body (its `extra_body`)."""
        body = {key: value for key in ("top_p", "top_k", "repetition_penalty")
                if (value := getattr(self, key)) is not None}
        body.update(self.extra_body or {})
        return body or None


# LMDeploy's template: the model under test, and CompassVerifier as the judge.
TARGET_GENERATION = Generation(temperature=0.6, max_out_len=64000, max_seq_len=65536, mode="none", retry=10)
JUDGE_GENERATION = Generation(temperature=0.001, max_out_len=8192, max_seq_len=65536, mode="mid", retry=10)

# OpenAISDK (0.5.4) switches to OpenAI's reasoning-model request (no temperature, sends
# max_completion_tokens) when any of these is a substring of the served model name.
OPENAI_REASONING_MARKERS = ("o1", "o3", "o4", "gpt-5")


class ServedModel(BaseModel):
    """A model behind an OpenAI-compatible server (LMDeploy api_server or proxy)."""

    model_config = ConfigDict(frozen=True)

    base_url: str  # e.g. http://127.0.0.1:23333, without /v1
    api_key: SecretStr
    served_name: str  # what /v1/models reports; sent as `model` in every request
    tokenizer_path: str  # local model folder OpenAISDK loads its tokenizer from
    in_flight: int = Field(ge=1)  # requests to keep outstanding

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/]", value):
            raise ValueError(f"base_url must start with http:// or https://, got {value!r}")
        if value.rstrip("/").endswith("/v1"):
            raise ValueError(f"base_url must not end in /v1 (it is added): {value!r}")
        return value

    @field_validator("served_name", "tokenizer_path")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @property
    def api_base(self) -> str:
        return self.base_url.rstrip("/") + "/v1"


class ConfigPlan(BaseModel):
    """Everything both configs of one run derive from."""

    model_config = ConfigDict(frozen=True)

    datasets: tuple[DatasetRef, ...] = Field(min_length=1)
    model_abbr: str  # the model's name in OpenCompass's outputs: predictions/{model_abbr}/...
    target: ServedModel
    generation: Generation = TARGET_GENERATION
    judge: ServedModel | None = None  # needed by the eval stage when needs_judge(datasets)
    judge_generation: Generation = JUDGE_GENERATION
    eval_workers: int = Field(default=4, ge=1)  # eval tasks (datasets) scored at once
    # Only these of the datasets' names (a streamed evaluation's, or the datasets inferred when
    # others failed); None: all of them. A group is then cut to its members among them.
    only: tuple[str, ...] | None = None
    # Tasks forked from their OpenCompass process (LmevalLocalRunner), not each a new Python.
    forked_tasks: bool = False
    # Where the model's class records what each answer says beyond its text (lmeval.answers).
    answers_log: str | None = None

    @property
    def abbrs(self) -> list[str]:
        """The names of the datasets the configs hold, in config order."""
        return [abbr for abbr in dataset_abbrs(self.datasets) if self.only is None or abbr in self.only]

    def selected(self, item: DatasetRef) -> tuple[str, ...]:
        return tuple(abbr for abbr in abbrs_of(item) if self.only is None or abbr in self.only)

    @property
    def whole(self) -> list[DatasetRef]:
        """The datasets held with all their members (only they get their summary rows)."""
        return [item for item in self.datasets if self.selected(item) == abbrs_of(item)]

    @property
    def judged(self) -> list[str]:
        """The names of the datasets held that the judge scores."""
        return [abbr for item in self.datasets if item.needs_judge for abbr in self.selected(item)]


def check_plan(plan: ConfigPlan) -> None:
    """Refuse, as UsageError, what OpenCompass would silently mangle. `render_config` calls it."""
    model_abbr = plan.model_abbr
    if model_abbr in ("", ".", "..") or "/" in model_abbr or "\0" in model_abbr:
        raise UsageError(f"model name {model_abbr!r} must be usable as a folder name "
                         "(OpenCompass writes predictions/NAME/): no '/', not empty, '.' or '..'")
    strings: list[tuple[str, str]] = [("model name", model_abbr)]
    for role, served in (("model", plan.target), ("judge", plan.judge)):
        if served is None:
            continue
        strings += [
            (f"{role} URL", served.base_url),
            (f"{role} served name", served.served_name),
            (f"{role} tokenizer path", served.tokenizer_path),
            (f"{role} API key", served.api_key.get_secret_value()),
        ]
        marker = next((m for m in OPENAI_REASONING_MARKERS if m in served.served_name), None)
        if marker is not None:
            raise UsageError(
                f"{role} served name {served.served_name!r} contains {marker!r}: OpenCompass 0.5.4 then "
                "treats it as an OpenAI reasoning model (drops the temperature, sends "
                "max_completion_tokens); serve it under another name"
            )
    for item in plan.datasets:
        if isinstance(item, UserDataset):
            strings += [("dataset file", item.path), ("dataset name", item.name)]
    strings += [("--extra-body", text) for text in _strings_in(plan.generation.extra_body)]
    for what, value in strings:
        if "{{" in value:
            shown = "(hidden)" if what.endswith("API key") else repr(value)
            raise UsageError(
                f"{what} {shown} contains '{{{{': OpenCompass re-reads its config through mmengine, "
                "which rewrites '{{ ... }}' in it; rename it"
            )


def _strings_in(value: Any) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in (key, *_strings_in(item))]
    if isinstance(value, list):
        return [text for item in value for text in _strings_in(item)]
    return []
