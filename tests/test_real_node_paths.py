"""What GPU nodes' file systems do that this machine's do not: venvs under long paths or paths
with spaces (a shell trampoline instead of a shebang), outputs cut short by a kill mid-write,
and file systems without flock. Each test fails on the code before it."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from lmeval import outputs
from lmeval.exceptions import UsageError
from lmeval.manifest import RunLock
from lmeval.ocenv import venv_python
from lmeval.toolvenvs import write_wheel
from scenarios import MC_ROWS, QA_ROWS, asked, make_scenario
from toolkit import MODELS, TOOLS


def _installed_script(venv: Path, tmp_path: Path) -> Path:
    """An `opencompass` console script installed by uv into a venv made by uv at VENV."""
    from uv import find_uv_bin

    uv = find_uv_bin()
    subprocess.run([uv, "venv", "--quiet", str(venv)], check=True, timeout=60)
    wheel = tmp_path / "fakeoc-1.0-py3-none-any.whl"
    write_wheel(wheel, "fakeoc", "1.0", {
        "fakeoc.py": b"def main():\n    print('fake opencompass')\n",
        "fakeoc-1.0.dist-info/entry_points.txt": b"[console_scripts]\nopencompass = fakeoc:main\n"}, "a test tool")
    subprocess.run([uv, "pip", "install", "--quiet", "--offline", "--python", str(venv / "bin" / "python"), str(wheel)],
                   check=True, timeout=60)
    return venv / "bin" / "opencompass"


@pytest.mark.processes
@pytest.mark.parametrize("where", ["with space/venv", "x" * 130 + "/venv"], ids=["space", "over-127-bytes"])
def test_the_venvs_own_python_whatever_the_scripts_first_line(tmp_path, where):
    script = _installed_script(tmp_path / where, tmp_path)
    assert script.read_text().startswith("#!/bin/sh\n")  # the trampoline, not a shebang naming the python
    python = venv_python(script)
    assert python == script.parent / "python"
    ran = subprocess.run([str(python), "-c", "import fakeoc; fakeoc.main()"], capture_output=True, text=True, timeout=30)
    assert ran.stdout == "fake opencompass\n"


def test_a_trampoline_outside_a_venv_names_its_python(tmp_path):
    script = tmp_path / "bin" / "opencompass"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n'''exec' '/opt/tools with space/bin/python3' \"$0\" \"$@\"\n' '''\nimport sys\n")
    assert venv_python(script) == Path("/opt/tools with space/bin/python3")


def test_predictions_count_only_when_whole(tmp_path):
    folder = tmp_path / "predictions" / "m"
    folder.mkdir(parents=True)
    whole = json.dumps({"0": {"prediction": "4"}, "1": {"prediction": "5"}})
    (folder / "done.json").write_text(whole)
    (folder / "cut.json").write_text(whole[:20])  # a kill during OpenCompass's plain open('w')
    (folder / "late.json").write_text(whole)  # written, but killed before its tmp_ file went
    (folder / "tmp_late.jsonl").write_text('{"0": {"prediction": "4"}}\n')
    names = ["done", "cut", "late", "none"]
    assert outputs.missing_predictions(tmp_path, "m", names) == ["cut", "late", "none"]
    aside = tmp_path / "aside"
    assert outputs.set_aside_incomplete(tmp_path, "m", names, aside) == ["cut", "late"]
    assert sorted(path.name for path in aside.iterdir()) == ["cut.json", "late.json"]
    assert (folder / "tmp_late.jsonl").exists()  # the answers so far, for OpenCompass to resume from


@pytest.mark.processes
@pytest.mark.opencompass
@pytest.mark.usefixtures("venvs")
def test_reuse_after_a_kill_mid_write_infers_the_cut_dataset_again_and_mends_the_copy(tmp_path, lmeval_runner):
    scenario = make_scenario(tmp_path / "data")
    work_dir, requests = tmp_path / "out", tmp_path / "requests.log"
    env = lmeval_runner.env(STANDIN_ANSWER_KEY=str(scenario.key), STANDIN_REQUEST_LOG=str(requests))
    args = [str(MODELS / "demo-chat"), "--dataset", str(scenario.qa), "--dataset", str(scenario.mc), "--gpus", "0",
            "-w", str(work_dir), *TOOLS]
    infer = lmeval_runner.run("infer", *args, env=env, work_dir=work_dir, timeout=600)
    assert infer.poll() == 0, infer.transcript()
    run_dir = work_dir / infer.stdout.strip()
    predictions = outputs.predictions_file(run_dir, "demo-chat", "choices")
    whole = predictions.read_bytes()
    predictions.write_bytes(whole[: len(whole) // 2])
    copy = run_dir / "lmeval" / "inputs" / "trivia.jsonl"
    copy.write_bytes(copy.read_bytes()[:10])
    requests.unlink()

    again = lmeval_runner.run("infer", *args, "--reuse", run_dir.name, env=env, work_dir=work_dir, timeout=600)
    assert again.poll() == 0, again.transcript()
    assert "the predictions of choices were cut short by an earlier stop" in again.stderr
    assert asked(requests, "demo-chat", QA_ROWS[:5] + MC_ROWS) == Counter(question for question, *_ in MC_ROWS)
    assert json.loads(predictions.read_text()).keys() == json.loads(whole).keys()
    assert copy.read_bytes() == scenario.qa.read_bytes()
    assert not list(copy.parent.glob(".*.partial"))


def test_a_file_system_without_flock_is_named(tmp_path, monkeypatch):
    def unsupported(*_):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", unsupported)
    with pytest.raises(UsageError) as refused:
        with RunLock(tmp_path):
            pass
    assert refused.value.exit_code == 2
    assert refused.value.message.startswith(f"cannot lock {tmp_path}/.lmeval.lock: ")
    assert refused.value.message.endswith(" does not support flock (Function not implemented); use a work dir on a "
                                          "file system that does (mount Lustre with -o flock, or pick a local disk "
                                          "with -w)")


def test_a_lock_held_on_another_node_says_which(tmp_path):
    with RunLock(tmp_path):
        assert (tmp_path / ".lmeval.lock").read_text() == f"{socket.gethostname()}:{os.getpid()}"
        with pytest.raises(UsageError) as here:
            with RunLock(tmp_path):
                pass
        assert f"(pid {os.getpid()});" in here.value.message
        (tmp_path / ".lmeval.lock").write_text("gpu-node-07:4242")  # what an lmeval on that node wrote
        with pytest.raises(UsageError) as there:
            with RunLock(tmp_path):
                pass
    assert there.value.message == (f"run {tmp_path.name} is in use by another lmeval (pid 4242 on host gpu-node-07); "
                                   "wait for it to finish or pick another run")
