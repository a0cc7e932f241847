"""The two tool venvs lmeval drives, made by `lmeval setup` with uv under $LMEVAL_HOME, and
recorded in $LMEVAL_HOME/tools.json so lmeval finds their executables by itself.

Each venv is made from a recipe: uv steps run in order, with the pins that really work, then
lmeval's own finishing steps. A venv whose recorded recipe is the one asked for, and whose
executable is there, is left alone, so a second `lmeval setup` does nothing. uv reads its own
settings (UV_INDEX_URL, UV_EXTRA_INDEX_URL, UV_FIND_LINKS, ...), not pip's.

OpenCompass's venv is made complete for the chat suite, so that its datasets are the only thing
a run may lack (each of these left OpenCompass crashing, or scoring 0.00 without a word):
- langdetect, which IFEval's language checks import (only `opencompass[full]` pulls it in);
- NLTK's punkt_tab, which IFEval's sentence counts load, in VENV/nltk_data where NLTK looks
  (`sys.prefix`), so that nothing is downloaded at run time. NLTK's own downloader reads GitHub,
  which clusters and this project's test machines cannot reach; the same files come in the wheel
  of llama-index-core, from the package index that setup uses anyway;
- a `pyext` for LiveCodeBench's code runner (lmeval/opencompass_extras/pyext.py, as the wheel
  lmeval-pyext): pyext 0.7 cannot be installed on Python 3.11+, which lmeval requires.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lmeval.exceptions import StageFailed, UsageError
from lmeval.files import write_private

HOME_ENV = "LMEVAL_HOME"
TOOLS_FILE = "tools.json"
DEFAULT_OPENCOMPASS = "0.5.4"
DEFAULT_LMDEPLOY = "0.18.0"
TORCH = "torch==2.13.0"  # first, in a step of its own: else the resolver may take another (CUDA) build
LANGDETECT = "langdetect==1.0.9"  # IFEval's language checks
PUNKT_TAB_WHEEL = "llama-index-core==0.14.25"  # its wheel holds NLTK's punkt_tab, as NLTK distributes it
PUNKT_TAB_IN_WHEEL = "llama_index/core/_static/nltk_cache/tokenizers/punkt_tab"
PYEXT_SOURCE = Path(__file__).parent / "opencompass_extras" / "pyext.py"
PYEXT_WHEEL = "lmeval_pyext-0.7-py3-none-any.whl"
# What lmdeploy's own code needs for `serve proxy` and its argument parser, without its GPU stack.
LMDEPLOY_CPU_DEPS = ("transformers", "mmengine", "tqdm", "psutil", "pybase64", "fastapi", "uvicorn", "aiohttp",
                     "pydantic", "requests", "shortuuid", "pyyaml")
# What must import in each venv for lmeval to use it (OpenCompass 0.5.4 with a NumPy 2 pyarrow
# dies right here).
IMPORT_CHECKS = {"opencompass": "import opencompass, datasets; from opencompass.models import OpenAISDK; "
                               "from opencompass.datasets.livecodebench import testing_util; "
                               "assert testing_util.RuntimeModule, 'no pyext for the LiveCodeBench runner'",
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
    finish: tuple[str, ...] = ()  # lmeval's own steps after uv's (FINISHING_STEPS), in order


def opencompass_recipe(version: str = DEFAULT_OPENCOMPASS, extras: str | None = None) -> Recipe:
    package = f"opencompass[{extras}]=={version}" if extras else f"opencompass=={version}"
    # pyarrow 21 needs NumPy 2, which OpenCompass pins below: `import datasets` fails with it.
    # datasets 3.6 is what pip resolves and what lmeval is tested with; uv's resolver, taking the
    # newest fsspec first, would settle on datasets 2.14.
    return Recipe("opencompass", version, extras or "cpu torch",
                  ((TORCH,), (TORCH, package, "pyarrow<21", "datasets>=3.6,<4", LANGDETECT)),
                  ("pyext", "punkt_tab"))


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
    finish: tuple[str, ...] = ()

    def record(self) -> dict:
        return {"version": self.version, "build": self.build, "venv": str(self.venv),
                "executable": str(self.executable), "steps": [list(step) for step in self.steps],
                "finish": list(self.finish)}


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
                              tuple(tuple(step) for step in entry["steps"]), tuple(entry.get("finish", ())))
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
    if made and (made.build, made.steps, made.finish) == (recipe.build, recipe.steps, recipe.finish) \
            and made.executable.is_file():
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
    for name in recipe.finish:
        FINISHING_STEPS[name](uv, venv)
    if not executable.is_file():
        raise StageFailed(f"the {recipe.tool} venv in {venv} has no {executable.name} executable")
    problem = import_problem(venv / "bin" / "python", recipe.tool)
    if problem:
        raise StageFailed(f"{recipe.tool} was installed in {venv} but does not import: {problem}")
    made = Made(recipe.tool, recipe.version, recipe.build, venv, executable, recipe.steps, recipe.finish)
    _record(home, made)
    notify(f"{recipe.tool} {recipe.version} ready in {time.monotonic() - began:.0f} s: {executable}")
    return made, True


def _uv(uv: str, args: list[str], tool: str) -> None:
    done = subprocess.run([uv, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise StageFailed(f"making the {tool} venv failed at `uv {' '.join(args[:2])} ... {' '.join(args[-3:])}`: "
                          f"{lines[-1] if lines else f'exit code {done.returncode}'}", "\n".join(lines[-20:]))


def install_pyext(uv: str, venv: Path) -> None:
    """lmeval's pyext (opencompass_extras/pyext.py) into VENV, as a wheel uv installs and lists."""
    with tempfile.TemporaryDirectory(prefix="lmeval-pyext-") as folder:
        wheel = Path(folder) / PYEXT_WHEEL
        write_wheel(wheel, "lmeval-pyext", "0.7", {"pyext.py": PYEXT_SOURCE.read_bytes()},
                    "pyext.RuntimeModule for Python 3.11+, as OpenCompass's LiveCodeBench runner uses it (from lmeval)")
        _uv(uv, ["pip", "install", "--quiet", "--compile-bytecode", "--python", str(venv / "bin" / "python"),
                 str(wheel)], "opencompass")


def write_wheel(path: Path, name: str, version: str, files: dict[str, bytes], summary: str) -> None:
    """A pure-Python wheel of FILES (top-level modules) at PATH: the smallest one installers accept."""
    def digest(data: bytes) -> str:
        return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    info = f"{name.replace('-', '_')}-{version}.dist-info"
    entries = dict(files)
    entries[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {summary}\n".encode()
    entries[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: lmeval\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = "".join(f"{entry},{digest(data)},{len(data)}\n" for entry, data in entries.items()) + f"{info}/RECORD,,\n"
    entries[f"{info}/RECORD"] = record.encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for entry, data in entries.items():
            wheel.writestr(zipfile.ZipInfo(entry, date_time=(2020, 1, 1, 0, 0, 0)), data)


def install_punkt_tab(uv: str, venv: Path) -> None:
    """NLTK's punkt_tab into VENV/nltk_data, where NLTK looks inside a venv, from PUNKT_TAB_WHEEL."""
    with tempfile.TemporaryDirectory(prefix="lmeval-punkt-") as folder:
        _uv(uv, ["pip", "install", "--quiet", "--no-deps", "--python", str(venv / "bin" / "python"),
                 "--target", folder, PUNKT_TAB_WHEEL], "opencompass")
        source = Path(folder) / PUNKT_TAB_IN_WHEEL
        if not (source / "english").is_dir():
            raise StageFailed(f"{PUNKT_TAB_WHEEL} holds no {PUNKT_TAB_IN_WHEEL}/english: NLTK's punkt_tab for "
                              "IFEval is not where it was; report this to lmeval")
        target = venv / "nltk_data" / "tokenizers" / "punkt_tab"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)


FINISHING_STEPS = {"pyext": install_pyext, "punkt_tab": install_punkt_tab}


def _record(home: Path, made: Made) -> None:
    tools = {name: entry.record() for name, entry in recorded(home).items()}
    tools[made.tool] = made.record()
    write_private(home / TOOLS_FILE, json.dumps({"tools": tools}, indent=2) + "\n")


def default_python() -> str:
    """The interpreter the tool venvs are made from: the one lmeval runs on (its base, not its venv)."""
    return getattr(sys, "_base_executable", None) or sys.executable
