"""The fork server (lmeval.forkserver, opencompass_plugin/lmeval_forkserver.py): OpenCompass's
processes forked from one process that imported OpenCompass once, each still what a new
process would be. Real processes, run on lmeval's own venv's Python (the server's imports of
OpenCompass then fail at once, which it tolerates), with a probe module as the entry point.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import psutil
import pytest
from toolkit import alive, running, wait_until

from lmeval.forkserver import ForkServer
from lmeval.processes import TAG_ENV
from lmeval.ocrun import OpenCompassProcess

pytestmark = pytest.mark.processes

RUN_ID = "20991231_235959"  # no other test's: the leftover checks of others look for their run ids

PROBE = '''
import json, os, subprocess, sys, time

def target(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # the folder's own, gone once listed
        return ""

def main():
    """Say what it is, then do what its arguments ask."""
    comm = open("/proc/self/comm").read().strip()
    sockets = len([fd for fd in os.listdir("/proc/self/fd") if target(fd).startswith("socket:")])
    print(json.dumps({"pid": os.getpid(), "session": os.getsid(0), "cwd": os.getcwd(), "argv": sys.argv, "comm": comm,
                      "sockets": sockets,
                      "tag": os.environ.get("LMEVAL_TAG"), "extra": os.environ.get("PROBE_EXTRA")}), flush=True)
    action = sys.argv[1]
    if action == "raise":
        raise ValueError("the probe broke")
    if action == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(json.dumps({"child": child.pid}), flush=True)
        time.sleep(600)
    return int(action)

if __name__ == "__main__":
    sys.exit(main())
'''


@pytest.fixture
def probe_path(tmp_path, monkeypatch):
    """A folder holding the probe module, on the PYTHONPATH the fork server starts with."""
    folder = tmp_path / "modules"
    folder.mkdir()
    (folder / "probe.py").write_text(PROBE)
    monkeypatch.setenv("PYTHONPATH", str(folder))
    return folder


@pytest.fixture
def forks(tmp_path, probe_path):  # noqa: ARG001 - started with the probe on its path
    server = ForkServer(sys.executable, tmp_path / "forkserver.log", RUN_ID)
    assert server.start()
    try:
        yield server
    finally:
        server.stop()


def probe(tmp_path, forks, action: str, name: str = "probe") -> OpenCompassProcess:
    process = OpenCompassProcess([sys.executable, "-m", "probe", action], name, tmp_path / "cwd",
                                 tmp_path / f"{name}.log", RUN_ID, forks, "probe:main")
    process.start()
    return process


def said(log) -> dict:
    return json.loads(log.read_text().splitlines()[0])


def test_a_forked_process_is_its_own_with_its_exit_code(tmp_path, forks, monkeypatch):
    monkeypatch.setenv("PROBE_EXTRA", "set after the server started")
    process = probe(tmp_path, forks, "3")
    assert wait_until(lambda: process.poll() is not None, 30, what="the probe to end") is not None
    assert process.poll() == 3
    seen = said(process.log_path)
    assert process.forked is not None and seen["pid"] == process.forked.pid
    assert seen["session"] == seen["pid"]  # a session of its own, as start_new_session gives
    assert seen["cwd"] == str(tmp_path / "cwd")
    assert seen["argv"] == ["probe", "3"]  # as `python -m probe 3` has it
    assert seen["comm"] == "python"
    assert seen["sockets"] == 0  # none of the server's: its listener, its connections
    assert seen["tag"] == process.tag != forks.tag
    assert seen["extra"] == "set after the server started"  # lmeval's environment now, not the server's


def test_a_script_forked_in_its_stead_has_its_argv_and_name(tmp_path, forks):
    """As the `opencompass` script is: sys.argv and the process name are the script's."""
    script = str(tmp_path / "bin" / "opencompass")
    process = OpenCompassProcess([script, "0"], "probe", tmp_path / "cwd", tmp_path / "probe.log", RUN_ID, forks,
                                 "probe:main")
    process.start()
    wait_until(lambda: process.poll() is not None, 30, what="the probe to end")
    assert process.poll() == 0
    seen = said(process.log_path)
    assert (seen["argv"], seen["comm"]) == ([script, "0"], "opencompass")


def test_an_uncaught_exception_is_exit_1_with_its_traceback_in_the_log(tmp_path, forks):
    process = probe(tmp_path, forks, "raise")
    wait_until(lambda: process.poll() is not None, 30, what="the probe to end")
    assert process.poll() == 1
    assert process.log_path.read_text().splitlines()[-1] == "ValueError: the probe broke"


def child_of(process: OpenCompassProcess) -> int | None:
    """The pid of the child a hanging probe started, once it said it."""
    lines = process.log_path.read_text().splitlines() if process.log_path.exists() else []
    return next((json.loads(line)["child"] for line in lines if '"child"' in line), None)


def test_stop_ends_a_forked_process_and_its_children(tmp_path, forks):
    process = probe(tmp_path, forks, "hang")
    child = wait_until(lambda: child_of(process), 30, what="the probe's child")
    process.poll()
    pid = process.forked.pid
    stopped = process.stop()
    assert stopped.ended == 2 and stopped.left == ()
    assert not alive(child) and not alive(pid)


def test_a_process_let_go_of_before_it_was_forked_never_runs(tmp_path, probe_path):
    # The server's imports take 2 s here: the request waits in the socket meanwhile.
    (probe_path / "transformers.py").write_text("import time\ntime.sleep(2)\n")
    server = ForkServer(sys.executable, tmp_path / "forkserver.log", RUN_ID)
    assert server.start()
    try:
        process = probe(tmp_path, server, "hang")
        assert process.poll() is None and process.forked.pid is None
        assert process.stop().ended == 0
        wait_until(lambda: "lmeval forkserver: ready" in (tmp_path / "forkserver.log").read_text(), 30,
                   what="the server's imports")
        time.sleep(1)
        leader = psutil.Process(server.popen.pid)
        assert [p for p in leader.children(recursive=True) if running(p)] == []
        assert not process.log_path.exists()
    finally:
        server.stop()


def test_the_server_stops_with_everything_it_forked(tmp_path, forks):
    processes = [probe(tmp_path, forks, "hang", f"probe{index}") for index in range(2)]
    children = [wait_until(lambda p=p: child_of(p), 30, what="a probe's child") for p in processes]
    pids = [p.forked.pid for p in processes if p.poll() is None]
    assert len(pids) == 2
    folder = forks.folder
    stopped = forks.stop()
    assert stopped.left == () and stopped.ended == 5  # the server, two probes, their two children
    assert [pid for pid in pids + children if alive(pid)] == []
    assert not folder.exists()
    assert all(p.poll() is not None for p in processes)


def test_a_server_sent_sigterm_removes_its_socket_folder(forks):
    """As when lmeval is killed outright and the server gets SIGTERM as its parent dies."""
    forks.popen.send_signal(signal.SIGTERM)
    assert forks.popen.wait(10) == -signal.SIGTERM
    assert not forks.folder.exists()


def test_without_its_server_a_process_starts_the_usual_way(tmp_path, forks):
    forks.stop()
    process = probe(tmp_path, forks, "4")
    assert process.forked is None and process.popen is not None
    wait_until(lambda: process.poll() is not None, 30, what="the probe to end")
    assert process.poll() == 4
    assert said(process.log_path)["tag"] == process.tag
    assert os.environ.get(TAG_ENV) is None  # the tag is the child's alone


def test_a_server_that_never_forks_is_given_up_for_a_new_process(tmp_path, probe_path, monkeypatch):
    """Its imports hang (a stuck file system, say): past FIRST_REPLY_SECONDS without word of a
    fork, the process starts the usual way instead of waiting for ever."""
    (probe_path / "opencompass").mkdir()
    (probe_path / "opencompass" / "__init__.py").write_text("import time\ntime.sleep(600)\n")
    monkeypatch.setattr("lmeval.ocrun.FIRST_REPLY_SECONDS", 1.0)
    server = ForkServer(sys.executable, tmp_path / "forkserver.log", RUN_ID)
    assert server.start()
    try:
        process = probe(tmp_path, server, "5")
        assert process.forked is not None and process.poll() is None  # asked, and waiting
        wait_until(lambda: process.poll() is not None, 30, what="the probe to end")
        assert process.poll() == 5 and process.forked is None and process.popen is not None
        assert said(process.log_path)["tag"] == process.tag
    finally:
        server.stop()
