"""The user's own dataset files (`--dataset FILE.jsonl`), checked in full before anything starts.

OpenCompass reads them with `opencompass.datasets.CustomDataset`, which does
`json.loads(line) for line in open(path, encoding='utf-8-sig')` and hands the rows to
`datasets.Dataset.from_list` (Arrow). Any line it cannot read, or a column Arrow cannot type,
would crash the task long after the servers started, and OpenCompass would still exit 0. So
every such case is refused here, naming the file and line.

Two kinds of file, told apart by the first row and then required on every row:

- question/answer (`qa`): `{"question": str, "answer": str}`, scored by the judge model.
- multiple choice (`mc`): `{"question": str, "A": str, "B": str, ..., "answer": "B"}`; the
  option columns are single capital letters, at least two, running from A without a gap, the
  same in every row; the answer is one of them. Scored by rule: no judge.

Other columns are allowed (Arrow keeps the first row's columns), but each must keep one type.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import re
import string
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from lmeval.exceptions import UsageError

SUFFIX = ".jsonl"  # CustomDataset picks its reader by `path.endswith('.jsonl')`
LETTERS = string.ascii_uppercase
MIN_OPTIONS = 2
# Columns OpenCompass adds itself: the judge evaluator calls `add_column` with these names and
# fails when the file already has them.
RESERVED_COLUMNS = ("prediction", "obj_gold", "reference")
_INT64 = (-(2**63), 2**63 - 1)
_NEWLINES = re.compile(rb"\r\n|\r|\n")

Kind = Literal["qa", "mc"]


class UserDataset(BaseModel):
    """One checked dataset file. `name` (the file's stem) is its name in OpenCompass's results."""

    model_config = ConfigDict(frozen=True)

    path: str  # absolute; CustomDataset uses an absolute path as is
    name: str
    kind: Kind
    options: tuple[str, ...] = ()  # the option letters of a multiple-choice file, e.g. ("A", "B", "C")
    rows: int = 0

    @property
    def needs_judge(self) -> bool:
        return self.kind == "qa"


def load_user_dataset(path: str | os.PathLike[str]) -> UserDataset:
    """Check one `--dataset` file in full; raise UsageError naming the file (and line) at fault."""
    file = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    shown = str(file)
    if not file.name.endswith(SUFFIX):
        raise UsageError(f"dataset file must end in {SUFFIX}: {shown}")
    if "\0" in shown or not file.exists():
        raise UsageError(f"dataset file not found: {shown}")
    if not file.is_file():
        raise UsageError(f"dataset file is not a regular file: {shown}")
    name = file.name[: -len(SUFFIX)]
    if not name:
        raise UsageError(f"dataset file needs a name before {SUFFIX}: {shown}")

    try:
        data = file.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read dataset file {shown}: {error.strerror or error}") from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = len(_NEWLINES.split(data[: error.start]))
        raise UsageError(f"{shown}:{line}: not valid UTF-8 ({error.reason})") from None

    checker: _RowChecker | None = None
    count = 0
    # Lines as CustomDataset sees them: `open(path, encoding='utf-8-sig')` iterated in text mode,
    # i.e. universal newlines (\r\n, \r and \n end a line).
    for count, line in enumerate(io.StringIO(text, newline=None), start=1):  # noqa: B007 - count kept
        row = _parse_line(line, f"{shown}:{count}")
        if checker is None:
            checker = _RowChecker.from_first_row(row, shown)
        checker.check(row, count)
    if checker is None:
        raise UsageError(f"dataset file is empty: {shown}")
    return UserDataset(path=shown, name=name, kind=checker.kind, options=checker.options, rows=count)


def _parse_line(line: str, where: str) -> dict[str, Any]:
    if not line.strip():
        raise UsageError(f"{where}: blank line; every line must hold one JSON object")
    try:
        row = json.loads(line)
    except ValueError as error:
        message = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
        raise UsageError(f"{where}: not valid JSON ({message})") from None
    if not isinstance(row, dict):
        raise UsageError(f"{where}: expected a JSON object, got {_json_type(row)}")
    return row


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _is_option(key: str) -> bool:
    return len(key) == 1 and key in LETTERS


def _span(letters: tuple[str, ...]) -> str:
    return f"{letters[0]}-{letters[-1]}"


class _RowChecker:
    """The rules the first row sets, applied to every row (the first included)."""

    def __init__(self, file: str, kind: Kind, options: tuple[str, ...]) -> None:
        self.file = file
        self.kind: Kind = kind
        self.options = options
        self.columns: dict[str, tuple[Any, int]] = {}  # first-row column -> (type, line it was set)

    @classmethod
    def from_first_row(cls, row: dict[str, Any], file: str) -> _RowChecker:
        letters = tuple(sorted(key for key in row if _is_option(key)))
        if not letters:
            return cls(file, "qa", ())
        expected = tuple(LETTERS[: len(letters)])
        if letters != expected:
            gap = next(letter for letter in expected if letter not in letters)
            raise UsageError(
                f"{file}:1: option columns must run from A without a gap; "
                f"found {', '.join(letters)} (no {gap})"
            )
        if len(letters) < MIN_OPTIONS:
            raise UsageError(f"{file}:1: a multiple-choice row needs at least options A and B; found only A")
        return cls(file, "mc", letters)

    def check(self, row: dict[str, Any], line: int) -> None:
        where = f"{self.file}:{line}"
        for column in RESERVED_COLUMNS:
            if column in row:
                raise UsageError(f"{where}: column {column!r} is reserved by OpenCompass; rename it")
        self._text(row, "question", where)
        if self.kind == "qa":
            extra = sorted(key for key in row if _is_option(key))
            if extra:
                raise UsageError(
                    f"{where}: has option column(s) {', '.join(extra)}, but line 1 is a question/answer "
                    "row; a file holds one kind of row"
                )
            self._text(row, "answer", where)
        else:
            for letter in self.options:
                if letter not in row:
                    raise UsageError(
                        f"{where}: missing column {letter!r} (line 1 has options {_span(self.options)})"
                    )
                self._text(row, letter, where)
            extra = sorted(key for key in row if _is_option(key) and key not in self.options)
            if extra:
                raise UsageError(
                    f"{where}: column {extra[0]!r} is not an option of line 1 ({_span(self.options)}); "
                    "every row must have the same options"
                )
            answer = self._text(row, "answer", where)
            if answer not in self.options:
                raise UsageError(
                    f"{where}: answer {answer!r} is not one of the options {', '.join(self.options)}"
                )
        self._types(row, line, where)

    def _text(self, row: dict[str, Any], column: str, where: str) -> str:
        if column not in row:
            raise UsageError(f"{where}: missing column {column!r}")
        value = row[column]
        if not isinstance(value, str):
            raise UsageError(f"{where}: column {column!r} must be a string, got {_json_type(value)}")
        if not value.strip():
            raise UsageError(f"{where}: column {column!r} is empty")
        return value

    def _types(self, row: dict[str, Any], line: int, where: str) -> None:
        """Arrow gives each column one type, from all rows: refuse what it would refuse."""
        first_row = not self.columns
        for column, value in row.items():
            if not first_row and column not in self.columns:
                continue  # Arrow keeps the first row's columns only; later extras are dropped
            try:
                signature = _signature(value)
                seen, seen_line = self.columns.get(column, (None, line))
                merged = _merge(seen, signature)
            except _Mismatch as error:
                detail = f" (first seen on line {seen_line})" if column in self.columns else ""
                raise UsageError(
                    f"{where}: column {column!r}: {error}{detail}; OpenCompass (Arrow) needs one type per column"
                ) from None
            self.columns[column] = (merged, seen_line)


class _Mismatch(Exception):
    pass


_NUMBER = ("int", "float")


def _signature(value: Any) -> Any:
    """The Arrow type a JSON value asks for: None (null: fits anything), a scalar name,
    ('list', element) or ('object', {key: signature})."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise _Mismatch(f"integer {value} does not fit in 64 bits")
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        element = None
        for item in value:
            element = _merge(element, _signature(item))
        return ("list", element)
    return ("object", {key: _signature(item) for key, item in value.items()})


_NAMES = {"bool": "a boolean", "int": "a number", "float": "a number", "string": "a string"}


def _describe(signature: Any) -> str:
    if isinstance(signature, tuple):
        return "an array" if signature[0] == "list" else "an object"
    return _NAMES[signature]


def _merge(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    if a in _NUMBER and b in _NUMBER:
        return "float" if "float" in (a, b) else "int"
    if isinstance(a, tuple) and isinstance(b, tuple) and a[0] == b[0]:
        if a[0] == "list":
            return ("list", _merge(a[1], b[1]))
        fields = dict(a[1])
        for key, value in b[1].items():
            fields[key] = _merge(fields.get(key), value)
        return ("object", fields)
    if a == b:
        return a
    raise _Mismatch(f"holds {_describe(b)} where {_describe(a)} was seen before")


_STEM_SHARD = re.compile(r"^(?P<base>.+)_(?:\d+|replica\d+)$")


def shadowed_name(name: str, others: set[str]) -> str | None:
    """The other dataset whose OpenCompass files NAME's would be mistaken for, if any.

    OpenCompass reads `predictions/{m}/{d}_0.json` as a shard of dataset d when `{d}.json` is
    missing, and writes judge details to `results/{m}/{d}_replica{k}.json`: a dataset named
    `x_0` or `x_replica0` next to a dataset `x` would mix their files.
    """
    match = _STEM_SHARD.match(name)
    if match and match.group("base") in others:
        return match.group("base")
    return None
