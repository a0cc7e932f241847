"""Where OpenCompass reads the suite's datasets, whether they are there, and whether it could
fetch the ones that are not: checked before any server starts, so that a run on a machine
without them stops in a second instead of after the models loaded.

OpenCompass 0.5.4 (utils/datasets.py `get_data_path`, read in its source) reads a dataset from
`COMPASS_DATA_CACHE/<its local path>`, else from `~/.cache/opencompass/<the same>`, else
downloads it from its mirror (a zip, through `urlopen` without a timeout) into the first. With
COMPASS_DATA_CACHE unset, the local path is relative to OpenCompass's working directory (each
run's own, under lmeval), so only `~/.cache/opencompass` can hold it. HLE is a gated Hugging
Face dataset, read with `load_dataset('cais/hle')` from the Hugging Face datasets cache, never
from COMPASS_DATA_CACHE.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from lmeval import datadir
from lmeval.exceptions import UsageError
from lmeval.suites import DatasetRef, SuiteDataset

OPENCOMPASS_MIRROR = ("opencompass.oss-cn-shanghai.aliyuncs.com", 80)  # DATASETS_URL's host
HUGGING_FACE = "https://huggingface.co"
CONNECT_SECONDS = 3.0
TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class DataCheck:
    """Whether one suite dataset's data is where OpenCompass will read it."""

    dataset: str  # the suite's name for it (--datasets)
    where: Path  # where OpenCompass reads it
    present: bool
    hub: str | None = None  # the Hugging Face dataset, for one read from its cache

    @property
    def what(self) -> str:
        return f"the Hugging Face datasets cache {self.where} (as {self.hub})" if self.hub else str(self.where)


def compass_cache(env: dict[str, str]) -> Path:
    """The folder OpenCompass reads its datasets from (and downloads them into)."""
    cache = env.get("COMPASS_DATA_CACHE")
    return Path(cache).absolute() if cache else Path("~/.cache/opencompass").expanduser()


def hf_home(env: dict[str, str]) -> Path:
    """The Hugging Face libraries' home: HF_HOME, else XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface."""
    return Path(env.get("HF_HOME") or Path(env.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface").expanduser()


def hf_datasets_cache(env: dict[str, str]) -> Path:
    """The Hugging Face datasets cache, as the datasets library finds it."""
    if env.get("HF_DATASETS_CACHE"):
        return Path(env["HF_DATASETS_CACHE"]).expanduser()
    return hf_home(env) / "datasets"


def hub_dataset_cached(cache: Path, repo: str) -> bool:
    """Whether `load_dataset(REPO)` finds a prepared copy in CACHE: CACHE/OWNER___NAME/CONFIG/VERSION/HASH/."""
    folder = cache / repo.replace("/", "___")
    return any(folder.glob("*/*/*/dataset_info.json"))


def check_data(datasets: list[DatasetRef], env: dict[str, str]) -> list[DataCheck]:
    """Each suite dataset of DATASETS and where its data is read from (a user's own files are
    checked, and copied into the run, when the plan is made)."""
    checks = []
    for item in datasets:
        if not isinstance(item, SuiteDataset):
            continue
        if item.hf_dataset:
            cache = hf_datasets_cache(env)
            checks.append(DataCheck(item.name, cache, hub_dataset_cached(cache, item.hf_dataset), item.hf_dataset))
        for relative in item.data:
            where = compass_cache(env) / relative
            checks.append(DataCheck(item.name, where, where.exists()))
    return checks


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_SECONDS):
            return True
    except OSError:
        return False


def hub_token(env: dict[str, str]) -> bool:
    """Whether the Hugging Face libraries have a token to read a gated dataset with."""
    if env.get("HF_TOKEN"):
        return True
    return Path(env.get("HF_TOKEN_PATH") or hf_home(env) / "token").expanduser().is_file()


def why_not_fetched(check: DataCheck, env: dict[str, str]) -> str | None:
    """Why OpenCompass could not fetch CHECK's missing data from here, or None if it could."""
    if check.hub:
        if any(env.get(name, "").lower() in TRUE for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
            return "the Hugging Face libraries are set offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
        endpoint = env.get("HF_ENDPOINT") or HUGGING_FACE
        host = endpoint.split("://", 1)[-1].split("/", 1)[0]
        if not reachable(host, 443 if endpoint.startswith("https") else 80):
            return f"{host} cannot be reached from here"
        if not hub_token(env):
            return "it is gated and no Hugging Face token is set (HF_TOKEN)"
        return None
    if not reachable(*OPENCOMPASS_MIRROR):
        return f"OpenCompass's mirror {OPENCOMPASS_MIRROR[0]} cannot be reached from here"
    return None


def how_to_get(check: DataCheck) -> str:
    if check.hub:
        return (f"on a machine with network, `lmeval data pull --datasets {check.dataset} --dest DIR` (a gated "
                f"dataset: accept its terms on https://huggingface.co/datasets/{check.hub} and set HF_TOKEN), then "
                "run with --data-dir DIR")
    return (f"on a machine with network, `lmeval data pull --datasets {check.dataset} --dest DIR`, then run with "
            "--data-dir DIR (or set COMPASS_DATA_CACHE to the folder that holds OpenCompass's data/)")


def ensure_data(datasets: list[DatasetRef], notify, dry_run: bool = False,
                env: dict[str, str] | None = None) -> None:
    """Refuse (exit 2) a run whose datasets' data is missing where OpenCompass reads it and
    cannot be fetched from here; say which OpenCompass will download. A dry run only says."""
    env = dict(os.environ) if env is None else env
    for check in check_data(datasets, env):
        if check.present:
            continue
        why = why_not_fetched(check, env)
        if why is None:
            notify(f"{check.dataset}: its data is not in {check.what}; OpenCompass will download it on first use")
            continue
        message = (f"{check.dataset}: its data is not in {check.what}, and {why}: {how_to_get(check)}; "
                   f"or leave {check.dataset} out with --datasets")
        if not dry_run:
            raise UsageError(message)
        notify(message)


def use_data_folder(folder: Path, names: list[str], notify, dry_run: bool = False) -> str:
    """Point OpenCompass (this process's environment, which it inherits) at the data folder
    FOLDER, offline, once the datasets NAMES are complete there (every file's sha256 against
    its manifest; exit 2 if not, before any server starts); the hash of their files."""
    folder = folder.expanduser().absolute()
    if not (folder / datadir.MANIFEST_NAME).is_file():
        raise UsageError(f"--data-dir {folder} is not a data folder (no {datadir.MANIFEST_NAME}); make it with "
                         f"`lmeval data pull --dest {folder}` on a machine with network")
    manifest = datadir.DataManifest.load(folder)
    for state in datadir.verify(folder, manifest, names):
        if state.status == "present":
            continue
        message = (f"--data-dir {folder}: {state.dataset} is {state.status} ({state.detail}); pull it with "
                   f"`lmeval data pull --datasets {state.dataset} --dest {folder}` on a machine with network, "
                   f"or leave {state.dataset} out with --datasets")
        if not dry_run:
            raise UsageError(message)
        notify(message)
    os.environ.update(datadir.run_env(folder))
    return manifest.selection_hash(names)
