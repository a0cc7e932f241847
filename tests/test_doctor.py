"""`lmeval doctor` on this machine, with the project's real tool venvs (found through
tools.json, as `lmeval setup` recorded them): what a user sees when everything is in place, when
OpenCompass's venv cannot import OpenCompass, when the chat suite's data is not cached, and
where each setting came from."""

from __future__ import annotations

import json

import pytest
from scenarios import NUMPY_2, unimportable_venv
from toolkit import MODELS, REPO, VENVS, Runner

from lmeval.gpus import inventory

pytestmark = [pytest.mark.processes, pytest.mark.opencompass]

SAMPLE = REPO / "examples" / "sample"
NO_DRIVER = ("no NVIDIA driver answered: no server can run here (fine where lmeval only submits Slurm jobs, "
             "--launcher slurm, or uses --api-server)")


def doctor(tmp_path, *args: str, **env: str):
    runner = Runner(tmp_path)
    shown = runner.run("doctor", "-w", str(tmp_path / "out"), "--format", "json", *args, env=runner.env(**env),
                       timeout=120)
    return shown, {check["check"]: (check["status"], check["detail"]) for check in json.loads(shown.stdout or "[]")}


def test_a_machine_set_up_by_lmeval_setup_passes(tmp_path):
    shown, checks = doctor(tmp_path, "--dataset", str(SAMPLE / "arithmetic.jsonl"), str(MODELS / "demo-chat"))
    assert shown.wait() == 0, shown.transcript()
    expected_gpus = ("warn", NO_DRIVER) if inventory() is None else checks["GPUs"]  # a GPU machine lists its own
    assert checks == {
        "GPUs": expected_gpus,
        "lmdeploy": ("ok", f"{VENVS}/lmdeploy/bin/lmdeploy (from lmeval setup), version 0.18.0"),
        "opencompass": ("ok", f"{VENVS}/opencompass/bin/opencompass (from lmeval setup), version 0.5.4"),
        "data: arithmetic": ("ok", str(SAMPLE / "arithmetic.jsonl")),
        "model": ("ok", f"{MODELS / 'demo-chat'}: config.json and tokenizer load"),
        "disk": checks["disk"],
        "ports": ("ok", "servers can listen on 127.0.0.1"),
        "settings": ("ok", f"work_dir={tmp_path / 'out'} (command line)\nmodel={MODELS / 'demo-chat'} (command line)\n"
                           f"dataset_files={SAMPLE / 'arithmetic.jsonl'} (command line)"),
    }
    assert checks["disk"][0] == "ok" and checks["disk"][1].endswith(f" GiB free under {tmp_path / 'out'}")


def test_an_opencompass_venv_that_cannot_import_is_a_failure_with_its_fix(tmp_path):
    broken = unimportable_venv(tmp_path / "venv")
    shown, checks = doctor(tmp_path, "--opencompass", str(broken), "--dataset", str(SAMPLE / "arithmetic.jsonl"))
    assert shown.wait() == 1, shown.transcript()
    assert checks["opencompass"] == (
        "fail", f"{broken} (from --opencompass), version unknown does not import: ImportError: {NUMPY_2}; make its "
                "venv again with `lmeval setup` (or pass --opencompass)")
    assert checks["evaluators and tokenizer"] == ("warn", "not checked: OpenCompass is not usable (above)")
    assert shown.stderr == ""


def test_the_chat_suite_is_checked_dataset_by_dataset_with_what_its_evaluators_need(tmp_path):
    """Offline (as this machine is), a dataset missing where OpenCompass reads it is a failure naming
    the path and what to do; what IFEval and LiveCodeBench need is in the venv lmeval setup made."""
    cache = tmp_path / "cache"
    (cache / "data" / "ifeval").mkdir(parents=True)
    (cache / "data" / "ifeval" / "input_data.jsonl").write_text("{}\n")
    hf_home = tmp_path / "hf"
    shown, checks = doctor(tmp_path, "--task", "chat", COMPASS_DATA_CACHE=str(cache), HF_HOME=str(hf_home))
    assert shown.wait() == 1, shown.transcript()
    assert checks["data: ifeval"] == ("ok", f"{cache}/data/ifeval/input_data.jsonl")
    mirror = "OpenCompass's mirror opencompass.oss-cn-shanghai.aliyuncs.com cannot be reached from here"
    for name, path in (("aime2025", "aime2025/aime2025.jsonl"), ("gpqa", "gpqa/gpqa_diamond.csv"),
                       ("code", "code_generation_lite"), ("mmlu_pro", "mmlu_pro")):
        assert checks[f"data: {name}"] == ("fail", f"not in {cache}/data/{path}, and {mirror}: on a machine with "
                                           f"network, `lmeval data pull --datasets {name} --dest DIR`, then run with "
                                           "--data-dir DIR (or set COMPASS_DATA_CACHE to the folder that holds "
                                           "OpenCompass's data/)")
    status, detail = checks["data: hle"]
    assert status == "fail"
    assert detail.startswith(f"not in the Hugging Face datasets cache {hf_home}/datasets (as cais/hle), and "
                             "huggingface.co cannot be reached from here: on a machine with network, `lmeval data "
                             "pull --datasets hle --dest DIR`")
    assert checks["langdetect"] == ("ok", "in OpenCompass's venv, for IFEval's language checks")
    assert checks["punkt_tab"] == ("ok", "in OpenCompass's venv, for IFEval's sentence counts (NLTK)")
    assert checks["code runner"] == ("ok", "in OpenCompass's venv, for LiveCodeBench (the runner's pyext)")


def test_a_venv_without_what_the_suite_needs_is_a_failure_with_its_fix(tmp_path):
    venv = unimportable_venv(tmp_path / "venv", "langdetect", "No module named 'langdetect'")
    shown, checks = doctor(tmp_path, "--opencompass", str(venv), "--task", "chat")
    assert shown.wait() == 1, shown.transcript()
    assert checks["langdetect"] == ("fail", "ImportError: No module named 'langdetect'; run `lmeval setup` again (it "
                                            "makes OpenCompass's venv with langdetect)")
    assert checks["punkt_tab"][0] == checks["code runner"][0] == "ok"


def test_settings_say_which_came_from_the_defaults_file(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "lmeval.toml").write_text('judge_gpus = "2,3"\nhost = "127.0.0.2"\n'
                                                  'extra_body = { chat_template_kwargs = { enable_thinking = true } }\n')
    shown, checks = doctor(tmp_path, "--host", "127.0.0.1")
    assert shown.wait() == 0, shown.transcript()
    toml = tmp_path / "out" / "lmeval.toml"
    assert checks["settings"] == ("ok", f"work_dir={tmp_path / 'out'} (command line)\n"
                                        "host=127.0.0.1 (command line)\n"
                                        f"judge_gpus=2,3 ({toml})\n"
                                        f'extra_body={{"chat_template_kwargs": {{"enable_thinking": true}}}} ({toml})')
