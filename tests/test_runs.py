"""`lmeval runs` on run folders the real OpenCompass wrote (copies of the chain's judged run),
one finished, one whose lmeval was killed mid-inference, one an lmeval holds now."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from lmeval.cli import app
from toolkit import copy_run

pytestmark = [pytest.mark.processes, pytest.mark.opencompass]

JUDGED, KILLED, WORKING = "20250101_120000", "20250102_120000", "20250103_120000"


def copy_chain_run(chain, work_dir, run_id):
    run_dir = copy_run(chain.run_dir, work_dir, run_id, chain.run_dir)
    return run_dir, json.loads((run_dir / "lmeval.json").read_text())


def set_infer_running(run_dir, manifest):
    manifest["stages"] = {"infer": {**manifest["stages"]["infer"], "status": "running"}}
    manifest["scores"] = []
    (run_dir / "lmeval.json").write_text(json.dumps(manifest))


@pytest.fixture
def work_dir(chain, tmp_path):
    work_dir = tmp_path / "out"
    work_dir.mkdir()
    copy_chain_run(chain, work_dir, JUDGED)
    for run_id in (KILLED, WORKING):
        set_infer_running(*copy_chain_run(chain, work_dir, run_id))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(work_dir / WORKING / '.lmeval.lock')!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); print('held', flush=True)\n"
        "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    yield work_dir, holder.pid
    holder.kill()
    holder.wait()


def test_runs_lists_every_run_newest_first_with_its_state_and_scores(chain, work_dir):
    work_dir, holder = work_dir
    shown = CliRunner().invoke(app, ["runs", "-w", str(work_dir), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    rows = json.loads(shown.stdout)
    expected = {name: float(value) for name, value in chain.scenario.expected.items()}
    assert [(row["run_id"], row["model"], row["datasets"], row["state"], row["stages"]) for row in rows] == [
        (WORKING, "demo-chat", ["trivia", "choices"], f"working (pid {holder})", {"infer": "running"}),
        (KILLED, "demo-chat", ["trivia", "choices"], "interrupted", {"infer": "running"}),
        (JUDGED, "demo-chat", ["trivia", "choices"], "judged", {"infer": "ok", "eval": "ok"}),
    ]
    assert {name: round(value, 2) for name, value in rows[2]["scores"].items()} == expected
    assert rows[0]["scores"] == rows[1]["scores"] == {}
    table = CliRunner().invoke(app, ["runs", "-w", str(work_dir)], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    lines = [line for line in table.stdout.splitlines() if line.startswith("│ 2025")]
    assert [line.split("│")[1].strip() for line in lines] == [WORKING, KILLED, JUDGED]
    assert f"trivia {chain.scenario.expected['trivia']}, choices {chain.scenario.expected['choices']}" in lines[2]


def test_runs_of_an_empty_work_dir_say_so(tmp_path):
    shown = CliRunner().invoke(app, ["runs", "-w", str(tmp_path)])
    assert (shown.exit_code, shown.stderr) == (2, f"lmeval: error: no runs in {tmp_path}; run `lmeval run` first or "
                                                  "pass -w\n")
