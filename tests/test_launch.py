"""Server specs turned into argv and environment, checked against the real LMDeploy parser."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr
from toolkit import REPO

from lmeval.exceptions import ServerFailed, UsageError
from lmeval.launch import (
    ProxySpec,
    Server,
    ServerSpec,
    ServerState,
    check_model,
    check_port_free,
    parse_server_args,
    proxy_argv,
    redact,
    server_arg_value,
    server_argv,
    server_env,
)
from lmeval.plan import judge_server_args



def spec(**overrides) -> ServerSpec:
    values = dict(role="target", model="/models/Qwen3-8B", served_name="Qwen3-8B", gpus=(0, 1), tp=2,
                  port=12345, api_key=SecretStr("sk-secret"), extra_args=("--session-len", "65536"))
    values.update(overrides)
    return ServerSpec(**values)


def test_argv_is_exact():
    assert server_argv("/venv/bin/lmdeploy", spec()) == [
        "/venv/bin/lmdeploy", "serve", "api_server", "/models/Qwen3-8B",
        "--server-name", "127.0.0.1", "--server-port", "12345", "--tp", "2",
        "--model-name", "Qwen3-8B", "--api-keys", "sk-secret", "--session-len", "65536",
    ]


def test_argv_with_proxy_registers_there():
    argv = server_argv("lmdeploy", spec(proxy_url="http://127.0.0.1:9000", extra_args=()))
    assert argv[-4:] == ["--proxy-url", "http://127.0.0.1:9000", "--api-keys", "sk-secret"]


@pytest.mark.lmdeploy
def test_real_lmdeploy_parser_reads_our_argv(lmdeploy_python):
    argv = server_argv("lmdeploy", spec(proxy_url="http://127.0.0.1:9000",
                                        extra_args=("--max-batch-size", "256", "--backend", "pytorch")))
    parsed = json.loads(subprocess.run([str(lmdeploy_python), str(REPO / "tests" / "lmdeploy_parse.py"), *argv[1:]],
                                       capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    assert parsed["model_path"] == "/models/Qwen3-8B"
    assert parsed["server_name"] == "127.0.0.1"
    assert parsed["server_port"] == 12345
    assert parsed["tp"] == 2
    assert parsed["model_name"] == "Qwen3-8B"
    assert parsed["api_keys"] == ["sk-secret"]
    assert parsed["proxy_url"] == "http://127.0.0.1:9000"
    assert parsed["max_batch_size"] == 256
    assert parsed["backend"] == "pytorch"


@pytest.mark.lmdeploy
def test_real_lmdeploy_parser_reads_the_judges_default_flags(lmdeploy_python):
    """The judge's server gets prefix caching and a long session unless --judge-server-args say otherwise."""
    extra = tuple(parse_server_args(judge_server_args("--max-batch-size 64")))
    argv = server_argv("lmdeploy", spec(role="judge", extra_args=extra))
    parsed = json.loads(subprocess.run([str(lmdeploy_python), str(REPO / "tests" / "lmdeploy_parse.py"), *argv[1:]],
                                       capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    assert (parsed["enable_prefix_caching"], parsed["session_len"], parsed["max_batch_size"]) == (True, 65536, 64)
    assert judge_server_args("--session-len 8192 --enable-prefix-caching") == "--session-len 8192 --enable-prefix-caching"


@pytest.mark.lmdeploy
def test_real_lmdeploy_parser_reads_our_proxy_argv(lmdeploy_python):
    argv = proxy_argv("lmdeploy", ProxySpec(role="target-proxy", port=9000, api_key=SecretStr("sk-secret")))
    assert argv == ["lmdeploy", "serve", "proxy", "--server-name", "127.0.0.1", "--server-port", "9000",
                    "--routing-strategy", "min_expected_latency", "--disable-cache-status", "--api-keys", "sk-secret"]
    parsed = json.loads(subprocess.run([str(lmdeploy_python), str(REPO / "tests" / "lmdeploy_parse.py"), *argv[1:]],
                                       capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    assert (parsed["server_name"], parsed["server_port"]) == ("127.0.0.1", 9000)
    assert parsed["routing_strategy"] == "min_expected_latency"
    assert parsed["disable_cache_status"] is True
    assert parsed["api_keys"] == ["sk-secret"]


def test_env_sets_gpus_and_tags_without_touching_the_base():
    base = {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "5"}
    env = server_env(spec(), base, tag="target-abc", owner="1:2.000", run_id="20250101_120000")
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert (env["LMEVAL_TAG"], env["LMEVAL_OWNER"], env["LMEVAL_RUN_ID"]) == ("target-abc", "1:2.000", "20250101_120000")
    assert base == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "5"}


def test_redact_hides_the_key():
    assert redact(["--api-keys", "sk-secret", "x"], ["sk-secret"]) == ["--api-keys", "***", "x"]


def test_url_of_a_wildcard_bind_goes_through_loopback():
    assert spec(host="0.0.0.0").url == "http://127.0.0.1:12345"
    assert spec(host="::1").url == "http://[::1]:12345"


@pytest.mark.parametrize("text, message", [
    ("--tp 2", "--server-args must not set --tp: lmeval sets it; use --tp instead"),
    ("--server-port=1", "--server-args must not set --server-port: lmeval sets it; use --port instead"),
    ("--api-keys k", "--server-args must not set --api-keys: lmeval sets it; use the API key lmeval makes instead"),
    ("--session-len '4", "--server-args: cannot split \"--session-len '4\": No closing quotation"),
])
def test_server_args_refused(text, message):
    with pytest.raises(UsageError) as caught:
        parse_server_args(text)
    assert caught.value.message == message


def test_server_args_split_and_read():
    args = parse_server_args("--session-len 65536 --max-batch-size=256 --chat-template 'a b'")
    assert args == ("--session-len", "65536", "--max-batch-size=256", "--chat-template", "a b")
    assert server_arg_value(args, "--max-batch-size") == "256"
    assert server_arg_value(args, "--cache-max-entry-count") is None


def test_taken_port_is_refused_before_start():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(UsageError) as caught:
            check_port_free("127.0.0.1", port)
    assert caught.value.message == (
        f"port {port} on 127.0.0.1 is taken (Address already in use); pick another --port or leave it out")


def test_model_paths(tmp_path):
    assert check_model(str(tmp_path)) == str(tmp_path)
    assert check_model("opencompass/CompassVerifier-32B") == "opencompass/CompassVerifier-32B"
    with pytest.raises(UsageError) as caught:
        check_model(str(tmp_path / "missing"))
    assert caught.value.message == (
        f"MODEL: model path {tmp_path / 'missing'} does not exist; give a model folder or a hub id like org/name")
    with pytest.raises(UsageError):
        check_model("./org/name")


def test_a_port_taken_after_planning_fails_the_start_with_exit_1(tmp_path):
    """Checked free when planned, taken by another program before the server starts: a stage
    failure (exit 1), not bad usage, and nothing started."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = Server(spec(port=port), Path("/bin/false"), tmp_path / "servers")
        with pytest.raises(ServerFailed) as caught:
            server.start()
    assert caught.value.exit_code == 1
    assert caught.value.message == (f"port {port} on 127.0.0.1 was taken after lmeval checked it "
                                    "(Address already in use); run again (with another port, if you gave one)")
    assert server.popen is None and not (tmp_path / "servers").exists()


STATE = dict(role="target", pid=12, created=1.5, tag="target-abc", owner="9:2.000", host="127.0.0.1", port=5,
             url="http://127.0.0.1:5", gpus=[0], log="/r/servers/target.log", command="lmdeploy ...", stopped=False)


def test_server_state_round_trips_owner_only(tmp_path):
    path = tmp_path / "servers" / "target.json"
    ServerState(**STATE).save(path)
    assert ServerState.load(path) == ServerState(**STATE)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("content, problem", [
    ('{"role": "target"', "not valid JSON: EOF while parsing an object at line 1 column 17"),
    (json.dumps({**STATE, "port": "five"}),
     "not one lmeval wrote: port: Input should be a valid integer, unable to parse string as an integer"),
    (json.dumps({key: value for key, value in STATE.items() if key != "tag"}), "not one lmeval wrote: tag: Field required"),
])
def test_an_unreadable_server_state_is_named(tmp_path, content, problem):
    path = tmp_path / "target.json"
    path.write_text(content)
    with pytest.raises(UsageError) as caught:
        ServerState.load(path)
    assert caught.value.message == f"server state {path} is {problem}"
