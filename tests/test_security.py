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
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fault_support import (
    MODELS,
    STANDIN,
    TOOLS,
    base_env,
    describe,
    make_chain_scenario,
    only_run,
    read_json,
    wait_until,
)

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
    assert all(record["command"].endswith("--api-keys '***' --max-batch-size 2")
               for record in manifest["servers"].values())


def test_what_lmeval_writes_is_owner_only(chain):
    loose = []
    for path in [chain.run_dir, *chain.run_dir.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        if stat.S_IMODE(mode) & 0o077:
            loose.append(f"{stat.S_IMODE(mode):o} {path.relative_to(chain.work_dir)}")
    assert loose == []


def test_dry_run_prints_commands_without_the_keys(reaper, tmp_path):
    scenario = make_chain_scenario(tmp_path / "data")
    work_dir = tmp_path / "out"
    lm = reaper.run(["run", str(MODELS / "demo-chat"), "--dataset", str(scenario.qa), "--gpus", "0",
                     "--judge-model", str(MODELS / "demo-judge"), "--judge-gpus", "1", "--judge-tp", "1",
                     "-w", str(work_dir), "--dry-run", *TOOLS], work_dir=work_dir, timeout=60)
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
def external_server(tmp_path):
    """A stand-in server the user runs, with the key SECRET."""
    port_probe = __import__("socket").socket()
    port_probe.bind(("127.0.0.1", 0))
    port = port_probe.getsockname()[1]
    port_probe.close()
    secret = "user-secret-4f7a9c"
    log = open(tmp_path / "external.log", "wb")
    server = subprocess.Popen([str(STANDIN), "serve", "api_server", str(MODELS / "demo-chat"), "--server-port",
                               str(port), "--api-keys", secret], env=base_env(), stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    try:
        wait_until(healthy, 30, what="the external server")
        yield f"http://127.0.0.1:{port}", secret
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
        log.close()


def test_a_key_the_user_gives_is_never_echoed(external_server, reaper, tmp_path):
    url, secret = external_server
    scenario = make_chain_scenario(tmp_path / "data")
    work_dir = tmp_path / "out"
    base = ["infer", str(MODELS / "demo-chat"), "--dataset", str(scenario.mc), "--api-server", url,
            "-w", str(work_dir), "--dry-run", *TOOLS]
    for form in (["--api-key", secret], [f"--api-key={secret}"]):
        lm = reaper.run([*base, *form], work_dir=work_dir, timeout=60)
        assert lm.poll() == 0, lm.transcript()
        assert secret not in lm.stdout + lm.stderr
    for run_dir in work_dir.iterdir():
        assert _files_holding(run_dir, [secret]) == {"lmeval/infer_config.py"}
        command = read_json(run_dir / "lmeval.json")["command"]
        assert "***" in " ".join(command) and secret not in " ".join(command)
    wrong = reaper.run([*base, "--api-key", "not-the-key"], work_dir=work_dir, timeout=60)
    assert wrong.poll() == 2
    assert wrong.stderr == (f"lmeval: error: --api-server {url} answered /v1/models with HTTP 401; "
                            "pass its key with the matching --...-key option\n")
    assert describe(reaper.leftovers()) == ""
