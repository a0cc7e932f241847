"""Finding the LMDeploy and OpenCompass executables, each living in its own venv (made by
`lmeval setup`, or by the user)."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from lmeval.exceptions import UsageError


@dataclass(frozen=True)
class Tool:
    """An external program lmeval drives, and how the user points lmeval at it."""

    name: str  # executable name on PATH, also the distribution name
    option: str
    env_var: str


LMDEPLOY = Tool("lmdeploy", "--lmdeploy", "LMEVAL_LMDEPLOY")
OPENCOMPASS = Tool("opencompass", "--opencompass", "LMEVAL_OPENCOMPASS")


def find_executable(tool: Tool, given: str | None) -> Path:
    """Resolve the option, else the environment variable, else what `lmeval setup` made, else
    PATH; refuse what cannot run."""
    from lmeval.toolvenvs import recorded_executable

    raw = given or os.environ.get(tool.env_var)
    if raw is None and (made := recorded_executable(tool.name)) is not None:
        raw = str(made)
    raw = raw or tool.name
    found = shutil.which(raw) if os.sep not in raw else raw
    path = Path(found) if found else None
    if path is None or not path.is_file() or not os.access(path, os.X_OK):
        raise UsageError(
            f"{tool.name} executable not found or not executable: {raw}; "
            f"run `lmeval setup`, or pass {tool.option} PATH or set {tool.env_var}"
        )
    return path.absolute()


def installed_version(executable: Path, distribution: str) -> str:
    """The version of DISTRIBUTION in the venv EXECUTABLE lives in, read from its metadata.

    Reading the dist-info folder name costs nothing, where asking the tool itself
    (`opencompass --version`) takes seconds of imports.
    """
    venv = executable.resolve().parent.parent if executable.is_symlink() else executable.parent.parent
    pattern = re.compile(rf"^{re.escape(distribution)}-([^-]+)\.dist-info$", re.IGNORECASE)
    for site in sorted(venv.glob("lib/python*/site-packages")):
        for entry in site.iterdir():
            match = pattern.match(entry.name)
            if match:
                return match.group(1)
    return "unknown"
