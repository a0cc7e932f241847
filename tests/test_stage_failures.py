"""A stage whose OpenCompass fails: real lmeval and stand-in servers, and an `opencompass` that
dies at import as a broken install does (exit 1). lmeval decides from the files, says so in one
line, records the stage `failed` in the manifest, and leaves no process."""

from __future__ import annotations

import pytest
from scenarios import make_chain_scenario
from toolkit import MODELS, STANDIN, read_json, only_run

pytestmark = pytest.mark.processes

BROKEN_OPENCOMPASS = """#!/bin/sh
echo "Traceback (most recent call last):" >&2
echo "ImportError: pyarrow requires NumPy 2.0 or newer" >&2
exit 1
"""


def test_opencompass_failing_at_import_fails_the_stage_and_records_it(lmeval_runner, tmp_path):
    scenario = make_chain_scenario(tmp_path / "data")
    broken = tmp_path / "bin" / "opencompass"
    broken.parent.mkdir()
    broken.write_text(BROKEN_OPENCOMPASS)
    broken.chmod(0o755)
    work_dir = tmp_path / "out"
    lm = lmeval_runner.run("infer", str(MODELS / "demo-chat"), "--dataset", str(scenario.mc), "--gpus", "0",
                           "-w", str(work_dir), "--lmdeploy", str(STANDIN), "--opencompass", str(broken),
                           work_dir=work_dir)
    assert lm.poll() == 1, lm.transcript()
    run_dir = only_run(work_dir)
    message = (f"inference failed for choices: no predictions written; see the logs below, then resume with "
               f"`lmeval infer ... --reuse {run_dir.name}`")
    assert lm.stderr_lines[-2:] == [f"lmeval: error: {message}",
                                    f"(OpenCompass wrote no task log under {run_dir}/logs/infer/demo-chat)"]
    assert "lmeval: stopped target server (1 processes ended)" in lm.stderr_lines
    assert lm.stdout == ""
    manifest = read_json(run_dir / "lmeval.json")
    assert (manifest["stages"]["infer"]["status"], manifest["stages"]["infer"]["message"]) == ("failed", message)
    assert "ImportError" in (run_dir / "lmeval" / "opencompass_infer.log").read_text()
    assert read_json(run_dir / "servers" / "target.json")["stopped"] is True
    assert lmeval_runner.leftovers() == []
