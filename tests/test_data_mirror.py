"""The data mirror (tests/data_mirror.py) itself: archives and faults with urllib here, and the
hub with the real `datasets.load_dataset` of OpenCompass's venv, whose cache layout and gated
error are what lmeval's dataset handling relies on."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import venv_python
from data_mirror import COMMIT, HLE_CARD, Mirror

ARCHIVE = bytes(range(256)) * 64  # 16 KiB
PARQUET = "data/test-00000-of-00001.parquet"  # where cais/hle keeps its one split on the Hub
ROWS = [
    {"id": "q0", "question": "What is 2+2?", "image": "", "answer": "4", "category": "Math"},
    {"id": "q1", "question": "Name this bird.", "image": "data:image/png;base64,iVBORw0KGgo=", "answer": "kiwi",
     "category": "Biology/Medicine"},
    {"id": "q2", "question": "Who wrote Hamlet?", "image": "", "answer": "Shakespeare", "category": "Humanities"},
]
LOAD = "import datasets; d = datasets.load_dataset('cais/hle'); print(d['test'].num_rows); print(d['test'][1])"


def _timed_out(error: BaseException) -> bool:
    return isinstance(error, TimeoutError) or isinstance(getattr(error, "reason", None), TimeoutError)


# ------------------------------------------------------------------------------------------------
# Archives (no tool venv)


def test_archives_get_head_and_missing():
    with Mirror(files={"datasets/data/x.zip": ARCHIVE}) as mirror:
        with urllib.request.urlopen(mirror.url + "/datasets/data/x.zip", timeout=5) as response:
            assert response.read() == ARCHIVE
        head = urllib.request.Request(mirror.url + "/datasets/data/x.zip", method="HEAD")
        with urllib.request.urlopen(head, timeout=5) as response:
            assert response.headers["Content-Length"] == str(len(ARCHIVE))
            assert response.read() == b""
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(mirror.url + "/datasets/data/y.zip", timeout=5)
        assert missing.value.code == 404
        assert mirror.requests == [("GET", "/datasets/data/x.zip"), ("HEAD", "/datasets/data/x.zip"),
                                   ("GET", "/datasets/data/y.zip")]


def test_stall_times_out_the_client_and_closing_releases_it():
    mirror = Mirror(files={"datasets/data/x.zip": ARCHIVE})
    with mirror:
        mirror.stall("/datasets/")
        start = time.monotonic()
        with pytest.raises(OSError) as stalled:  # TimeoutError raw, or wrapped in a URLError
            urllib.request.urlopen(mirror.url + "/datasets/data/x.zip", timeout=1)
        assert _timed_out(stalled.value), repr(stalled.value)
        assert time.monotonic() - start < 2.5
        assert mirror.requests == [("GET", "/datasets/data/x.zip")]

        # A client with no timeout of its own waits until the mirror closes, and no longer.
        ended: list[BaseException] = []

        def wait_forever():
            try:
                urllib.request.urlopen(mirror.url + "/datasets/data/x.zip")
            except Exception as error:  # noqa: BLE001 - whichever way the dropped connection shows
                ended.append(error)

        waiter = threading.Thread(target=wait_forever, daemon=True)
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive()
        start = time.monotonic()
    waiter.join(timeout=3)
    assert not waiter.is_alive() and ended
    assert time.monotonic() - start < 2


def test_trickle_sends_the_full_length_and_part_of_the_file():
    with Mirror(files={"datasets/data/x.zip": ARCHIVE}) as mirror:
        mirror.trickle("/datasets/data/", 1000)
        with urllib.request.urlopen(mirror.url + "/datasets/data/x.zip", timeout=1) as response:
            assert response.headers["Content-Length"] == str(len(ARCHIVE))
            assert response.read(1000) == ARCHIVE[:1000]
            with pytest.raises(TimeoutError):
                response.read()


# ------------------------------------------------------------------------------------------------
# The hub, with OpenCompass's datasets and huggingface_hub


@pytest.fixture(scope="module")
def hle_repo(tmp_path_factory) -> dict[str, bytes]:
    """cais/hle as the Hub lays it out: its card and one parquet split, written by pyarrow."""
    path = tmp_path_factory.mktemp("hle") / "test.parquet"
    script = ("import pyarrow as pa, pyarrow.parquet as pq\n"
              f"pq.write_table(pa.Table.from_pylist({ROWS!r}), {str(path)!r})")
    subprocess.run([str(venv_python("opencompass")), "-c", script], check=True, timeout=60)
    return {"README.md": HLE_CARD, PARQUET: path.read_bytes()}


def hf_env(tmp: Path, endpoint: str, **extra: str) -> dict[str, str]:
    """This environment without any Hugging Face setting of its own, pointed at ENDPOINT and at
    caches under TMP."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGINGFACE_"))}
    return env | {"HF_ENDPOINT": endpoint, "HF_TOKEN": "x", "HF_HOME": str(tmp / "home"),
                  "HF_DATASETS_CACHE": str(tmp / "hf"), "HF_HUB_CACHE": str(tmp / "hubcache"),
                  "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1"} | extra


def oc_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    python = str(venv_python("opencompass"))
    return subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.opencompass
def test_load_dataset_from_the_mirror_then_from_its_cache_alone(tmp_path, hle_repo):
    with Mirror(hub={"cais/hle": hle_repo}) as mirror:
        online = oc_python(LOAD, hf_env(tmp_path, mirror.url))
        assert online.returncode == 0, online.stderr
        assert online.stdout.splitlines() == ["3", repr(ROWS[1])]
        assert ("GET", f"/datasets/cais/hle/resolve/{COMMIT}/{PARQUET}") in mirror.requests

    # What the load left in the datasets cache is all a later offline load needs.
    built = tmp_path / "hf" / "cais___hle" / "default" / "0.0.0" / COMMIT
    assert sorted(path.name for path in built.iterdir()) == ["dataset_info.json", "hle-test.arrow"]
    shutil.rmtree(tmp_path / "hubcache")
    offline = oc_python(LOAD, hf_env(tmp_path, "http://127.0.0.1:9", HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1"))
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.splitlines() == ["3", repr(ROWS[1])]


@pytest.mark.opencompass
def test_gated_repo_fails_the_load_as_the_hub_does(tmp_path, hle_repo):
    with Mirror(hub={"cais/hle": hle_repo}) as mirror:
        mirror.gated("cais/hle")
        failed = oc_python(LOAD, hf_env(tmp_path, mirror.url))
        download = oc_python(
            "import huggingface_hub as h\n"
            "try: h.hf_hub_download('cais/hle', 'README.md', repo_type='dataset')\n"
            "except h.errors.GatedRepoError as e: print(e.response.status_code)",
            hf_env(tmp_path, mirror.url))
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-1] == (
        "datasets.exceptions.DatasetNotFoundError: Dataset 'cais/hle' is a gated dataset on the Hub. "
        "Visit the dataset page at https://huggingface.co/datasets/cais/hle to ask for access.")
    assert download.stdout == "403\n", download.stderr
    assert not (tmp_path / "hf" / "cais___hle").exists()
