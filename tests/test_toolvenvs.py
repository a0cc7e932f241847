"""`lmeval setup`'s venvs: the recipes, making one with a fake uv (what it is asked, in order),
the record in tools.json, nothing done the second time, and a venv that does not import
refused; then, with the project's real venvs, `lmeval setup` as a no-op and lmeval finding the
executables through tools.json alone."""

from __future__ import annotations

import json
import sys
import time

import pytest
from toolkit import MODELS, VENVS

from lmeval import toolvenvs
from lmeval.exceptions import StageFailed

FAKE_UV = f"""#!{sys.executable}
# A stand-in for uv: logs its arguments; `venv` makes bin/python, `pip install` adds the tool.
import os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_UV_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
if args[0] == "venv":
    os.makedirs(os.path.join(args[-1], "bin"))
    os.symlink({sys.executable!r}, os.path.join(args[-1], "bin", "python"))
elif args[:2] == ["pip", "install"]:
    python = args[args.index("--python") + 1]
    tool = os.environ["FAKE_UV_TOOL"]
    with open(os.path.join(os.path.dirname(python), tool), "w") as exe:
        exe.write("#!/bin/sh\\n")
    os.chmod(os.path.join(os.path.dirname(python), tool), 0o755)
"""


@pytest.fixture
def fake_uv(tmp_path, monkeypatch):
    uv = tmp_path / "uv"
    uv.write_text(FAKE_UV)
    uv.chmod(0o755)
    log = tmp_path / "uv.log"
    monkeypatch.setenv("FAKE_UV_LOG", str(log))
    monkeypatch.setenv("FAKE_UV_TOOL", "opencompass")
    monkeypatch.setattr(toolvenvs, "uv_binary", lambda: str(uv))
    monkeypatch.setitem(toolvenvs.IMPORT_CHECKS, "opencompass", "import json")
    return log


def test_recipes_put_torch_first_and_pin_what_works():
    assert toolvenvs.opencompass_recipe().steps == (
        ("torch==2.13.0",), ("torch==2.13.0", "opencompass==0.5.4", "pyarrow<21", "datasets>=3.6,<4"))
    assert toolvenvs.opencompass_recipe("0.5.5", "full").steps[1][1] == "opencompass[full]==0.5.5"
    assert toolvenvs.lmdeploy_recipe().steps == (("lmdeploy==0.18.0",),)
    cpu = toolvenvs.lmdeploy_recipe("0.18.0", cpu=True).steps
    assert cpu[:2] == (("torch==2.13.0",), ("--no-deps", "lmdeploy==0.18.0"))
    assert cpu[2][0] == "torch==2.13.0" and "fastapi" in cpu[2] and "uvicorn" in cpu[2]


def test_a_venv_is_made_in_steps_recorded_and_left_alone_the_second_time(fake_uv, tmp_path, monkeypatch):
    home = tmp_path / "home"
    said: list[str] = []
    made, new = toolvenvs.make(toolvenvs.opencompass_recipe(), home, "/usr/bin/python3", said.append)
    assert new and made.executable == home / "opencompass" / "bin" / "opencompass"
    venv_python = home / "opencompass" / "bin" / "python"
    assert fake_uv.read_text().splitlines() == [
        f"venv --quiet --python /usr/bin/python3 {home / 'opencompass'}",
        f"pip install --quiet --compile-bytecode --python {venv_python} torch==2.13.0",
        f"pip install --quiet --compile-bytecode --python {venv_python} torch==2.13.0 opencompass==0.5.4 pyarrow<21 "
        "datasets>=3.6,<4",
    ]
    recorded = json.loads((home / "tools.json").read_text())["tools"]["opencompass"]
    assert recorded["executable"] == str(made.executable) and recorded["version"] == "0.5.4"
    assert oct((home / "tools.json").stat().st_mode & 0o777) == "0o600"
    assert said[0] == f"making the opencompass 0.5.4 venv (cpu torch) in {home / 'opencompass'}"
    again, new = toolvenvs.make(toolvenvs.opencompass_recipe(), home, "/usr/bin/python3", said.append)
    assert (again, new) == (made, False)
    assert len(fake_uv.read_text().splitlines()) == 3  # uv was not asked again
    monkeypatch.setenv("LMEVAL_HOME", str(home))
    assert toolvenvs.recorded_executable("opencompass") == made.executable
    made_again, new = toolvenvs.make(toolvenvs.opencompass_recipe("0.5.5"), home, "/usr/bin/python3", said.append)
    assert new and made_again.version == "0.5.5"  # another version: made anew


@pytest.mark.usefixtures("fake_uv")
def test_a_venv_that_does_not_import_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(toolvenvs.IMPORT_CHECKS, "opencompass", "import no_such_module_here")
    with pytest.raises(StageFailed) as caught:
        toolvenvs.make(toolvenvs.opencompass_recipe(), tmp_path / "home", "/usr/bin/python3", lambda text: None)
    assert caught.value.message == (f"opencompass was installed in {tmp_path / 'home' / 'opencompass'} but does not "
                                    "import: ModuleNotFoundError: No module named 'no_such_module_here'")
    assert not (tmp_path / "home" / "tools.json").exists()


@pytest.mark.processes
@pytest.mark.opencompass
@pytest.mark.lmdeploy
def test_setup_again_does_nothing_and_lmeval_finds_the_tools_it_made(lmeval_runner, tmp_path):
    env = lmeval_runner.env()  # LMEVAL_HOME: the project's venvs, as scripts/setup made them
    started = time.monotonic()
    again = lmeval_runner.run("setup", "--cpu", env=env)
    took = time.monotonic() - started
    assert again.poll() == 0, again.transcript()
    assert took < 2, f"a second lmeval setup took {took:.2f} s"
    assert again.stderr_lines == [
        f"lmeval: opencompass 0.5.4 (cpu torch) is up to date: {VENVS / 'opencompass' / 'bin' / 'opencompass'}",
        f"lmeval: lmdeploy 0.18.0 (cpu: proxy and parser only) is up to date: {VENVS / 'lmdeploy' / 'bin' / 'lmdeploy'}",
        f"lmeval: tools recorded in {VENVS / 'tools.json'}",
    ]
    # Neither an option, nor a variable, nor PATH names them: tools.json does.
    dataset = tmp_path / "mc.jsonl"
    dataset.write_text('{"question": "Pick B", "A": "x", "B": "y", "answer": "B"}\n')
    dry = lmeval_runner.run("infer", str(MODELS / "demo-chat"), "--dataset", str(dataset), "--gpus", "0",
                            "-w", str(tmp_path / "out"), "--dry-run", env=dict(env, PATH="/usr/bin:/bin"))
    assert dry.poll() == 0, dry.transcript()
    assert f"target server (GPUs 0): CUDA_VISIBLE_DEVICES=0 {VENVS / 'lmdeploy' / 'bin' / 'lmdeploy'} serve api_server " \
        in dry.stdout
    assert f"{VENVS / 'opencompass' / 'bin' / 'opencompass'} " in dry.stdout
