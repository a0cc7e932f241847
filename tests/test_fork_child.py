"""A task forked from OpenCompass's runner while another of its threads is writing (a log line,
a progress bar) must not wait for that thread: after the fork the thread does not exist in the
child, and a lock it held stays held there forever. Seen as an eval task that never started
(py-spy: StreamHandler.flush in the child's redirect_output). Run in OpenCompass's venv, whose
tqdm the runner uses, with lmeval_fork as the runner imports it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from toolkit import VENVS

from lmeval.ocenv import PLUGIN_DIR

pytestmark = pytest.mark.opencompass

SCRIPT = """
import io, logging, os, sys, threading, time
sys.path.insert(0, sys.argv[1])
import tqdm.std
from lmeval_fork import fork_child


class Held(io.TextIOBase):
    # The parent's stdout as another thread writes to it: flushing it waits for that thread.
    def __init__(self):
        self.lock = threading.Lock()

    def write(self, text):
        with self.lock:
            return len(text)

    def flush(self):
        with self.lock:
            pass


held = Held()
sys.stdout = held
logging.getLogger("runner").addHandler(logging.StreamHandler(held))
taken = threading.Event()


def writer():  # the runner's other thread, in the middle of a write when the fork comes
    with held.lock, tqdm.std.TqdmDefaultWriteLock.th_lock:
        taken.set()
        time.sleep(60)


threading.Thread(target=writer, daemon=True).start()
taken.wait()


def body():
    logging.getLogger("runner").warning("the task logs")
    tqdm.std.tqdm.write("the task writes a progress line")
    print("the task prints")


def plain_fork(body, output, new_session):
    # The way the old runner forked: the child writes through what it inherited.
    pid = os.fork()
    if pid == 0:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        body()
        os._exit(0)
    return pid


fork = {"fork_child": fork_child, "plain": plain_fork}[sys.argv[3]]
pid = fork(body, sys.argv[2], new_session=False)
said = "hung"
for _ in range(200):
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        said = f"exit {os.waitstatus_to_exitcode(status)}"
        break
    time.sleep(0.05)
else:
    os.kill(pid, 9)
sys.__stdout__.write(said + "\\n")
sys.__stdout__.flush()
os._exit(0)  # not through the interpreter's exit, which would flush the held stream
"""


def forked_while_another_thread_writes(tmp_path, fork: str) -> tuple[str, Path]:
    """What became of a task forked by FORK as another thread held the locks: `exit N` or `hung`."""
    log = tmp_path / "task.out"
    done = subprocess.run([str(VENVS / "opencompass" / "bin" / "python"), "-c", SCRIPT, str(PLUGIN_DIR), str(log),
                           fork], capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout.splitlines(), done.stderr
    return done.stdout.splitlines()[-1], log


def test_a_task_forked_the_old_way_while_another_thread_writes_hangs(tmp_path):
    """Why the default never forks from a threaded process (tests/test_opencompass_starts.py)."""
    assert forked_while_another_thread_writes(tmp_path, "plain")[0] == "hung"


def test_a_task_forked_while_another_thread_writes_runs_to_its_end(tmp_path):
    said, log = forked_while_another_thread_writes(tmp_path, "fork_child")
    assert said == "exit 0"
    assert log.read_text().splitlines() == ["the task logs", "the task writes a progress line", "the task prints"]
