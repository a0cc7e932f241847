"""Scores logged where training runs are watched, with the real trackers: an MLflow tracking
server this module starts on loopback (from .venvs/mlflow, its store in a temporary folder),
read back with MLflow's own client, and W&B in offline mode, its run file read back with W&B's
own record definitions (tests/wandb_files.py). The scores expected are computed from the
stand-in's answer keys (tests/scenarios.py), never read from a run."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import httpx
import pytest

from exact_stats import exact_interval
from lmeval.steps import checkpoint_step
from lmeval.tracking import Point, failure_reason, group_run_id, metric_key, new_params
from scenarios import MC_ROWS, QA_ROWS, judge_agrees, row_outcomes, standard_error, sweep_models
from toolkit import MODELS, TOOLS, VENVS, shown_scores, wait_until
from wandb_files import offline_runs

# Three checkpoints of one training run, named by their steps as Hugging Face's Trainer names
# them. Trivia (judged): 2 of 12 right, then the chain's 8 (6 more), then all 12: both changes
# significant. Multiple choice: 4 of 5 twice (no change), then none.
RIGHT_TRIVIA = [index for index, (_, gold, reply) in enumerate(QA_ROWS) if judge_agrees(reply, gold)]
CHECKPOINTS = {
    "checkpoint-100": ([(q, gold, "no idea" if index in RIGHT_TRIVIA[:6] else reply)
                        for index, (q, gold, reply) in enumerate(QA_ROWS)], MC_ROWS),
    "checkpoint-200": (QA_ROWS, MC_ROWS),
    "checkpoint-300": ([(q, gold, gold) for q, gold, _ in QA_ROWS],
                       [(q, options, gold, "C" if gold != "C" else "A") for q, options, gold, _ in MC_ROWS]),
}
STEPS = {"checkpoint-100": 100, "checkpoint-200": 200, "checkpoint-300": 300}
LOGGED_LINE = re.compile(r"lmeval: logged (\d+) runs? to (MLflow|W&B) at steps? ([\d, ]+): (.+)")


def expected_metrics(name: str) -> dict[str, float]:
    """The metrics lmeval must log for checkpoint NAME, from the key: each dataset's accuracy as
    OpenCompass's summary gives it (two decimals), its standard error over questions, and its
    share of answers cut (none: the stand-in's replies are short)."""
    metrics = {}
    for dataset, right in row_outcomes(*CHECKPOINTS[name]).items():
        metrics[f"lmeval/{dataset}/accuracy"] = round(100 * sum(right) / len(right), 2)
        metrics[f"lmeval/{dataset}/accuracy_stderr"] = standard_error(right)
        metrics[f"lmeval/{dataset}/cut_share"] = 0.0
    return metrics


@pytest.mark.parametrize(("model", "step"), [
    ("/ckpt/run7/checkpoint-1200", 1200),  # Hugging Face's Trainer
    ("/ckpt/run7/iter_0001200", 1200),  # Megatron
    ("/ckpt/run7/iter_0001200/hf/", 1200),  # converted, one folder down
    ("/ckpt/run7/global_step1200", 1200),  # DeepSpeed
    ("/ckpt/olmo/step1200", 1200),
    ("/ckpt/olmo/step_1200", 1200),
    ("/ckpt/run7/checkpoint-final", None),
    ("/models/Qwen3-8B", None),
    ("org/model-step", None),
])
def test_the_step_a_checkpoint_folder_names(model, step):
    assert checkpoint_step(model) == step


def test_metric_keys_and_failures_are_what_a_tracker_takes_and_a_user_reads():
    assert metric_key("lcb_code", "pass@1 (6 runs)") == "lmeval/lcb_code/pass_1 _6 runs_"
    refused = OSError("API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/create failed with exception "
                      "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded (Caused by "
                      "NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=5000): Failed to establish a new "
                      "connection: [Errno 111] Connection refused\"))")
    assert failure_reason(refused) == "http://127.0.0.1:5000: Connection refused"
    assert failure_reason(RuntimeError("permission denied for project x\nmore")) == "permission denied for project x"
    assert group_run_id("weekly evals") == group_run_id("weekly evals") != group_run_id("weekly evals 2")
    assert re.fullmatch(r"lmeval-weekly-evals-[0-9a-f]{8}", group_run_id("weekly evals"))


def test_points_of_one_tracker_run_made_with_other_settings_are_said():
    def point(run_id: str, temperature: str, version: str) -> Point:
        return Point(run_id, Path(run_id), "/ckpt/m", 0, {"lmeval/temperature": temperature,
                                                         "lmeval/version/lmeval": version}, {})

    warnings: list[str] = []
    added = new_params({"lmeval/temperature": "0.6"}, [point("r1", "0.6", "0.1.0"), point("r2", "0.0", "0.2.0")],
                       warnings.append)
    assert added == {"lmeval/version/lmeval": "0.1.0"}
    assert warnings == ["run r2 was made with temperature 0.0, not 0.6: its point is not comparable with the others "
                        "of the tracker run, whose params keep the first values"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on loopback, its runs in SQLite and its artifacts in a temporary folder;
    its tracking URI."""
    executable = VENVS / "mlflow" / "bin" / "mlflow"
    if not executable.exists():
        pytest.fail(f"{executable} is missing: run scripts/setup first")
    store = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = (store / "server.log").open("w")
    server = subprocess.Popen(
        [str(executable), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{store}/mlflow.db", "--artifacts-destination", str(store / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert server.poll() is None, (store / "server.log").read_text()
        try:
            return httpx.get(f"{uri}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, timeout=180, interval=0.5)
        yield uri
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)
        log.close()


def mlflow_client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def metric_points(client, run_id: str) -> dict[str, dict[int, float]]:
    """Each metric of the MLflow run: its value at each step."""
    run = client.get_run(run_id)
    return {key: {point.step: point.value for point in client.get_metric_history(run_id, key)}
            for key in run.data.metrics}


def artifact_files(client, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for entry in client.list_artifacts(run_id, path):
        found += artifact_files(client, run_id, entry.path) if entry.is_dir else [entry.path]
    return found


def run_checkpoints(runner, folders, datasets, keys, work_dir: Path, *extra: str, **env: str):
    return runner.run("run", *map(str, folders), *datasets, "--gpus", "0", "--judge-model", str(MODELS / "demo-judge"),
                      "--judge-gpus", "1", "--judge-tp", "1", "-w", str(work_dir), *TOOLS, *extra,
                      env=runner.env(STANDIN_ANSWER_KEY=str(keys), COLUMNS="250", **env), work_dir=work_dir,
                      timeout=900)


def runs_by_model(work_dir: Path) -> dict[str, str]:
    """Each checkpoint's run id, from the run folders' manifests."""
    return {json.loads(path.read_text())["model_abbr"]: path.parent.name for path in work_dir.glob("*/lmeval.json")}


@pytest.mark.processes
@pytest.mark.opencompass
@pytest.mark.usefixtures("venvs")
def test_a_sweep_of_checkpoints_is_one_curve_in_mlflow_and_wandb(mlflow_server, tmp_path, lmeval_runner):
    folders, datasets, keys, _ = sweep_models(tmp_path, CHECKPOINTS)
    work_dir = tmp_path / "out"
    result = run_checkpoints(lmeval_runner, folders, datasets, keys, work_dir, "--log-to", "mlflow",
                             "--log-to", "wandb", MLFLOW_TRACKING_URI=mlflow_server,
                             MLFLOW_EXPERIMENT_NAME="pretrain-7b", WANDB_MODE="offline", WANDB_PROJECT="pretrain-7b",
                             WANDB_DIR=str(tmp_path))
    assert result.poll() == 0, result.transcript()
    runs = runs_by_model(work_dir)
    assert sorted(runs) == sorted(CHECKPOINTS)

    # What the user is told, last: where each tracker has the curve.
    logged = [LOGGED_LINE.fullmatch(line) for line in result.stderr_lines[-2:]]
    assert all(logged), result.stderr
    assert [(found[1], found[2], found[3]) for found in logged] == [("3", "MLflow", "100, 200, 300"),
                                                                    ("3", "W&B", "100, 200, 300")]
    mlflow_url = logged[0][4]

    # MLflow: one run in the experiment, a point per checkpoint at its step for every metric.
    client = mlflow_client(mlflow_server)
    experiment = client.get_experiment_by_name("pretrain-7b")
    tracked = client.search_runs([experiment.experiment_id])
    assert len(tracked) == 1
    run = tracked[0]
    assert mlflow_url == f"{mlflow_server}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"
    assert run.info.status == "FINISHED"
    expected: dict[str, dict[int, float]] = {}
    for name, step in STEPS.items():
        for key, value in expected_metrics(name).items():
            expected.setdefault(key, {})[step] = value
    points = metric_points(client, run.info.run_id)
    assert points.keys() == expected.keys()
    for key, by_step in expected.items():
        assert points[key] == pytest.approx(by_step), key
    params = run.data.params
    assert params["lmeval/task"] == "files"
    assert params["lmeval/datasets"] == "trivia,choices"
    assert params["lmeval/judge_model"] == str(MODELS / "demo-judge")
    assert params["lmeval/version/opencompass"] == "0.5.4"
    assert "lmeval/model" not in params  # three models: each run's is in its manifest
    files = artifact_files(client, run.info.run_id)
    assert sorted(files) == sorted(f"lmeval/{run_id}/{name}" for run_id in runs.values()
                                   for name in ("lmeval.json", "report.html"))
    (tmp_path / "downloaded").mkdir()
    manifest = json.loads(Path(client.download_artifacts(
        run.info.run_id, f"lmeval/{runs['checkpoint-300']}/lmeval.json", str(tmp_path / "downloaded"))).read_text())
    assert manifest["step"] == 300
    assert manifest["inputs"]["model"] == str(folders[2])

    # W&B: one offline run, a history row per checkpoint with its step and metrics.
    [offline] = offline_runs(tmp_path)
    assert offline.project == "pretrain-7b"
    assert offline.config["lmeval/datasets"] == "trivia,choices"
    rows = sorted(offline.history, key=lambda row: row["lmeval/step"])
    assert [row["lmeval/step"] for row in rows] == [100, 200, 300]
    for row, name in zip(rows, STEPS):
        assert {key: value for key, value in row.items() if key.startswith("lmeval/") and key != "lmeval/step"} \
            == pytest.approx(expected_metrics(name)), name
    assert offline.artifacts == {f"lmeval-{run_id}": ["lmeval.json", "report.html"] for run_id in runs.values()}

    # Each run's manifest says where its scores went, and at which step.
    for name, run_id in runs.items():
        tracking = json.loads((work_dir / run_id / "lmeval.json").read_text())["tracking"]
        assert [(entry["to"], entry["step"]) for entry in tracking] == [("mlflow", STEPS[name]),
                                                                        ("wandb", STEPS[name])]
        assert tracking[0]["run_id"] == run.info.run_id and tracking[1]["run_id"] == offline.run_id

    # The chart over steps, the runs given in any order: a line and a band per dataset, a star
    # where a checkpoint differs significantly from the one before (the exact bootstrap interval
    # of the paired differences, computed here, excludes 0).
    chart = tmp_path / "steps.svg"
    given = [runs["checkpoint-300"], runs["checkpoint-100"], runs["checkpoint-200"]]
    compared = lmeval_runner.run("compare", *given, "-w", str(work_dir), "--plot", str(chart), timeout=120)
    assert compared.poll() == 0, compared.transcript()
    ids = {element.get("id") for element in ElementTree.parse(chart).iter()}
    assert {"line:trivia", "line:choices", "band:trivia", "band:choices"} <= ids
    stars = set()
    names = list(STEPS)
    for earlier, later in zip(names, names[1:]):
        for dataset, before in row_outcomes(*CHECKPOINTS[earlier]).items():
            after = row_outcomes(*CHECKPOINTS[later])[dataset]
            low, high = exact_interval([int(b) - int(a) for a, b in zip(before, after)])
            if not low <= 0 <= high:
                stars.add(f"change:{dataset}:{runs[later]}")
    assert stars, "the checkpoints are made to change significantly somewhere"
    assert {found for found in ids if found and found.startswith("change:")} == stars
    if os.environ.get("LMEVAL_STEPS_CHART"):  # the README's chart: LMEVAL_STEPS_CHART=docs/steps.png
        drawn = lmeval_runner.run("compare", *given, "-w", str(work_dir), "--plot",
                                  str(Path(os.environ["LMEVAL_STEPS_CHART"]).absolute()), timeout=120)
        assert drawn.poll() == 0, drawn.transcript()


@pytest.mark.processes
@pytest.mark.opencompass
@pytest.mark.usefixtures("venvs")
def test_a_tracker_that_refuses_costs_nothing_and_lmeval_log_retries(mlflow_server, tmp_path, lmeval_runner):
    names = {"iter_0000400": CHECKPOINTS["checkpoint-300"], "iter_0000500": CHECKPOINTS["checkpoint-200"]}
    folders, datasets, keys, _ = sweep_models(tmp_path, names)
    work_dir = tmp_path / "out"
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    began = time.monotonic()
    result = run_checkpoints(lmeval_runner, folders[:1], datasets, keys, work_dir, "--log-to", "mlflow",
                             "--log-group", "weekly evals", MLFLOW_TRACKING_URI=closed)
    assert result.poll() == 0, result.transcript()
    run_id = runs_by_model(work_dir)["iter_0000400"]
    right = row_outcomes(*CHECKPOINTS["checkpoint-300"])
    assert shown_scores(result.stdout) == pytest.approx({dataset: round(100 * sum(r) / len(r), 2)
                                                         for dataset, r in right.items()}), result.stdout
    retry = f"lmeval log {run_id} -w {work_dir} --to mlflow --log-group 'weekly evals'"
    assert result.stderr_lines[-1] == (f"lmeval: warning: could not log to MLflow ({closed}: Connection refused); "
                                       f"the scores are kept in the run; retry with: {retry}")
    assert time.monotonic() - began < 600
    assert json.loads((work_dir / run_id / "lmeval.json").read_text())["tracking"] == []

    # The line it gave, against a server that answers: the group's run is made, at the step the
    # folder's name gives (Megatron's iter_0000400).
    env = lmeval_runner.env(MLFLOW_TRACKING_URI=mlflow_server, MLFLOW_EXPERIMENT_NAME="weekly")
    retried = lmeval_runner.run(*shlex.split(retry)[1:], env=env, timeout=120)
    assert retried.poll() == 0, retried.transcript()
    client = mlflow_client(mlflow_server)
    experiment = client.get_experiment_by_name("weekly")
    [group_run] = client.search_runs([experiment.experiment_id])
    assert group_run.info.run_name == "weekly evals"
    assert metric_points(client, group_run.info.run_id)["lmeval/trivia/accuracy"] == {
        400: pytest.approx(expected_metrics("checkpoint-300")["lmeval/trivia/accuracy"])}

    # A week later, the next checkpoint, inferred then judged, the team's lmeval.toml naming the
    # tracker and the group: `infer` leaves them unused, `judge` logs, and the curve grows in the
    # same run.
    (work_dir / "lmeval.toml").write_text('log_to = ["mlflow"]\nlog_group = "weekly evals"\n')
    env = lmeval_runner.env(STANDIN_ANSWER_KEY=str(keys), MLFLOW_TRACKING_URI=mlflow_server,
                            MLFLOW_EXPERIMENT_NAME="weekly")
    inferred = lmeval_runner.run("infer", str(folders[1]), *datasets, "--gpus", "0", "-w", str(work_dir), *TOOLS,
                                 env=env, work_dir=work_dir, timeout=600)
    assert inferred.poll() == 0, inferred.transcript()
    assert "logged" not in inferred.stderr
    later = runs_by_model(work_dir)["iter_0000500"]
    judged = lmeval_runner.run("judge", "--reuse", later, "--judge-model", str(MODELS / "demo-judge"), "--judge-gpus",
                               "1", "--judge-tp", "1", "-w", str(work_dir), *TOOLS, env=env, work_dir=work_dir,
                               timeout=600)
    assert judged.poll() == 0, judged.transcript()
    assert LOGGED_LINE.fullmatch(judged.stderr_lines[-1])[3] == "500", judged.stderr
    [same] = client.search_runs([experiment.experiment_id])
    assert same.info.run_id == group_run.info.run_id
    assert metric_points(client, same.info.run_id)["lmeval/choices/accuracy"] == pytest.approx({
        400: expected_metrics("checkpoint-300")["lmeval/choices/accuracy"],
        500: expected_metrics("checkpoint-200")["lmeval/choices/accuracy"]})

    # The training run's own tracker run (--log-run-id): lmeval's points join its loss, and it
    # is left running; in W&B too (offline, the id given).
    training = client.create_run(experiment.experiment_id, run_name="pretrain-7b")
    client.log_metric(training.info.run_id, "train/loss", 2.5, step=500)
    joined = lmeval_runner.run("log", later, "-w", str(work_dir), "--to", "mlflow", "--to", "wandb", "--log-run-id",
                               training.info.run_id, env=lmeval_runner.env(
                                   MLFLOW_TRACKING_URI=mlflow_server, WANDB_MODE="offline",
                                   WANDB_DIR=str(tmp_path)), timeout=120)
    assert joined.poll() == 0, joined.transcript()
    run = client.get_run(training.info.run_id)
    assert run.info.status == "RUNNING"
    assert metric_points(client, run.info.run_id)["train/loss"] == {500: 2.5}
    assert metric_points(client, run.info.run_id)["lmeval/trivia/accuracy"] == pytest.approx(
        {500: expected_metrics("checkpoint-200")["lmeval/trivia/accuracy"]})
    [offline] = offline_runs(tmp_path)
    assert offline.run_id == training.info.run_id
    assert [row["lmeval/step"] for row in offline.history] == [500]
