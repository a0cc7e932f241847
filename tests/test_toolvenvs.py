"""`lmeval setup`'s venvs: the recipes, making one with a fake uv (what it is asked, in order),
the record in tools.json, nothing done the second time, and a venv that does not import
refused; then, with the project's real venvs, `lmeval setup` as a no-op and lmeval finding the
executables through tools.json alone."""

from __future__ import annotations

import json
import sys
import time
import zipfile

import pytest
from toolkit import MODELS, VENVS

from lmeval import toolvenvs
from lmeval.exceptions import StageFailed

FAKE_UV = f"""#!{sys.executable}
# A stand-in for uv: logs its arguments; `venv` makes bin/python, `pip install` adds the tool,
# or with --target a wheel's folders as llama-index-core's has them.
import os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_UV_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
if args[0] == "venv":
    os.makedirs(os.path.join(args[-1], "bin"))
    os.symlink({sys.executable!r}, os.path.join(args[-1], "bin", "python"))
elif "--target" in args:
    english = os.path.join(args[args.index("--target") + 1], {toolvenvs.PUNKT_TAB_IN_WHEEL!r}, "english")
    os.makedirs(english)
    open(os.path.join(english, "sent_starters.txt"), "w").close()
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
        ("torch==2.13.0",), ("torch==2.13.0", "opencompass==0.5.4", "pyarrow<21", "datasets>=3.6,<4", "langdetect==1.0.9"))
    assert toolvenvs.opencompass_recipe().finish == ("pyext", "punkt_tab")
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
    asked = fake_uv.read_text().splitlines()
    assert asked[:3] == [
        f"venv --quiet --python /usr/bin/python3 {home / 'opencompass'}",
        f"pip install --quiet --compile-bytecode --python {venv_python} torch==2.13.0",
        f"pip install --quiet --compile-bytecode --python {venv_python} torch==2.13.0 opencompass==0.5.4 pyarrow<21 "
        "datasets>=3.6,<4 langdetect==1.0.9",
    ]
    # Then lmeval's pyext, as a wheel, and punkt_tab from llama-index-core's wheel into the venv's nltk_data.
    install = f"pip install --quiet --compile-bytecode --python {venv_python} "
    assert asked[3].startswith(install) and asked[3].endswith("/lmeval_pyext-0.7-py3-none-any.whl")
    target = f"pip install --quiet --no-deps --python {venv_python} --target "
    assert asked[4].startswith(target) and asked[4].endswith(" llama-index-core==0.14.25")
    assert len(asked) == 5
    assert (home / "opencompass" / "nltk_data" / "tokenizers" / "punkt_tab" / "english" / "sent_starters.txt").is_file()
    recorded = json.loads((home / "tools.json").read_text())["tools"]["opencompass"]
    assert recorded["executable"] == str(made.executable) and recorded["version"] == "0.5.4"
    assert oct((home / "tools.json").stat().st_mode & 0o777) == "0o600"
    assert said[0] == f"making the opencompass 0.5.4 venv (cpu torch) in {home / 'opencompass'}"
    again, new = toolvenvs.make(toolvenvs.opencompass_recipe(), home, "/usr/bin/python3", said.append)
    assert (again, new) == (made, False)
    assert len(fake_uv.read_text().splitlines()) == 5  # uv was not asked again
    monkeypatch.setenv("LMEVAL_HOME", str(home))
    assert toolvenvs.recorded_executable("opencompass") == made.executable
    made_again, new = toolvenvs.make(toolvenvs.opencompass_recipe("0.5.5"), home, "/usr/bin/python3", said.append)
    assert new and made_again.version == "0.5.5"  # another version: made anew


def test_the_pyext_wheel_is_one_installers_accept(tmp_path):
    """What uv checks of a wheel: its RECORD names every file with its hash and size."""
    wheel = tmp_path / toolvenvs.PYEXT_WHEEL
    toolvenvs.write_wheel(wheel, "lmeval-pyext", "0.7", {"pyext.py": b"x = 1\n"}, "a test")
    with zipfile.ZipFile(wheel) as opened:
        names = opened.namelist()
        record = opened.read("lmeval_pyext-0.7.dist-info/RECORD").decode().splitlines()
        metadata = opened.read("lmeval_pyext-0.7.dist-info/METADATA").decode()
    assert names == ["pyext.py", "lmeval_pyext-0.7.dist-info/METADATA", "lmeval_pyext-0.7.dist-info/WHEEL",
                     "lmeval_pyext-0.7.dist-info/RECORD"]
    assert record[0] == "pyext.py,sha256=nia_NpkRxFwkPGhBR7I_yeHc_PJX0pmhxjIBam_NM_Q,6"
    assert record[-1] == "lmeval_pyext-0.7.dist-info/RECORD,,"
    assert "Name: lmeval-pyext\nVersion: 0.7\n" in metadata


def test_pyext_builds_modules_as_pyext_0_7_does():
    """The calls OpenCompass's LiveCodeBench runner makes: a module of the names the source defined."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("lmeval_test_pyext", toolvenvs.PYEXT_SOURCE)
    pyext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pyext)
    module = pyext.RuntimeModule.from_string("tmp_sol", "", "import math\nclass Solution:\n"
                                             "    def root(self, x):\n        return math.isqrt(x)\n")
    assert module.Solution().root(17) == 4 and module.__name__ == "tmp_sol"
    assert not hasattr(module, "__builtins__")
    assert pyext.RuntimeModule.from_string("two_args", "y = 2").y == 2
    with pytest.raises(ZeroDivisionError):
        pyext.RuntimeModule.from_string("broken", "", "1 // 0")


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
