"""`lmeval data pull` and `lmeval data check`, and runs that read a data folder, with real parts:
OpenCompass's own download code in its venv, the real `datasets.load_dataset` for HLE, a loopback
mirror of OpenCompass's archives and of the Hugging Face Hub (tests/data_mirror.py) serving the
suite in miniature (tests/chat_suite.py), and the chat run that reads the pulled folder with the
network off (the session's chat_runs). What a pulled file must be is computed here, from the
files the mirror published.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import time
from pathlib import Path

import pytest

from chat_suite import ARCHIVES, chat_args, offline_env, published
from data_mirror import Mirror
from toolkit import TOOLS, read_json, wait_until

pytestmark = [pytest.mark.processes, pytest.mark.opencompass]

SUITE = ["aime2025", "gpqa", "ifeval", "code", "mmlu_pro", "hle"]
ARCHIVE_OF = {"aime2025": "aime2025", "gpqa": "gpqa", "ifeval": "ifeval", "code": "code_generation_lite",
              "mmlu_pro": "mmlu_pro"}  # the suite's names -> OpenCompass's archives


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def published_files(folder: Path) -> dict[str, str]:
    """Each file under FOLDER (a dataset as the mirror published it) -> its sha256, by its path
    under COMPASS_DATA_CACHE/data."""
    return {path.relative_to(folder.parent).as_posix(): sha256(path) for path in folder.rglob("*") if path.is_file()}


def table(lm, prefix: str = "") -> dict[str, tuple[str, str]]:
    """The rows of `lmeval data check`'s table (`pull --dry-run`'s, `doctor`'s with PREFIX `data: `):
    dataset -> (status, the first line of its detail)."""
    rows = {}
    for line in lm.stdout_lines:
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if len(cells) == 3 and cells[0].removeprefix(prefix) in SUITE and cells[0].startswith(prefix):
            rows[cells[0].removeprefix(prefix)] = (cells[1], cells[2])
    return rows


def pull_env(home: Path, mirror: Mirror, **extra: str):
    from toolkit import lmeval_env

    return lmeval_env(HOME=str(home), HF_ENDPOINT=mirror.url, HF_TOKEN="hf_lmeval_test", NO_PROXY="127.0.0.1",
                      no_proxy="127.0.0.1", **extra)


# ---------------------------------------------------------------- the session's pull, check and run


def test_pull_brings_every_dataset_as_published_and_check_proves_it(chat_runs):
    pull, check = chat_runs.pulls[0], chat_runs.check
    assert pull.poll() == 0, pull.transcript()
    archives = sorted(path for method, path in chat_runs.mirror_requests[0] if method == "GET"
                      and path.startswith("/datasets/data/"))
    assert archives == sorted(f"/datasets/data/{name}.zip" for name in ARCHIVES.values())  # each once
    assert any(path.startswith("/datasets/cais/hle/resolve/") for _, path in chat_runs.mirror_requests[0])
    manifest = read_json(chat_runs.pulled / "lmeval-data.json")
    assert sorted(manifest["datasets"]) == sorted(SUITE)
    for name, archive in ARCHIVE_OF.items():
        record = manifest["datasets"][name]
        wanted = published_files(chat_runs.suite.compass / "data" / archive)
        assert {path.removeprefix("compass/data/"): entry["sha256"] for path, entry in record["files"].items()} == wanted
        assert record["opencompass"] == "0.5.4"
        assert record["source"].endswith(f"/datasets/data/{archive}.zip")
    hle = manifest["datasets"]["hle"]["files"]
    assert any(path.startswith("hf/cais___hle/default/0.0.0/") and path.endswith(".arrow") for path in hle)
    for path, entry in {**hle, **manifest["datasets"]["gpqa"]["files"]}.items():
        assert (sha256(chat_runs.pulled / path), (chat_runs.pulled / path).stat().st_size) == (entry["sha256"],
                                                                                            entry["size"])
    assert not (chat_runs.pulled / ".partial").exists()
    assert check.poll() == 0, check.transcript()
    assert {name: status for name, (status, _) in table(check).items()} == dict.fromkeys(SUITE, "present")


def test_a_second_pull_fetches_nothing(chat_runs):
    again = chat_runs.pulls[1]
    assert again.poll() == 0, again.transcript()
    assert chat_runs.mirror_requests[1] == []
    assert [line.split(":")[1] for line in again.stderr_lines if "already in" in line] == [f" {name}" for name in SUITE]


def test_the_run_records_the_data_it_read(chat_runs):
    """The full run (its scores: test_chat_suite) read the pulled folder with the network off."""
    manifest = read_json(chat_runs.full_dir / "lmeval.json")
    assert manifest["inputs"]["data_dir"] == str(chat_runs.pulled)
    assert len(manifest["fingerprint_inputs"]["data"]) == 64


# ---------------------------------------------------------------- what goes wrong


def test_a_file_corrupted_after_the_pull_is_named_by_check_and_refused_by_run(chat_runs, tmp_path, lmeval_runner):
    folder = tmp_path / "data"
    shutil.copytree(chat_runs.pulled, folder)
    damaged = folder / "compass" / "data" / "gpqa" / "gpqa_diamond.csv"
    content = bytearray(damaged.read_bytes())
    content[-2] ^= 1  # same size, other bytes
    damaged.write_bytes(bytes(content))

    check = lmeval_runner.run("data", "check", str(folder), env=offline_env())
    assert check.poll() == 1, check.transcript()
    rows = table(check)
    assert rows["gpqa"][0] == "corrupt" and str(damaged) in rows["gpqa"][1]
    assert all(status == "present" for name, (status, _) in rows.items() if name != "gpqa")
    assert check.stderr_lines[-1] == (f"lmeval: error: gpqa not complete in {folder}: pull it with `lmeval data pull "
                                      f"--task chat --datasets gpqa --dest {folder}` on a machine with network")

    work_dir = tmp_path / "out"
    started = time.monotonic()
    run = lmeval_runner.run("run", *chat_args(work_dir, "demo-chat", "--data-dir", str(folder)),
                            env=offline_env(**chat_runs.suite.standin_env()), work_dir=work_dir)
    assert run.poll() == 2, run.transcript()
    assert time.monotonic() - started < 30
    assert run.stderr_lines[-1] == (
        f"lmeval: error: --data-dir {folder}: gpqa is corrupt ({damaged} does not have the sha256 the manifest "
        f"records); pull it with `lmeval data pull --datasets gpqa --dest {folder}` on a machine with network, or "
        "leave gpqa out with --datasets")
    assert not work_dir.exists() or not any(work_dir.glob("2*"))
    assert lmeval_runner.leftovers() == []
    work_dir.mkdir(exist_ok=True)
    (work_dir / "lmeval.toml").write_text(f'data_dir = "{folder}"\n')  # a team's setting, the same check
    from_file = lmeval_runner.run("run", *chat_args(work_dir), env=offline_env(**chat_runs.suite.standin_env()),
                                  work_dir=work_dir)
    assert from_file.poll() == 2 and from_file.stderr_lines[-1] == run.stderr_lines[-1], from_file.transcript()

    doctor = lmeval_runner.run("doctor", "--data-dir", str(folder), *TOOLS[2:], env=offline_env(), timeout=300)
    rows = table(doctor, "data: ")
    assert rows["gpqa"][0] == "fail" and rows["gpqa"][1].startswith("corrupt: ")
    assert {name: status for name, (status, _) in rows.items() if name != "gpqa"} == dict.fromkeys(SUITE[2:], "ok") | {
        "aime2025": "ok"}


def test_judging_a_run_on_other_data_is_refused(chat_runs, tmp_path, lmeval_runner):
    from lmeval import datadir

    folder = tmp_path / "other-data"
    shutil.copytree(chat_runs.pulled, folder)
    changed = folder / "compass" / "data" / "aime2025" / "aime2025.jsonl"
    changed.write_text(changed.read_text() + json.dumps({"question": "[aime-new] 1+1?", "answer": "2"}) + "\n")
    manifest = datadir.DataManifest.load(folder)
    manifest.datasets["aime2025"].files = datadir.record_files(folder, [changed])  # pulled so, from another mirror
    manifest.save(folder)

    judge = lmeval_runner.run("judge", "--reuse", chat_runs.full_dir.name, "-w", str(chat_runs.work_dir),
                              "--data-dir", str(folder), *TOOLS, env=offline_env())
    assert judge.poll() == 2, judge.transcript()
    assert judge.stderr_lines[-1].startswith(f"lmeval: error: run {chat_runs.full_dir.name} was inferred on other "
                                             f"data than {folder} holds now")


def test_a_mirror_that_never_answers_fails_the_pull_within_its_timeout(tmp_path, lmeval_runner):
    folder = tmp_path / "data"
    with Mirror(files={"datasets/data/gpqa.zip": b"never sent"}) as mirror:
        mirror.stall("/datasets/")
        started = time.monotonic()
        pull = lmeval_runner.run("data", "pull", "--datasets", "gpqa", "--dest", str(folder), "--mirror", mirror.url,
                                 "--timeout", "1", "--tries", "2", env=pull_env(tmp_path, mirror))
        took = time.monotonic() - started
        requests = mirror.requests
    assert pull.poll() == 1, pull.transcript()
    assert took < 30  # 2 tries of a 1 s timeout, a 1 s pause, and OpenCompass's imports
    url = f"{mirror.url}/datasets/data/gpqa.zip"
    assert pull.stderr_lines[-1] == (f"lmeval: error: gpqa: cannot fetch {url} (TimeoutError: timed out; 2 tries); "
                                     "check the network, or give an internal mirror with --mirror URL")
    assert requests == [("GET", "/datasets/data/gpqa.zip")] * 2
    check = lmeval_runner.run("data", "check", str(folder), "--datasets", "gpqa", env=offline_env())
    assert check.poll() == 1 and table(check)["gpqa"][0] == "missing"
    assert not (folder / ".partial").exists()


def test_a_pull_interrupted_midway_leaves_nothing_check_would_pass(chat_runs, tmp_path, lmeval_runner):
    source = published(chat_runs.suite)
    home = source.home(tmp_path / "home")
    folder = tmp_path / "data"
    with Mirror(files=source.files) as mirror:
        mirror.trickle("/datasets/data/mmlu_pro.zip", 1000)
        pull = lmeval_runner.start("data", "pull", "--datasets", "aime2025,mmlu_pro", "--dest", str(folder),
                                   "--mirror", mirror.url, env=pull_env(home, mirror))
        wait_until(lambda: ("GET", "/datasets/data/mmlu_pro.zip") in mirror.requests, 60, what="mmlu_pro's download")
        wait_until(lambda: any((folder / ".partial" / "mmlu_pro").rglob("*")), 10, what="its first bytes")
        pull.signal(signal.SIGINT)
        assert pull.wait(30) == 130, pull.transcript()
    assert pull.stderr_lines[-1] == "lmeval: error: interrupted by Ctrl-C; every server lmeval started has been stopped"
    check = lmeval_runner.run("data", "check", str(folder), "--datasets", "aime2025,mmlu_pro", env=offline_env())
    assert check.poll() == 1
    assert {name: status for name, (status, _) in table(check).items()} == {"aime2025": "present",
                                                                           "mmlu_pro": "missing"}
    assert not (folder / ".partial").exists() and not (folder / "compass" / "data" / "mmlu_pro").exists()

    with Mirror(files=source.files) as mirror:  # the pull again, to its end
        again = lmeval_runner.run("data", "pull", "--datasets", "aime2025,mmlu_pro", "--dest", str(folder),
                                  "--mirror", mirror.url, env=pull_env(home, mirror), timeout=120)
        assert again.poll() == 0, again.transcript()
        assert [path for _, path in mirror.requests] == ["/datasets/data/mmlu_pro.zip"]


def test_a_dry_run_lists_each_archive_and_its_size_and_fetches_nothing(chat_runs, tmp_path, lmeval_runner):
    source = published(chat_runs.suite)
    with Mirror(files=source.files) as mirror:
        listed = lmeval_runner.run("data", "pull", "--dry-run", "--dest", str(tmp_path / "data"), "--mirror",
                                   mirror.url, env=pull_env(tmp_path, mirror))
        requests = mirror.requests
    assert listed.poll() == 0, listed.transcript()
    rows = table(listed)
    sizes = {name: len(source.files[f"datasets/data/{archive}.zip"]) for name, archive in ARCHIVE_OF.items()}
    assert rows["aime2025"] == (f"{mirror.url}/datasets/data/aime2025.zip", f"{sizes['aime2025']} bytes")
    assert rows["gpqa"] == (f"{mirror.url}/datasets/data/gpqa.zip", f"{sizes['gpqa']} bytes")
    assert rows["hle"] == (f"cais/hle from {mirror.url}", "unknown")
    assert {method for method, _ in requests} == {"HEAD"} and len(requests) == 5
    assert not (tmp_path / "data").exists()


def test_hle_refused_by_the_hub_says_to_accept_its_terms(chat_runs, tmp_path, lmeval_runner):
    source = published(chat_runs.suite)
    with Mirror(hub=source.hub) as mirror:
        mirror.gated("cais/hle")
        pull = lmeval_runner.run("data", "pull", "--datasets", "hle", "--dest", str(tmp_path / "data"),
                                 env=pull_env(tmp_path, mirror), timeout=120)
    assert pull.poll() == 1, pull.transcript()
    assert pull.stderr_lines[-1] == ("lmeval: error: hle: cais/hle is a gated dataset and access was refused: accept "
                                     "its terms on https://huggingface.co/datasets/cais/hle with the account of your "
                                     "HF_TOKEN, then pull again")


def test_an_archive_other_than_opencompasss_fails_its_md5(chat_runs, tmp_path, lmeval_runner):
    """Without a table of its own (~/.OPENCOMPASS_INTERNAL_DATA_URL.json), a mirror's archives are
    checked against OpenCompass's md5 sums: the miniature GPQA is not the real one."""
    source = published(chat_runs.suite)
    with Mirror(files=source.files) as mirror:
        pull = lmeval_runner.run("data", "pull", "--datasets", "gpqa", "--dest", str(tmp_path / "data"),
                                 "--mirror", mirror.url, "--tries", "1", env=pull_env(tmp_path / "home", mirror))
    assert pull.poll() == 1, pull.transcript()
    assert pull.stderr_lines[-1] == (f"lmeval: error: gpqa: cannot fetch {mirror.url}/datasets/data/gpqa.zip "
                                     "(RuntimeError: File not found or corrupted.; 1 try); check the network, or give "
                                     "an internal mirror with --mirror URL")
