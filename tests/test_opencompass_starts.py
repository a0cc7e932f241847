"""How OpenCompass's processes start. By default each is a new Python, OpenCompass's own way:
nothing is ever forked from a process that runs threads. OpenCompass's runner launches its tasks
from a pool of threads that write log lines and tqdm bars around each launch; a child forked
while another thread holds one of their locks waits for it forever (tests/test_fork_child.py).
`--fork-server` forks them instead, for hosts with a few CPUs, and resets what a child inherits.

A sitecustomize on OpenCompass's PYTHONPATH records, in every OpenCompass process, each Python
`os.fork()` taken while other threads run (os.register_at_fork), and each new Python's command
line. It records the forks `--fork-server` makes, so it would see one on the default path."""

from __future__ import annotations

import json
import os
import re

import pytest

from scenarios import make_scenario
from toolkit import FORK_SERVER, MODELS, NEW_PROCESSES, TOOLS, leftovers, shown_scores

pytestmark = [pytest.mark.processes, pytest.mark.opencompass]

RUN_SECONDS = 600

RECORDER = """
import json, os, threading

def _record(kind):
    with open(os.environ["LMEVAL_TEST_FORKS"], "a") as out:
        with open("/proc/self/cmdline", "rb") as cmdline:
            argv = [arg.decode(errors="replace") for arg in cmdline.read().split(b"\\0") if arg]
        out.write(json.dumps({"kind": kind, "pid": os.getpid(), "threads": threading.active_count(),
                              "argv": argv}) + "\\n")

os.register_at_fork(before=lambda: threading.active_count() > 1 and _record("fork from a threaded process"))
_record("new python")
"""


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run_recorded(lmeval_runner, tmp_path, how: dict[str, str]):
    scenario = make_scenario(tmp_path)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(RECORDER)
    log = tmp_path / "forks.jsonl"
    work_dir = tmp_path / "out"
    result = lmeval_runner.run(
        "run", str(MODELS / "demo-chat"), "--dataset", str(scenario.mc), "--gpus", "0", "-w", str(work_dir), *TOOLS,
        work_dir=work_dir, timeout=RUN_SECONDS,
        env=lmeval_runner.env(STANDIN_ANSWER_KEY=str(scenario.key), PYTHONPATH=str(hook), LMEVAL_TEST_FORKS=str(log),
                              **how))
    assert result.poll() == 0, result.transcript()
    assert shown_scores(result.stdout) == {"choices": scenario.expected["choices"]}
    assert leftovers([work_dir]) == []
    return records(log), next(work_dir.iterdir())


def task_scripts(found: list[dict]) -> list[str]:
    """The OpenCompass task scripts among the new Pythons' command lines."""
    return sorted(os.path.basename(arg) for record in found if record["kind"] == "new python"
                  for arg in record["argv"] if re.search(r"/opencompass/tasks/openicl_\w+\.py$", arg))


def test_by_default_every_opencompass_process_is_a_new_python_and_none_is_forked_from_threads(lmeval_runner, tmp_path):
    found, run_dir = run_recorded(lmeval_runner, tmp_path, NEW_PROCESSES)
    assert [record for record in found if record["kind"] != "new python"] == []
    # The stage's tasks too: each started anew by OpenCompass's LocalRunner.
    assert task_scripts(found) == ["openicl_eval.py", "openicl_infer_concurrent.py"]
    assert not (run_dir / "lmeval" / "forkserver.log").exists()


def test_with_fork_server_the_tasks_are_forked_from_the_threaded_runner(lmeval_runner, tmp_path):
    """What the recorder catches, so the test above could fail: LmevalLocalRunner forks each eval
    task from one of the runner's threads."""
    found, run_dir = run_recorded(lmeval_runner, tmp_path, FORK_SERVER)
    forks = [record for record in found if record["kind"] == "fork from a threaded process"]
    assert forks and all(record["threads"] > 1 for record in forks)
    assert task_scripts(found) == []  # forked: no task is a new Python
    assert (run_dir / "lmeval" / "forkserver.log").is_file()
