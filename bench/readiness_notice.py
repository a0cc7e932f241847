"""How long after its server becomes ready does `lmeval serve` say so?

Each run starts a real `lmeval serve` (one GPU id, given explicitly) against the stand-in
`lmdeploy` in tests/standin, whose /health answers 503 for STANDIN_WARMUP_SECONDS after it
binds and 200 from then on. A thread of this script polls the key-free /health itself every
POLL_SECONDS over one keep-alive connection; the server's readiness is the moment the first
200 was asked for. lmeval's notice is the moment its "lmeval: ready at ..." line is read from
its stderr pipe. The script prints the gap of each run, then its median and max over N runs
(default 10) against the goal of 0.5 s, and exits 1 if the max misses the goal. Run it from the
repository root with `.venvs/lmeval/bin/python bench/readiness_notice.py [N]`.
"""

from __future__ import annotations

import http.client
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from toolkit import STANDIN, Runner  # noqa: E402 - from tests/, put on the path above

from lmeval.launch import free_port  # noqa: E402

GOAL_SECONDS = 0.5
POLL_SECONDS = 0.002
LOAD_SECONDS = "0.3"
WARMUP_SECONDS = "1.0"  # long enough that lmeval is already polling /health when it flips


def first_healthy(port: int, stop: threading.Event, found: list[float]) -> None:
    """Poll /health until it answers 200; record when that request was sent."""
    connection = None
    while not stop.is_set():
        asked = time.monotonic()
        try:
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                found.append(asked)
                return
        except (OSError, http.client.HTTPException):
            if connection is not None:
                connection.close()
            connection = None
        time.sleep(POLL_SECONDS)


def one_run(runner: Runner, model: Path, work: Path) -> float:
    port = free_port()
    env = runner.env(STANDIN_LOAD_SECONDS=LOAD_SECONDS, STANDIN_WARMUP_SECONDS=WARMUP_SECONDS)
    healthy: list[float] = []
    stop = threading.Event()
    poller = threading.Thread(target=first_healthy, args=(port, stop, healthy), daemon=True)
    poller.start()
    lm = runner.start("serve", str(model), "--gpus", "0", "--port", str(port), "--lmdeploy", str(STANDIN),
                      "-w", str(work), "--grace", "3", env=env)
    try:
        noticed, _ = lm.wait_line(rf"lmeval: ready at http://127\.0\.0\.1:{port}/v1 .*", timeout=60)
        poller.join(10)
        if not healthy:
            raise SystemExit(f"/health never answered 200 on port {port}\n{lm.transcript()}")
        lm.signal(signal.SIGINT)
        if lm.wait(30) != 0:
            raise SystemExit(f"lmeval did not stop cleanly\n{lm.transcript()}")
    finally:
        stop.set()
    return noticed - healthy[0]


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    with tempfile.TemporaryDirectory(prefix="lmeval-bench-") as tmp:
        tmp_path = Path(tmp)
        model = tmp_path / "demo-model"
        model.mkdir()
        runner = Runner(tmp_path)
        gaps = []
        try:
            for index in range(runs):
                gaps.append(one_run(runner, model, tmp_path / "out"))
                print(f"run {index + 1:2d}: {gaps[-1] * 1000:7.1f} ms", flush=True)
        finally:
            runner.teardown()
    median, worst = statistics.median(gaps), max(gaps)
    print()
    print(f"{'server ready -> lmeval notice':<32}{'median':>10}{'max':>10}{'goal':>10}")
    print(f"{f'({runs} runs)':<32}{median * 1000:>8.1f}ms{worst * 1000:>8.1f}ms{GOAL_SECONDS * 1000:>8.0f}ms")
    verdict = "met" if worst < GOAL_SECONDS else "MISSED"
    print(f"goal {verdict}: every notice within {GOAL_SECONDS:g} s of readiness" if worst < GOAL_SECONDS
          else f"goal {verdict}: max {worst:.3f} s >= {GOAL_SECONDS:g} s")
    return 0 if worst < GOAL_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
