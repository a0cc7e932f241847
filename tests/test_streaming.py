"""Judging that streams behind inference: with the judge on GPUs of its own, a dataset whose
predictions are complete is judged while the next dataset is still being inferred; the scores
are those of the answer key, and the manifest says when each dataset was inferred and judged."""

from __future__ import annotations

import json
import re

import pytest

from scenarios import QA_ROWS, write_scenario
from toolkit import MODELS, TOOLS, leftovers, shown_scores

pytestmark = [pytest.mark.processes, pytest.mark.opencompass]

# A short judged dataset first, then a multiple-choice one that takes the model a while.
SLOW_MC_ROWS = [(f"Pick item {i:02d}: ", ["x", "y", "z"], "ABC"[i % 3], "ABC"[i % 3] if i % 4 else "A")
                for i in range(60)]
LATENCY_SECONDS = "2.0"  # per answer, 2 at once: a minute for the multiple-choice set, more than a start-up


@pytest.mark.usefixtures("venvs")
def test_a_finished_dataset_is_judged_while_the_next_is_inferred(tmp_path, lmeval_runner):
    qa, mc, key, expected = write_scenario(tmp_path / "data", QA_ROWS[:5], SLOW_MC_ROWS)
    work_dir = tmp_path / "out"
    result = lmeval_runner.run(
        "run", str(MODELS / "demo-chat"), "--dataset", str(qa), "--dataset", str(mc), "--gpus", "0",
        "--server-args", "--max-batch-size 2", "--judge-model", str(MODELS / "demo-judge"), "--judge-gpus", "1",
        "--judge-tp", "1", "-w", str(work_dir), *TOOLS,
        env=lmeval_runner.env(STANDIN_ANSWER_KEY=str(key), STANDIN_LATENCY_SECONDS=LATENCY_SECONDS),
        work_dir=work_dir, timeout=600)
    assert result.poll() == 0, result.transcript()
    assert shown_scores(result.stdout) == {name: round(score, 2) for name, score in expected.items()}
    # trivia's evaluation starts while choices is inferred (choices may get one too, if its
    # predictions are written before OpenCompass's inference has exited); each dataset once.
    streamed = [line.removeprefix("lmeval: eval of ").split(" while inference goes on: ")[0]
                for line in result.stderr_lines if re.match(r"lmeval: eval of .* while inference goes on: ", line)]
    assert streamed[0] == "trivia" and len(streamed) == len(set(streamed)) <= 2, result.stderr
    run_dir = next(work_dir.iterdir())
    times = json.loads((run_dir / "lmeval.json").read_text())["dataset_times"]
    assert times["trivia"]["inferred"] < times["trivia"]["judged"] < times["choices"]["inferred"], times
    assert times["choices"]["inferred"] < times["choices"]["judged"]
    assert [line.split(" on ")[0] for line in result.stderr_lines if line.startswith("lmeval: started ")] == [
        "lmeval: started target server", "lmeval: started judge server"]
    assert leftovers([work_dir]) == []


@pytest.mark.usefixtures("venvs")
def test_a_judge_that_dies_while_streaming_is_restarted_for_the_eval_stage(tmp_path, lmeval_runner):
    """The judge dies judging trivia while choices is inferred: inference goes on, the judge is
    started again (--restarts 1, the default) and the eval stage judges what is left."""
    qa, mc, key, expected = write_scenario(tmp_path / "data", QA_ROWS[:5], SLOW_MC_ROWS)
    work_dir = tmp_path / "out"
    result = lmeval_runner.run(
        "run", str(MODELS / "demo-chat"), "--dataset", str(qa), "--dataset", str(mc), "--gpus", "0",
        "--server-args", "--max-batch-size 2", "--judge-model", str(MODELS / "demo-judge"), "--judge-gpus", "1",
        "--judge-tp", "1", "--judge-server-args", "--max-batch-size 1", "-w", str(work_dir), *TOOLS,
        env=lmeval_runner.env(STANDIN_ANSWER_KEY=str(key), STANDIN_LATENCY_SECONDS=LATENCY_SECONDS,
                              STANDIN_CRASH_AFTER_REQUESTS_OF=json.dumps({"demo-judge": 2}),
                              STANDIN_CRASH_ONCE=str(tmp_path / "crashed")),
        work_dir=work_dir, timeout=600)
    assert result.poll() == 0, result.transcript()
    assert shown_scores(result.stdout) == {name: round(score, 2) for name, score in expected.items()}
    assert ("lmeval: warning: judge server was killed by SIGKILL during eval; restarting it "
            "(restart 1 of 1), then resuming eval") in result.stderr_lines
    run_dir = next(work_dir.iterdir())
    manifest = json.loads((run_dir / "lmeval.json").read_text())
    assert [(r["role"], r["stage"], r["died"]) for r in manifest["restarts"]] == [
        ("judge", "eval", "was killed by SIGKILL")]
    # It died while choices was still inferred: the streamed evaluation of trivia was cut short.
    assert (tmp_path / "crashed").stat().st_mtime < manifest["dataset_times"]["choices"]["inferred"]
    assert leftovers([work_dir]) == []
