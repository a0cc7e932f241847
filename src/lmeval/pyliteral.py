"""Python source for the configs' values. Every string taken from outside (names, paths, URLs,
the key) is written by `py_str`, which escapes everything but plain printable ASCII and never
writes `{`, `}`, quotes or backslashes literally. A config thus holds no `{` at all, so
mmengine's `{{ ... }}` substitutions (run on the raw text of non-lazy configs) can never fire,
and no input can end a literal early. OpenCompass itself, though, dumps the loaded config with
`repr()` and reloads it with that substitution on, for the run and again for every task: a
string holding `{{` would be rewritten there, so such strings are refused (check_plan)."""

from __future__ import annotations

import keyword
from dataclasses import dataclass
from typing import Any

_LITERAL = frozenset(chr(code) for code in range(0x20, 0x7F)) - set("'\\{}")


def py_str(value: str) -> str:
    """A single-quoted Python literal for VALUE, exact for any str (lone surrogates included).

    Only printable ASCII other than quote, backslash and braces is written as itself; all else
    as \\xNN, \\uNNNN or \\UNNNNNNNN. No newline, no quote that ends it, no `{` ever appears.
    """
    out = ["'"]
    for char in value:
        if char in _LITERAL:
            out.append(char)
            continue
        code = ord(char)
        if code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append("'")
    return "".join(out)


@dataclass(frozen=True)
class Code:
    """Python written as is: a name the config imports or defines."""

    text: str


INDENT = "    "


def py_value(value: Any, level: int = 0) -> str:
    """Python source for VALUE: dict (written `dict(key=...)`, or `dict([(key, ...)])` for keys
    that are no identifiers), list, str, int, float, bool, None and Code. Multi-line strings are
    split into adjacent literals."""
    pad, inner = INDENT * level, INDENT * (level + 1)
    if isinstance(value, Code):
        return value.text
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, (int, float)):
        text = repr(value)
        if text in ("inf", "-inf", "nan"):
            raise ValueError(f"not a finite number: {value}")
        return text
    if isinstance(value, str):
        lines = value.splitlines(keepends=True)
        if len(lines) <= 1:
            return py_str(value)
        return "(\n" + "".join(f"{inner}{py_str(line)}\n" for line in lines) + pad + ")"
    if isinstance(value, dict):
        if not value:
            return "dict()"
        if not all(isinstance(key, str) for key in value):
            raise ValueError(f"dict keys must be strings: {list(value)!r}")
        if all(key.isidentifier() and not keyword.iskeyword(key) for key in value):
            items = "".join(f"{inner}{key}={py_value(item, level + 1)},\n" for key, item in value.items())
            return "dict(\n" + items + pad + ")"
        # Keys that are no identifiers (a request body's "top-k"): pairs, still without a brace.
        pairs = "".join(f"{inner}({py_str(key)}, {py_value(item, level + 1)}),\n" for key, item in value.items())
        return "dict([\n" + pairs + pad + "])"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        items = "".join(f"{inner}{py_value(item, level + 1)},\n" for item in value)
        return "[\n" + items + pad + "]"
    raise TypeError(f"cannot write {type(value).__name__} into a config")
