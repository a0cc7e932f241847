"""The command line through the real Typer app (no subprocess, no server): exact output and exit
codes for what needs no tool: help, keys given badly, `lmeval cleanup` on a broken state file,
and `lmeval results` counting judge replies as the run did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmeval import outputs, suites
from lmeval.cli import app
from lmeval.launch import ServerState


def lmeval(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env=env)


def test_help_names_every_command_and_the_key_variables():
    shown = lmeval("--help")
    assert shown.exit_code == 0
    for command in ("run", "infer", "judge", "results", "tasks", "serve", "cleanup"):
        assert f"  {command} " in shown.stdout
    run = lmeval("run", "--help").stdout
    assert "[env var: LMEVAL_API_KEY]" in run and "[env var: LMEVAL_JUDGER_KEY]" in run
    assert "--api-key-file" in run and "--judger-key-file" in run
    assert "[env var: LMEVAL_JUDGER_KEY]" in lmeval("judge", "--help").stdout


@pytest.fixture
def model(tmp_path) -> Path:
    folder = tmp_path / "demo-model"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("key_args, message", [
    (["--api-key-file", "{tmp}/missing"], "--api-key-file {tmp}/missing: cannot read it (No such file or directory)"),
    (["--api-key", "k", "--api-key-file", "{tmp}/key"], "--api-key and --api-key-file both give a key; give one"),
    (["--judger-key-file", "{tmp}/empty"], "--judger-key-file {tmp}/empty is empty; put the key on its first line"),
])
def test_a_key_given_badly_is_refused(model, tmp_path, key_args, message):
    (tmp_path / "key").write_text("sk-user\n")
    (tmp_path / "empty").write_text("")
    args = [arg.format(tmp=tmp_path) for arg in key_args]
    shown = lmeval("infer", str(model), "--api-server", "http://127.0.0.1:9", "--opencompass", "/bin/true",
                   "-w", str(tmp_path / "out"), *args)
    assert (shown.exit_code, shown.stderr) == (2, f"lmeval: error: {message.format(tmp=tmp_path)}\n")
    assert not (tmp_path / "out").exists()


def test_a_key_from_the_environment_and_a_key_file_are_one_too_many(model, tmp_path):
    (tmp_path / "key").write_text("sk-user\n")
    shown = lmeval("infer", str(model), "--api-server", "http://127.0.0.1:9", "--opencompass", "/bin/true",
                   "--api-key-file", str(tmp_path / "key"), env={"LMEVAL_API_KEY": "sk-env"})
    assert (shown.exit_code, shown.stderr) == (2, "lmeval: error: --api-key and --api-key-file both give a key; "
                                                  "give one\n")


def test_cleanup_names_a_state_file_it_cannot_read(tmp_path):
    servers = tmp_path / "20250101_120000" / "servers"
    servers.mkdir(parents=True)
    (servers / "target.json").write_text('{"role": "target", "pid": ')
    ServerState(role="judge", pid=None, created=0, tag="judge-none", owner="1:0.000", host="127.0.0.1", port=9,
                url="http://127.0.0.1:9", log="", command="", stopped=True).save(servers / "judge.json")
    shown = lmeval("cleanup", "-w", str(tmp_path))
    assert shown.exit_code == 0, shown.stderr
    assert shown.stderr.splitlines() == [
        f"lmeval: warning: server state {servers / 'target.json'} is not valid JSON: EOF while parsing a value at "
        "line 1 column 26; skipped it (the tag sweep below still finds its processes)",
        "lmeval: nothing to clean up",
    ]


def write_judged_run(run_dir: Path, replies: dict[str, list[str]], recorded: list[dict]) -> None:
    """A run folder as OpenCompass and lmeval leave it: the summary, one judge reply file per
    dataset, and the manifest (which may or may not hold the counts already)."""
    results = run_dir / "results" / "m"
    results.mkdir(parents=True)
    for dataset, texts in replies.items():
        entries = {str(i): {"prediction": text} for i, text in enumerate(texts)}
        (results / f"{dataset}_replica0.json").write_text(json.dumps(entries))
    (run_dir / "summary").mkdir()
    (run_dir / "summary" / "summary_20250101_120500.csv").write_text(
        "dataset,version,metric,mode,m\nmmlu_pro,-,naive_average,gen,50.00\ntrivia,abc,accuracy,gen,25.00\n")
    rows = {"mmlu_pro": ["mmlu_pro_math", "mmlu_pro_law"], "trivia": ["trivia"]}
    (run_dir / "lmeval.json").write_text(json.dumps({"run_id": run_dir.name, "model_abbr": "m",
                                                     "judge_rows": rows, "scores": recorded}))


REPLIES = {"mmlu_pro_math": ["A", "B", "I cannot judge this."], "mmlu_pro_law": ["B", "no verdict"],
           "trivia": ["A", "B", "B", "?"]}


def test_results_count_a_group_row_over_its_datasets_as_the_run_recorded_it(tmp_path):
    """The same counts whether `lmeval results` reads them from the manifest (as the run
    recorded them) or counts them from the judge's files through the manifest's judge_rows."""
    by_files, recorded = tmp_path / "w1" / "20250101_120000", tmp_path / "w2" / "20250101_120000"
    write_judged_run(by_files, REPLIES, [])
    write_judged_run(recorded, REPLIES, [
        {"dataset": "mmlu_pro", "metric": "naive_average", "value": 50.0, "judge_replies": 5, "judge_invalid": 2},
        {"dataset": "trivia", "metric": "accuracy", "value": 25.0, "judge_replies": 4, "judge_invalid": 1}])
    expected = [  # no predictions here: no outcomes per question, so no standard error
        {"dataset": "mmlu_pro", "metric": "naive_average", "model": "m", "score": 50.0, "stderr": None,
         "judge_replies": 5, "judge_invalid": 2},
        {"dataset": "trivia", "metric": "accuracy", "model": "m", "score": 25.0, "stderr": None, "judge_replies": 4,
         "judge_invalid": 1},
    ]
    for run_dir in (by_files, recorded):
        shown = lmeval("results", run_dir.name, "-w", str(run_dir.parent), "--format", "json")
        assert shown.exit_code == 0, shown.stderr
        assert json.loads(shown.stdout) == expected
    assert outputs.judge_replies(by_files, "m", ["mmlu_pro_math", "mmlu_pro_law"]) == outputs.JudgeReplies(5, 2)


def test_the_chat_suite_judges_mmlu_pro_as_one_row_over_its_fourteen_datasets():
    rows = suites.judged_rows(suites.select_suite("chat"))
    assert rows["mmlu_pro"] == [f"mmlu_pro_{c.replace(' ', '_')}" for c in suites.MMLU_PRO_CATEGORIES]
    assert rows["GPQA_diamond_repeat_4"] == ["GPQA_diamond_repeat_4"]
    assert "IFEval" not in rows and "lcb_code_generation_repeat_6" not in rows  # scored by rule


def dry_infer(model: Path, work_dir: Path, *extra: str, env: dict[str, str] | None = None):
    return lmeval("infer", str(model), "--task", "chat", "--datasets", "ifeval", "--gpus", "0", "-w", str(work_dir),
                  "--opencompass", "/bin/true", "--lmdeploy", "/bin/true", "--dry-run", *extra, env=env)


def target_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("target server (GPUs 0): "))


def test_the_work_dirs_defaults_file_fills_in_what_the_command_line_leaves(model, tmp_path):
    work_dir = tmp_path / "out"
    work_dir.mkdir()
    (work_dir / "lmeval.toml").write_text('server_args = "--session-len 4096"\ntemperature = 0.2\n'
                                          'extra_body = { chat_template_kwargs = { enable_thinking = true } }\n')
    shown = dry_infer(model, work_dir)
    assert shown.exit_code == 0, shown.stderr
    assert target_line(shown.stdout).endswith("--api-keys '***' --session-len 4096")
    run_dir = next(path for path in work_dir.iterdir() if path.is_dir())
    generation = json.loads((run_dir / "lmeval.json").read_text())["inputs"]["generation"]
    assert generation["temperature"] == 0.2
    assert generation["extra_body"] == {"chat_template_kwargs": {"enable_thinking": True}}
    given = dry_infer(model, work_dir, "--server-args", "--session-len 8192", "--temperature", "0.6")
    assert given.exit_code == 0, given.stderr
    assert target_line(given.stdout).endswith("--api-keys '***' --session-len 8192")  # the command line wins


@pytest.mark.parametrize("content, message", [
    ('judge_gpu = "1"\n', "unknown key 'judge_gpu'; it takes: lmdeploy, opencompass, data_dir, mirror, "
                          "work_dir, gpus, tp, host, "
                          "server_args, judge_model, judge_gpus, judge_tp, judge_replicas, judge_server_args, launcher, "
                          "partition, judge_partition, slurm_args, ready_timeout, grace, restarts, stall_timeout, stream, "
                          "fork_server, log_to, log_group, "
                          "temperature, max_out_len, max_seq_len, top_p, top_k, repetition_penalty, extra_body"),
    ('judge_tp = "two"\n', "judge_tp: Input should be a valid integer, unable to parse string as an integer"),
    ('launcher = "k8s"\n', "launcher: Input should be 'local' or 'slurm'"),
    ('work_dir = "/elsewhere"\n', "work_dir cannot be set in a work dir's own lmeval.toml; put it in a file you "
                                  "pass with --config"),
    ('temperature = \n', "is not valid TOML: Invalid value (at line 1, column 15)"),
])
def test_a_defaults_file_that_is_wrong_is_named_with_its_key(model, tmp_path, content, message):
    work_dir = tmp_path / "out"
    work_dir.mkdir()
    (work_dir / "lmeval.toml").write_text(content)
    shown = dry_infer(model, work_dir)
    separator = " " if message.startswith("is not") else ": "
    assert (shown.exit_code, shown.stderr) == (2, f"lmeval: error: {work_dir / 'lmeval.toml'}{separator}{message}\n")


def test_a_config_file_may_name_the_work_dir(model, tmp_path):
    config = tmp_path / "team.toml"
    config.write_text(f'work_dir = "{tmp_path / "team-runs"}"\n')
    shown = lmeval("infer", str(model), "--task", "chat", "--datasets", "ifeval", "--gpus", "0", "--config", str(config),
                   "--opencompass", "/bin/true", "--lmdeploy", "/bin/true", "--dry-run")
    assert shown.exit_code == 0, shown.stderr
    assert shown.stdout.splitlines()[0].startswith("run 2") and f" in {tmp_path / 'team-runs'}/" in shown.stdout
    missing = dry_infer(model, tmp_path / "out", "--config", str(tmp_path / "nope.toml"))
    assert (missing.exit_code, missing.stderr) == (2, f"lmeval: error: --config {tmp_path / 'nope.toml'}: no such file\n")
