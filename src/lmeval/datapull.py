"""`lmeval data pull`: the suite's data into a data folder (lmeval.datadir), on a machine with
network, for the ones without.

OpenCompass's archives come through OpenCompass's own download code in its venv (its table of
URLs and md5 sums, its temporary-file download, its extraction: lmeval_fetch), from its mirror
or the same paths under --mirror; HLE through `load_dataset('cais/hle')` (HF_TOKEN, HF_ENDPOINT).
Every socket has a timeout, network failures are retried with backoff (tenacity), and each
dataset is unpacked in DIR/.partial/ and moved into place before the manifest names it.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from lmeval import datadir
from lmeval.datadir import COMPASS, HUGGING_FACE, DataManifest, DatasetRecord
from lmeval.exceptions import StageFailed, UsageError
from lmeval.ocenv import opencompass_env
from lmeval.runs import unlockable
from lmeval.suites import SuiteDataset

PARTIAL = ".partial"
LOCK_NAME = ".lmeval-data.lock"
HUB_PAGE = "https://huggingface.co/datasets/"


class FetchFailed(StageFailed):
    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind  # network | gated | other (lmeval_fetch.kind_of)


@dataclass(frozen=True)
class Fetcher:
    """lmeval_fetch in OpenCompass's venv, one attempt a call."""

    python: Path
    opencompass_version: str  # recorded with what it fetched
    timeout: float
    debug: bool = False  # its tracebacks on stderr

    def call(self, action: str, *args: str, env: dict[str, str] | None = None) -> dict:
        with tempfile.TemporaryDirectory(prefix="lmeval-fetch-") as folder:
            result = Path(folder) / "result.json"
            base = {**os.environ, **(env or {}), "LMEVAL_FETCH_TIMEOUT": str(self.timeout),
                    "HF_HUB_DOWNLOAD_TIMEOUT": str(math.ceil(self.timeout)),
                    "HF_HUB_ETAG_TIMEOUT": str(math.ceil(self.timeout)),
                    **({"LMEVAL_FETCH_DEBUG": "1"} if self.debug else {})}
            # Its own progress bars and lines go to stderr: lmeval's stdout carries results only.
            subprocess.run([str(self.python), "-m", "lmeval_fetch", action, str(result), *args], cwd=folder,
                           env=opencompass_env(base), stdout=sys.stderr, check=False)
            try:
                outcome = json.loads(result.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise FetchFailed(f"OpenCompass's venv ({self.python}) ended without an answer", "other") from None
        if "failed" in outcome:
            raise FetchFailed(outcome["failed"], outcome.get("kind", "other"))
        return outcome["ok"]


def mirrored(url: str, mirror: str | None) -> str:
    """URL from MIRROR: the same path under the mirror's address (and path prefix)."""
    if not mirror:
        return url
    return mirror.rstrip("/") + urlsplit(url).path


@contextmanager
def locked(dest: Path):
    """One pull at a time into DEST."""
    with open(dest / LOCK_NAME, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another `lmeval data pull` is writing {dest}; wait for it to end") from None
        except OSError as error:
            raise unlockable(dest / LOCK_NAME, error) from None
        yield


def pull(datasets: list[SuiteDataset], dest: Path, fetcher: Fetcher, mirror: str | None, tries: int,
         notify: Callable[[str], None]) -> DataManifest:
    """Each of DATASETS into DEST unless it is there and verified; the manifest as it ends."""
    dest.mkdir(parents=True, exist_ok=True)
    with locked(dest):
        shutil.rmtree(dest / PARTIAL, ignore_errors=True)  # what a pull killed before its end left
        try:
            return _pull_missing(datasets, dest, fetcher, mirror, tries, notify)
        finally:
            shutil.rmtree(dest / PARTIAL, ignore_errors=True)


def listing(datasets: list[SuiteDataset], fetcher: Fetcher, mirror: str | None) -> list[tuple[str, str, int | None]]:
    """What a pull of DATASETS fetches: (dataset, from where, its size in bytes where the server
    says it: a HEAD of each archive; None for the Hub's)."""
    import httpx

    paths = [path for item in datasets for path in item.data]
    archives = fetcher.call("sources", *paths)["archives"] if paths else {}
    rows = []
    for item in datasets:
        if item.hf_dataset:
            rows.append((item.name, f"{item.hf_dataset} from {hub_endpoint()}", None))
        for url in dict.fromkeys(archives[path]["url"] for path in item.data):
            source = mirrored(url, mirror)
            try:
                size = int(httpx.head(source, timeout=fetcher.timeout, follow_redirects=True).headers["content-length"])
            except (httpx.HTTPError, KeyError, ValueError):
                size = None
            rows.append((item.name, source, size))
    return rows


def _pull_missing(datasets: list[SuiteDataset], dest: Path, fetcher: Fetcher, mirror: str | None, tries: int,
                  notify: Callable[[str], None]) -> DataManifest:
    """Those of DATASETS not there and verified, each moved into place before the manifest names it."""
    manifest = DataManifest.load(dest)
    states = {state.dataset: state for state in datadir.verify(dest, manifest, [item.name for item in datasets])}
    wanted = []
    for item in datasets:
        if states[item.name].status == "present":
            notify(f"{item.name}: already in {dest} ({states[item.name].detail})")
        else:
            wanted.append(item)
    paths = [path for item in wanted for path in item.data]
    archives = fetcher.call("sources", *paths)["archives"] if paths else {}
    for item in wanted:
        staging = dest / PARTIAL / item.name
        if item.hf_dataset:
            record = _pull_hub(item, dest, staging, fetcher, tries, notify)
        else:
            record = _pull_archives(item, dest, staging, archives, fetcher, mirror, tries, notify)
        manifest.datasets[item.name] = record
        manifest.save(dest)
        shutil.rmtree(staging, ignore_errors=True)
        notify(f"{item.name}: {datadir.describe_files(record.files)}, in {dest}")
    return manifest


def _fetch(fetcher: Fetcher, tries: int, what: str, notify: Callable[[str], None], *args: str,
           env: dict[str, str] | None = None) -> None:
    """fetcher.call(*ARGS), network failures tried again (TRIES in all) after growing pauses;
    the last failure raised with how many tries it took."""
    def before_sleep(state) -> None:
        notify(f"{what}: {state.outcome.exception().message}; trying again in {state.next_action.sleep:.0f} s")

    retrying = Retrying(stop=stop_after_attempt(tries), wait=wait_exponential(multiplier=1, max=30),
                        retry=retry_if_exception(lambda error: isinstance(error, FetchFailed) and error.kind == "network"),
                        before_sleep=before_sleep, reraise=True)
    try:
        retrying(fetcher.call, *args, env=env)
    except FetchFailed as error:
        made = retrying.statistics.get("attempt_number", 1)
        error.message = f"{error.message}; {made} {'try' if made == 1 else 'tries'}"
        raise


def _pull_archives(item: SuiteDataset, dest: Path, staging: Path, sources: dict, fetcher: Fetcher,
                   mirror: str | None, tries: int, notify: Callable[[str], None]) -> DatasetRecord:
    """ITEM's archives, extracted into DEST/compass/data/ entry by entry (each replacing an old
    copy), every path its loader reads checked there."""
    data = dest / COMPASS / "data"
    data.mkdir(parents=True, exist_ok=True)
    chosen = {sources[path]["url"]: sources[path]["md5"] for path in item.data}
    placed: list[Path] = []
    for url, md5 in chosen.items():
        source = mirrored(url, mirror)
        notify(f"{item.name}: fetching {source}")
        folder = staging / Path(urlsplit(url).path).stem
        try:
            _fetch(fetcher, tries, f"{item.name}: {source}", notify, "archive", source, md5, str(folder))
        except FetchFailed as error:
            raise StageFailed(f"{item.name}: cannot fetch {source} ({error.message}); check the network, or give an "
                              "internal mirror with --mirror URL") from None
        for entry in sorted((folder / "extracted").iterdir()):
            target = data / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)
            placed.append(target)
    for relative in item.data:
        if not (dest / COMPASS / relative).exists():
            raise StageFailed(f"{item.name}: the archive from {', '.join(chosen)} has no {relative}, which "
                              "OpenCompass's loader reads; the mirror may hold another version of it")
    files = [path for target in placed for path in ([target] if target.is_file() else datadir.files_under(target))]
    return DatasetRecord(source=", ".join(mirrored(url, mirror) for url in chosen), md5=", ".join(chosen.values()),
                         opencompass=fetcher.opencompass_version, files=datadir.record_files(dest, files))


def _pull_hub(item: SuiteDataset, dest: Path, staging: Path, fetcher: Fetcher, tries: int,
              notify: Callable[[str], None]) -> DatasetRecord:
    """ITEM from the Hugging Face Hub (HF_ENDPOINT), prepared in a cache of its own, then moved
    into DEST/hf; the Hub's raw download is left behind."""
    repo = item.hf_dataset
    endpoint = hub_endpoint()
    notify(f"{item.name}: loading the Hugging Face dataset {repo} from {endpoint}")
    env = {"HF_DATASETS_CACHE": str(staging / HUGGING_FACE), "HF_HUB_CACHE": str(staging / "hub"),
           "HF_DATASETS_OFFLINE": "0", "HF_HUB_OFFLINE": "0"}
    try:
        _fetch(fetcher, tries, f"{item.name}: {endpoint}", notify, "hub", repo, env=env)
    except FetchFailed as error:
        if error.kind == "gated":
            token = "the account of your HF_TOKEN" if _has_token() else "an account whose token you set in HF_TOKEN"
            raise StageFailed(f"{item.name}: {repo} is a gated dataset and access was refused: accept its terms on "
                              f"{HUB_PAGE}{repo} with {token}, then pull again") from None
        raise StageFailed(f"{item.name}: cannot load {repo} from {endpoint} ({error.message}); check the network "
                          "and HF_TOKEN, or set HF_ENDPOINT to a mirror of the Hub") from None
    folder_name = repo.replace("/", "___")
    target = dest / HUGGING_FACE / folder_name
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging / HUGGING_FACE / folder_name, target)
    return DatasetRecord(source=f"{repo} from {endpoint}", opencompass=fetcher.opencompass_version,
                         files=datadir.record_files(dest, datadir.files_under(target)))


def hub_endpoint() -> str:
    """Where the Hugging Face libraries fetch from: HF_ENDPOINT (a mirror of the Hub), else the Hub."""
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def _has_token() -> bool:
    from lmeval.datafiles import hub_token

    return hub_token(dict(os.environ))
