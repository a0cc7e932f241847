"""A task forked from OpenCompass's runner while another of its threads is writing (a log line,
a progress bar) must not wait for that thread: after the fork the thread does not exist in the
child, and a lock it held stays held there forever. Seen as an eval task that never started
(py-spy: StreamHandler.flush in the child's redirect_output). Run in OpenCompass's venv, whose
tqdm the runner uses, with lmeval_fork as the runner imports it."""

from __future__ import annotations

import subprocess

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


pid = fork_child(body, sys.argv[2], new_session=False)
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


def test_a_task_forked_while_another_thread_writes_runs_to_its_end(tmp_path):
    log = tmp_path / "task.out"
    done = subprocess.run([str(VENVS / "opencompass" / "bin" / "python"), "-c", SCRIPT, str(PLUGIN_DIR), str(log)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout.splitlines()[-1:] == ["exit 0"], done.stdout + done.stderr
    assert log.read_text().splitlines() == ["the task logs", "the task writes a progress line", "the task prints"]
