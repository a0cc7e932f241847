"""`lmeval judge --reuse RUN` on a run lmeval did not make: OpenCompass run by hand
(`opencompass CONFIG -m infer`, the stock OpenAISDK, against a stand-in server the test runs),
then judged by lmeval with the exact scores of the answer key, its predictions untouched."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from scenarios import make_scenario
from toolkit import MODELS, STANDIN, TOOLS, VENVS, health, lmeval_env, read_json, shown_scores, tree_digest, wait_until

from lmeval import configgen, configplan
from lmeval.datasets import load_user_dataset
from lmeval.launch import free_port
from pydantic import SecretStr

pytestmark = [pytest.mark.processes, pytest.mark.opencompass]

RUN_ID = "20250101_120000"


@pytest.fixture
def users_server(tmp_path):
    """The model server a user started by hand."""
    scenario = make_scenario(tmp_path / "data")
    port = free_port()
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen([str(STANDIN), "serve", "api_server", str(MODELS / "demo-chat"), "--server-port",
                                   str(port), "--model-name", "demo-chat", "--api-keys", "sk-by-hand"],
                                  env=lmeval_env(STANDIN_ANSWER_KEY=str(scenario.key)), stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: health(port) == 200, 30, what="the user's server")
        yield scenario, port
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def inferred_by_hand(tmp_path, scenario, port):
    """What a user gets from `opencompass CONFIG -m infer -w WORK -r RUN` with a config of their own."""
    datasets = tuple(load_user_dataset(path) for path in (scenario.qa, scenario.mc))
    served = configplan.ServedModel(base_url=f"http://127.0.0.1:{port}", api_key=SecretStr("sk-by-hand"),
                                    served_name="demo-chat", tokenizer_path=str(MODELS / "demo-chat"), in_flight=4)
    text = configgen.render_config("infer", configplan.ConfigPlan(datasets=datasets, model_abbr="demo-chat",
                                                                  target=served))
    # OpenCompass's own model class, as anybody's config has it (the runner is OpenCompass's already).
    plugin = "from lmeval_opencompass import LmevalOpenAISDK\n"
    assert plugin in text
    text = text.replace(plugin, "from opencompass.models import OpenAISDK\n")
    config = tmp_path / "my_config.py"
    config.write_text(text.replace("LmevalOpenAISDK", "OpenAISDK"))
    work_dir = tmp_path / "out"
    done = subprocess.run([str(VENVS / "opencompass" / "bin" / "opencompass"), str(config), "-m", "infer",
                           "-w", str(work_dir), "-r", RUN_ID], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, check=False, env=lmeval_env())
    assert done.returncode == 0, done.stdout[-3000:]
    run_dir = work_dir / RUN_ID
    assert sorted(p.name for p in (run_dir / "predictions" / "demo-chat").iterdir()) == ["choices.json", "trivia.json"]
    assert not (run_dir / "lmeval.json").exists()
    return work_dir, run_dir


def test_judge_reuse_of_an_opencompass_run_made_by_hand(users_server, lmeval_runner, tmp_path):
    scenario, port = users_server
    work_dir, run_dir = inferred_by_hand(tmp_path, scenario, port)
    predictions = tree_digest(run_dir / "predictions")
    lm = lmeval_runner.run("judge", "--reuse", RUN_ID, "--judge-model", str(MODELS / "demo-judge"), "--judge-gpus", "1",
                           "--judge-tp", "1", "-w", str(work_dir), *TOOLS, work_dir=work_dir, timeout=600,
                           env=lmeval_runner.env(STANDIN_ANSWER_KEY=str(scenario.key)))
    assert lm.poll() == 0, lm.transcript()
    config = next(line for line in lm.stderr_lines if "was not made by lmeval" in line)
    assert config.startswith(f"lmeval: warning: run {RUN_ID} was not made by lmeval: judging model demo-chat on "
                             "trivia, choices, as configs/")
    assert shown_scores(lm.stdout) == scenario.expected
    assert tree_digest(run_dir / "predictions") == predictions  # untouched
    manifest = read_json(run_dir / "lmeval.json")
    assert manifest["model_abbr"] == "demo-chat" and manifest["stages"]["eval"]["status"] == "ok"
    assert manifest["inputs"]["files"] == [str(scenario.qa), str(scenario.mc)]
    assert lmeval_runner.leftovers() == []
