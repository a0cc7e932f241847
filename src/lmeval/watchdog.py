"""Servers that hang: alive, port open, and no answer. LMDeploy 0.16+ answers `/health` with 503
"unhealthy" once its scheduler has made no progress for 90 s (LMDEPLOY_HEALTH_UNHEALTHY_AFTER);
a server whose health has failed (503, or no answer at all) for --stall-timeout seconds on end
while a stage runs is stalled, and lmeval treats it as dead: stopped, restarted under
--restarts, the stage resumed. A long generation that keeps the engine busy keeps /health 200,
so it is never flagged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

PROBE_EVERY = 2.0  # seconds between two probes of one server
PROBE_TIMEOUT = 5.0  # a /health that takes longer counts as no answer


@dataclass
class HealthWatch:
    """One server's /health over a stage, probed at most every PROBE_EVERY seconds."""

    stall_seconds: float
    probe: Callable[[], bool]  # True: healthy (or not reachable at all: a dead server is seen otherwise)
    clock: Callable[[], float] = time.monotonic
    every: float = PROBE_EVERY
    last_probe: float = -math.inf
    unhealthy_since: float | None = field(default=None)

    def stalled_for(self) -> float | None:
        """For how long its health has failed, once that reaches stall_seconds; else None."""
        now = self.clock()
        if now - self.last_probe >= self.every:
            self.last_probe = now
            if self.probe():
                self.unhealthy_since = None
            elif self.unhealthy_since is None:
                self.unhealthy_since = now
        if self.unhealthy_since is not None and now - self.unhealthy_since >= self.stall_seconds:
            return now - self.unhealthy_since
        return None


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
