"""Servers that come back (--restarts): a stand-in that SIGKILLs itself (or hangs) after K
answers is started again on its GPUs and port, and the stage resumes from what OpenCompass saved, so the
scores are exactly those of an uninterrupted run and only the prompts in flight at the crash
are asked twice. A second crash with --restarts 1 fails as a crash always did."""

from __future__ import annotations

import json

import pytest

from lmeval.configgen import JUDGE_BATCH_FACTOR
from lmeval.plan import in_flight
from scenarios import MC_ROWS, QA_ROWS, asked, write_scenario
from toolkit import MODELS, TOOLS, leftovers, shown_scores

pytestmark = [pytest.mark.processes, pytest.mark.opencompass]

CAPACITY = 2  # --max-batch-size of both servers
IN_FLIGHT = 3  # what lmeval keeps outstanding at a server of that capacity (1.5 times it)
assert in_flight(CAPACITY) == IN_FLIGHT
# The judge is sent batches of its threads (IN_FLIGHT) times JUDGE_BATCH_FACTOR prompts, and
# OpenCompass saves its replies batch by batch: the judge test needs more than a batch.
JUDGE_BATCH = IN_FLIGHT * JUDGE_BATCH_FACTOR
MANY_QA_ROWS = [(f"Question {i:02d}: what is {i} plus {i}?", str(2 * i), str(2 * i) if i % 3 else "none")
                for i in range(int(2.5 * JUDGE_BATCH))]
CRASH_AFTER = 6  # answers before the crash
SECONDS = 600


@pytest.fixture
def scenario(tmp_path):
    qa, mc, key, expected = write_scenario(tmp_path / "data", QA_ROWS, MC_ROWS)
    return qa, mc, key, {name: round(score, 2) for name, score in expected.items()}  # as the table shows them


def target_args(scenario, work_dir, *extra):
    qa, mc, _, _ = scenario
    return [str(MODELS / "demo-chat"), "--dataset", str(qa), "--dataset", str(mc), "--gpus", "0",
            "--server-args", f"--max-batch-size {CAPACITY}", "-w", str(work_dir), "--grace", "3", *TOOLS, *extra]


def judge_args(*extra):
    return ["--judge-model", str(MODELS / "demo-judge"), "--judge-gpus", "1", "--judge-tp", "1",
            "--judge-server-args", f"--max-batch-size {CAPACITY}", *extra]


def all_questions() -> set[str]:
    return {question for question, *_ in QA_ROWS + MC_ROWS}


@pytest.mark.usefixtures("venvs")
def test_a_target_that_dies_is_restarted_and_inference_resumes(scenario, tmp_path, lmeval_runner):
    work_dir, requests = tmp_path / "out", tmp_path / "requests.jsonl"
    env = lmeval_runner.env(STANDIN_ANSWER_KEY=str(scenario[2]), STANDIN_REQUEST_LOG=str(requests),
                            STANDIN_CRASH_AFTER_REQUESTS=str(CRASH_AFTER), STANDIN_CRASH_ONCE=str(tmp_path / "crashed"),
                            STANDIN_LATENCY_SECONDS="0.1")
    result = lmeval_runner.run("run", *target_args(scenario, work_dir, "--restarts", "1"), *judge_args(), env=env,
                               work_dir=work_dir, timeout=SECONDS)
    assert result.poll() == 0, result.transcript()
    assert shown_scores(result.stdout) == scenario[3]
    assert (tmp_path / "crashed").exists()
    assert ("lmeval: warning: target server was killed by SIGKILL during infer; restarting it "
            "(restart 1 of 1), then resuming infer") in result.stderr_lines
    target = asked(requests, "demo-chat")
    assert set(target) == all_questions()
    twice = [question for question, count in target.items() if count > 1]
    assert len(twice) <= IN_FLIGHT and max(target.values()) == 2, target
    assert sum(target.values()) - len(twice) == len(all_questions())
    run_dir = next(work_dir.iterdir())
    manifest = json.loads((run_dir / "lmeval.json").read_text())
    [restart] = manifest["restarts"]
    assert (restart["role"], restart["stage"], restart["died"]) == ("target", "infer", "was killed by SIGKILL")
    assert f"STANDIN_CRASH_AFTER_REQUESTS={CRASH_AFTER} reached" in restart["log_tail"]
    assert manifest["stages"]["infer"]["status"] == manifest["stages"]["eval"]["status"] == "ok"
    assert leftovers([work_dir]) == []


@pytest.mark.usefixtures("venvs")
@pytest.mark.parametrize("unhealthy_after, server_args, sign", [
    # /health 503 a second after the hang (as LMDeploy's after 90 s), no metrics to read
    ("1", "--disable-metrics", "its /health failed"),
    ("999", "", "its metrics show requests running and no token generated"),  # /health still 200
], ids=["health", "metrics"])
def test_a_target_that_hangs_is_restarted_and_inference_resumes(scenario, tmp_path, lmeval_runner, unhealthy_after,
                                                                 server_args, sign):
    """The stand-in's engine hangs after CRASH_AFTER answers (requests accepted, never answered,
    its token count frozen): found within --stall-timeout by its health or by its metrics,
    stopped, started again, and the run ends with the exact scores."""
    work_dir, requests = tmp_path / "out", tmp_path / "requests.jsonl"
    env = lmeval_runner.env(STANDIN_ANSWER_KEY=str(scenario[2]), STANDIN_REQUEST_LOG=str(requests),
                            STANDIN_HANG_AFTER_REQUESTS_OF=json.dumps({"demo-chat": CRASH_AFTER}),
                            STANDIN_HANG_ONCE=str(tmp_path / "hung"), STANDIN_HANG_UNHEALTHY_AFTER=unhealthy_after,
                            STANDIN_LATENCY_SECONDS="0.1")
    args = [arg if arg != f"--max-batch-size {CAPACITY}" else f"--max-batch-size {CAPACITY} {server_args}".strip()
            for arg in target_args(scenario, work_dir, "--restarts", "1", "--stall-timeout", "2")]
    result = lmeval_runner.run("run", *args, *judge_args(), env=env, work_dir=work_dir, timeout=SECONDS)
    assert result.poll() == 0, result.transcript()
    assert shown_scores(result.stdout) == scenario[3]
    assert (tmp_path / "hung").exists()
    [warning] = [line for line in result.stderr_lines if "restarting it" in line]
    assert warning.startswith(f"lmeval: warning: target server stalled ({sign} for ")
    assert warning.endswith(" s: the engine makes no progress) during infer; restarting it (restart 1 of 1), then "
                            "resuming infer")
    assert set(asked(requests, "demo-chat")) == all_questions()
    manifest = json.loads((work_dir / next(work_dir.iterdir()).name / "lmeval.json").read_text())
    [restart] = manifest["restarts"]
    assert (restart["role"], restart["stage"], restart["cause"]) == ("target", "infer", "stalled")
    assert leftovers([work_dir]) == []


@pytest.mark.usefixtures("venvs")
def test_a_slow_but_steady_target_is_never_taken_for_hung(scenario, tmp_path, lmeval_runner):
    """Every answer takes 3 s, longer than --stall-timeout 1: /health stays 200, nothing restarts."""
    work_dir = tmp_path / "out"
    env = lmeval_runner.env(STANDIN_ANSWER_KEY=str(scenario[2]), STANDIN_LATENCY_SECONDS="3")
    result = lmeval_runner.run("infer", *target_args(scenario, work_dir, "--stall-timeout", "1"), env=env,
                               work_dir=work_dir, timeout=SECONDS)
    assert result.poll() == 0, result.transcript()
    assert "restarting" not in result.stderr
    manifest = json.loads((work_dir / result.stdout.strip() / "lmeval.json").read_text())
    assert manifest["restarts"] == [] and manifest["stages"]["infer"]["status"] == "ok"


@pytest.mark.usefixtures("venvs")
def test_a_second_death_fails_naming_the_server(scenario, tmp_path, lmeval_runner):
    work_dir = tmp_path / "out"
    env = lmeval_runner.env(STANDIN_ANSWER_KEY=str(scenario[2]), STANDIN_CRASH_AFTER_REQUESTS="3",
                            STANDIN_LATENCY_SECONDS="0.1")
    result = lmeval_runner.run("infer", *target_args(scenario, work_dir), env=env, work_dir=work_dir,
                               timeout=SECONDS)
    assert result.poll() == 1, result.transcript()
    run_dir = next(work_dir.iterdir())
    log = run_dir / "servers" / "target.log"
    errors = [line for line in result.stderr_lines if line.startswith("lmeval: error: ")]
    assert errors == [f"lmeval: error: target server was killed by SIGKILL during infer; see {log}; the "
                      f"answers so far are kept: rerun the same command with --reuse {run_dir.name} to send only the "
                      "rest"]
    manifest = json.loads((run_dir / "lmeval.json").read_text())
    assert [(r["role"], r["stage"]) for r in manifest["restarts"]] == [("target", "infer")]
    assert manifest["stages"]["infer"]["status"] == "failed"
    assert leftovers([work_dir]) == []


@pytest.mark.usefixtures("venvs")
def test_a_judge_that_dies_is_restarted_and_judging_resumes(tmp_path, lmeval_runner):
    qa, mc, key, expected = write_scenario(tmp_path / "data", MANY_QA_ROWS, MC_ROWS)
    scenario = (qa, mc, key, expected)
    work_dir, requests = tmp_path / "out", tmp_path / "requests.jsonl"
    logged = {"STANDIN_ANSWER_KEY": str(key), "STANDIN_REQUEST_LOG": str(requests)}
    infer = lmeval_runner.run("infer", *target_args(scenario, work_dir), env=lmeval_runner.env(**logged),
                              work_dir=work_dir, timeout=SECONDS)
    assert infer.poll() == 0, infer.transcript()
    run_id = infer.stdout.strip()
    crash_after = JUDGE_BATCH + 3  # in the second batch: the first is saved
    judge = lmeval_runner.run("judge", "--reuse", run_id, "-w", str(work_dir), "--grace", "3", *TOOLS, *judge_args(),
                              env=lmeval_runner.env(**logged, STANDIN_CRASH_AFTER_REQUESTS=str(crash_after),
                                                    STANDIN_CRASH_ONCE=str(tmp_path / "crashed"),
                                                    STANDIN_LATENCY_SECONDS="0.05"),
                              work_dir=work_dir, timeout=SECONDS)
    assert judge.poll() == 0, judge.transcript()
    assert shown_scores(judge.stdout) == {name: round(score, 2) for name, score in expected.items()}
    assert ("lmeval: warning: judge server was killed by SIGKILL during eval; restarting it "
            "(restart 1 of 1), then resuming eval") in judge.stderr_lines
    judged = asked(requests, "demo-judge", MANY_QA_ROWS)
    assert set(judged) == {question for question, *_ in MANY_QA_ROWS}
    twice = [question for question, count in judged.items() if count > 1]
    # Asked again: at most the batch the judge died in; never one of the first, saved batch.
    assert 0 < len(twice) <= JUDGE_BATCH and max(judged.values()) == 2, judged
    first_batch = {question for question, *_ in MANY_QA_ROWS[:JUDGE_BATCH]}
    assert not first_batch & set(twice)
    manifest = json.loads((work_dir / run_id / "lmeval.json").read_text())
    assert [(r["role"], r["stage"], r["died"]) for r in manifest["restarts"]] == [
        ("judge", "eval", "was killed by SIGKILL")]
    assert leftovers([work_dir]) == []
