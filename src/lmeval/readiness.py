"""When is a server ready? Checks in order, each a step further than the last:
our process alive -> its port open, by our process -> /v1/models lists our model -> /health 200.

A server that exits while loading fails the wait at once; one that never gets there fails it
at the deadline. Both name the server, its log and the command that reproduces it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from lmeval.launch import ProxySpec, Server

POLL_SECONDS = 0.05
FOREIGN_PORT_SECONDS = 5.0  # how long the port must answer for another process before that is said
CONNECT_SECONDS = 0.5


class NotReady(Exception):
    """The server is alive but still loading; the message says which step it is at."""


def http_client() -> httpx.Client:
    """A client for our own servers: short timeouts, and no proxy from the environment."""
    return httpx.Client(timeout=httpx.Timeout(5.0, connect=CONNECT_SECONDS), trust_env=False)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_SECONDS):
            return True
    except OSError:
        return False


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def served_models(client: httpx.Client, base_url: str, api_key: str | None) -> list[str]:
    """The model ids `/v1/models` lists; raises httpx errors for transport problems."""
    response = client.get(f"{base_url}/v1/models", headers=auth_headers(api_key))
    response.raise_for_status()
    return [entry["id"] for entry in response.json().get("data", [])]


class ReadinessCheck:
    """Tracks how far one server has got, so each poll resumes at the step it reached."""

    def __init__(self, server: Server, client: httpx.Client) -> None:
        self.server = server
        self.client = client
        self.owned_port = False
        self.foreign_since: float | None = None  # when its port was first seen answering for another process

    def probe(self) -> None:
        """Return when ready; raise NotReady to poll again, ServerFailed to give up."""
        server, spec = self.server, self.server.spec
        server.check_alive()
        address = server.address
        if address is None:
            raise NotReady("not started yet")
        if not port_open(*address):
            raise NotReady("loading the model (port not open yet)")
        if not self.owned_port:
            if not server.owns_port():
                server.check_alive()
                # One scan of the server's sockets can miss its listener while thousands of
                # connections close (seen as a judge's eval task ended): only a miss that
                # lasts means another program holds the port.
                self.foreign_since = self.foreign_since or time.monotonic()
                if time.monotonic() - self.foreign_since < FOREIGN_PORT_SECONDS:
                    raise NotReady(f"port {address[1]} answers, not yet seen held by the server")
                raise server.failure(f"cannot be reached: another process answers on port {address[1]}")
            self.owned_port = True
        if isinstance(spec, ProxySpec):
            registered_nodes(self.client, spec)  # answering is ready: replicas register later
            return
        key = spec.api_key.get_secret_value()
        try:
            models = served_models(self.client, server.url, key)
        except httpx.HTTPStatusError as error:
            if error.response.status_code in (401, 403):
                raise server.failure(f"rejects lmeval's API key on port {address[1]}") from None
            raise NotReady(f"/v1/models answered {error.response.status_code}") from None
        except (httpx.HTTPError, ValueError) as error:
            raise NotReady(f"/v1/models not answering ({type(error).__name__})") from None
        if spec.served_name not in models:
            raise server.failure(f"serves {models}, not {spec.served_name!r}")
        try:
            status = self.client.get(f"{server.url}/health").status_code
        except httpx.HTTPError as error:
            raise NotReady(f"/health not answering ({type(error).__name__})") from None
        if status != 200:
            raise NotReady(f"initializing (/health answered {status})")


def registered_nodes(client: httpx.Client, spec: ProxySpec) -> set[str]:
    """The node URLs the proxy routes to; NotReady while it does not answer."""
    try:
        response = client.get(f"{spec.url}/nodes/status", headers=auth_headers(spec.api_key.get_secret_value()))
        response.raise_for_status()
        return set(response.json())
    except (httpx.HTTPError, ValueError) as error:
        raise NotReady(f"/nodes/status not answering ({type(error).__name__})") from None


def _node(server: Server) -> dict:
    """The proxy's description of SERVER, as LMDeploy's api_server registers itself (0.18)."""
    return {"url": server.url, "status": {"models": [server.spec.served_name]}}


def register(proxy: Server, server: Server) -> None:
    """Have the proxy route to SERVER (a Slurm job's, which cannot register itself in time)."""
    with http_client() as client:
        try:
            client.post(f"{proxy.url}/nodes/add", json=_node(server),
                        headers=auth_headers(proxy.spec.api_key.get_secret_value())).raise_for_status()
        except httpx.HTTPError as error:
            raise proxy.failure(f"refused to add {server.url} ({type(error).__name__})") from None


def deregister(proxy: Server, server: Server) -> None:
    """Have the proxy stop routing to SERVER before it stops; a proxy that is gone routes nothing."""
    with http_client() as client:
        try:
            client.post(f"{proxy.url}/nodes/remove", json=_node(server),
                        headers=auth_headers(proxy.spec.api_key.get_secret_value()))
        except httpx.HTTPError:
            pass


def wait_registered(proxy: Server, replicas: Sequence[Server], timeout: float = 10.0,
                    poll_seconds: float = POLL_SECONDS) -> None:
    """Ready replicas register with the proxy (or lmeval registers them); make sure it routes
    to every one."""
    wanted = {replica.url for replica in replicas}
    missing: set[str] = set()
    with http_client() as client:
        def all_registered() -> None:
            proxy.check_alive()
            missing.clear()
            missing.update(wanted - registered_nodes(client, proxy.spec))
            if missing:
                raise NotReady()

        try:
            Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(poll_seconds),
                     retry=retry_if_exception_type(NotReady), reraise=True)(all_registered)
        except NotReady:
            raise proxy.failure(f"does not route to {', '.join(sorted(missing))} after {timeout:g} s") from None


def wait_ready(
    servers: Sequence[Server],
    timeout: float,
    on_ready: Callable[[Server], None] = lambda server: None,
    poll_seconds: float = POLL_SECONDS,
    meanwhile: Callable[[], None] = lambda: None,
) -> None:
    """Poll every server until all are ready; a crash of any of them ends the wait at once, and
    so does MEANWHILE raising (a check that runs while the servers load)."""
    with http_client() as client:
        pending = [ReadinessCheck(server, client) for server in servers]
        waiting: dict[str, str] = {}

        def poll_all() -> None:
            meanwhile()
            for check in list(pending):
                try:
                    check.probe()
                except NotReady as reason:
                    waiting[check.server.spec.role] = str(reason)
                    continue
                pending.remove(check)
                on_ready(check.server)
            if pending:
                raise NotReady()

        retrying = Retrying(
            stop=stop_after_delay(timeout),
            wait=wait_fixed(poll_seconds),
            retry=retry_if_exception_type(NotReady),
            reraise=True,
        )
        try:
            retrying(poll_all)
        except NotReady:
            check = pending[0]
            raise check.server.failure(
                f"not ready after {timeout:g} s ({waiting.get(check.server.spec.role)}); "
                "raise --ready-timeout if the model needs longer to load"
            ) from None
