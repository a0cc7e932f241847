"""How OpenCompass's processes run, wherever lmeval starts them (lmeval.ocrun, the fork server,
the doctor, `data pull`): the environment that puts lmeval's plugin on their path, and the
Python of OpenCompass's venv."""

from __future__ import annotations

import os
import re
from pathlib import Path

# Modules lmeval's configs name, for OpenCompass's own processes (lmeval never imports them).
PLUGIN_DIR = Path(__file__).resolve().parent / "opencompass_plugin"
# The second line of the shell trampoline pip and uv write: '''exec' '/a path/bin/python' "$0" "$@"
TRAMPOLINE_EXEC = re.compile(r"""'''exec' (?:'([^']+)'|"([^"]+)") "\$0" "\$@\"""")


def opencompass_env(base: dict[str, str]) -> dict[str, str]:
    """BASE with the plugin folder first on PYTHONPATH, where OpenCompass's task processes
    (which inherit it) import the model class the configs name; and COMPASS_DATA_CACHE made
    absolute, as the user meant it: OpenCompass runs in a folder of the run's own."""
    paths = [str(PLUGIN_DIR), *filter(None, base.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**base, "PYTHONPATH": os.pathsep.join(paths)}
    if env.get("COMPASS_DATA_CACHE"):
        env["COMPASS_DATA_CACHE"] = os.path.abspath(env["COMPASS_DATA_CACHE"])
    return env


def venv_python(executable: Path) -> Path:
    """The Python an installed script such as `opencompass` runs on: its venv's own bin/python,
    whatever the script's first line says (pip and uv write a `#!/bin/sh` trampoline when the
    venv's path has a space or exceeds 127 bytes, common on HPC file systems); outside a venv
    the interpreter its first line (or its trampoline's `exec` line) names, else the python
    beside it."""
    folder = Path(executable).resolve().parent
    if (folder.parent / "pyvenv.cfg").is_file() and (folder / "python").exists():
        return folder / "python"
    try:
        with open(executable, "rb") as handle:
            head = handle.read(4096).decode(errors="replace").splitlines()
    except OSError:
        head = []
    if len(head) > 1 and head[0].startswith("#!/bin/sh") and (match := TRAMPOLINE_EXEC.match(head[1])):
        return Path(match.group(1) or match.group(2))
    if head and head[0].startswith("#!") and head[0][2:].split():
        return Path(head[0][2:].split()[0])
    return Path(executable).parent / "python"
