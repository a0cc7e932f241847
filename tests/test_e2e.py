"""End to end through the real OpenCompass 0.5.4 and stand-in LMDeploy servers on loopback:
the scores a user sees are exactly the share the answer key gets right."""

from __future__ import annotations

import json

import pytest

from scenarios import MC_ROWS, QA_ROWS, answer_columns, make_scenario, replies_of, row_outcomes, standard_error
from toolkit import MODELS, REAL_LMDEPLOY, TOOLS, leftovers, shown_scores

pytestmark = [pytest.mark.processes, pytest.mark.opencompass]


@pytest.fixture
def scenario(tmp_path):
    return make_scenario(tmp_path)


E2E_SECONDS = 600


def common(scenario, work_dir) -> list[str]:
    return [str(MODELS / "demo-chat"), "--dataset", str(scenario.qa), "--dataset", str(scenario.mc),
            "--gpus", "0", "--judge-model", str(MODELS / "demo-judge"), "--judge-gpus", "1",
            "--judge-tp", "1", "-w", str(work_dir), *TOOLS]


@pytest.mark.usefixtures("venvs")
def test_run_scores_exactly_the_answer_key(scenario, tmp_path, lmeval_runner):
    work_dir = tmp_path / "out"
    result = lmeval_runner.run("run", *common(scenario, work_dir), work_dir=work_dir, timeout=E2E_SECONDS,
                               env=lmeval_runner.env(STANDIN_ANSWER_KEY=str(scenario.key)))
    assert result.poll() == 0, result.transcript()
    assert shown_scores(result.stdout) == {"trivia": 60.0, "choices": 80.0} == scenario.expected
    assert leftovers([work_dir]) == []
    run_dir = next(work_dir.iterdir())
    assert result.stderr_lines[-1] == (f"lmeval: every prompt, answer and judge reply: "
                                       f"lmeval report {run_dir.name} -w {work_dir}")
    manifest = json.loads((run_dir / "lmeval.json").read_text())
    assert manifest["stages"]["infer"]["status"] == manifest["stages"]["eval"]["status"] == "ok"
    assert {(s["dataset"], s["value"]) for s in manifest["scores"]} == {("trivia", 60.0), ("choices", 80.0)}


@pytest.mark.usefixtures("venvs")
def test_infer_then_judge_reuse_gives_the_same_scores(scenario, tmp_path, lmeval_runner):
    work_dir = tmp_path / "out"
    env = lmeval_runner.env(STANDIN_ANSWER_KEY=str(scenario.key))
    infer = lmeval_runner.run("infer", *common(scenario, work_dir), env=env, work_dir=work_dir, timeout=E2E_SECONDS)
    assert infer.poll() == 0, infer.transcript()
    run_id = infer.stdout.strip()
    assert (work_dir / run_id).is_dir()
    assert f"lmeval judge --reuse {run_id} -w {work_dir}" in infer.stderr
    assert "judge server" not in infer.stderr  # inference alone starts no judge
    assert leftovers([work_dir]) == []

    judge = lmeval_runner.run("judge", "--reuse", run_id, "--judge-model", str(MODELS / "demo-judge"),
                              "--judge-gpus", "1", "--judge-tp", "1", "-w", str(work_dir), *TOOLS, env=env,
                              work_dir=work_dir, timeout=E2E_SECONDS)
    assert judge.poll() == 0, judge.transcript()
    assert "started target server" not in judge.stderr
    assert "started judge server" in judge.stderr
    assert shown_scores(judge.stdout) == scenario.expected
    assert leftovers([work_dir]) == []

    shown = lmeval_runner.run("results", run_id, "-w", str(work_dir), "--format", "csv")
    assert shown.poll() == 0, shown.transcript()
    errors = {name: f"{standard_error(right):.2f}" for name, right in row_outcomes(QA_ROWS[:5], MC_ROWS).items()}
    assert errors == {"trivia": "24.49", "choices": "20.00"}
    replies = replies_of(QA_ROWS[:5], MC_ROWS)
    lines = shown.stdout.splitlines()
    assert lines[0] == ("dataset,metric,demo-chat,stderr,cut_share,cut,empty,too_long,tokens_mean,tokens_median,"
                        "tokens_p95,tokens_max,tokens_per_second")
    assert [line.rsplit(",", 1)[0] for line in lines[1:]] == [
        f"trivia,accuracy,60.00,{errors['trivia']},{answer_columns(replies['trivia'])}",
        f"choices,accuracy,80.00,{errors['choices']},{answer_columns(replies['choices'])}"]
    assert all(float(line.rsplit(",", 1)[1]) > 0 for line in lines[1:])  # tokens a second


@pytest.mark.usefixtures("venvs")
def test_replicas_behind_the_real_proxy_share_the_work(scenario, tmp_path, lmeval_runner):
    """Two model and two judge replicas behind LMDeploy's own proxy: same scores, both replicas
    of each role answered, every process gone."""
    work_dir = tmp_path / "out"
    args = [str(MODELS / "demo-chat"), "--dataset", str(scenario.qa), "--dataset", str(scenario.mc),
            "--gpus", "0,1", "--replicas", "2", "--judge-model", str(MODELS / "demo-judge"),
            "--judge-gpus", "2,3", "--judge-tp", "1", "--judge-replicas", "2", "-w", str(work_dir), *TOOLS]
    env = lmeval_runner.env(STANDIN_ANSWER_KEY=str(scenario.key), STANDIN_REAL_LMDEPLOY=str(REAL_LMDEPLOY))
    result = lmeval_runner.run("run", *args, env=env, work_dir=work_dir, timeout=E2E_SECONDS)
    assert result.poll() == 0, result.transcript()
    assert shown_scores(result.stdout) == scenario.expected
    assert leftovers([work_dir]) == []
    run_dir = next(work_dir.iterdir())
    for role in ("target", "judge"):
        proxy_log = (run_dir / "servers" / f"{role}-proxy.log").read_text()
        assert proxy_log.count("POST /nodes/add") == 2
        for replica in (0, 1):
            log = (run_dir / "servers" / f"{role}-{replica}.log").read_text()
            assert "POST /v1/chat/completions" in log, f"{role}-{replica} answered nothing"
    manifest = json.loads((run_dir / "lmeval.json").read_text())
    assert manifest["servers"]["target"]["url"] == manifest["servers"]["target-proxy"]["url"]
    assert [manifest["servers"][f"target-{i}"]["gpus"] for i in (0, 1)] == [[0], [1]]


@pytest.mark.usefixtures("venvs")
def test_generation_settings_reach_the_server_and_are_part_of_the_run(scenario, tmp_path, lmeval_runner):
    """--top-p/--top-k/--repetition-penalty/--extra-body are in every request body the server
    gets, in the manifest, and in the fingerprint: a reuse with another value is refused."""
    work_dir, requests = tmp_path / "out", tmp_path / "requests.jsonl"
    settings = ["--top-p", "0.95", "--top-k", "20", "--repetition-penalty", "1.05",
                "--extra-body", '{"chat_template_kwargs": {"enable_thinking": true}}']
    args = [str(MODELS / "demo-chat"), "--dataset", str(scenario.mc), "--gpus", "0", "-w", str(work_dir), *TOOLS]
    infer = lmeval_runner.run("infer", *args, *settings, work_dir=work_dir, timeout=E2E_SECONDS,
                              env=lmeval_runner.env(STANDIN_ANSWER_KEY=str(scenario.key), STANDIN_REQUEST_LOG=str(requests)))
    assert infer.poll() == 0, infer.transcript()
    bodies = [json.loads(line) for line in requests.read_text().splitlines()]
    assert len(bodies) == 5  # the five multiple-choice rows
    for body in bodies:
        assert (body["top_p"], body["top_k"], body["repetition_penalty"]) == (0.95, 20, 1.05)
        assert body["chat_template_kwargs"] == {"enable_thinking": True}
    run_id = infer.stdout.strip()
    generation = json.loads((work_dir / run_id / "lmeval.json").read_text())["inputs"]["generation"]
    assert generation["extra_body"] == {"chat_template_kwargs": {"enable_thinking": True}}
    assert (generation["top_p"], generation["top_k"], generation["repetition_penalty"]) == (0.95, 20, 1.05)
    other = [*settings[:3], "40", *settings[4:]]
    refused = lmeval_runner.run("infer", *args, *other, "--reuse", run_id, work_dir=work_dir)
    assert refused.poll() == 2, refused.transcript()
    assert refused.stderr_lines[-1].startswith(f"lmeval: error: run {run_id} was inferred with top-k 20, not 40; ")
