"""A loopback HTTP server standing in for the two places lmeval's datasets come from, so tests can
download them with no internet and make those downloads fail on purpose:

- an internal mirror of OpenCompass's dataset archives (`files`): plain GET and HEAD of a path;
- a minimal Hugging Face Hub (`hub`): the endpoints that huggingface_hub 2.5 and datasets 3.6
  call for `datasets.load_dataset(REPO_ID)` with HF_ENDPOINT pointing here, read from a real
  call's requests (README.md at main, then everything at the commit it resolved to):

  HEAD /datasets/REPO/resolve/REV/PATH         hf_hub_download's metadata: X-Repo-Commit (the
                                               commit every later request names), ETag (git blob
                                               sha1, or X-Linked-Etag sha256 for an LFS file),
                                               Content-Length; a missing file is 404 with
                                               X-Error-Code: EntryNotFound, which is how datasets
                                               learns there is no REPO_NAME.py script,
                                               .huggingface.yaml or dataset_infos.json
  GET  /datasets/REPO/resolve/REV/PATH         the file itself (README.md, the parquet files)
  GET  /api/datasets/REPO[/revision/REV]       the repo's info; its `sha` is the commit, which
                                               names the datasets cache folder
                                               (OWNER___NAME/default/0.0.0/SHA)
  GET  /api/datasets/REPO/tree/REV[/DIR]       file listing: how HfFileSystem resolves the card's
                                               `data/test-*` pattern
  POST /api/datasets/REPO/paths-info/REV       HfApi.get_paths_info / HfFileSystem.info on named
                                               paths; load_dataset did not call it (card configs
                                               or named data_files), other hub code does

Everything the Hub has that datasets only tries (the dataset viewer's parquet export at
datasets-server.HOST, which never resolves on loopback) is absent: the client falls back
exactly as it does when the viewer has no export.

Faults, switched on while the mirror runs:
- `gated(repo)`: the repo's files are refused as the Hub refuses a gated repo whose terms the
  token's user has not accepted (403, X-Error-Code: GatedRepo), so huggingface_hub raises
  GatedRepoError (datasets turns it into DatasetNotFoundError). Its info stays readable, as on
  the Hub, and says `gated: "auto"`.
- `stall(prefix)`: requests under PREFIX are read and never answered: client timeouts.
- `trickle(prefix, after_bytes)`: files under PREFIX send their full Content-Length and only
  AFTER_BYTES bytes, then nothing: a download cut midway.
A held connection is released when the mirror closes, never before.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

COMMIT = "1f0c3e9b7d2a4c6e8f0a1b3c5d7e9f1a2b4c6d8e"
"""The fake commit every hub repo is at: what `main` resolves to, and the folder name the
datasets cache files a loaded dataset under."""

HLE_CARD = b"""---
license: mit
configs:
- config_name: default
  data_files:
  - split: test
    path: data/test-*
---
# Humanity's Last Exam, in miniature
"""
"""cais/hle's dataset card, as far as `load_dataset` reads it: its one split, data/test-*.parquet."""

LFS_SUFFIXES = (".parquet", ".arrow", ".zip", ".gz", ".jsonl", ".json", ".csv", ".png", ".jpg")
"""Files the Hub keeps in LFS (by .gitattributes' defaults plus what dataset repos track): their
ETag is the content's sha256 (X-Linked-Etag), the rest's is the git blob sha1, as on the Hub."""


def _is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


def _git_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _etag(path: str, content: bytes) -> str:
    return hashlib.sha256(content).hexdigest() if _is_lfs(path) else _git_oid(content)


class Mirror:
    """The server, as a context manager: `with Mirror(files=..., hub=...) as mirror:` serves at
    `mirror.url` until the block ends.

    files: relative path (`datasets/data/gpqa.zip`) -> content, served at `/<path>`.
    hub: repo id (`cais/hle`) -> {path in repo (`data/test-00000-of-00001.parquet`): content}.
    """

    def __init__(self, files: dict[str, bytes] | None = None,
                 hub: dict[str, dict[str, bytes]] | None = None) -> None:
        self.files = dict(files or {})
        self.hub = {repo: dict(content) for repo, content in (hub or {}).items()}
        self.url = ""
        self._lock = threading.Lock()
        self._requests: list[tuple[str, str]] = []
        self._gated: set[str] = set()
        self._stalls: list[str] = []
        self._trickles: list[tuple[str, int]] = []
        self._connections: set[socket.socket] = set()
        self._handlers: set[threading.Thread] = set()
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- what a test reads and switches ---------------------------------------------------

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path as sent, query included) of every request received, in order: a copy."""
        with self._lock:
            return list(self._requests)

    def gated(self, repo_id: str) -> None:
        """From now on REPO_ID's files are refused as the Hub refuses an unaccepted gated repo."""
        with self._lock:
            self._gated.add(repo_id)

    def stall(self, prefix: str) -> None:
        """From now on requests whose path starts with PREFIX are read and never answered."""
        with self._lock:
            self._stalls.append(prefix)

    def trickle(self, prefix: str, after_bytes: int) -> None:
        """From now on files under PREFIX send their headers (full Content-Length) and only their
        first AFTER_BYTES bytes, then hold the connection silently."""
        with self._lock:
            self._trickles.append((prefix, after_bytes))

    # --- lifetime ---------------------------------------------------------------------------

    def __enter__(self) -> Mirror:
        mirror = self

        class Handler(_Handler):
            pass

        Handler.mirror = mirror
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="data-mirror", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops accepting, wakes every held connection and closes every open one, promptly:
        a stalled client sees its connection end when the test's mirror does."""
        if self._server is None:
            return
        self._closing.set()
        self._server.shutdown()
        with self._lock:
            connections = list(self._connections)
            handlers = list(self._handlers)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the client closed it first
        for handler in handlers:
            handler.join(timeout=2)
        self._server.server_close()
        self._thread.join(timeout=2)
        self._server = None

    # --- used by the handler ----------------------------------------------------------------

    def _opened(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)
            self._handlers.add(threading.current_thread())
        if self._closing.is_set():  # accepted as close() began: it may have missed this one
            connection.shutdown(socket.SHUT_RDWR)

    def _closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)
            self._handlers.discard(threading.current_thread())

    def _received(self, method: str, path: str) -> None:
        with self._lock:
            self._requests.append((method, path))

    def _stalled(self, path: str) -> bool:
        with self._lock:
            return any(path.startswith(prefix) for prefix in self._stalls)

    def _trickled(self, path: str) -> int | None:
        with self._lock:
            return next((after for prefix, after in self._trickles if path.startswith(prefix)), None)

    def _is_gated(self, repo_id: str) -> bool:
        with self._lock:
            return repo_id in self._gated


class _Handler(BaseHTTPRequestHandler):
    """One connection: HTTP/1.1 with keep-alive, as huggingface_hub's client pools them."""

    protocol_version = "HTTP/1.1"
    mirror: Mirror

    def setup(self) -> None:
        super().setup()
        self.mirror._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.mirror._closed(self.connection)

    def log_message(self, *args: object) -> None:
        pass  # a test's output stays its own

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_POST(self) -> None:
        self._serve(body=True)

    # --- routing ----------------------------------------------------------------------------

    def _serve(self, body: bool) -> None:
        mirror = self.mirror
        mirror._received(self.command, self.path)
        path = unquote(urlsplit(self.path).path)
        length = int(self.headers.get("Content-Length") or 0)
        self.form = parse_qs(self.rfile.read(length).decode()) if length else {}
        if mirror._stalled(path):
            self._hold()
            return
        resolve = path.startswith("/datasets/") and path.split("/")[4:5] == ["resolve"]  # /datasets/O/N/resolve/
        if self.command != "POST" and path.lstrip("/") in mirror.files:
            self._file(path, mirror.files[path.lstrip("/")], body, {})
        elif path.startswith("/api/datasets/") or resolve:
            self._hub(path, body)
        else:
            self._reply(HTTPStatus.NOT_FOUND, b"Not Found", body, {"Content-Type": "text/plain"})

    def _hub(self, path: str, body: bool) -> None:
        """/api/datasets/REPO[/revision/REV | /tree/REV[/DIR] | /paths-info/REV] and
        /datasets/REPO/resolve/REV/PATH, REPO being `owner/name`."""
        api = path.startswith("/api/datasets/")
        parts = path.split("/")[3:] if api else path.split("/")[2:]
        repo_id = "/".join(parts[:2])
        rest = parts[2:]
        repo = self.mirror.hub.get(repo_id)
        if repo is None:
            self._hub_error(HTTPStatus.NOT_FOUND, "RepoNotFound", "Repository not found", body)
            return
        action, revision, inner = (rest or ["revision"])[0], (rest[1:2] or ["main"])[0], "/".join(rest[2:])
        if action not in {"revision", "tree", "paths-info", "resolve"} or (action == "resolve") == api:
            self._reply(HTTPStatus.NOT_FOUND, b"Not Found", body, {"Content-Type": "text/plain"})
            return
        if revision not in {"main", COMMIT}:
            self._hub_error(HTTPStatus.NOT_FOUND, "RevisionNotFound", f"Invalid rev id: {revision}", body)
            return
        if action == "revision":
            self._json(self._info(repo_id, repo), body)
        elif action == "tree":
            self._json(self._tree(repo, inner, "recursive=true" in self.path.lower()), body)
        elif action == "paths-info":
            wanted = self.form.get("paths", [])
            self._json([entry for entry in self._tree(repo, "", True) if entry["path"] in wanted], body)
        elif self.mirror._is_gated(repo_id):
            self._hub_error(HTTPStatus.FORBIDDEN, "GatedRepo",
                            f"Access to dataset {repo_id} is restricted and you are not in the authorized list. "
                            f"Visit https://huggingface.co/datasets/{repo_id} to ask for access.", body)
        elif inner in repo:
            content = repo[inner]
            etag = _etag(inner, content)
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"'}
            if _is_lfs(inner):
                headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(content))}
            self._file(path, content, body, headers)
        else:
            self._hub_error(HTTPStatus.NOT_FOUND, "EntryNotFound", "Entry not found", body,
                            {"X-Repo-Commit": COMMIT})

    # --- hub bodies -------------------------------------------------------------------------

    def _info(self, repo_id: str, repo: dict[str, bytes]) -> dict:
        """The fields HfApi.dataset_info reads; `siblings` lists every file, as with files_metadata."""
        return {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "author": repo_id.split("/")[0],
            "sha": COMMIT, "lastModified": "2025-01-01T00:00:00.000Z", "createdAt": "2025-01-01T00:00:00.000Z",
            "private": False, "gated": "auto" if self.mirror._is_gated(repo_id) else False, "disabled": False,
            "downloads": 0, "likes": 0, "tags": [], "cardData": {},
            "siblings": [{"rfilename": name} for name in sorted(repo)],
        }

    @staticmethod
    def _tree(repo: dict[str, bytes], folder: str, recursive: bool) -> list[dict]:
        """The Hub's tree entries under FOLDER: files with oid, size and lfs, and the folders
        between, each once, folders first as the Hub lists them."""
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        files, folders = [], {}
        for name in sorted(repo):
            if not name.startswith(prefix):
                continue
            below = name[len(prefix):].split("/")
            for depth in range(1, len(below)):
                if depth > 1 and not recursive:
                    break
                folder_path = prefix + "/".join(below[:depth])
                folders.setdefault(folder_path, {"type": "directory", "oid": _git_oid(folder_path.encode()),
                                                 "size": 0, "path": folder_path})
            if len(below) == 1 or recursive:
                content = repo[name]
                entry = {"type": "file", "oid": _git_oid(content), "size": len(content), "path": name}
                if _is_lfs(name):
                    entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content),
                                    "pointerSize": 134}
                files.append(entry)
        return list(folders.values()) + files

    # --- replies ----------------------------------------------------------------------------

    def _json(self, data: object, body: bool) -> None:
        self._reply(HTTPStatus.OK, json.dumps(data).encode(), body, {"Content-Type": "application/json"})

    def _hub_error(self, status: HTTPStatus, code: str, message: str, body: bool,
                   headers: dict[str, str] | None = None) -> None:
        """The Hub's error shape: X-Error-Code picks huggingface_hub's exception class."""
        self._reply(status, json.dumps({"error": message}).encode(), body,
                    {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message,
                     **(headers or {})})

    def _file(self, path: str, content: bytes, body: bool, headers: dict[str, str]) -> None:
        after = self.mirror._trickled(path) if body else None
        if after is None:
            self._reply(HTTPStatus.OK, content, body, {"Content-Type": "application/octet-stream", **headers})
            return
        self._head(HTTPStatus.OK, len(content), {"Content-Type": "application/octet-stream", **headers})
        self.wfile.write(content[:after])
        self.wfile.flush()
        self._hold()

    def _reply(self, status: HTTPStatus, content: bytes, body: bool, headers: dict[str, str]) -> None:
        self._head(status, len(content), headers)
        if body:
            self.wfile.write(content)

    def _head(self, status: HTTPStatus, length: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _hold(self) -> None:
        """Says nothing more on this connection until the mirror closes, then drops it."""
        self.mirror._closing.wait()
        self.close_connection = True
