"""Where lmeval looks for the chat suite's data before any server starts, and what it does when
some is missing: a warning when OpenCompass can fetch it from here, a refusal (exit 2) when it
cannot. The network is never reached: whether a host answers is decided by the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmeval import datafiles, suites
from lmeval.exceptions import UsageError

SUITE = {item.name: item for item in suites.CHAT_SUITE}


@pytest.fixture
def hosts(monkeypatch):
    """The hosts that answer (none unless the test adds them), and those lmeval tried."""
    answering: set[str] = set()
    tried: list[str] = []

    def reachable(host: str, port: int) -> bool:
        tried.append(f"{host}:{port}")
        return host in answering

    monkeypatch.setattr(datafiles, "reachable", reachable)
    return answering, tried


def refusal(items, env) -> str:
    with pytest.raises(UsageError) as refused:
        datafiles.ensure_data(items, lambda text: None, env=env)
    assert refused.value.exit_code == 2
    return refused.value.message


def test_opencompass_reads_its_cache_else_its_home_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert datafiles.compass_cache({"COMPASS_DATA_CACHE": "data-here"}) == tmp_path / "data-here"
    assert datafiles.compass_cache({}) == Path.home() / ".cache" / "opencompass"


def test_the_hugging_face_cache_is_found_as_the_datasets_library_finds_it():
    assert datafiles.hf_datasets_cache({"HF_DATASETS_CACHE": "/a", "HF_HOME": "/b"}) == Path("/a")
    assert datafiles.hf_datasets_cache({"HF_HOME": "/b", "XDG_CACHE_HOME": "/c"}) == Path("/b/datasets")
    assert datafiles.hf_datasets_cache({"XDG_CACHE_HOME": "/c"}) == Path("/c/huggingface/datasets")


def test_present_data_passes_in_silence_and_only_what_is_missing_is_looked_up(tmp_path, hosts):
    cache = tmp_path / "compass"
    (cache / "data" / "ifeval").mkdir(parents=True)
    (cache / "data" / "ifeval" / "input_data.jsonl").write_text("{}\n")
    (tmp_path / "hf" / "datasets" / "cais___hle" / "default" / "0.0.0" / "abc").mkdir(parents=True)
    (tmp_path / "hf" / "datasets" / "cais___hle" / "default" / "0.0.0" / "abc" / "dataset_info.json").write_text("{}")
    said: list[str] = []
    env = {"COMPASS_DATA_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf")}
    datafiles.ensure_data([SUITE["ifeval"], SUITE["hle"]], said.append, env=env)
    assert said == [] and hosts[1] == []


def test_missing_data_opencompass_can_download_is_a_warning(tmp_path, hosts):
    hosts[0].add("opencompass.oss-cn-shanghai.aliyuncs.com")
    said: list[str] = []
    datafiles.ensure_data([SUITE["aime2025"]], said.append, env={"COMPASS_DATA_CACHE": str(tmp_path)})
    assert said == [f"aime2025: its data is not in {tmp_path}/data/aime2025/aime2025.jsonl; OpenCompass will "
                    "download it on first use"]


def test_missing_data_that_cannot_be_fetched_from_here_is_refused(tmp_path, hosts):
    message = refusal([SUITE["mmlu_pro"]], {"COMPASS_DATA_CACHE": str(tmp_path)})
    assert message == (f"mmlu_pro: its data is not in {tmp_path}/data/mmlu_pro, and OpenCompass's mirror "
                       "opencompass.oss-cn-shanghai.aliyuncs.com cannot be reached from here: on a machine with "
                       "network, `lmeval data pull --datasets mmlu_pro --dest DIR`, then run with --data-dir DIR (or "
                       "set COMPASS_DATA_CACHE to the folder that holds OpenCompass's data/); or leave mmlu_pro out "
                       "with --datasets")
    assert hosts[1] == ["opencompass.oss-cn-shanghai.aliyuncs.com:80"]


def test_hle_is_gated_offline_settings_are_believed_and_a_token_is_needed(tmp_path, hosts):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    assert "the Hugging Face libraries are set offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)" in refusal(
        [SUITE["hle"]], env)
    assert hosts[1] == []  # offline is offline: no connection tried
    hosts[0].add("mirror.example")
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "https://mirror.example/hub"}
    assert ", and it is gated and no Hugging Face token is set (HF_TOKEN): on a machine with network" in refusal(
        [SUITE["hle"]], env)
    assert hosts[1] == ["mirror.example:443"]
    said: list[str] = []
    datafiles.ensure_data([SUITE["hle"]], said.append, env={**env, "HF_TOKEN": "hf_x"})
    assert said == [f"hle: its data is not in the Hugging Face datasets cache {tmp_path}/hf/datasets (as cais/hle); "
                    "OpenCompass will download it on first use"]


@pytest.mark.usefixtures("hosts")
def test_a_dry_run_only_says_what_a_run_would_refuse(tmp_path):
    said: list[str] = []
    datafiles.ensure_data([SUITE["gpqa"]], said.append, dry_run=True, env={"COMPASS_DATA_CACHE": str(tmp_path)})
    assert len(said) == 1 and said[0].startswith(f"gpqa: its data is not in {tmp_path}/data/gpqa/gpqa_diamond.csv, and ")


@pytest.mark.usefixtures("hosts")
def test_a_users_own_file_is_not_looked_up_here(tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    datafiles.ensure_data(list(suites.resolve_datasets(None, None, [data])), pytest.fail, env={})
