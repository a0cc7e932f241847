"""Several models in one `lmeval run`: each gets the scores its own answer key implies (the
stand-in reads a key per model from a folder), one judge server is started for all of them,
and nothing is left running."""

from __future__ import annotations

import signal

import pytest

from scenarios import SWEEP_REPLIES, run_manifests, run_scores, sweep_cells, sweep_models
from toolkit import MODELS, TOOLS, leftovers

pytestmark = [pytest.mark.processes, pytest.mark.opencompass]

@pytest.fixture
def models(tmp_path):
    return sweep_models(tmp_path, SWEEP_REPLIES)


def run_models(runner, folders, datasets, keys, work_dir, judge_gpus: str, gpus: tuple[str, ...] = ("--gpus", "0"),
               **env: str):
    """`lmeval run` of FOLDERS on GPUS, the judge on JUDGE_GPUS, each model with its own key."""
    return runner.run("run", *map(str, folders), *datasets, *gpus, "--judge-model", str(MODELS / "demo-judge"),
                      "--judge-gpus", judge_gpus, "--judge-tp", "1", "-w", str(work_dir), *TOOLS,
                      env=runner.env(STANDIN_ANSWER_KEY=str(keys), COLUMNS="250", **env), work_dir=work_dir,
                      timeout=900)


def events(result) -> list[tuple[str, str]]:
    """(whose, what) of each server start and stop and each OpenCompass stage, in order: whose is
    the model of a run's own line, empty for the sweep's (the judge's)."""
    found = []
    for line in result.stderr_lines:
        text = line.removeprefix("lmeval: ")
        whose, _, rest = text.partition(": ")
        if not rest or " " in whose:
            whose, rest = "", text
        what = rest.split(" on ")[0].split(" (")[0]
        server = what.startswith(("started ", "stopped ")) and what.endswith(" server")
        if server or rest.startswith(("infer: /", "eval: /")):
            found.append((whose, what.split(":")[0]))
    return found


@pytest.mark.usefixtures("venvs")
def test_three_models_with_one_judge(models, tmp_path, lmeval_runner):
    folders, datasets, keys, expected = models
    work_dir = tmp_path / "out"
    result = run_models(lmeval_runner, folders, datasets, keys, work_dir, "1")
    assert result.poll() == 0, result.transcript()
    assert run_scores(work_dir) == expected
    runs = sorted(path.name for path in work_dir.iterdir())
    assert f"lmeval: runs: alpha {runs[0]}, beta {runs[1]}, gamma {runs[2]}" in result.stderr_lines
    seen = events(result)
    starts = [event for event in seen if event[1].startswith("started ")]
    assert starts == [("alpha", "started target server"), ("", "started judge server"),  # it loads as alpha infers
                      ("beta", "started target server"), ("gamma", "started target server")]
    # GPU 0 is one model's at a time, in the order given; each is judged by the one judge while the
    # next one is inferred, in that order too.
    assert [event for event in seen if event[1].endswith("target server")] == [
        (name, f"{verb} target server") for name in SWEEP_REPLIES for verb in ("started", "stopped")]
    assert [name for name, what in seen if what == "eval"] == list(SWEEP_REPLIES)
    runs_of = run_manifests(work_dir)
    for earlier, later in (("alpha", "beta"), ("beta", "gamma")):
        assert runs_of[later]["stages"]["infer"]["started"] < runs_of[earlier]["stages"]["eval"]["ended"]
    assert len({manifest["servers"]["judge"]["command"] for manifest in runs_of.values()}) == 1
    # Each run waits for the judge once; its later stages only check that it is still up.
    assert [line for line in result.stderr_lines if "waiting for judge server(s)" in line] == [
        f"lmeval: {name}: waiting for judge server(s) to load" for name in SWEEP_REPLIES]
    table = [line for line in result.stdout_lines if line.startswith("│ ")][-2:]
    cells = sweep_cells(SWEEP_REPLIES)
    assert [[cell.strip() for cell in line.split("│")[1:6]] for line in table] == [
        [dataset, "accuracy", *(cells[name][dataset] for name in expected)] for dataset in ("trivia", "choices")]
    assert leftovers([work_dir]) == []


@pytest.mark.usefixtures("venvs")
def test_a_judge_on_the_models_gpus_judges_once_every_model_is_inferred(models, tmp_path, lmeval_runner):
    folders, datasets, keys, expected = models
    work_dir = tmp_path / "out"
    result = run_models(lmeval_runner, folders[:2], datasets, keys, work_dir, "0")
    assert result.poll() == 0, result.transcript()
    assert run_scores(work_dir) == {name: expected[name] for name in ("alpha", "beta")}
    assert events(result) == [
        ("alpha", "started target server"), ("alpha", "infer"), ("alpha", "stopped target server"),
        ("beta", "started target server"), ("beta", "infer"), ("beta", "stopped target server"),
        ("", "started judge server"), ("alpha", "eval"), ("beta", "eval"), ("", "stopped judge server")]
    assert leftovers([work_dir]) == []


@pytest.mark.usefixtures("venvs")
def test_models_go_side_by_side_on_gpu_groups_of_their_own(models, tmp_path, lmeval_runner):
    """--gpus 0,1 --tp 1: two groups, so alpha and beta infer at once and gamma follows alpha on GPU 0."""
    folders, datasets, keys, expected = models
    work_dir = tmp_path / "out"
    result = run_models(lmeval_runner, folders, datasets, keys, work_dir, "2", gpus=("--gpus", "0,1", "--tp", "1"))
    assert result.poll() == 0, result.transcript()
    assert run_scores(work_dir) == expected
    assert "lmeval: 2 models at a time, on GPUs 0; 1" in result.stderr_lines
    runs_of = run_manifests(work_dir)
    assert {name: manifest["servers"]["target"]["gpus"] for name, manifest in runs_of.items()} == {
        "alpha": [0], "beta": [1], "gamma": [0]}
    alpha, beta = (runs_of[name]["stages"]["infer"] for name in ("alpha", "beta"))
    assert alpha["started"] < beta["ended"] and beta["started"] < alpha["ended"]
    seen = events(result)
    assert seen.index(("gamma", "started target server")) > seen.index(("alpha", "stopped target server"))
    assert [event for event in seen if "judge" in event[1]] == [("", "started judge server"),
                                                                ("", "stopped judge server")]
    assert leftovers([work_dir]) == []


@pytest.mark.parametrize(("extra", "message"), [
    (["--name", "x"], "--name goes with one model; evaluate the models one by one to use it"),
    (["--reuse", "20250101_120000"], "--reuse goes with one model; evaluate the models one by one to use it"),
])
def test_options_of_one_model_are_refused_with_several(models, tmp_path, extra, message):
    from typer.testing import CliRunner

    from lmeval.cli import app

    folders, datasets, _, _ = models
    shown = CliRunner().invoke(app, ["run", *map(str, folders[:2]), *datasets, "-w", str(tmp_path / "out"), *TOOLS,
                                     *extra])
    assert (shown.exit_code, shown.stderr) == (2, f"lmeval: error: {message}\n")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.usefixtures("venvs")
def test_a_model_that_fails_does_not_stop_the_others(models, tmp_path, lmeval_runner):
    folders, datasets, keys, expected = models
    work_dir = tmp_path / "out"
    result = run_models(lmeval_runner, folders, datasets, keys, work_dir, "1", STANDIN_CRASH_DURING_LOAD="beta")
    assert result.poll() == 1, result.transcript()
    alpha, beta, gamma = sorted(path.name for path in work_dir.iterdir())
    scores = run_scores(work_dir)
    assert {name: scores[name] for name in ("alpha", "gamma")} == {name: expected[name] for name in ("alpha", "gamma")}
    assert scores["beta"] == {}
    failed = [line for line in result.stderr_lines if line.startswith("lmeval: warning: beta ")]
    assert len(failed) == 1 and failed[0].startswith(f"lmeval: warning: beta (run {beta}) failed: target server ")
    assert result.stderr_lines[-1] == (
        f"lmeval: error: 1 of 3 models failed, their errors are above; resume each alone with its other options "
        f"as before: beta (run {beta}): `lmeval run {folders[1]} ... --reuse {beta}`")
    table = [line for line in result.stdout_lines if line.startswith("│ ")][-2:]
    cells = sweep_cells(SWEEP_REPLIES)
    assert [[cell.strip() for cell in line.split("│")[1:5]] for line in table] == [
        [dataset, "accuracy", cells["alpha"][dataset], cells["gamma"][dataset]] for dataset in ("trivia", "choices")]
    assert leftovers([work_dir]) == []


@pytest.mark.usefixtures("venvs")
def test_ctrl_c_stops_every_run_going_at_once(models, tmp_path, lmeval_runner):
    """Alpha and beta infer side by side (answers take a minute), gamma waits for GPU 0: one
    Ctrl-C ends both OpenCompass runs and every server, and says how to resume."""
    folders, datasets, keys, _ = models
    work_dir = tmp_path / "out"
    lm = lmeval_runner.start("run", *map(str, folders), *datasets, "--gpus", "0,1", "--tp", "1", "--judge-model",
                             str(MODELS / "demo-judge"), "--judge-gpus", "2", "--judge-tp", "1", "-w", str(work_dir),
                             *TOOLS, env=lmeval_runner.env(STANDIN_ANSWER_KEY=str(keys), STANDIN_LATENCY_SECONDS="60"),
                             work_dir=work_dir)
    for name in ("alpha", "beta"):  # OpenCompass is inferring: it reports progress
        lm.wait_line(rf"lmeval: {name}: infer: trivia 0/.*", timeout=120)
    lm.signal(signal.SIGINT)
    assert lm.wait(60) == 130, lm.transcript()
    assert lm.stderr_lines[-1] == "lmeval: error: interrupted by Ctrl-C; every server lmeval started has been stopped"
    assert "Traceback" not in lm.stderr
    assert any(line.startswith("lmeval: runs that finished keep their scores; resume the others with ")
               for line in lm.stderr_lines)
    runs_of = run_manifests(work_dir)
    assert {name: runs_of[name]["stages"]["infer"]["status"] for name in ("alpha", "beta")} == {
        "alpha": "interrupted", "beta": "interrupted"}
    assert not any(line.startswith("lmeval: gamma: started") for line in lm.stderr_lines)
    assert lmeval_runner.leftovers() == []
