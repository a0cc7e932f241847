"""Run by `lmeval data pull` in OpenCompass's venv (never imported by lmeval), so that the suite's
data comes through OpenCompass's own download code, URLs and checksums:

    python -m lmeval_fetch sources RESULT PATH...      which archive OpenCompass fetches for each
                                                       local data PATH (its url and md5)
    python -m lmeval_fetch archive RESULT URL MD5 DIR  one archive into DIR (checked, extracted
                                                       into DIR/extracted)
    python -m lmeval_fetch hub RESULT REPO             `load_dataset(REPO)` into HF_DATASETS_CACHE

Each writes its outcome to the JSON file RESULT (stdout and stderr carry OpenCompass's and the
Hugging Face libraries' own progress bars; a failure's traceback with LMEVAL_FETCH_DEBUG set, as
lmeval --debug does): {"ok": ...} or {"failed": "TYPE: MESSAGE", "kind": "network" | "gated" |
"other"}. One attempt each: lmeval retries.

OpenCompass's `urlopen` has no timeout, so LMEVAL_FETCH_TIMEOUT seconds become the default of
every socket, which urllib uses for the connection and for each read: a server that accepts
and never answers fails the attempt instead of hanging it.
"""
import json
import os
import socket
import sys
import traceback


def sources(*paths):
    """OpenCompass's download_dataset, up to the download: its table of archives, updated from
    ~/.OPENCOMPASS_INTERNAL_DATA_URL.json (OpenCompass's own file for an internal mirror's
    archives) when there is one, and the last of its names that the path contains."""
    from opencompass.utils.datasets_info import DATASETS_URL

    table = dict(DATASETS_URL)
    internal = os.path.join(os.path.expanduser("~"), ".OPENCOMPASS_INTERNAL_DATA_URL.json")
    if os.path.exists(internal):
        with open(internal, encoding="utf-8") as handle:
            table.update(json.load(handle))
    found = {}
    for path in paths:
        names = [name for name in table if name in path]
        if not names:
            raise LookupError(f"OpenCompass has no archive for {path}")
        found[path] = {"url": table[names[-1]]["url"], "md5": table[names[-1]]["md5"]}
    return {"archives": found}


def archive(url, md5, folder):
    """OpenCompass's download_url (a temporary file moved into place, its md5 checked; a file
    already there and verified is kept) and extract_archive."""
    from opencompass.utils.fileio import download_url, extract_archive

    download_url(url, folder, md5=md5)
    extract_archive(os.path.join(folder, os.path.basename(url)), os.path.join(folder, "extracted"),
                    remove_finished=True)
    return {}


def hub(repo):
    """What OpenCompass's HLE loader calls, with network: it leaves the prepared dataset in
    HF_DATASETS_CACHE, where the same call finds it offline."""
    import datasets

    loaded = datasets.load_dataset(repo)
    return {"rows": {split: part.num_rows for split, part in loaded.items()}}


def kind_of(error):
    """network (worth a retry), gated (the user must accept the dataset's terms), or other."""
    names = {type(cause).__name__ for cause in _causes(error)}
    text = str(error).lower()
    if "GatedRepoError" in names or "gated" in text:
        return "gated"
    if names & {"TimeoutError", "timeout", "URLError", "ConnectionError", "ConnectError", "ReadTimeout",
                "ConnectTimeout", "RemoteProtocolError", "IncompleteRead", "ConnectionResetError",
                "ConnectionRefusedError", "HTTPError", "OfflineModeIsEnabled"}:
        return "network"
    if "corrupted" in text or "md5" in text:  # download_url's check of a download cut short
        return "network"
    return "other"


def _causes(error):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    action, result_path, args = argv[0], argv[1], argv[2:]
    socket.setdefaulttimeout(float(os.environ.get("LMEVAL_FETCH_TIMEOUT", "60")))
    try:
        outcome = {"ok": {"sources": sources, "archive": archive, "hub": hub}[action](*args)}
        code = 0
    except BaseException as error:  # noqa: BLE001 - every failure is the answer
        if os.environ.get("LMEVAL_FETCH_DEBUG"):
            traceback.print_exc()
        message = f"{type(error).__name__}: {error}".strip().splitlines()
        outcome = {"failed": message[0] if message else type(error).__name__, "kind": kind_of(error)}
        code = 1
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(outcome, handle)
    return code


if __name__ == "__main__":
    sys.exit(main())
