"""`lmeval cleanup` after an lmeval was killed outright (SIGKILL): real processes, stand-in
`lmdeploy` with two tp workers that outlive their server (worker 0 in a session of its own,
worker 1 ignoring SIGTERM), as LMDeploy's can.
"""

from __future__ import annotations

import signal

import psutil
import pytest
from toolkit import STANDIN, read_state, running, serve_folder, tagged, wait_until, worker_pids

from lmeval.launch import free_port

pytestmark = pytest.mark.processes


def test_cleanup_ends_what_a_killed_lmeval_left(lmeval_runner, tmp_path):
    model, work, port = tmp_path / "demo-model", tmp_path / "out", free_port()
    model.mkdir()
    lm = lmeval_runner.start("serve", str(model), "--gpus", "0,1", "--tp", "2", "--port", str(port),
                             "--lmdeploy", str(STANDIN), "-w", str(work), "--grace", "3")
    lm.wait_line("lmeval: press Ctrl-C to stop")
    folder = serve_folder(work)
    log = folder / "servers" / "model.log"
    server = psutil.Process(read_state(folder / "servers" / "model.json").pid)
    workers = {k: psutil.Process(pid) for k, pid in worker_pids(log).items()}
    assert sorted(workers) == [0, 1]
    assert {p.pid for p in tagged([lm.pid])} == {server.pid, *(p.pid for p in workers.values())}

    lm.signal(signal.SIGKILL)
    assert lm.wait() == -signal.SIGKILL
    # The main server gets SIGTERM when lmeval dies (PR_SET_PDEATHSIG) and exits; like
    # LMDeploy's, its workers do not.
    wait_until(lambda: not running(server), 10, what="the server to end with lmeval")
    assert all(running(p) for p in workers.values())
    assert {p.pid for p in tagged([lm.pid])} == {p.pid for p in workers.values()}
    assert read_state(folder / "servers" / "model.json").stopped is False

    cleanup = lmeval_runner.run("cleanup", "-w", str(work), "--grace", "3")
    assert [p.pid for p in workers.values() if running(p)] == []
    assert tagged([lm.pid]) == []
    assert cleanup.popen.returncode == 0, cleanup.transcript()
    assert cleanup.stdout_lines == []
    assert cleanup.stderr_lines == [
        f"lmeval: ended model server of {folder.name} (port {port}, 2 processes)",
        "lmeval: cleanup done: 2 process(es) ended",
    ]
    assert read_state(folder / "servers" / "model.json").stopped is True

    again = lmeval_runner.run("cleanup", "-w", str(work))
    assert again.popen.returncode == 0, again.transcript()
    assert again.stderr_lines == ["lmeval: nothing to clean up"]
    assert again.stdout_lines == []


def test_cleanup_leaves_a_running_lmeval_alone(lmeval_runner, tmp_path):
    model, work, port = tmp_path / "demo-model", tmp_path / "out", free_port()
    model.mkdir()
    lm = lmeval_runner.start("serve", str(model), "--gpus", "0", "--port", str(port),
                             "--lmdeploy", str(STANDIN), "-w", str(work), "--grace", "3")
    lm.wait_line("lmeval: press Ctrl-C to stop")
    owned = {p.pid for p in tagged([lm.pid])}
    assert len(owned) == 1

    cleanup = lmeval_runner.run("cleanup", "-w", str(work))
    assert cleanup.popen.returncode == 0, cleanup.transcript()
    assert cleanup.stderr_lines == [
        f"lmeval: model server on port {port} belongs to a running lmeval (pid {lm.pid}); left alone",
        "lmeval: nothing to clean up",
    ]
    assert {p.pid for p in tagged([lm.pid])} == owned
    assert lm.popen.poll() is None

    lm.signal(signal.SIGINT)
    assert lm.wait() == 0, lm.transcript()
    assert tagged([lm.pid]) == []
