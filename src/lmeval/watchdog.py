"""Servers that hang, and OpenCompass when it does (OpenCompassWatch, at the end). A server that
hangs is alive, its port open, and answers nothing. Two signs, either one enough, each lasting
--stall-timeout seconds on end while a stage runs:

- `/health` fails: LMDeploy 0.16+ answers 503 "unhealthy" once its scheduler has made no progress
  for 90 s (LMDEPLOY_HEALTH_UNHEALTHY_AFTER); no answer within PROBE_TIMEOUT counts the same;
- its Prometheus metrics (`/metrics`, on by default) show requests running and no token
  generated: `lmdeploy:num_requests_running` (+ `_waiting`) above 0 while
  `lmdeploy:generation_tokens_total` stands still. A server without metrics (an older LMDeploy,
  `--disable-metrics`) is judged by its health alone.

Such a server is stalled, and lmeval treats it as dead: stopped, restarted under --restarts, the
stage resumed. A long generation keeps /health at 200 and the token count moving, so it is never
flagged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

PROBE_EVERY = 2.0  # seconds between two probes of one server
PROBE_TIMEOUT = 5.0  # a /health that takes longer counts as no answer
RUNNING = ("lmdeploy:num_requests_running", "lmdeploy:num_requests_waiting")
GENERATED = "lmdeploy:generation_tokens_total"


@dataclass(frozen=True)
class Load:
    """What a server's metrics say now: requests running or waiting, tokens generated so far."""

    requests: float
    tokens: float


@dataclass
class HealthWatch:
    """One server over a stage, probed at most every PROBE_EVERY seconds."""

    stall_seconds: float
    probe: Callable[[], bool]  # True: healthy (or not reachable at all: a dead server is seen otherwise)
    load: Callable[[], Load | None] = lambda: None  # None: no metrics
    clock: Callable[[], float] = time.monotonic
    every: float = PROBE_EVERY
    last_probe: float = -math.inf
    unhealthy_since: float | None = None
    last_tokens: float | None = None
    moving_at: float | None = None  # when tokens last moved, or the server had nothing to do
    last_load: Load | None = None  # what its metrics said at the last probe

    verdict: tuple[float, str] | None = None  # as of the last probe

    def stalled_for(self) -> tuple[float, str] | None:
        """For how long, and by which sign, the server had looked hung at the last probe, once
        that reaches stall_seconds; else None. Only a probe decides: between two, nothing is
        known to have changed."""
        now = self.clock()
        if now - self.last_probe >= min(self.every, self.stall_seconds / 2):
            self.last_probe = now
            if self.probe():
                self.unhealthy_since = None
            elif self.unhealthy_since is None:
                self.unhealthy_since = now
            self.observe(self.load(), now)
            self.verdict = None
            if self.unhealthy_since is not None and now - self.unhealthy_since >= self.stall_seconds:
                self.verdict = now - self.unhealthy_since, "its /health failed"
            elif self.moving_at is not None and now - self.moving_at >= self.stall_seconds:
                self.verdict = now - self.moving_at, "its metrics show requests running and no token generated"
        return self.verdict

    def observe(self, load: Load | None, now: float) -> None:
        self.last_load = load
        if load is None:
            self.last_tokens = self.moving_at = None
            return
        if load.requests <= 0 or load.tokens != self.last_tokens or self.moving_at is None:
            self.moving_at = now
        self.last_tokens = load.tokens


def health_probe(url: str, client: httpx.Client) -> Callable[[], bool]:
    """Whether URL's /health says the engine works: 503 and no answer within PROBE_TIMEOUT do not;
    a refused connection does (a server that exited is the supervisor's other check)."""
    def probe() -> bool:
        try:
            return client.get(f"{url}/health", timeout=PROBE_TIMEOUT).status_code != 503
        except httpx.TimeoutException:
            return False
        except httpx.HTTPError:
            return True

    return probe


def metrics_probe(url: str, client: httpx.Client, key: str) -> Callable[[], Load | None]:
    """URL's load from its Prometheus metrics (LMDeploy's key guards them as its API); None when
    it serves none that say it."""
    headers = {"Authorization": f"Bearer {key}"}

    def load() -> Load | None:
        try:
            answer = client.get(f"{url}/metrics", headers=headers, timeout=PROBE_TIMEOUT)
        except httpx.HTTPError:
            return None
        if answer.status_code != 200:
            return None
        return parse_load(answer.text)

    return load


def parse_load(text: str) -> Load | None:
    """The Load in Prometheus text: each metric summed over its label sets."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if "{" in line:  # name{labels} value [timestamp]; a label's value may hold spaces
            name, rest = line[:line.index("{")], line[line.rindex("}") + 1:]
        else:  # name value [timestamp]
            name, _, rest = line.partition(" ")
        try:
            sums[name] = sums.get(name, 0.0) + float(rest.split()[0])
        except (IndexError, ValueError):
            continue
    if GENERATED not in sums or RUNNING[0] not in sums:
        return None
    return Load(requests=sum(sums.get(name, 0.0) for name in RUNNING), tokens=sums[GENERATED])


CPU_QUIET = 0.05  # CPU seconds between two probes under which OpenCompass's processes count as idle


@dataclass
class OpenCompassWatch:
    """OpenCompass stuck (a task that never starts, a lock never released): for stall_seconds on
    end its processes used no CPU, no answer or result came, and every server it uses said, by
    its metrics, that it had no request. Where a server's load is unknown (no metrics) nothing is
    flagged: from OpenCompass's side a long generation looks the same."""

    stall_seconds: float
    cpu: Callable[[], float]  # CPU seconds of its processes so far
    progress: Callable[[], int]  # a count that grows with every answer and result written
    servers_idle: Callable[[], bool | None]  # None: not known
    clock: Callable[[], float] = time.monotonic
    every: float = PROBE_EVERY
    last_probe: float = -math.inf
    last: tuple[float, int] | None = None
    quiet_since: float | None = None  # the probe since which nothing happened
    verdict: float | None = None  # as of the last probe

    def hung_for(self) -> float | None:
        """For how long OpenCompass had done nothing at the last probe, once that reaches
        stall_seconds; else None."""
        now = self.clock()
        if now - self.last_probe >= min(self.every, self.stall_seconds / 2):
            cpu, done = self.cpu(), self.progress()
            quiet = (self.last is not None and abs(cpu - self.last[0]) < CPU_QUIET and done == self.last[1]
                     and self.servers_idle() is True)
            if not quiet:
                self.quiet_since = None
            elif self.quiet_since is None:
                self.quiet_since = self.last_probe
            self.last_probe, self.last = now, (cpu, done)
            held = now - self.quiet_since if self.quiet_since is not None else 0.0
            self.verdict = held if held >= self.stall_seconds else None
        return self.verdict


def servers_idle(watches: list[HealthWatch]) -> bool | None:
    """Whether every watched server had no request at its last probe; None when one's load is not
    known (no metrics, or not probed yet). No server at all: idle."""
    loads = [watch.last_load for watch in watches]
    if any(load is None for load in loads):
        return None
    return all(load.requests <= 0 for load in loads)
