"""`--launcher slurm` on a real Slurm cluster (scripts/slurm-cluster: one slurmctld and three
slurmd on this machine, 4 stand-in GPUs each): every server a job, the stand-in lmdeploy as the
job's server, the real LMDeploy proxy in front of them, the real OpenCompass as the client.

Each test asserts what a user sees (scores, lines, exit codes), what Slurm holds afterwards
(no job of the run in squeue) and that no process is left."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import httpx
import pytest
from scenarios import SWEEP_REPLIES, make_scenario, run_scores, sweep_models
from toolkit import MODELS, REAL_LMDEPLOY, TOOLS, read_json, shown_scores, wait_until

pytestmark = [pytest.mark.processes, pytest.mark.slurm, pytest.mark.opencompass, pytest.mark.lmdeploy,
              pytest.mark.usefixtures("slurm_cluster", "venvs")]

QUEUE_SECONDS = 30  # scancel's KillWait (5 s) and the job's own stop, with room to spare


def active_jobs() -> list[dict[str, str]]:
    """The jobs squeue lists now (pending, running or completing), as `squeue` shows them."""
    out = subprocess.run(["squeue", "--noheader", "--format", "%i|%j|%T|%N|%r"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return [dict(zip(("id", "name", "state", "node", "reason"), line.split("|"))) for line in out.splitlines()]


def run_jobs(run_id: str) -> list[dict[str, str]]:
    return [job for job in active_jobs() if job["name"].startswith(f"lmeval-{run_id}-")]


@pytest.fixture
def scenario(tmp_path):
    return make_scenario(tmp_path / "data")


def slurm_env(runner, scenario, **extra: str) -> dict[str, str]:
    return runner.env(STANDIN_ANSWER_KEY=str(scenario.key), STANDIN_REAL_LMDEPLOY=str(REAL_LMDEPLOY), **extra)


def run_args(scenario, work_dir, *extra: str) -> list[str]:
    return [str(MODELS / "demo-chat"), "--dataset", str(scenario.qa), "--dataset", str(scenario.mc),
            "--launcher", "slurm", "-w", str(work_dir), "--grace", "3", *TOOLS, *extra]


def test_replicas_and_judge_as_jobs_on_three_nodes_score_exactly(lmeval_runner, scenario, tmp_path):
    work_dir = tmp_path / "out"
    lm = lmeval_runner.run("run", *run_args(scenario, work_dir, "--partition", "gpu", "--replicas", "2", "--tp", "4",
                                            "--judge-model", str(MODELS / "demo-judge"), "--judge-tp", "4"),
                           env=slurm_env(lmeval_runner, scenario), work_dir=work_dir, timeout=600)
    assert lm.poll() == 0, lm.transcript()
    assert shown_scores(lm.stdout) == scenario.expected
    run_dir = next(work_dir.iterdir())
    servers = read_json(run_dir / "lmeval.json")["servers"]
    # One node each: a job asks for --gres=gpu:4, a whole node's GPUs, and gets them from Slurm.
    placed = {role: (servers[role]["node"], servers[role]["gpus"]) for role in ("target-0", "target-1", "judge-0")}
    assert sorted(node for node, _ in placed.values()) == ["n1", "n2", "n3"], placed
    assert all(gpus == [0, 1, 2, 3] for _, gpus in placed.values()), placed
    for role in placed:
        log = (run_dir / "servers" / f"{role}.log").read_text()
        assert f"lmeval: started {role} server on GPUs 0,1,2,3, port " in log  # CUDA_VISIBLE_DEVICES as Slurm set it
        assert "--server-name 127.0.0.1 " in log  # the node's NodeAddr, not 0.0.0.0
        assert "POST /v1/chat/completions" in log, f"{role} answered nothing"
    assert servers["target"]["url"] == servers["target-proxy"]["url"]  # OpenCompass talked to the local proxy
    for role in ("target-0", "target-1", "judge-0"):
        assert f"lmeval: submitted {role} server as Slurm job {servers[role]['job_id']} (partition gpu, gpu:4): " \
               f"sbatch --job-name lmeval-{run_dir.name}-{role} " in lm.stderr
        assert f"lmeval: stopped {role} server (Slurm job {servers[role]['job_id']} cancelled)" in lm.stderr_lines
    assert run_jobs(run_dir.name) == []
    assert lmeval_runner.leftovers() == []
    keys = [(run_dir / "servers" / f"{role}.key").read_text().strip() for role in ("target-0", "judge-0")]
    assert not any(key in lm.stdout + lm.stderr for key in keys)


def test_ctrl_c_while_a_job_is_pending_cancels_it(lmeval_runner, scenario, tmp_path):
    """Partition tiny has one node: the second replica waits for Resources until Ctrl-C."""
    work_dir = tmp_path / "out"
    lm = lmeval_runner.start("infer", *run_args(scenario, work_dir, "--partition", "tiny", "--replicas", "2",
                                                "--tp", "4"),
                             env=slurm_env(lmeval_runner, scenario), work_dir=work_dir)
    lm.wait_line(r"lmeval: target-1 server: Slurm job \d+ pending \(Resources\)", 60)
    run_dir = next(work_dir.iterdir())
    assert {job["state"] for job in run_jobs(run_dir.name)} == {"RUNNING", "PENDING"}
    sent = lm.signal(signal.SIGINT)
    assert lm.wait(QUEUE_SECONDS + 10) == 130, lm.transcript()
    assert lm.ended - sent < QUEUE_SECONDS
    assert lm.stderr_lines[-1] == "lmeval: error: interrupted by Ctrl-C; every server lmeval started has been stopped"
    assert run_jobs(run_dir.name) == []
    assert lmeval_runner.leftovers() == []
    assert all(read_json(run_dir / "servers" / f"target-{i}.json")["stopped"] for i in (0, 1))


def test_a_server_job_cancelled_by_hand_fails_the_stage_naming_it(lmeval_runner, scenario, tmp_path):
    work_dir = tmp_path / "out"
    lm = lmeval_runner.start("infer", *run_args(scenario, work_dir, "--partition", "gpu"),
                             env=slurm_env(lmeval_runner, scenario, STANDIN_LATENCY_SECONDS="60"), work_dir=work_dir)
    lm.wait_line(r"lmeval: infer: \S+ .*", 120)  # OpenCompass runs: requests are in flight
    run_dir = next(work_dir.iterdir())
    job = read_json(run_dir / "servers" / "target-0.json")["job_id"]
    cancelled = time.monotonic()
    subprocess.run(["scancel", job], check=True, timeout=30)
    assert lm.wait(60) == 1, lm.transcript()
    assert lm.ended - cancelled < 10
    log = run_dir / "servers" / "target-0.log"
    errors = [line for line in lm.stderr_lines if line.startswith("lmeval: error:")]
    assert errors[0] == (f"lmeval: error: target-0 server ended: Slurm job {job} CANCELLED during infer; see {log}; "
                      f"the answers so far are kept: rerun the same command with --reuse {run_dir.name} to send "
                      "only the rest"), lm.transcript()
    assert f"log {log}, last lines:" in lm.stderr_lines
    manifest = read_json(run_dir / "lmeval.json")
    assert manifest["stages"]["infer"]["status"] == "failed"
    assert run_jobs(run_dir.name) == []
    assert lmeval_runner.leftovers() == []


def test_sigkill_of_lmeval_then_cleanup_leaves_no_job(lmeval_runner, scenario, tmp_path):
    work_dir = tmp_path / "out"
    lm = lmeval_runner.start("infer", *run_args(scenario, work_dir, "--partition", "gpu"),
                             env=slurm_env(lmeval_runner, scenario, STANDIN_LOAD_SECONDS="120"), work_dir=work_dir)
    lm.wait_line(r"lmeval: target-0 server: Slurm job \d+ running on n\d", 60)
    run_dir = next(work_dir.iterdir())
    lm.signal(signal.SIGKILL)
    assert lm.wait(10) == -signal.SIGKILL
    wait_until(lambda: len(run_jobs(run_dir.name)) == 1, 10, what="the orphaned job to stay queued")
    job = read_json(run_dir / "servers" / "target-0.json")["job_id"]
    cleanup = lmeval_runner.run("cleanup", "-w", str(work_dir), "--grace", "3", work_dir=work_dir, timeout=90)
    assert cleanup.poll() == 0, cleanup.transcript()
    assert f"lmeval: cancelled target-0 server of {run_dir.name} (Slurm job {job} cancelled)" in cleanup.stderr_lines
    assert run_jobs(run_dir.name) == []
    wait_until(lambda: not lmeval_runner.leftovers(), 10, what="the proxy and the job's processes to go")
    assert read_json(run_dir / "servers" / "target-0.json")["stopped"] is True


def test_serve_as_a_job_prints_node_and_url_and_holds_until_ctrl_c(lmeval_runner, tmp_path):
    work_dir = tmp_path / "out"
    model = MODELS / "demo-chat"
    lm = lmeval_runner.start("serve", str(model), "--launcher", "slurm", "--partition", "gpu", "--tp", "2",
                             "--lmdeploy", TOOLS[1], "-w", str(work_dir), "--grace", "3", work_dir=work_dir)
    _, ready = lm.wait_line(r"lmeval: ready at (http://127\.0\.0\.1:\d+)/v1 on node (n\d) serving 'demo-chat'; "
                            r"API key in (\S+)", 60)
    url, node, key_file = ready.groups()
    folder = next(work_dir.iterdir())
    job = read_json(folder / "servers" / "model.json")["job_id"]
    assert [(j["id"], j["state"], j["node"]) for j in active_jobs() if j["id"] == job] == [(job, "RUNNING", node)]
    with httpx.Client(trust_env=False, timeout=5) as client:
        key = open(key_file).read().strip()
        answer = client.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert [entry["id"] for entry in answer.json()["data"]] == ["demo-chat"]
        assert client.get(f"{url}/v1/models").status_code == 401
    time.sleep(1)
    assert lm.poll() is None  # it holds
    lm.signal(signal.SIGINT)
    assert lm.wait(QUEUE_SECONDS + 10) == 0, lm.transcript()
    assert lm.stderr_lines[-1] == f"lmeval: stopped model server (Slurm job {job} cancelled)"
    assert [j for j in active_jobs() if j["id"] == job] == []
    assert lmeval_runner.leftovers() == []
    assert json.loads((folder / "servers" / "model.json").read_text())["stopped"] is True


def test_several_models_share_one_judge_job_and_score_exactly(lmeval_runner, tmp_path):
    """`lmeval run alpha beta --launcher slurm`: a job for each model's server, one after the
    other, and one judge job for both, submitted once and cancelled after the last judging."""
    folders, datasets, keys, expected = sweep_models(tmp_path, {name: SWEEP_REPLIES[name] for name in ("alpha", "beta")})
    work_dir = tmp_path / "out"
    lm = lmeval_runner.run("run", *map(str, folders), *datasets, "--launcher", "slurm", "--partition", "gpu",
                           "--tp", "4", "--judge-model", str(MODELS / "demo-judge"), "--judge-tp", "4",
                           "-w", str(work_dir), "--grace", "3", *TOOLS,
                           env=lmeval_runner.env(STANDIN_ANSWER_KEY=str(keys), STANDIN_REAL_LMDEPLOY=str(REAL_LMDEPLOY)),
                           work_dir=work_dir, timeout=600)
    assert lm.poll() == 0, lm.transcript()
    assert run_scores(work_dir) == expected
    alpha, beta = sorted(work_dir.iterdir())
    submitted = [line.split(" (partition")[0] for line in lm.stderr_lines if " server as Slurm job " in line]
    assert [re.sub(r"job \d+", "job N", line) for line in submitted] == [
        "lmeval: alpha: submitted target-0 server as Slurm job N", "lmeval: submitted judge-0 server as Slurm job N",
        "lmeval: beta: submitted target-0 server as Slurm job N"]
    judge_job = read_json(alpha / "lmeval.json")["servers"]["judge-0"]["job_id"]
    assert read_json(beta / "lmeval.json")["servers"]["judge-0"]["job_id"] == judge_job
    evals = [index for index, line in enumerate(lm.stderr_lines) if re.match(r"lmeval: (alpha|beta): eval: ", line)]
    assert len(evals) == 2
    assert lm.stderr_lines.index(f"lmeval: stopped judge-0 server (Slurm job {judge_job} cancelled)") > evals[-1]
    assert run_jobs(alpha.name) == [] and run_jobs(beta.name) == []
    assert lmeval_runner.leftovers() == []
