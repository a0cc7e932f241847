"""`lmeval serve` as a user runs it: a real lmeval process driving the stand-in `lmdeploy`
(tests/standin), stopped by Ctrl-C or SIGTERM, or failing on a crash or a taken port.

Each test checks what the user sees (exact stderr lines, exit code) and that no process lmeval
started outlives it: the main server, worker 0 (in a session of its own) and worker 1 (ignores
SIGTERM), found through LMEVAL_TAG and the worker pids the stand-in logs. The `lmeval_runner`
fixture kills leftovers only after these checks.
"""

from __future__ import annotations

import signal
import socket
import stat
import time
from pathlib import Path

import httpx
import psutil
import pytest
from toolkit import STANDIN, no_driver_warning, read_state, running, serve_folder, tagged, wait_until, worker_pids

from lmeval.launch import free_port

pytestmark = pytest.mark.processes


GRACE = 3.0


def serve_args(model: Path, work_dir: Path, port: int, *extra: str) -> list[str]:
    return ["serve", str(model), "--gpus", "0,1", "--tp", "2", "--port", str(port),
            "--lmdeploy", str(STANDIN), "-w", str(work_dir), "--grace", f"{GRACE:g}", *extra]


def started_lines(model: Path, port: int, folder: Path) -> list[str]:
    """What lmeval prints once the server process is started."""
    command = (f"{STANDIN} serve api_server {model} --server-name 127.0.0.1 --server-port {port} "
               f"--tp 2 --model-name {model.name} --api-keys '***'")
    return [
        *no_driver_warning("0,1"),
        f"lmeval: started model server on GPUs 0,1, port {port}: {command}",
        f"lmeval: loading {model}; log in {folder}/servers/model.log",
    ]


def ready_lines(model: Path, port: int, folder: Path) -> list[str]:
    return [
        f"lmeval: ready at http://127.0.0.1:{port}/v1 serving '{model.name}'; API key in {folder}/servers/model.key",
        "lmeval: press Ctrl-C to stop",
    ]


def server_processes(lm, log: Path, workers: int = 2) -> dict[str, psutil.Process]:
    """The server's main process and its workers, captured while they run (pid reuse safe)."""
    state = read_state(log.with_suffix(".json"))
    found = {"server": psutil.Process(state.pid)}
    pids = wait_until(lambda: len(worker_pids(log)) == workers and worker_pids(log), 30,
                      what=f"the stand-in to log {workers} workers")
    found.update({f"worker {k}": psutil.Process(pid) for k, pid in pids.items()})
    owned = {p.pid for p in tagged([lm.pid])}
    assert owned == {p.pid for p in found.values()}, (owned, found)
    return found


def assert_all_gone(lm, processes: dict[str, psutil.Process]) -> None:
    """Right when lmeval has exited, nothing it started still runs."""
    left = {name: p.pid for name, p in processes.items() if running(p)}
    assert left == {}, f"left running: {left}"
    assert tagged([lm.pid]) == []


def stop_within_grace(lm, sig: int, processes: dict[str, psutil.Process], exit_code: int) -> None:
    """Send SIG: lmeval must exit with EXIT_CODE within the grace period, nothing it started left."""
    sent = lm.signal(sig)
    code = lm.wait(timeout=GRACE + 10)
    took = time.monotonic() - sent
    assert_all_gone(lm, processes)
    assert code == exit_code, lm.transcript()
    assert took < GRACE, f"stopping took {took:.2f} s"


@pytest.fixture
def model(tmp_path) -> Path:
    folder = tmp_path / "demo-model"
    folder.mkdir()
    return folder


def test_serve_ready_then_ctrl_c_stops_everything(lmeval_runner, model, tmp_path):
    work, port = tmp_path / "out", free_port()
    lm = lmeval_runner.start(*serve_args(model, work, port))
    _, ready = lm.wait_line(rf"lmeval: ready at http://127\.0\.0\.1:{port}/v1 serving 'demo-model'; "
                            r"API key in (\S+)")
    lm.wait_line("lmeval: press Ctrl-C to stop")
    folder = serve_folder(work)
    log = folder / "servers" / "model.log"
    assert lm.stderr_lines == started_lines(model, port, folder) + ready_lines(model, port, folder)
    processes = server_processes(lm, log)

    # GPUs through CUDA_VISIBLE_DEVICES, for the server and its workers alike.
    for process in processes.values():
        assert process.environ()["CUDA_VISIBLE_DEVICES"] == "0,1"

    # Listening on loopback only.
    listening = [c.laddr for c in processes["server"].net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert [(addr.ip, addr.port) for addr in listening] == [("127.0.0.1", port)]
    for process in processes.values():
        assert all(c.laddr.ip == "127.0.0.1" for c in process.net_connections(kind="inet")
                   if c.status == psutil.CONN_LISTEN)

    # The key: only in the owner-only key file lmeval named.
    key_file = Path(ready.group(1))
    assert key_file == folder / "servers" / "model.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert key.startswith("sk-lmeval-") and len(key) > 20
    with httpx.Client(trust_env=False, timeout=5) as client:
        url = f"http://127.0.0.1:{port}/v1/models"
        assert client.get(url).status_code == 401
        assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        answer = client.get(url, headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200
        assert [entry["id"] for entry in answer.json()["data"]] == ["demo-model"]

    # Ctrl-C: the documented way to stop `serve`, so exit 0, within the grace period.
    stop_within_grace(lm, signal.SIGINT, processes, 0)
    assert lm.stdout_lines == []
    assert lm.stderr_lines == [
        *started_lines(model, port, folder), *ready_lines(model, port, folder),
        "lmeval: stopped model server (3 processes ended)",
    ]

    # The key never leaks into what lmeval prints or writes.
    state_file = folder / "servers" / "model.json"
    for where, text in [("stdout", "\n".join(lm.stdout_lines)), ("stderr", "\n".join(lm.stderr_lines)),
                        ("server log", log.read_text()), ("state file", state_file.read_text())]:
        assert key not in text, f"API key in {where}"
    assert read_state(state_file).stopped is True
    for path in (log, state_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_ctrl_c_as_soon_as_ready_shows_is_the_normal_stop(lmeval_runner, model, tmp_path):
    """A user may press Ctrl-C the moment "ready" appears, before the next line is printed."""
    for _ in range(3):  # the window is short: try it a few times
        work, port = tmp_path / f"out{_}", free_port()
        lm = lmeval_runner.start("serve", str(model), "--gpus", "0", "--port", str(port),
                                 "--lmdeploy", str(STANDIN), "-w", str(work), "--grace", f"{GRACE:g}")
        lm.wait_line(r"lmeval: ready at .*")
        lm.signal(signal.SIGINT)
        assert lm.wait(timeout=GRACE + 10) == 0, lm.transcript()
        assert tagged([lm.pid]) == []
        assert lm.stderr_lines[-3:] == [
            (f"lmeval: ready at http://127.0.0.1:{port}/v1 serving 'demo-model'; "
             f"API key in {serve_folder(work)}/servers/model.key"),
            "lmeval: press Ctrl-C to stop",
            "lmeval: stopped model server (1 processes ended)",
        ], lm.transcript()


def test_sigterm_while_serving_exits_130_and_stops_everything(lmeval_runner, model, tmp_path):
    work, port = tmp_path / "out", free_port()
    lm = lmeval_runner.start(*serve_args(model, work, port))
    lm.wait_line("lmeval: press Ctrl-C to stop")
    folder = serve_folder(work)
    processes = server_processes(lm, folder / "servers" / "model.log")

    stop_within_grace(lm, signal.SIGTERM, processes, 130)
    assert lm.stderr_lines == [
        *started_lines(model, port, folder), *ready_lines(model, port, folder),
        "lmeval: stopped model server (3 processes ended)",
        "lmeval: error: interrupted by SIGTERM; every server lmeval started has been stopped",
    ]


@pytest.mark.parametrize(("sig", "name"), [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_interrupt_while_loading_exits_130_and_stops_everything(lmeval_runner, model, tmp_path, sig, name):
    work, port = tmp_path / "out", free_port()
    env = lmeval_runner.env(STANDIN_LOAD_SECONDS="30")  # inherited by the server
    lm = lmeval_runner.start(*serve_args(model, work, port), env=env)
    lm.wait_line(r"lmeval: loading .*")
    folder = serve_folder(work)
    processes = server_processes(lm, folder / "servers" / "model.log")  # workers up, model "loading"

    stop_within_grace(lm, sig, processes, 130)
    assert lm.stderr_lines == [
        *started_lines(model, port, folder),
        "lmeval: stopped model server (3 processes ended)",
        f"lmeval: error: interrupted by {name}; every server lmeval started has been stopped",
    ]


def test_crash_during_load_fails_at_once_with_the_log(lmeval_runner, model, tmp_path):
    work, port = tmp_path / "out", free_port()
    env = lmeval_runner.env(STANDIN_CRASH_DURING_LOAD="1", STANDIN_LOAD_SECONDS="1")
    lm = lmeval_runner.start(*serve_args(model, work, port), env=env)
    lm.wait_line(r"lmeval: loading .*")
    folder = serve_folder(work)
    log = folder / "servers" / "model.log"
    processes = server_processes(lm, log)
    server = processes["server"]
    wait_until(lambda: not running(server), 30, interval=0.005, what="the stand-in to crash")
    crashed = time.monotonic()

    code = lm.wait(timeout=30)
    exited = time.monotonic()
    assert code == 1, lm.transcript()
    assert exited - crashed < 2.0, f"lmeval exited {exited - crashed:.2f} s after the server crashed"
    # and in all: 1 s of "loading", 2 s, and a margin for starting lmeval and two workers
    assert exited - lm.started < 1 + 2 + 5
    assert_all_gone(lm, processes)

    tail = log.read_text().splitlines()[-20:]
    assert tail[-1] == "RuntimeError: CUDA out of memory (stand-in)"
    command = started_lines(model, port, folder)[-2].split(": ", 2)[2]
    assert lm.stderr_lines == [
        *started_lines(model, port, folder),
        "lmeval: stopped model server (2 processes ended)",
        f"lmeval: error: model server exited with code 1; see {log}",
        f"log {log}, last lines:",
        *tail,
        f"reproduce with: {command}",
    ]
    errors = [line for line in lm.stderr_lines if line.startswith("lmeval: error:")]
    assert errors == [f"lmeval: error: model server exited with code 1; see {log}"]
    # The only traceback is the server's, inside the log tail: none of lmeval's own frames.
    assert "src/lmeval" not in "\n".join(lm.stderr_lines)
    assert "\n".join(lm.stderr_lines).count("Traceback (most recent call last)") == 1
    assert lm.stdout_lines == []


def test_taken_port_is_refused_before_anything_starts(lmeval_runner, model, tmp_path):
    work = tmp_path / "out"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        lm = lmeval_runner.run(*serve_args(model, work, port))
    assert lm.popen.returncode == 2, lm.transcript()
    assert lm.stderr_lines == [
        (f"lmeval: error: port {port} on 127.0.0.1 is taken (Address already in use); "
         "pick another --port or leave it out"),
    ]
    assert lm.stdout_lines == []
    assert tagged([lm.pid]) == []
    assert not work.exists()  # no run folder, so no state file naming a server


def test_another_process_taking_the_port_during_load_is_not_our_server(lmeval_runner, model, tmp_path):
    """The port is free at the pre-check, but another program listens on it before LMDeploy binds."""
    work, port = tmp_path / "out", free_port()
    env = lmeval_runner.env(STANDIN_LOAD_SECONDS="30")
    lm = lmeval_runner.start(*serve_args(model, work, port), env=env)
    lm.wait_line(r"lmeval: loading .*")
    folder = serve_folder(work)
    log = folder / "servers" / "model.log"
    processes = server_processes(lm, log)
    with socket.socket() as intruder:
        intruder.bind(("127.0.0.1", port))
        intruder.listen()
        code = lm.wait(timeout=15)
    assert code == 1, lm.transcript()
    assert_all_gone(lm, processes)
    tail = log.read_text().splitlines()[-20:]
    command = started_lines(model, port, folder)[-2].split(": ", 2)[2]
    assert lm.stderr_lines == [
        *started_lines(model, port, folder),
        "lmeval: stopped model server (3 processes ended)",
        f"lmeval: error: model server cannot be reached: another process answers on port {port}; see {log}",
        f"log {log}, last lines:",
        *tail,
        f"reproduce with: {command}",
    ]


def test_missing_lmdeploy_is_one_line_and_exit_2(lmeval_runner, model, tmp_path):
    work = tmp_path / "out"
    args = serve_args(model, work, free_port())
    args[args.index("--lmdeploy") + 1] = "/nonexistent/lmdeploy"
    lm = lmeval_runner.run(*args)
    assert lm.popen.returncode == 2
    assert lm.stderr_lines == [
        ("lmeval: error: lmdeploy executable not found or not executable: /nonexistent/lmdeploy; "
         "run `lmeval setup`, or pass --lmdeploy PATH or set LMEVAL_LMDEPLOY"),
    ]
    assert lm.stdout_lines == []
    assert not work.exists()


def test_missing_model_is_one_line_and_exit_2(lmeval_runner, tmp_path):
    work = tmp_path / "out"
    missing = tmp_path / "no-such-model"
    lm = lmeval_runner.run(*serve_args(missing, work, free_port()))
    assert lm.popen.returncode == 2
    assert lm.stderr_lines == [
        f"lmeval: error: MODEL: model path {missing} does not exist; give a model folder or a hub id like org/name"
    ]
    assert lm.stdout_lines == []
    assert not work.exists()
    assert tagged([lm.pid]) == []
