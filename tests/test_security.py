"""Servers listen on loopback with a fresh API key each; keys never reach logs, printed
commands, the manifest or error messages; what lmeval writes is the owner's alone.

Most checks read the crash/resume chain of test_faults (shared, built once per session): four
servers, two crashes with their error reports, every log OpenCompass and the servers wrote.
"""

from __future__ import annotations

import re
import signal
import stat
import subprocess
import threading
from pathlib import Path

import psutil
import pytest
from scenarios import make_chain_scenario
from toolkit import MODELS, STANDIN, TOOLS, describe, health, lmeval_env, only_run, read_json, shown_scores, wait_until

from lmeval.launch import free_port
from lmeval.processes import OWNER_ENV

pytestmark = [pytest.mark.processes, pytest.mark.opencompass]

KEY_PATTERN = re.compile(r"sk-lmeval-[A-Za-z0-9_-]{32}")
# Configs hold the keys (OpenCompass needs them): lmeval's own, OpenCompass's dumps of them,
# and the task configs OpenCompass writes into its working folder.
CONFIG_FILES = re.compile(r"(.*/)?(lmeval/(infer|eval)_config\.py|configs/[^/]+\.py|lmeval/opencompass_cwd/tmp/.*)")


def _steps(chain):
    return {"target crash": chain.target_crash, "target resume": chain.target_resume,
            "judge crash": chain.judge_crash, "judge resume": chain.judge_resume}


def _files_holding(folder: Path, secrets: list[str]) -> set[str]:
    found = set()
    for path in folder.rglob("*"):
        if path.is_file() and any(secret.encode() in path.read_bytes() for secret in secrets):
            found.add(str(path.relative_to(folder)))
    return found


def test_every_server_listens_on_loopback_with_a_fresh_key(chain):
    keys = {}
    for name, step in _steps(chain).items():
        seen = step.watch
        assert seen.key and KEY_PATTERN.fullmatch(seen.key), (name, seen.key)
        assert seen.listen == {"127.0.0.1"}, (name, seen.listen)
        assert seen.unauthorized_status == 401, name  # no key, no answers
        keys[name] = seen.key
    assert len(set(keys.values())) == len(keys), keys


def test_keys_are_in_no_log_output_or_manifest(chain):
    keys = [step.watch.key for step in _steps(chain).values()]
    for name, step in _steps(chain).items():
        assert not any(key in step.stdout or key in step.stderr for key in keys), name
        assert "--api-keys '***'" in step.stderr  # the printed command, redacted
    assert not any(key in chain.results_csv.stdout + chain.results_csv.stderr for key in keys)
    holding = _files_holding(chain.work_dir, keys)
    assert holding and all(CONFIG_FILES.fullmatch(path) for path in holding), sorted(holding)
    manifest = read_json(chain.run_dir / "lmeval.json")
    ends = {"target": "--api-keys '***' --max-batch-size 2",
            "judge": "--api-keys '***' --enable-prefix-caching --session-len 65536 --max-batch-size 2"}  # its defaults first
    assert {role: record["command"][-len(ends[role]):] for role, record in manifest["servers"].items()} == ends


def test_what_lmeval_writes_is_owner_only(chain):
    loose = []
    for path in [chain.run_dir, *chain.run_dir.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        if stat.S_IMODE(mode) & 0o077:
            loose.append(f"{stat.S_IMODE(mode):o} {path.relative_to(chain.work_dir)}")
    assert loose == []


def test_dry_run_prints_commands_without_the_keys(lmeval_runner, scenario, tmp_path):
    work_dir = tmp_path / "out"
    lm = lmeval_runner.run("run", str(MODELS / "demo-chat"), "--dataset", str(scenario.qa), "--gpus", "0",
                           "--judge-model", str(MODELS / "demo-judge"), "--judge-gpus", "1", "--judge-tp", "1",
                           "-w", str(work_dir), "--dry-run", *TOOLS, work_dir=work_dir)
    assert lm.poll() == 0, lm.transcript()
    run_dir = only_run(work_dir)
    keys = set(KEY_PATTERN.findall((run_dir / "lmeval" / "infer_config.py").read_text()))
    keys |= set(KEY_PATTERN.findall((run_dir / "lmeval" / "eval_config.py").read_text()))
    assert len(keys) == 2  # the model's and the judge's, each its own
    assert lm.stdout.count("--api-keys '***'") == 2
    assert not any(key in lm.stdout + lm.stderr for key in keys)
    assert _files_holding(run_dir, list(keys)) == {"lmeval/infer_config.py", "lmeval/eval_config.py"}
    for config in ("infer_config.py", "eval_config.py"):
        assert stat.S_IMODE((run_dir / "lmeval" / config).stat().st_mode) == 0o600


@pytest.fixture
def scenario(tmp_path):
    return make_chain_scenario(tmp_path / "data")


@pytest.fixture
def external_server(tmp_path, scenario):
    """A stand-in server the user runs, with the key SECRET, answering from the scenario's key."""
    port = free_port()
    secret = "user-secret-4f7a9c"
    with open(tmp_path / "external.log", "wb") as log:
        server = subprocess.Popen([str(STANDIN), "serve", "api_server", str(MODELS / "demo-chat"), "--server-port",
                                   str(port), "--api-keys", secret],
                                  env=lmeval_env(STANDIN_ANSWER_KEY=str(scenario.key)), stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: health(port) == 200, 30, what="the external server")
        yield f"http://127.0.0.1:{port}", secret, server.pid
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()


def test_a_key_the_user_gives_is_never_echoed(external_server, scenario, lmeval_runner, tmp_path):
    url, secret, _ = external_server
    work_dir = tmp_path / "out"
    base = ["infer", str(MODELS / "demo-chat"), "--dataset", str(scenario.mc), "--api-server", url,
            "-w", str(work_dir), "--dry-run", *TOOLS]
    key_file = tmp_path / "key"
    key_file.write_text(secret + "\n")
    env_with_key = lmeval_runner.env(LMEVAL_API_KEY=secret)
    for form, env in ((["--api-key", secret], None), ([f"--api-key={secret}"], None),
                      (["--api-key-file", str(key_file)], None), ([], env_with_key)):
        lm = lmeval_runner.run(*base, *form, env=env, work_dir=work_dir)
        assert lm.poll() == 0, lm.transcript()
        assert secret not in lm.stdout + lm.stderr
    runs = list(work_dir.iterdir())
    assert len(runs) == 4
    for run_dir in runs:
        assert _files_holding(run_dir, [secret]) == {"lmeval/infer_config.py"}
        command = read_json(run_dir / "lmeval.json")["command"]
        assert secret not in " ".join(command)
    wrong = lmeval_runner.run(*base, "--api-key", "not-the-key", work_dir=work_dir)
    assert wrong.poll() == 2
    assert wrong.stderr == (f"lmeval: error: --api-server {url} answered /v1/models with HTTP 401; give its key "
                            "with --api-key (or --api-key-file, or the environment variable LMEVAL_API_KEY)\n")
    both = lmeval_runner.run(*base, "--api-key-file", str(key_file), env=env_with_key, work_dir=work_dir)
    assert both.poll() == 2
    assert both.stderr == "lmeval: error: --api-key and --api-key-file both give a key; give one\n"
    empty = tmp_path / "empty-key"
    empty.write_text("\n")
    refused = lmeval_runner.run(*base, "--api-key-file", str(empty), work_dir=work_dir)
    assert refused.poll() == 2
    assert refused.stderr == f"lmeval: error: --api-key-file {empty} is empty; put the key on its first line\n"
    assert len(list(work_dir.iterdir())) == 4  # the refusals made no run
    assert describe(lmeval_runner.leftovers()) == ""


def _argv_holding(secret: str) -> set[int]:
    """Every process whose command line, as /proc shows it to anyone on the machine, holds SECRET."""
    found = set()
    for folder in Path("/proc").iterdir():
        try:
            if folder.name.isdigit() and secret.encode() in (folder / "cmdline").read_bytes():
                found.add(int(folder.name))
        except OSError:
            continue
    return found


def test_a_key_from_the_environment_reaches_no_argv(external_server, scenario, lmeval_runner, tmp_path):
    """LMEVAL_API_KEY=... lmeval run ... --api-server URL: scored against the keyed server, while
    no process lmeval starts (OpenCompass and its tasks) carries the key in its command line."""
    url, secret, server_pid = external_server
    work_dir = tmp_path / "out"
    lm = lmeval_runner.start("run", str(MODELS / "demo-chat"), "--dataset", str(scenario.mc), "--api-server", url,
                             "-w", str(work_dir), *TOOLS, env=lmeval_runner.env(LMEVAL_API_KEY=secret),
                             work_dir=work_dir)
    holding: set[int] = set()
    children: set[int] = set()  # processes lmeval started, seen while it ran
    done = threading.Event()

    def scan() -> None:
        while not done.is_set():
            holding.update(_argv_holding(secret))
            children.update(p.pid for p in psutil.process_iter()
                            if _owner_of(p).split(":")[0] == str(lm.pid))
            done.wait(0.05)

    scanner = threading.Thread(target=scan, daemon=True)
    scanner.start()
    code = lm.wait(300)
    done.set()
    scanner.join(10)
    assert code == 0, lm.transcript()
    assert shown_scores(lm.stdout) == {"choices": float(scenario.expected["choices"])}
    assert len(children) >= 2, children  # OpenCompass and its inference task at least
    assert holding == {server_pid}, holding  # only the server the user started has it
    assert secret not in lm.stdout + lm.stderr


def _owner_of(process: psutil.Process) -> str:
    try:
        return process.environ().get(OWNER_ENV, "")
    except psutil.Error:
        return ""
