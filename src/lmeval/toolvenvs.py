"""The two tool venvs lmeval drives, made by `lmeval setup` with uv under $LMEVAL_HOME, and
recorded in $LMEVAL_HOME/tools.json so lmeval finds their executables by itself.

Each venv is made from a recipe: uv steps run in order, with the pins that really work. A venv
whose recorded recipe is the one asked for, and whose executable is there, is left alone, so a
second `lmeval setup` does nothing. uv reads its own settings (UV_INDEX_URL,
UV_EXTRA_INDEX_URL, UV_FIND_LINKS, ...), not pip's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lmeval.exceptions import StageFailed, UsageError
from lmeval.files import write_private

HOME_ENV = "LMEVAL_HOME"
TOOLS_FILE = "tools.json"
DEFAULT_OPENCOMPASS = "0.5.4"
DEFAULT_LMDEPLOY = "0.18.0"
TORCH = "torch==2.13.0"  # first, in a step of its own: else the resolver may take another (CUDA) build
# What lmdeploy's own code needs for `serve proxy` and its argument parser, without its GPU stack.
LMDEPLOY_CPU_DEPS = ("transformers", "mmengine", "tqdm", "psutil", "pybase64", "fastapi", "uvicorn", "aiohttp",
                     "pydantic", "requests", "shortuuid", "pyyaml")
# What must import in each venv for lmeval to use it (OpenCompass 0.5.4 with a NumPy 2 pyarrow
# dies right here).
IMPORT_CHECKS = {"opencompass": "import opencompass, datasets; from opencompass.models import OpenAISDK",
                 "lmdeploy": "import lmdeploy; from lmdeploy.cli.cli import CLI"}


def lmeval_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".local" / "share" / "lmeval").expanduser().absolute()


@dataclass(frozen=True)
class Recipe:
    """How one tool's venv is made: the steps of `uv pip install` arguments, in order."""

    tool: str  # the executable's name, also the venv's folder name
    version: str
    build: str  # what kind of build, for the user: "cpu", "gpu", "full"
    steps: tuple[tuple[str, ...], ...]


def opencompass_recipe(version: str = DEFAULT_OPENCOMPASS, extras: str | None = None) -> Recipe:
    package = f"opencompass[{extras}]=={version}" if extras else f"opencompass=={version}"
    # pyarrow 21 needs NumPy 2, which OpenCompass pins below: `import datasets` fails with it.
    # datasets 3.6 is what pip resolves and what lmeval is tested with; uv's resolver, taking the
    # newest fsspec first, would settle on datasets 2.14.
    return Recipe("opencompass", version, extras or "cpu torch",
                  ((TORCH,), (TORCH, package, "pyarrow<21", "datasets>=3.6,<4")))


def lmdeploy_recipe(version: str = DEFAULT_LMDEPLOY, cpu: bool = False) -> Recipe:
    if cpu:
        return Recipe("lmdeploy", version, "cpu: proxy and parser only",
                      ((TORCH,), ("--no-deps", f"lmdeploy=={version}"), (TORCH, *LMDEPLOY_CPU_DEPS)))
    return Recipe("lmdeploy", version, "gpu", ((f"lmdeploy=={version}",),))


@dataclass(frozen=True)
class Made:
    """A tool venv as tools.json records it."""

    tool: str
    version: str
    build: str
    venv: Path
    executable: Path
    steps: tuple[tuple[str, ...], ...]

    def record(self) -> dict:
        return {"version": self.version, "build": self.build, "venv": str(self.venv),
                "executable": str(self.executable), "steps": [list(step) for step in self.steps]}


def recorded(home: Path | None = None) -> dict[str, Made]:
    """What tools.json says lmeval setup made; an unreadable file is a clear error."""
    path = (home or lmeval_home()) / TOOLS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise UsageError(f"{path} is unreadable ({type(error).__name__}); run `lmeval setup` again") from None
    made = {}
    for tool, entry in data.get("tools", {}).items():
        try:
            made[tool] = Made(tool, entry["version"], entry["build"], Path(entry["venv"]), Path(entry["executable"]),
                              tuple(tuple(step) for step in entry["steps"]))
        except (KeyError, TypeError):
            raise UsageError(f"{path} has a broken entry for {tool}; run `lmeval setup` again") from None
    return made


def recorded_executable(tool: str) -> Path | None:
    """The executable lmeval setup made for TOOL, if it made one and it is still there."""
    made = recorded().get(tool)
    return made.executable if made and made.executable.is_file() else None


def uv_binary() -> str:
    """uv from lmeval's own dependencies (the `uv` package), else from PATH."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise UsageError("uv is not installed; `pip install uv` (lmeval depends on it) and run lmeval setup "
                             "again") from None
        return found


def import_problem(python: Path, tool: str) -> str | None:
    """The last line of the error when TOOL's modules do not import in the venv of PYTHON."""
    try:
        done = subprocess.run([str(python), "-c", IMPORT_CHECKS[tool]], capture_output=True, text=True,
                              timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{type(error).__name__}: {error}"
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {done.returncode}"


def make(recipe: Recipe, home: Path, python: str, notify) -> tuple[Made, bool]:
    """TOOL's venv as RECIPE says, made (True) or found made already (False)."""
    venv = home / recipe.tool
    executable = venv / "bin" / recipe.tool
    made = recorded(home).get(recipe.tool)
    if made and (made.build, made.steps) == (recipe.build, recipe.steps) and made.executable.is_file():
        return made, False
    uv = uv_binary()
    began = time.monotonic()
    notify(f"making the {recipe.tool} {recipe.version} venv ({recipe.build}) in {venv}")
    if venv.exists():
        shutil.rmtree(venv)
    _uv(uv, ["venv", "--quiet", "--python", python, str(venv)], recipe.tool)
    for step in recipe.steps:
        # Bytecode now: where PYTHONDONTWRITEBYTECODE is set, every start would compile it again
        # (OpenCompass's imports took 20 s instead of 4).
        _uv(uv, ["pip", "install", "--quiet", "--compile-bytecode", "--python", str(venv / "bin" / "python"), *step],
            recipe.tool)
    if not executable.is_file():
        raise StageFailed(f"the {recipe.tool} venv in {venv} has no {executable.name} executable")
    problem = import_problem(venv / "bin" / "python", recipe.tool)
    if problem:
        raise StageFailed(f"{recipe.tool} was installed in {venv} but does not import: {problem}")
    made = Made(recipe.tool, recipe.version, recipe.build, venv, executable, recipe.steps)
    _record(home, made)
    notify(f"{recipe.tool} {recipe.version} ready in {time.monotonic() - began:.0f} s: {executable}")
    return made, True


def _uv(uv: str, args: list[str], tool: str) -> None:
    done = subprocess.run([uv, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise StageFailed(f"making the {tool} venv failed at `uv {' '.join(args[:2])} ... {' '.join(args[-3:])}`: "
                          f"{lines[-1] if lines else f'exit code {done.returncode}'}", "\n".join(lines[-20:]))


def _record(home: Path, made: Made) -> None:
    tools = {name: entry.record() for name, entry in recorded(home).items()}
    tools[made.tool] = made.record()
    write_private(home / TOOLS_FILE, json.dumps({"tools": tools}, indent=2) + "\n")


def default_python() -> str:
    """The interpreter the tool venvs are made from: the one lmeval runs on (its base, not its venv)."""
    return getattr(sys, "_base_executable", None) or sys.executable
